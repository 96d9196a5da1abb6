//! Infrastructure both services share, written once: settings loading, logging,
//! the shutdown signal, the Redis pool, the PostgreSQL schema/migrations/pool,
//! Kafka setup and Prometheus metrics registered as they are made.

pub mod auth;
pub mod backoff;
pub mod db;
pub mod kafka;
pub mod metrics;
pub mod preflight;
pub mod redis;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
