ALTER TABLE customer_coupon DROP CONSTRAINT customer_coupon_returned_if_revoked;
ALTER TABLE customer_coupon DROP COLUMN stock_returned;
