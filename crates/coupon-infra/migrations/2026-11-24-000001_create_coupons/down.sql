DROP TABLE customer_coupon;
DROP TABLE coupon;
