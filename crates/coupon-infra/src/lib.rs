//! Infrastructure both services share, written once: settings loading, logging,
//! the shutdown signal, the PostgreSQL schema/migrations/pool and Kafka setup.

pub mod db;
pub mod kafka;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
