-- Over how many Redis key sets (shards, each in a slot of its own) coupon-api
-- spreads the coupon's stock, so that one hot coupon is decided on several
-- Redis masters. Fixed at creation; every coupon before had one.
ALTER TABLE coupon ADD COLUMN shards SMALLINT NOT NULL DEFAULT 1 CHECK (shards BETWEEN 1 AND 64);
