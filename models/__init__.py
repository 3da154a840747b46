"""sop-dse: models."""
