//! coupon-api: the HTTP service that decides issuance requests.
//!
//! Request path: `routes::issue` → `issue` (Redis decision by `issuer`, event
//! hand-off by `publisher`) → 201. Around it: the `outbox` in Redis that keeps
//! every issued event until Kafka acknowledged it, the `relay` that re-sends
//! what was not, and `prime`, which keeps Redis in step with PostgreSQL
//! (`catalog`).

pub mod catalog;
pub mod config;
pub mod error;
pub mod issue;
pub mod issuer;
pub mod metrics;
pub mod outbox;
pub mod prime;
pub mod publisher;
pub mod relay;
pub mod routes;
pub mod startup;
pub mod state;
