-- What the request that used an idempotency key asked for, so that the same
-- key sent with another body is refused rather than answered with the first
-- coupon. NULL for keys used before this column existed.
ALTER TABLE coupon_creation ADD COLUMN request TEXT;
