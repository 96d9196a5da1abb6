//! Redis connections.
//!
//! coupon-api talks to Redis over one shared multiplexed connection
//! ([`SharedRedis`]): concurrent commands are pipelined on one socket, with no
//! per-use liveness PING. After a failure the connection is dropped and the
//! next command makes a new one, with a single attempt bounded by `timeout_ms`,
//! so requests fail fast while Redis is away instead of queueing behind
//! retries. In `sentinel` mode every new connection asks the sentinels for the
//! current primary, so a failover is followed on the next command.
//!
//! Every connection made gets a new generation number. `WAIT` counts the
//! writes of its own connection only, so code that must know that a write and
//! its `WAIT` went over the same connection compares generations.
//!
//! The deadpool pool serves the tools (reconcile, load generator) that read a
//! standalone Redis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use anyhow::Context;
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, RedisResult, ServerErrorKind,
};
use tokio::sync::Mutex;

use crate::settings::{RedisMode, RedisSettings};

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

/// One connection to the primary and the generation it belongs to.
#[derive(Clone)]
pub struct Link {
    pub generation: u64,
    pub conn: MultiplexedConnection,
}

enum Target {
    Standalone(redis::Client),
    /// Locked because resolving the primary needs `&mut`; only while connecting.
    Sentinel(Mutex<SentinelClient>),
}

pub struct SharedRedis {
    target: Target,
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
    current: RwLock<Option<Link>>,
    /// Held while connecting, so a burst of failing requests makes one attempt.
    connecting: Mutex<()>,
    generations: AtomicU64,
}

impl SharedRedis {
    /// Connects lazily: building it does not need Redis up.
    pub fn new(settings: &RedisSettings) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(settings.timeout_ms);
        let target = match settings.mode {
            RedisMode::Standalone => {
                Target::Standalone(redis::Client::open(settings.url.as_str()).context("redis.url")?)
            }
            RedisMode::Sentinel => {
                let sentinels: Vec<&str> = settings.url.split(',').map(str::trim).collect();
                let client =
                    SentinelClient::build(sentinels, settings.master_name.clone(), None, SentinelServerType::Master)
                        .context("redis.url (sentinel URLs)")?;
                Target::Sentinel(Mutex::new(client))
            }
        };
        Ok(Self {
            target,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
            connect_timeout: timeout,
            current: RwLock::new(None),
            connecting: Mutex::new(()),
            generations: AtomicU64::new(0),
        })
    }

    /// The current connection, made now if there is none.
    pub async fn link(&self) -> RedisResult<Link> {
        if let Some(link) = self.current.read().expect("not poisoned").clone() {
            return Ok(link);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(link) = self.current.read().expect("not poisoned").clone() {
            return Ok(link);
        }
        let conn = tokio::time::timeout(self.connect_timeout * 2, self.connect())
            .await
            .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
        let link = Link { generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1, conn };
        *self.current.write().expect("not poisoned") = Some(link.clone());
        Ok(link)
    }

    async fn connect(&self) -> RedisResult<MultiplexedConnection> {
        match &self.target {
            Target::Standalone(client) => client.get_multiplexed_async_connection_with_config(&self.config).await,
            Target::Sentinel(client) => {
                let primary = client.lock().await.async_get_client().await?;
                primary.get_multiplexed_async_connection_with_config(&self.config).await
            }
        }
    }

    /// Looks at the outcome of a command sent over `link`: after an error that
    /// may have broken the connection, or one saying it no longer leads to the
    /// primary, the next command connects anew.
    pub fn observe<T>(&self, link: &Link, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(err) = &result {
            if needs_new_connection(err) {
                let mut current = self.current.write().expect("not poisoned");
                if current.as_ref().is_some_and(|c| c.generation == link.generation) {
                    *current = None;
                }
            }
        }
        result
    }

    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        let link = self.link().await?;
        let result = cmd.query_async(&mut link.conn.clone()).await;
        self.observe(&link, result)
    }

    pub async fn query_pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> RedisResult<T> {
        let link = self.link().await?;
        let result = pipe.query_async(&mut link.conn.clone()).await;
        self.observe(&link, result)
    }
}

fn needs_new_connection(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_unrecoverable_error()
        || err.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}
