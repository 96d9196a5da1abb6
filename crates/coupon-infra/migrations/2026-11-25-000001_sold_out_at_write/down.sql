DROP TABLE sold_out_at_write;
