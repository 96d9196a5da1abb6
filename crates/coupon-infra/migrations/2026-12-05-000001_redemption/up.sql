-- A coupon's discount policy and how long held coupons stay usable. Coupons
-- created before (or without) a policy stay issuable but are not redeemable.
ALTER TABLE coupon
    ADD COLUMN discount_type       TEXT   CHECK (discount_type IN ('FIXED', 'RATE')),
    ADD COLUMN discount_amount     BIGINT CHECK (discount_amount > 0),
    ADD COLUMN discount_percent    SMALLINT CHECK (discount_percent BETWEEN 1 AND 100),
    ADD COLUMN discount_max_amount BIGINT CHECK (discount_max_amount > 0),
    ADD COLUMN min_order_amount    BIGINT NOT NULL DEFAULT 0 CHECK (min_order_amount >= 0),
    -- NULL: usable until the issuance period ends.
    ADD COLUMN valid_until         TIMESTAMPTZ,
    ADD CONSTRAINT coupon_discount_shape CHECK (
        (discount_type IS NULL AND discount_amount IS NULL AND discount_percent IS NULL
            AND discount_max_amount IS NULL)
        OR (discount_type = 'FIXED' AND discount_amount IS NOT NULL AND discount_percent IS NULL
            AND discount_max_amount IS NULL)
        OR (discount_type = 'RATE' AND discount_percent IS NOT NULL AND discount_amount IS NULL)
    ),
    ADD CONSTRAINT coupon_valid_after_period CHECK (valid_until IS NULL OR valid_until >= ends_at);

-- A held coupon is AVAILABLE or USED by one order; EXPIRED is read, never
-- stored. `released_order_id` remembers the order that last gave it back, so
-- a repeated release answers as the first did. Constant defaults: adding the
-- columns rewrites no row.
ALTER TABLE customer_coupon
    ADD COLUMN status            TEXT NOT NULL DEFAULT 'AVAILABLE' CHECK (status IN ('AVAILABLE', 'USED')),
    ADD COLUMN order_id          TEXT,
    ADD COLUMN discount_amount   BIGINT CHECK (discount_amount >= 0),
    ADD COLUMN used_at           TIMESTAMPTZ,
    ADD COLUMN released_order_id TEXT,
    ADD CONSTRAINT customer_coupon_use_shape CHECK (
        (status = 'USED') = (order_id IS NOT NULL AND discount_amount IS NOT NULL AND used_at IS NOT NULL)
        AND (status = 'USED' OR (order_id IS NULL AND discount_amount IS NULL AND used_at IS NULL))
    );

-- The transactional outbox of uses and releases: written in the transaction
-- that changes a held coupon, relayed to Kafka in id order, deleted once
-- Kafka acknowledged it. The id is the event's `eventId`.
CREATE TABLE coupon_usage_outbox (
    id              BIGSERIAL   PRIMARY KEY,
    kind            TEXT        NOT NULL CHECK (kind IN ('USED', 'RELEASED')),
    coupon_id       BIGINT      NOT NULL,
    customer_id     BIGINT      NOT NULL,
    order_id        TEXT        NOT NULL,
    discount_amount BIGINT      NOT NULL,
    occurred_at     TIMESTAMPTZ NOT NULL
);
