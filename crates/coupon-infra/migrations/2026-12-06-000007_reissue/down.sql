DROP TABLE revoked_issuance;
ALTER TABLE customer_coupon DROP CONSTRAINT customer_coupon_issuance_counted;
ALTER TABLE customer_coupon DROP CONSTRAINT customer_coupon_reissuable_if_returned;
ALTER TABLE customer_coupon DROP COLUMN reissuable;
ALTER TABLE customer_coupon DROP COLUMN issuance;
