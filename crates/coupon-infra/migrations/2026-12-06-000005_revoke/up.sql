-- Support staff revoke an unused held coupon (fraud, a wrong grant): the row
-- stays, REVOKED, with when and why, and can no longer be redeemed; the
-- customer stays a holder, so Redis's count of issued units is unchanged.
-- The new constraints are added NOT VALID and validated after, so the table
-- is not locked against writes while existing rows are checked.
ALTER TABLE customer_coupon
    ADD COLUMN revoked_at    TIMESTAMPTZ,
    ADD COLUMN revoke_reason TEXT;
ALTER TABLE customer_coupon DROP CONSTRAINT customer_coupon_status_check;
ALTER TABLE customer_coupon
    ADD CONSTRAINT customer_coupon_status_check CHECK (status IN ('AVAILABLE', 'USED', 'REVOKED')) NOT VALID,
    ADD CONSTRAINT customer_coupon_revoke_shape CHECK (
        (status = 'REVOKED') = (revoked_at IS NOT NULL AND revoke_reason IS NOT NULL)
    ) NOT VALID;
ALTER TABLE customer_coupon VALIDATE CONSTRAINT customer_coupon_status_check;
ALTER TABLE customer_coupon VALIDATE CONSTRAINT customer_coupon_revoke_shape;

-- Its event goes out through the same outbox, to inside.coupon.revoked; a
-- revocation has a reason and no order.
ALTER TABLE coupon_usage_outbox ADD COLUMN reason TEXT;
ALTER TABLE coupon_usage_outbox ALTER COLUMN order_id DROP NOT NULL;
ALTER TABLE coupon_usage_outbox DROP CONSTRAINT coupon_usage_outbox_kind_check;
ALTER TABLE coupon_usage_outbox
    ADD CONSTRAINT coupon_usage_outbox_kind_check CHECK (kind IN ('USED', 'RELEASED', 'REVOKED')) NOT VALID;
ALTER TABLE coupon_usage_outbox VALIDATE CONSTRAINT coupon_usage_outbox_kind_check;
