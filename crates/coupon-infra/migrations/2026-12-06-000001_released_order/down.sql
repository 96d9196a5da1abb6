DROP TABLE released_order;
