//! coupon-writer: the Kafka consumer that makes issued coupons durable in PostgreSQL.

pub mod config;
pub mod startup;
