// The tables of migrations/, as Diesel sees them.

diesel::table! {
    coupon (id) {
        id -> Int8,
        name -> Text,
        total_quantity -> Int4,
        remaining_quantity -> Int4,
        starts_at -> Timestamptz,
        ends_at -> Timestamptz,
        created_at -> Timestamptz,
        discount_type -> Nullable<Text>,
        discount_amount -> Nullable<Int8>,
        discount_percent -> Nullable<Int2>,
        discount_max_amount -> Nullable<Int8>,
        min_order_amount -> Int8,
        valid_until -> Nullable<Timestamptz>,
        shards -> Int2,
    }
}

diesel::table! {
    coupon_control (coupon_id) {
        coupon_id -> Int8,
        paused_at -> Nullable<Timestamptz>,
        version -> Int8,
        redemption_paused -> Bool,
    }
}

diesel::table! {
    admin_audit (id) {
        id -> Int8,
        at -> Timestamptz,
        actor -> Text,
        action -> Text,
        coupon_id -> Nullable<Int8>,
        before -> Nullable<Text>,
        after -> Nullable<Text>,
        request_id -> Nullable<Text>,
    }
}

diesel::table! {
    customer_coupon (id) {
        id -> Int8,
        coupon_id -> Int8,
        customer_id -> Int8,
        issued_at -> Timestamptz,
        status -> Text,
        order_id -> Nullable<Text>,
        discount_amount -> Nullable<Int8>,
        used_at -> Nullable<Timestamptz>,
        released_order_id -> Nullable<Text>,
        revoked_at -> Nullable<Timestamptz>,
        revoke_reason -> Nullable<Text>,
        stock_returned -> Bool,
        issuance -> Int4,
        reissuable -> Bool,
        issued_at_estimated -> Bool,
    }
}

diesel::table! {
    revoked_issuance (coupon_id, customer_id, issuance) {
        coupon_id -> Int8,
        customer_id -> Int8,
        issuance -> Int4,
        issued_at -> Timestamptz,
        revoked_at -> Timestamptz,
        reason -> Text,
    }
}

diesel::table! {
    coupon_usage_outbox (id) {
        id -> Int8,
        kind -> Text,
        coupon_id -> Int8,
        customer_id -> Int8,
        order_id -> Nullable<Text>,
        discount_amount -> Int8,
        occurred_at -> Timestamptz,
        reason -> Nullable<Text>,
    }
}

diesel::table! {
    released_order (coupon_id, customer_id, order_id) {
        coupon_id -> Int8,
        customer_id -> Int8,
        order_id -> Text,
    }
}

diesel::table! {
    sold_out_at_write (coupon_id, customer_id) {
        coupon_id -> Int8,
        customer_id -> Int8,
        issued_at -> Timestamptz,
        reason -> Text,
        recorded_at -> Timestamptz,
    }
}

diesel::table! {
    coupon_creation (idempotency_key) {
        idempotency_key -> Text,
        coupon_id -> Int8,
        created_at -> Timestamptz,
        request -> Nullable<Text>,
    }
}

diesel::joinable!(admin_audit -> coupon (coupon_id));
diesel::joinable!(coupon_control -> coupon (coupon_id));
diesel::joinable!(coupon_creation -> coupon (coupon_id));
diesel::joinable!(customer_coupon -> coupon (coupon_id));
diesel::joinable!(revoked_issuance -> coupon (coupon_id));
diesel::joinable!(sold_out_at_write -> coupon (coupon_id));
diesel::allow_tables_to_appear_in_same_query!(
    admin_audit,
    coupon,
    coupon_control,
    coupon_creation,
    coupon_usage_outbox,
    customer_coupon,
    released_order,
    revoked_issuance,
    sold_out_at_write
);
