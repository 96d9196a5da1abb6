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
    }
}

diesel::table! {
    customer_coupon (id) {
        id -> Int8,
        coupon_id -> Int8,
        customer_id -> Int8,
        issued_at -> Timestamptz,
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
    }
}

diesel::joinable!(coupon_creation -> coupon (coupon_id));
diesel::joinable!(customer_coupon -> coupon (coupon_id));
diesel::joinable!(sold_out_at_write -> coupon (coupon_id));
diesel::allow_tables_to_appear_in_same_query!(coupon, coupon_creation, customer_coupon, sold_out_at_write);
