ALTER TABLE coupon_control DROP COLUMN redemption_paused;
