//! A spike load generator for coupon-api, used by `make demo`, the benchmark
//! and the end-to-end suite. It records every answer (status and latency), so
//! callers can check the promises, not only measure speed.

pub mod chart;
pub mod client;
pub mod cpu;
pub mod dbstats;
pub mod durable;
pub mod latency;
pub mod many;
pub mod page;
pub mod promises;
pub mod record;
pub mod report;
pub mod soak;
pub mod soak_report;
pub mod spike;
pub mod table;
pub mod trickle;
