CREATE TABLE coupon (
    id                 BIGSERIAL PRIMARY KEY,
    name               TEXT        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    total_quantity     INTEGER     NOT NULL CHECK (total_quantity > 0),
    remaining_quantity INTEGER     NOT NULL,
    starts_at          TIMESTAMPTZ NOT NULL,
    ends_at            TIMESTAMPTZ NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT coupon_remaining_within_total CHECK (remaining_quantity BETWEEN 0 AND total_quantity),
    CONSTRAINT coupon_period_ordered CHECK (starts_at < ends_at)
);

CREATE TABLE customer_coupon (
    id          BIGSERIAL PRIMARY KEY,
    coupon_id   BIGINT      NOT NULL REFERENCES coupon (id),
    customer_id BIGINT      NOT NULL CHECK (customer_id > 0),
    issued_at   TIMESTAMPTZ NOT NULL,
    CONSTRAINT customer_coupon_once UNIQUE (coupon_id, customer_id)
);

-- "Which coupons does this customer hold" is the API's read path.
CREATE INDEX customer_coupon_by_customer ON customer_coupon (customer_id);
