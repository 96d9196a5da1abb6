-- Every order that gave a held coupon back. Such an order cannot redeem the
-- coupon again (`ORDER_RELEASED`): a late retry of a cancelled order's redeem
-- must not tie the coupon to that order again. A repeated release of any of
-- them answers as the first did. A table of its own, so that coupon-writer's
-- inserts into customer_coupon carry nothing more.
CREATE TABLE released_order (
    coupon_id   BIGINT NOT NULL,
    customer_id BIGINT NOT NULL,
    order_id    TEXT   NOT NULL,
    PRIMARY KEY (coupon_id, customer_id, order_id),
    FOREIGN KEY (coupon_id, customer_id) REFERENCES customer_coupon (coupon_id, customer_id) ON DELETE CASCADE
);

-- The one release per holding remembered so far. customer_coupon's
-- `released_order_id` stays, and is still written, while replicas of the
-- previous version may run (they read it); a later migration drops it.
INSERT INTO released_order (coupon_id, customer_id, order_id)
SELECT coupon_id, customer_id, released_order_id FROM customer_coupon WHERE released_order_id IS NOT NULL;
