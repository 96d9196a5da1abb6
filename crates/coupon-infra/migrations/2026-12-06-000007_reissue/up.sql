-- A revocation that returns the unit may let the customer get the coupon
-- again (`allowReissue`). Each issuance of a coupon to a customer is then
-- numbered: 0 the first, n after n such revocations. The row stays, REVOKED
-- and `reissuable`, until the next issuance overwrites it; an event of an
-- issuance no newer than the row's (a late copy of the revoked one) changes
-- nothing. The revocation itself is kept in `revoked_issuance`.
ALTER TABLE customer_coupon
    ADD COLUMN issuance   INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN reissuable BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE customer_coupon
    ADD CONSTRAINT customer_coupon_reissuable_if_returned CHECK (NOT reissuable OR stock_returned) NOT VALID,
    ADD CONSTRAINT customer_coupon_issuance_counted CHECK (issuance >= 0) NOT VALID;
ALTER TABLE customer_coupon VALIDATE CONSTRAINT customer_coupon_reissuable_if_returned;
ALTER TABLE customer_coupon VALIDATE CONSTRAINT customer_coupon_issuance_counted;

CREATE TABLE revoked_issuance (
    coupon_id   BIGINT      NOT NULL REFERENCES coupon (id),
    customer_id BIGINT      NOT NULL,
    issuance    INTEGER     NOT NULL,
    issued_at   TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ NOT NULL,
    reason      TEXT        NOT NULL,
    PRIMARY KEY (coupon_id, customer_id, issuance)
);
