//! Helpers for tests that run against the real stack of `make up`.
//!
//! Every test gets names of its own (database, topic, group, Redis prefix), so
//! tests run in parallel and rerun without cleaning up after each other.

pub mod redis_node;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use coupon_infra::settings::{DatabaseSettings, KafkaSettings, RedisSettings};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use secrecy::{ExposeSecret, SecretString};

/// A name no other test (in this or another process) uses: `prefix_<pid>_<n>_<random>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}_{:06x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// Settings pointing at the local stack, honouring the same variables as the services.
pub fn redis_settings() -> RedisSettings {
    RedisSettings { url: env_or("COUPON__REDIS__URL", &RedisSettings::default().url), ..Default::default() }
}

pub fn kafka_settings() -> KafkaSettings {
    KafkaSettings { brokers: env_or("COUPON__KAFKA__BROKERS", &KafkaSettings::default().brokers), ..Default::default() }
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// The URL of the stack's main database; tests only use it to create their own.
fn server_url() -> String {
    env_or("COUPON__DATABASE__URL", DatabaseSettings::default().url.expose_secret())
}

/// A fresh database with the migrations applied, dropped again when the value is dropped.
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let db = Self::create_empty().await;
        coupon_infra::db::migrate(&db.url).await.expect("migrating the test database");
        db
    }

    /// A fresh database without the schema.
    pub async fn create_empty() -> Self {
        let name = unique_name("coupon_test");
        let server = server_url();
        let mut conn =
            AsyncPgConnection::establish(&server).await.expect("connecting to PostgreSQL; is the stack up (make up)?");
        diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("CREATE DATABASE");
        let url = match server.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("database URL without a database name: {server}"),
        };
        Self { name, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings { url: SecretString::from(self.url.clone()), pool_size: 4, ..Default::default() }
    }

    pub async fn connect(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url).await.expect("connecting to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside a runtime; a thread of its own may block on another.
        let name = std::mem::take(&mut self.name);
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = AsyncPgConnection::establish(&server_url()).await {
                    let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Creates a topic of its own for a test.
pub async fn create_topic(prefix: &str, partitions: i32) -> String {
    let name = unique_name(prefix).replace('_', ".");
    coupon_infra::kafka::ensure_topics(&kafka_settings(), &[(&name, partitions)], 1)
        .await
        .expect("creating a test topic; is the stack up (make up)?");
    name
}

/// Polls `probe` until it returns `Some`, failing the test with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_until(what, timeout, || {
        let probed = probe();
        async move { Ok(probed.await) }
    })
    .await
    .unwrap_or_else(|err| panic!("timed out waiting for {err:#}"))
}

/// Polls `probe` until it gives `Some`; after `timeout` fails with `what` and
/// the probe's last error, if any.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last_error = match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => None,
            Err(err) => Some(err),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(match last_error {
                Some(err) => err.context(format!("{what}: not after {timeout:?}")),
                None => anyhow::anyhow!("{what}: not after {timeout:?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The build's folder, `target/<profile>`: tests run from its `deps`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf()
}

/// Where tests keep the logs of the processes they run: `target/<profile>/test-logs`.
pub fn log_dir() -> PathBuf {
    let dir = target_dir().join("test-logs");
    std::fs::create_dir_all(&dir).expect("creating the test log folder");
    dir
}
