-- Admin requests that created a coupon with an Idempotency-Key: a retry with
-- the same key within a day gets the coupon the first request created, never
-- a second promotion.
CREATE TABLE coupon_creation (
    idempotency_key TEXT        PRIMARY KEY,
    coupon_id       BIGINT      NOT NULL REFERENCES coupon (id),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
