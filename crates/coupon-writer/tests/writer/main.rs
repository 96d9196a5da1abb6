//! coupon-writer against the real Kafka and PostgreSQL. Each test has its own
//! database, topics and consumer group, and waits on conditions with deadlines.

mod batches;
mod early_grant;
mod faults;
mod harness;
mod offsets;
mod poison;
mod reissue;
mod sold_out;
