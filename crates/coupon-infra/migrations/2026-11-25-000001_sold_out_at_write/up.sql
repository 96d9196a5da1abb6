-- Events the writer could not apply because the coupon had no stock left in
-- PostgreSQL: customers Redis told "issued" who hold no coupon. Never expected;
-- each row is for an operator (alert CouponSoldOutAtWrite) and for the
-- customer-facing systems to find. One row per (coupon, customer), so a
-- redelivered event records nothing new.
CREATE TABLE sold_out_at_write (
    coupon_id   BIGINT      NOT NULL REFERENCES coupon (id),
    customer_id BIGINT      NOT NULL CHECK (customer_id > 0),
    issued_at   TIMESTAMPTZ NOT NULL,
    reason      TEXT        NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (coupon_id, customer_id)
);

-- Customer-facing systems look a customer up.
CREATE INDEX sold_out_at_write_by_customer ON sold_out_at_write (customer_id);
