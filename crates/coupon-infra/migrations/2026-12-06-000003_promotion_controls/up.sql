-- An operator's controls of a live promotion, apart from the coupon row that
-- coupon-writer locks on every batch. `version` grows with every change, so
-- Redis keeps the newest whichever of a change and a rebuild lands last.
CREATE TABLE coupon_control (
    coupon_id BIGINT PRIMARY KEY REFERENCES coupon (id),
    paused_at TIMESTAMPTZ,
    version BIGINT NOT NULL
);

-- Who changed what, when: written in the same transaction as the change.
CREATE TABLE admin_audit (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    coupon_id BIGINT REFERENCES coupon (id),
    before TEXT, -- JSON
    after TEXT, -- JSON
    request_id TEXT
);
CREATE INDEX admin_audit_coupon ON admin_audit (coupon_id, id);
