"""sop-dse: dse."""
