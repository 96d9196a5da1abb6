//! Helpers for tests that run against the real stack of `make up`.
//!
//! Every test gets names of its own (database, topic, group, Redis prefix), so
//! tests run in parallel; each is removed again when its value is dropped, so
//! a run leaves nothing behind.

pub mod clock;
pub mod netfault;
pub mod redis_node;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use coupon_infra::settings::{DatabaseSettings, KafkaSettings, RedisMode, RedisSettings};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
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

/// The local stack's broker listener for a proxy (scripts/stack.sh's
/// `KAFKA_PROXIED_PORT`), and the port it advertises for it
/// (`KAFKA_PROXIED_AT`), where the proxy listens: clients that start there
/// stay behind the proxy.
pub fn kafka_proxied_ports() -> (u16, u16) {
    let port = |name: &str, default: u16| env_or(name, &default.to_string()).parse().unwrap_or(default);
    (port("KAFKA_PROXIED_PORT", 9096), port("KAFKA_PROXIED_AT", 9097))
}

/// [`kafka_proxied_ports`] of each of the local cluster stack's brokers
/// (scripts/stack-cluster.sh: node N listens on 9N96, advertised as 9N97).
pub fn cluster_kafka_proxied_ports() -> [(u16, u16); 3] {
    [(9196, 9197), (9296, 9297), (9396, 9397)]
}

/// Seed nodes of the local cluster stack's Redis Cluster (`make up-cluster`,
/// masters on 7001-7003).
pub fn cluster_redis_settings() -> RedisSettings {
    RedisSettings {
        mode: RedisMode::Cluster,
        url: "redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003".into(),
        ..Default::default()
    }
}

/// The local cluster stack's three brokers, and topics replicated as there:
/// three replicas, two in sync for an `acks=all` write.
pub fn cluster_kafka_settings() -> KafkaSettings {
    KafkaSettings {
        brokers: "127.0.0.1:9192,127.0.0.1:9292,127.0.0.1:9392".into(),
        replication_factor: 3,
        min_insync_replicas: Some(2),
        ..Default::default()
    }
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
    /// The URL of the server's main database, where this one is dropped from.
    server: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        Self::create_on(&server_url()).await
    }

    /// On the server of `server` (a URL of one of its databases).
    pub async fn create_on(server: &str) -> Self {
        let db = Self::create_empty_on(server).await;
        coupon_infra::db::migrate(&db.url).await.expect("migrating the test database");
        db
    }

    /// A fresh database without the schema.
    pub async fn create_empty() -> Self {
        Self::create_empty_on(&server_url()).await
    }

    async fn create_empty_on(server: &str) -> Self {
        let name = unique_name("coupon_test");
        let mut conn =
            coupon_infra::db::connect(server).await.expect("connecting to PostgreSQL; is the stack up (make up)?");
        diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("CREATE DATABASE");
        // The same server and parameters (TLS files among them), another database.
        let mut url = url::Url::parse(server).unwrap_or_else(|err| panic!("the database URL does not parse: {err}"));
        url.set_path(&format!("/{name}"));
        Self { name, url: url.to_string(), server: server.to_string() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings { url: SecretString::from(self.url.clone()), pool_size: 4, ..Default::default() }
    }

    pub async fn connect(&self) -> AsyncPgConnection {
        coupon_infra::db::connect(&self.url).await.expect("connecting to the test database")
    }

    /// Makes the database unreachable for new and existing connections, as a
    /// stopped server would be, without touching the server other tests share;
    /// or reachable again.
    pub async fn set_reachable(&self, reachable: bool) {
        let name = &self.name;
        let mut admin = coupon_infra::db::connect(&self.server).await.expect("connecting to PostgreSQL");
        diesel::sql_query(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {reachable}"))
            .execute(&mut admin)
            .await
            .expect("ALTER DATABASE");
        if !reachable {
            diesel::sql_query(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ))
            .execute(&mut admin)
            .await
            .expect("ending the database's sessions");
        }
    }
}

impl Drop for TestDatabase {
    /// Tried again for a while: under a full test run the server may refuse
    /// the connection (every slot taken) or not end the database's sessions
    /// within the five seconds `FORCE` waits, and once let go of, nothing
    /// else removes the database.
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        let server = std::mem::take(&mut self.server);
        on_a_runtime_of_its_own(async move {
            let dropped = poll_until(&format!("dropping the test database {name}"), DROP_TIMEOUT, || async {
                let mut conn = coupon_infra::db::connect(&server).await?;
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await?;
                Ok(Some(()))
            })
            .await;
            if let Err(err) = dropped {
                eprintln!("left behind: {err:#}");
            }
        });
    }
}

