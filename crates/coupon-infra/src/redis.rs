//! Redis connections: a pool for occasional commands, and one shared,
//! self-healing multiplexed connection for the issuance hot path.

use std::time::Duration;

use anyhow::Context;
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::settings::RedisSettings;

/// Connections are made lazily: building the pool does not need Redis up.
pub fn pool(settings: &RedisSettings) -> anyhow::Result<Pool> {
    let timeout = Some(Duration::from_millis(settings.timeout_ms));
    let wait = Some(Duration::from_millis(settings.wait_timeout_ms));
    let mut config = deadpool_redis::Config::from_url(settings.url.clone());
    config.pool = Some(PoolConfig {
        max_size: settings.pool_size,
        timeouts: Timeouts { wait, create: timeout, recycle: timeout },
        ..PoolConfig::default()
    });
    config.create_pool(Some(Runtime::Tokio1)).context("building the Redis pool")
}

/// One multiplexed connection that every request shares: concurrent commands
/// are pipelined on one socket, and there is no per-use liveness PING (the
/// pool sends one on every checkout, doubling the round trips of a request
/// that needs one command). It connects lazily and, after a dropped
/// connection, reconnects with a single attempt bounded by `timeout_ms`, so
/// requests fail fast while Redis is away instead of queueing behind retries.
pub fn shared_connection(settings: &RedisSettings) -> anyhow::Result<ConnectionManager> {
    let timeout = Some(Duration::from_millis(settings.timeout_ms));
    let client = redis::Client::open(settings.url.as_str()).context("redis.url")?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
        .set_number_of_retries(0);
    ConnectionManager::new_lazy_with_config(client, config).context("building the shared Redis connection")
}
