//! Types shared by coupon-api and coupon-writer. Nothing here does I/O, so every
//! rule in this crate is covered by plain unit tests.

mod batch;
mod event;
mod ids;
pub mod keys;
mod outcome;

pub use batch::{group_by_coupon, CouponBatch};
pub use event::{CouponIssuedEvent, EventDecodeError};
pub use ids::{CouponId, CustomerId, InvalidId};
pub use outcome::Rejection;

/// Topic the API publishes issuance events to (key = coupon id).
pub const ISSUED_TOPIC: &str = "inside.coupon.issued";
/// Topic the writer sends records to that can never be applied.
pub const DLQ_TOPIC: &str = "inside.coupon.issued.dlq";
/// Consumer group of the writer.
pub const WRITER_GROUP: &str = "coupon-service-group";
