//! Types shared by coupon-api and coupon-writer. Nothing here does I/O, so every
//! rule in this crate is covered by plain unit tests.

mod batch;
mod event;
mod ids;
pub mod keys;
mod outcome;
mod redemption;
pub mod shards;
pub mod whole;

pub use batch::{group_by_coupon, CouponBatch};
pub use event::{CouponIssuedEvent, EventDecodeError, REQUEST_ID_HEADER};
pub use ids::{CouponId, CustomerId, InvalidId};
pub use outcome::Rejection;
pub use redemption::{
    is_valid_order_id, CouponUsageEvent, Discount, HoldingStatus, InvalidDiscount, UsageKind, UseRejection, MAX_AMOUNT,
    MAX_ORDER_ID_LEN,
};

/// Topic the API publishes issuance events to (key = coupon id).
pub const ISSUED_TOPIC: &str = "inside.coupon.issued";
/// Topic the writer sends records to that can never be applied.
pub const DLQ_TOPIC: &str = "inside.coupon.issued.dlq";
/// Topic of coupon uses (key = coupon id).
pub const USED_TOPIC: &str = "inside.coupon.used";
/// Topic of coupon releases (key = coupon id).
pub const RELEASED_TOPIC: &str = "inside.coupon.released";
/// Topic of revocations of held coupons (key = coupon id).
pub const REVOKED_TOPIC: &str = "inside.coupon.revoked";
/// Consumer group of the writer.
pub const WRITER_GROUP: &str = "coupon-service-group";
