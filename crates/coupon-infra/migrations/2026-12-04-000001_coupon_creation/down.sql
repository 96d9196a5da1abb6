DROP TABLE coupon_creation;