/// How long a test database's removal is tried.
const DROP_TIMEOUT: Duration = Duration::from_secs(30);

/// A topic of a test's own, deleted again when the value is dropped.
pub struct TestTopic {
    name: String,
    kafka: KafkaSettings,
}

impl TestTopic {
    /// On the stack's broker.
    pub async fn create(prefix: &str, partitions: i32) -> Self {
        Self::create_on(&kafka_settings(), prefix, partitions).await
    }

    /// On the brokers of `kafka`, replicated as its settings say.
    pub async fn create_on(kafka: &KafkaSettings, prefix: &str, partitions: i32) -> Self {
        let topic = Self::reserve_on(kafka, prefix);
        topic.create_now(partitions).await;
        topic
    }

    /// A name on the stack's broker for a topic that does not exist yet (the
    /// brokers create none on their own): `create_now` makes it later. Deleted
    /// when dropped either way.
    pub fn reserve(prefix: &str) -> Self {
        Self::reserve_on(&kafka_settings(), prefix)
    }

    fn reserve_on(kafka: &KafkaSettings, prefix: &str) -> Self {
        Self { name: unique_name(prefix).replace('_', "."), kafka: kafka.clone() }
    }

    pub async fn create_now(&self, partitions: i32) {
        coupon_infra::kafka::ensure_topics(&self.kafka, &[(&self.name, partitions)])
            .await
            .unwrap_or_else(|err| panic!("creating a test topic on {}; is the stack up? {err:#}", self.kafka.brokers));
    }
}

impl std::ops::Deref for TestTopic {
    type Target = str;

    fn deref(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for TestTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        let kafka = self.kafka.clone();
        on_a_runtime_of_its_own(async move {
            let Ok(admin) = coupon_infra::kafka::client_config(&kafka, "coupon-test-cleanup")
                .create::<AdminClient<DefaultClientContext>>()
            else {
                return;
            };
            let _ = admin.delete_topics(&[&name], &AdminOptions::new()).await;
        });
    }
}

/// A Redis key prefix of a test's own; its keys are deleted when the value
/// is dropped.
pub struct TestPrefix {
    prefix: String,
    redis: RedisSettings,
}

impl TestPrefix {
    /// In the stack's Redis.
    pub fn new(name: &str) -> Self {
        Self::on(name, redis_settings())
    }

    /// In the Redis (standalone server or cluster) that `redis` names.
    pub fn on(name: &str, redis: RedisSettings) -> Self {
        Self { prefix: format!("{}:", unique_name(name)), redis }
    }

    /// No prefix, in a Redis that is the test's alone: every key of it is
    /// deleted when the value is dropped.
    pub fn whole(redis: RedisSettings) -> Self {
        Self { prefix: String::new(), redis }
    }
}

impl std::ops::Deref for TestPrefix {
    type Target = str;

    fn deref(&self) -> &str {
        &self.prefix
    }
}

impl std::fmt::Display for TestPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.prefix)
    }
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.prefix);
        let redis = self.redis.clone();
        on_a_runtime_of_its_own(async move {
            let servers = match redis.mode {
                // Each master holds its slots' keys; a replica's follow.
                RedisMode::Cluster => {
                    let Some(seed) = redis.url.split(',').next() else { return };
                    let Ok(masters) = redis_node::cluster_masters(seed.trim()).await else { return };
                    masters
                }
                _ => vec![redis.url.clone()],
            };
            for server in servers {
                // One server at a time, with the settings' credentials and TLS.
                let node = RedisSettings { mode: RedisMode::Standalone, url: server, ..redis.clone() };
                let _ = unlink_matching(&node, &pattern).await;
            }
        });
    }
}

/// Deletes the keys of one server that match `pattern`, one command per key
/// (a cluster node refuses a command whose keys span slots).
async fn unlink_matching(node: &RedisSettings, pattern: &str) -> anyhow::Result<()> {
    let redis = coupon_infra::redis::SharedRedis::new(node)?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) =
            redis.query(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1_000)).await?;
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("UNLINK").arg(key).ignore();
        }
        redis.query_pipe::<()>(&pipe).await?;
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Runs a clean-up from `Drop`, which runs inside a runtime: a thread of its
/// own may block on another.
fn on_a_runtime_of_its_own(cleanup: impl Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            runtime.block_on(cleanup);
        }
    })
    .join();
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
