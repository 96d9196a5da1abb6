ALTER TABLE customer_coupon DROP COLUMN issued_at_estimated;
