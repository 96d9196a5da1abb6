//! coupon-api: the HTTP service that decides issuance requests.
//!
//! One folder per capability (docs/ARCHITECTURE.md maps them):
//! - `http`: routes, the state handlers share, the caller extractors, rate
//!   limits, the request span;
//! - `auth`: which credentials name which caller;
//! - `issuance`: the hot path (`Issuance`), its Redis scripts (`issuer`), the
//!   replica wait before a 201, and the synchronous `baseline` kept for benchmarks;
//! - `delivery`: the Redis `outbox` every issued event waits in until Kafka
//!   acknowledged it, the `publisher`, the `relay` that re-sends what Kafka did
//!   not take, and the `watchlist` of outboxes a replica's relay reads;
//! - `recovery`: rebuilds from PostgreSQL what Redis lost or may have rolled
//!   back, behind fences and the recovery lock;
//! - `redemption`: redeem and release (a PostgreSQL transaction each) and the
//!   `usage_relay` of their events to Kafka;
//! - `promotion`: an operator's controls of a live promotion (pause, resume,
//!   end now, change its terms).
//!
//! Shared: `store` (the coupon keys in Redis and the incarnation record),
//! `catalog` (coupon rows in PostgreSQL), `audit` (the record of every admin
//! action), `config`, `error` (the one mapping
//! to HTTP), `metrics`, `readiness` and `startup`.

pub mod audit;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod delivery;
pub mod error;
pub mod http;
pub mod issuance;
pub mod metrics;
pub mod promotion;
pub mod readiness;
pub mod recovery;
pub mod redemption;
pub mod startup;
pub mod store;
