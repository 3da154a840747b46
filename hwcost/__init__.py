"""sop-dse: hwcost."""
