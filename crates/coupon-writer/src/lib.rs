//! coupon-writer: the Kafka consumer that makes issued coupons durable in PostgreSQL.

pub mod apply;
pub mod batch;
pub mod config;
pub mod consumer;
pub mod dlq;
pub mod error;
pub mod http;
pub mod lag;
pub mod metrics;
pub mod offsets;
pub mod startup;
pub mod statements;
