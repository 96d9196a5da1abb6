DROP TABLE admin_audit;
DROP TABLE coupon_control;
