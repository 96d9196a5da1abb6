-- An operator's pause may stop redemption too (`{"redemption": false}`):
-- redeem then answers 409 PAUSED until the resume. A constant default:
-- adding the column rewrites no row.
ALTER TABLE coupon_control ADD COLUMN redemption_paused BOOLEAN NOT NULL DEFAULT false;
