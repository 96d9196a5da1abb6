//! coupon-api: the HTTP service that decides issuance requests.
//!
//! Request path: `routes::issue` → `issuance` (Redis decision by `issuer`,
//! event hand-off by `publisher`) → 201. The synchronous `baseline` the design
//! replaces is a mode of its own, for benchmarks. Around it: the `outbox` in Redis that keeps
//! every issued event until Kafka acknowledged it, the `relay` that re-sends
//! what was not (reading only the outboxes on its `watchlist`), `durability`, which waits for Redis replicas before the 201,
//! and `recovery`, which rebuilds from PostgreSQL (`catalog`) what Redis lost
//! or may have rolled back, behind a fence.
//!
//! Spending: `routes::redemption` → `redemption` (one PostgreSQL transaction
//! per redeem or release, its event in a PostgreSQL outbox) and its `usage_relay` to
//! Kafka.

pub mod auth;
pub mod baseline;
pub mod catalog;
pub mod config;
pub mod durability;
pub mod error;
pub mod issuance;
pub mod issuer;
pub mod limits;
pub mod metrics;
pub mod outbox;
pub mod publisher;
pub mod readiness;
pub mod recovery;
pub mod redemption;
pub mod relay;
pub mod request_span;
pub mod routes;
pub mod startup;
pub mod state;
pub mod watchlist;
