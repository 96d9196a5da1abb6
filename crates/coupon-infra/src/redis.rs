//! The Redis connection pool.

use std::time::Duration;

use anyhow::Context;
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};

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
