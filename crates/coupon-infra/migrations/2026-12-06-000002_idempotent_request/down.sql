ALTER TABLE coupon_creation DROP COLUMN request;
