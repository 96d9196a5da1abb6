//! One scenario's world: its own database, topics, consumer group and Redis
//! prefix, the services as processes, and the checks at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use coupon_domain::keys::{CouponKeys, SystemKeys};
use coupon_domain::shards::CouponShard;
use coupon_domain::CouponUsageEvent;
use coupon_infra::auth::Signer;
use coupon_infra::db::PgPool;
use coupon_infra::redis::SharedRedis;
use coupon_infra::settings::{KafkaSettings, RedisMode, RedisSettings};
use coupon_loadgen::client::{ApiClient, CustomerAuth};
use coupon_loadgen::spike::{self, Spike};
use coupon_testkit::netfault::Side;
use coupon_testkit::redis_node;
use coupon_testkit::{
    cluster_kafka_settings, cluster_redis_settings, free_port, kafka_settings, redis_settings, unique_name,
    TestDatabase, TestPrefix, TestTopic,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::invariants::{self, Observed, Verdict};
use crate::process::{bin_dir, log_dir, wait_healthy, Service};
use crate::report::FaultCost;
use crate::secure::SecureStack;

pub const ADMIN_TOKEN: &str = "e2e-admin-token-of-at-least-32-bytes";
/// The services verify customer tokens with it; the load generator signs them.
pub const JWT_SECRET: &str = "e2e-jwt-secret-of-at-least-32-bytes";
/// The audience the services require and the load generator's tokens carry.
pub const AUDIENCE: &str = "coupon-api-e2e";

/// The Redis a world's services use and its checks read.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One server: the stack's, unless the scenario brings its own.
    Standalone { url: String },
    /// Whichever server these sentinels name as the primary `master_name`.
    Sentinel { sentinels: Vec<String>, master_name: String },
    /// A Redis Cluster, found through these seed nodes.
    Cluster { seeds: Vec<String> },
    /// One server reached with credentials and TLS (the secure stack's); the
    /// services get those from the world's overrides.
    Secured(Box<RedisSettings>),
}

impl RedisTarget {
    /// The services' settings for it, as the checks use them too.
    pub fn settings(&self) -> RedisSettings {
        match self {
            RedisTarget::Standalone { url } => RedisSettings { url: url.clone(), ..Default::default() },
            RedisTarget::Sentinel { sentinels, master_name } => RedisSettings {
                mode: RedisMode::Sentinel,
                url: sentinels.join(","),
                master_name: master_name.clone(),
                ..Default::default()
            },
            RedisTarget::Cluster { seeds } => {
                RedisSettings { mode: RedisMode::Cluster, url: seeds.join(","), ..Default::default() }
            }
            RedisTarget::Secured(settings) => (**settings).clone(),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let settings = self.settings();
        let mode = match settings.mode {
            RedisMode::Standalone => "standalone",
            RedisMode::Sentinel => "sentinel",
            RedisMode::Cluster => "cluster",
        };
        vec![
            ("COUPON__REDIS__MODE", mode.to_string()),
            ("COUPON__REDIS__URL", settings.url),
            ("COUPON__REDIS__MASTER_NAME", settings.master_name),
        ]
    }
}

/// Where a world runs: the single-node stack (`make up`) or the cluster
/// stack (`make up-cluster`: Redis Cluster, three brokers), with this many
/// coupon-api replicas sharing the load.
#[derive(Debug, Clone, Copy)]
pub enum Stack {
    Single,
    /// The single-node stack with this many coupon-api replicas.
    SingleReplicated {
        api_replicas: usize,
    },
    Cluster {
        api_replicas: usize,
    },
}

pub struct World {
    pub name: String,
    /// Made once: the drain loop reads the stores every 200 ms. Declared
    /// before `db`, so its connections close before the database is dropped.
    pool: PgPool,
    /// The stack's Redis unless the scenario sets its own before starting services.
    pub redis: RedisTarget,
    pub db: TestDatabase,
    pub topic: TestTopic,
    pub dlq_topic: TestTopic,
    /// Where coupon-api publishes uses and releases.
    pub used_topic: TestTopic,
    pub released_topic: TestTopic,
    pub group: String,
    pub key_prefix: TestPrefix,
    kafka: KafkaSettings,
    /// One port per coupon-api replica.
    api_ports: Vec<u16>,
    /// Each replica's management port (`/metrics`, `/health/*`).
    management_ports: Vec<u16>,
    /// Spreads requests over the replicas, as a load balancer would.
    pub api: ApiClient,
    /// Extra settings for every service of this world.
    pub overrides: BTreeMap<String, String>,
    /// And on top of those, coupon-reconcile's.
    reconcile_overrides: BTreeMap<String, String>,
    /// coupon-api's clock this far from the real one (a `faketime` offset,
    /// e.g. `+5` seconds); the other processes keep the real clock.
    pub api_clock_offset: Option<String>,
    /// When the spike started and when each injected fault began and ended,
    /// so the report can tell how much was issued while a fault was in effect.
    spike_started: Mutex<Option<Instant>>,
    faults: Mutex<Vec<(Instant, Instant)>>,
}

impl World {
    /// On the single-node stack, with one coupon-api.
    pub async fn new(name: &str) -> Self {
        Self::on(name, Stack::Single).await
    }

    pub async fn on(name: &str, stack: Stack) -> Self {
        Self::with_database(name, stack, TestDatabase::create().await).await
    }

    /// On the single-node stack, with a database that has no schema yet and
    /// a Redis prefix and topics no service has used: what a new user's first
    /// `make run` meets.
    pub async fn from_nothing(name: &str) -> Self {
        Self::with_database(name, Stack::Single, TestDatabase::create_empty().await).await
    }

    async fn with_database(name: &str, stack: Stack, db: TestDatabase) -> Self {
        let (redis, kafka, replicas) = match stack {
            Stack::Single => (redis_settings(), kafka_settings(), 1),
            Stack::SingleReplicated { api_replicas } => (redis_settings(), kafka_settings(), api_replicas),
            Stack::Cluster { api_replicas } => (cluster_redis_settings(), cluster_kafka_settings(), api_replicas),
        };
        let target = match redis.mode {
            RedisMode::Cluster => RedisTarget::Cluster { seeds: redis.url.split(',').map(str::to_string).collect() },
            _ => RedisTarget::Standalone { url: redis.url.clone() },
        };
        let key_prefix = TestPrefix::on("e2e", redis);
        Self::assemble(name, db, kafka, target, key_prefix, replicas).await
    }

    /// On the secure stack (`make up-secure`), with the variables its
    /// `env` exports (and `env.reconcile` for coupon-reconcile): TLS and
    /// credentials toward all three stores. Its Redis is the world's alone
    /// (emptied first), so keys go unprefixed, as the ACL users' key
    /// patterns expect.
    pub async fn secure(name: &str) -> anyhow::Result<Self> {
        let stack = SecureStack::load()?;
        stack.empty_redis().await?;
        let server = secrecy::ExposeSecret::expose_secret(&stack.clients.database.url).to_string();
        let db = TestDatabase::create_on(&server).await;
        let target = RedisTarget::Secured(Box::new(stack.clients.redis.clone()));
        let key_prefix = TestPrefix::whole(stack.admin_redis()?);
        let mut world = Self::assemble(name, db, stack.clients.kafka.clone(), target, key_prefix, 1).await;
        world.overrides = stack.env;
        // The world's own database, not the stack's.
        world.overrides.remove("COUPON__DATABASE__URL_FILE");
        world.reconcile_overrides = stack.reconcile_env;
        Ok(world)
    }

    async fn assemble(
        name: &str,
        db: TestDatabase,
        kafka: KafkaSettings,
        redis: RedisTarget,
        key_prefix: TestPrefix,
        replicas: usize,
    ) -> Self {
        let api_ports: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
        let management_ports: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
        Self {
            name: name.to_string(),
            pool: coupon_infra::db::pool(&db.settings()).expect("a database pool"),
            redis,
            db,
            topic: TestTopic::create_on(&kafka, "e2e", 6).await,
            dlq_topic: TestTopic::create_on(&kafka, "e2e.dlq", 1).await,
            used_topic: TestTopic::create_on(&kafka, "e2e.used", 1).await,
            released_topic: TestTopic::create_on(&kafka, "e2e.released", 1).await,
            group: unique_name("e2e-group"),
            key_prefix,
            kafka,
            api: api_client(&api_ports, &management_ports),
            api_ports,
            management_ports,
            overrides: BTreeMap::new(),
            reconcile_overrides: BTreeMap::new(),
            api_clock_offset: None,
            spike_started: Mutex::default(),
            faults: Mutex::default(),
        }
    }

    fn env(&self) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = [
            ("COUPON__DATABASE__URL", self.db.url().to_string()),
            ("COUPON__REDIS__KEY_PREFIX", self.key_prefix.to_string()),
            ("COUPON__KAFKA__BROKERS", self.kafka.brokers.clone()),
            ("COUPON__KAFKA__TOPIC", self.topic.to_string()),
            ("COUPON__KAFKA__DLQ_TOPIC", self.dlq_topic.to_string()),
            ("COUPON__KAFKA__USED_TOPIC", self.used_topic.to_string()),
            ("COUPON__KAFKA__RELEASED_TOPIC", self.released_topic.to_string()),
            // Never published to: no scenario revokes.
            ("COUPON__KAFKA__REVOKED_TOPIC", format!("{}.revoked", self.topic)),
            ("COUPON__KAFKA__CREATE_TOPICS", "false".to_string()),
            ("COUPON__WRITER__GROUP", self.group.clone()),
            ("COUPON__ADMIN__TOKEN", ADMIN_TOKEN.to_string()),
            ("COUPON__AUTH__JWT_SECRET", JWT_SECRET.to_string()),
            ("COUPON__AUTH__JWT_AUDIENCE", AUDIENCE.to_string()),
            // All load comes from one address, and customers retry while a
            // coupon is fenced: the abuse limits have their own tests.
            ("COUPON__LIMITS__PER_ADDRESS_PER_SECOND", "0".to_string()),
            ("COUPON__LIMITS__PER_CUSTOMER_PER_SECOND", "0".to_string()),
            // The relay takes over from a dead API process sooner than in production.
            ("COUPON__RELAY__MIN_AGE_MS", "2000".to_string()),
            ("COUPON__RELAY__REPLICA_TTL_MS", "3000".to_string()),
        ]
        .into_iter()
        .chain(self.redis.env())
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(self.overrides.clone());
        env
    }

    /// A client of replica `replica` alone, where [`Self::api`] spreads
    /// requests over all of them.
    pub fn replica_api(&self, replica: usize) -> ApiClient {
        api_client(&self.api_ports[replica..=replica], &self.management_ports[replica..=replica])
    }

    /// The replicas' base URLs, comma-separated (coupon-loadgen's `--api`).
    pub fn api_urls(&self) -> String {
        api_urls(&self.api_ports)
    }

    /// The replicas' management URLs (`/metrics`, `/health/*`), comma-separated.
    pub fn management_urls(&self) -> String {
        api_urls(&self.management_ports)
    }

    /// Starts the (first) coupon-api and waits until it is ready.
    pub async fn start_api(&self) -> Service {
        self.start_api_replica(0).await
    }

    /// Starts coupon-api replica `replica` on its port and waits until it is ready.
    pub async fn start_api_replica(&self, replica: usize) -> Service {
        self.start_api_replica_in(replica, None).await
    }

    /// [`Self::start_api_replica`], inside `side` when one is given.
    pub async fn start_api_replica_in(&self, replica: usize, side: Option<&Side>) -> Service {
        let (port, management) = (self.api_ports[replica], self.management_ports[replica]);
        let mut env = self.env();
        env.insert("COUPON__HTTP__ADDR".into(), format!("127.0.0.1:{port}"));
        env.insert("COUPON__HTTP__MANAGEMENT_ADDR".into(), format!("127.0.0.1:{management}"));
        let name = format!("{}-api{replica}", self.name);
        let api = Service::start_in("coupon-api", &name, &env, self.api_clock_offset.as_deref(), side)
            .expect("starting coupon-api");
        wait_healthy(&format!("{}/health/ready", api_url(management)), Duration::from_secs(60))
            .await
            .expect("coupon-api ready");
        api
    }

    /// Starts every coupon-api replica.
    pub async fn start_apis(&self) -> Vec<Service> {
        let mut apis = Vec::new();
        for replica in 0..self.api_ports.len() {
            apis.push(self.start_api_replica(replica).await);
        }
        apis
    }

    pub async fn start_writer(&self, n: usize) -> Service {
        self.start_writer_watched(n).await.0
    }

    /// Starts writer `n` and returns it with the URL of its `/metrics`.
    pub async fn start_writer_watched(&self, n: usize) -> (Service, String) {
        let port = free_port();
        let mut env = self.env();
        env.insert("COUPON__WRITER__HTTP__ADDR".into(), format!("127.0.0.1:{port}"));
        let writer =
            Service::start("coupon-writer", &format!("{}-writer{n}", self.name), &env).expect("starting coupon-writer");
        wait_healthy(&format!("http://127.0.0.1:{port}/health/live"), Duration::from_secs(60))
            .await
            .expect("coupon-writer live");
        (writer, format!("http://127.0.0.1:{port}/metrics"))
    }

    /// Starts `binary` (coupon-api or coupon-writer) with this world's
    /// settings and `extra` environment, without waiting for it to be ready.
    pub fn spawn(&self, binary: &str, extra: &[(&str, &str)]) -> Service {
        self.spawn_without(binary, &[], extra)
    }

    /// [`Self::spawn`], with the world's variables named in `unset` left out.
    pub fn spawn_without(&self, binary: &str, unset: &[&str], extra: &[(&str, &str)]) -> Service {
        let mut env = self.env();
        env.retain(|key, _| !unset.contains(&key.as_str()));
        let addrs: &[&str] = match binary {
            "coupon-writer" => &["COUPON__WRITER__HTTP__ADDR"],
            _ => &["COUPON__HTTP__ADDR", "COUPON__HTTP__MANAGEMENT_ADDR"],
        };
        for addr in addrs {
            env.insert(addr.to_string(), format!("127.0.0.1:{}", free_port()));
        }
        env.extend(extra.iter().map(|(key, value)| (key.to_string(), value.to_string())));
        // A log of its own: a scenario may run several at once.
        let name = unique_name(&format!("{}-{binary}", self.name));
        Service::start(binary, &name, &env).unwrap_or_else(|err| panic!("{err:#}"))
    }

    /// One coupon of `stock` spread over `shards` Redis shards.
    pub async fn create_sharded_coupon(&self, stock: u64, shards: u16) -> i64 {
        self.api.create_sharded_coupon(&self.name, stock, shards).await.expect("creating a sharded coupon")
    }

    pub async fn create_coupons(&self, count: usize, stock: u64) -> Vec<i64> {
        let mut ids = Vec::new();
        for i in 0..count {
            ids.push(self.api.create_coupon(&format!("{} #{i}", self.name), stock).await.expect("creating a coupon"));
        }
        ids
    }

    /// The port of the Redis Cluster master that holds `coupon`'s keys now,
    /// as the first seed node that answers sees it.
    pub async fn master_port(&self, coupon: i64) -> anyhow::Result<u16> {
        let keys = CouponKeys::new(&self.key_prefix, coupon_domain::CouponId::new(coupon)?);
        self.master_port_of(&keys.stock).await
    }

    /// The port of the Redis Cluster master that holds shard `shard` of `coupon`.
    pub async fn shard_master_port(&self, coupon: i64, shard: u16) -> anyhow::Result<u16> {
        let shard = CouponShard { coupon: coupon_domain::CouponId::new(coupon)?, shard };
        self.master_port_of(&CouponKeys::of_shard(&self.key_prefix, shard).stock).await
    }

    /// The port of the master that holds the keys the system shares over its
    /// coupons (the incarnation record among them).
    pub async fn system_master_port(&self) -> anyhow::Result<u16> {
        self.master_port_of(&SystemKeys::new(&self.key_prefix).index()).await
    }

    async fn master_port_of(&self, key: &str) -> anyhow::Result<u16> {
        let RedisTarget::Cluster { seeds } = &self.redis else { bail!("not a Redis Cluster: {:?}", self.redis) };
        let mut last_error = anyhow::anyhow!("no seed node");
        for seed in seeds {
            match redis_node::master_port_of(seed, key).await {
                Ok(port) => return Ok(port),
                Err(err) => last_error = err,
            }
        }
        Err(last_error)
    }

    /// Fires the spike; `progress` counts answers so faults can be timed by it.
    pub async fn spike(&self, coupons: &[i64], customers: u64, progress: Arc<AtomicU64>) -> Spike {
        let plan = spike::plan(coupons, customers, 1, 0.1);
        // Until the spike reports when it started sending, for waves begun meanwhile.
        *self.spike_started.lock().expect("not poisoned") = Some(Instant::now());
        let spike = spike::run(&self.api, plan, 128, progress).await;
        *self.spike_started.lock().expect("not poisoned") = Some(spike.started);
        spike
    }

    /// The spike, with `fault` started (and timed as the fault) once `after`
    /// of its requests are answered; `fault` gets the spike's progress counter.
    pub async fn spike_with_fault<T, F>(
        &self,
        coupons: &[i64],
        customers: u64,
        after: u64,
        fault: impl FnOnce(Arc<AtomicU64>) -> F,
    ) -> (Spike, T)
    where
        F: Future<Output = T>,
    {
        let progress = Arc::new(AtomicU64::new(0));
        let fault = fault(progress.clone());
        let faults = async {
            reached(&progress, after).await;
            self.fault(fault).await
        };
        tokio::join!(self.spike(coupons, customers, progress.clone()), faults)
    }

    /// After a fault: `customers` new customers (ids from `first_customer`)
    /// ask, and those answered `503 UNAVAILABLE` (nothing changed: Redis is
    /// away or the coupon fenced) ask again, until none is or `timeout` ends.
    /// So issuance from the rebuilt state is exercised, not only the fence.
    /// Every answer is returned, the 503s too.
    pub async fn wave_until_served(
        &self,
        coupons: &[i64],
        first_customer: i64,
        customers: u64,
        timeout: Duration,
    ) -> anyhow::Result<Spike> {
        self.wave_until_served_by(&self.api, coupons, first_customer, customers, timeout).await
    }

    /// [`Self::wave_until_served`], the requests sent through `api`.
    pub async fn wave_until_served_by(
        &self,
        api: &ApiClient,
        coupons: &[i64],
        first_customer: i64,
        customers: u64,
        timeout: Duration,
    ) -> anyhow::Result<Spike> {
        let started = Instant::now();
        let mut plan = spike::plan(coupons, customers, first_customer, 0.0);
        let mut waves: Option<Spike> = None;
        let spike_started = (*self.spike_started.lock().expect("not poisoned")).unwrap_or(started);
        loop {
            let mut wave = spike::run(api, plan, 128, Arc::default()).await;
            let wave_started = wave.started;
            // On the first spike's clock, so the report's fault timings span both.
            for answer in &mut wave.answers {
                answer.at += wave_started.duration_since(spike_started);
            }
            plan = wave
                .answers
                .iter()
                .filter(|a| a.status == Some(503) && a.code.as_deref() == Some("UNAVAILABLE"))
                .map(|a| a.attempt)
                .collect();
            match &mut waves {
                Some(all) => {
                    all.answers.extend(wave.answers);
                    all.elapsed = started.elapsed();
                }
                None => waves = Some(wave),
            }
            if plan.is_empty() {
                return Ok(waves.expect("one wave ran"));
            }
            if started.elapsed() > timeout {
                bail!("{} customers still answered 503 after {timeout:?}", plan.len());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// After Redis rolled back near `coupon`'s end (`ends`, by Redis's
    /// clock): `customers` new customers (ids from `first_customer`) ask until
    /// answered and none is issued, for nothing may be sold again from the
    /// rolled-back state; once the end passed, one more is told `EXPIRED`.
    /// Their answers join `answers`.
    pub async fn nothing_sold_again_then_expired(
        &self,
        coupon: i64,
        first_customer: i64,
        customers: u64,
        ends: Instant,
        answers: &mut Spike,
    ) {
        let after = self
            .wave_until_served(&[coupon], first_customer, customers, Duration::from_secs(120))
            .await
            .expect("answers after the rollback");
        eprintln!("after the rollback: {:?}", after.by_outcome());
        assert_eq!(after.issued().count(), 0, "nothing is sold again from the rolled-back state");
        answers.answers.extend(after.answers);

        tokio::time::sleep_until((ends + Duration::from_secs(1)).into()).await;
        let late = self
            .wave_until_served(&[coupon], first_customer + customers as i64, 1, Duration::from_secs(60))
            .await
            .expect("an answer after the end");
        let last = late.answers.last().and_then(|a| a.code.clone());
        assert_eq!(last.as_deref(), Some("EXPIRED"), "a customer after the end is told EXPIRED");
        answers.answers.extend(late.answers);
    }

    /// Injects one fault (from its first step until it is over, e.g. a
    /// replacement process is ready) and records when it was in effect.
    pub async fn fault<T>(&self, fault: impl Future<Output = T>) -> T {
        let began = Instant::now();
        let outcome = fault.await;
        self.faults.lock().expect("not poisoned").push((began, Instant::now()));
        outcome
    }

    /// Successful issuances answered while a fault was in effect, and after the first fault began.
    fn issued_under_faults(&self, spike: &Spike) -> Option<(usize, usize)> {
        let started = (*self.spike_started.lock().expect("not poisoned"))?;
        let faults = self.faults.lock().expect("not poisoned").clone();
        let first = faults.iter().map(|(began, _)| *began).min()?;
        let answered: Vec<Instant> = spike.issued().map(|a| started + a.at).collect();
        let during = answered.iter().filter(|at| faults.iter().any(|(b, e)| b <= *at && *at <= e)).count();
        Some((during, answered.iter().filter(|at| **at >= first).count()))
    }

    /// Waits until every issued coupon is in PostgreSQL and the outbox is empty,
    /// then reads what each store holds. Returns the time it took.
    pub async fn drain(&self, coupon: i64, stock: i64, timeout: Duration) -> anyhow::Result<(Observed, Duration)> {
        let started = Instant::now();
        // One client for every poll; like the services' it reconnects, and
        // follows a failover.
        let redis = SharedRedis::new(&self.redis.settings())?;
        loop {
            // A component restarted by the scenario may still be electing
            // leaders or recovering; only the deadline makes an error final.
            let state = match self.observe(&redis, coupon, stock).await {
                Ok(mut seen) if seen.outbox == 0 && seen.db_holders == seen.redis_issued => {
                    // Read once drained: a Kafka client per poll would be waste.
                    match self.dlq_records() {
                        Ok(records) => {
                            seen.dlq_records = records;
                            return Ok((seen, started.elapsed()));
                        }
                        Err(err) => format!("dead-letter topic not readable: {err:#}"),
                    }
                }
                Ok(seen) => {
                    format!("redis {} issued, {} rows, outbox {}", seen.redis_issued.len(), seen.db_rows, seen.outbox)
                }
                Err(err) => format!("stores not readable: {err:#}"),
            };
            if started.elapsed() > timeout {
                bail!("coupon {coupon} not drained after {timeout:?}: {state}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What Redis (the current primary, or the coupon's master) and
    /// PostgreSQL hold for the coupon; `dlq_records` is left 0.
    async fn observe(&self, redis: &SharedRedis, coupon: i64, stock: i64) -> anyhow::Result<Observed> {
        // A sharded coupon's: every shard's holders, stock and outbox together.
        let id = coupon_domain::CouponId::new(coupon)?;
        let first = CouponKeys::new(&self.key_prefix, id);
        let shards: Option<u16> = redis.query(redis::cmd("HGET").arg(&first.meta).arg("shards")).await?;
        let (mut redis_issued, mut redis_stock, mut outbox) = (BTreeSet::new(), 0, 0);
        for shard in CouponShard::all(id, shards.unwrap_or(1)) {
            let keys = CouponKeys::of_shard(&self.key_prefix, shard);
            let issued: BTreeSet<i64> = redis.query(redis::cmd("SMEMBERS").arg(&keys.issued)).await?;
            redis_issued.extend(issued);
            redis_stock += redis.query::<i64>(redis::cmd("GET").arg(&keys.stock)).await?;
            outbox += redis.query::<u64>(redis::cmd("XLEN").arg(&keys.outbox)).await?;
        }
        let db = self.db_state(coupon).await?;
        Ok(Observed {
            stock,
            redis_issued,
            redis_stock,
            outbox,
            db_holders: db.holders,
            db_rows: db.rows,
            db_remaining: db.remaining,
            dlq_records: 0,
            sold_out_at_write: db.sold_out_at_write,
        })
    }

    async fn db_state(&self, coupon: i64) -> anyhow::Result<DbState> {
        use coupon_loadgen::durable;
        Ok(DbState {
            holders: durable::holders(&self.pool, coupon).await?,
            rows: durable::rows(&self.pool, coupon).await?,
            remaining: durable::remaining(&self.pool, coupon).await?,
            sold_out_at_write: durable::sold_out_at_write(&self.pool, coupon).await?,
        })
    }

    fn dlq_records(&self) -> anyhow::Result<i64> {
        let consumer: BaseConsumer = coupon_infra::kafka::client_config(&self.kafka, "e2e").create()?;
        let (low, high) = consumer.fetch_watermarks(&self.dlq_topic, 0, Duration::from_secs(10))?;
        Ok(high - low)
    }

    /// Every record on the use topic once at least `expected` are there
    /// (within `timeout`), in offset order.
    pub async fn used_events(&self, expected: i64, timeout: Duration) -> anyhow::Result<Vec<CouponUsageEvent>> {
        let consumer: BaseConsumer = coupon_infra::kafka::client_config(&self.kafka, "e2e")
            .set("group.id", unique_name("e2e-used"))
            .set("enable.auto.commit", "false")
            .create()?;
        let started = Instant::now();
        let (low, high) = loop {
            let (low, high) = consumer.fetch_watermarks(&self.used_topic, 0, Duration::from_secs(10))?;
            if high - low >= expected {
                break (low, high);
            }
            if started.elapsed() > timeout {
                bail!("{} of {expected} use events on {} after {timeout:?}", high - low, self.used_topic);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&self.used_topic, 0, Offset::Offset(low))?;
        consumer.assign(&assignment)?;
        let mut events = Vec::new();
        let mut next = low;
        while next < high {
            if started.elapsed() > timeout {
                bail!("read {} of {} use events after {timeout:?}", next - low, high - low);
            }
            let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
            let message = message?;
            next = message.offset() + 1;
            let payload = message.payload().context("a use event without a payload")?;
            events.push(serde_json::from_slice(payload).context("a use event that does not parse")?);
        }
        Ok(events)
    }

    /// Runs coupon-reconcile on the coupons; true when it reports no drift.
    pub async fn reconcile(&self, coupons: &[i64]) -> anyhow::Result<bool> {
        Ok(self.reconcile_settling(coupons, Duration::ZERO).await?.0)
    }

    /// Runs coupon-reconcile with `--settle-ms`; whether it reported no drift,
    /// and what it printed (also appended to `reconcile.log`).
    pub async fn reconcile_settling(&self, coupons: &[i64], settle: Duration) -> anyhow::Result<(bool, String)> {
        self.run_reconcile(coupons, &["--settle-ms".into(), settle.as_millis().to_string()]).await
    }

    /// Runs `coupon-reconcile --repair` (no settle time): whether it found no
    /// drift, and what it printed.
    pub async fn reconcile_repair(&self, coupons: &[i64]) -> anyhow::Result<(bool, String)> {
        self.run_reconcile(coupons, &["--settle-ms".into(), "0".into(), "--repair".into()]).await
    }

    async fn run_reconcile(&self, coupons: &[i64], args: &[String]) -> anyhow::Result<(bool, String)> {
        let mut command = tokio::process::Command::new(bin_dir().join("coupon-reconcile"));
        command.envs(self.env()).envs(&self.reconcile_overrides).env("RUST_LOG", "info").args(args);
        for coupon in coupons {
            command.arg("--coupon").arg(coupon.to_string());
        }
        let output = command.output().await.context("running coupon-reconcile")?;
        let mut log = std::fs::File::options().create(true).append(true).open(log_dir().join("reconcile.log"))?;
        log.write_all(&output.stdout)?;
        log.write_all(&output.stderr)?;
        let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        Ok((output.status.success(), printed))
    }

    /// Waits until every customer told `503 UNCONFIRMED` in `spike` is
    /// resolved as the status endpoint tells them: issued with its row, or
    /// not issued. Returns how many were issued.
    pub async fn resolve_unconfirmed(&self, spike: &Spike, timeout: Duration) -> anyhow::Result<usize> {
        let unconfirmed: BTreeSet<(i64, i64)> = spike
            .answers
            .iter()
            .filter(|a| a.code.as_deref() == Some("UNCONFIRMED"))
            .map(|a| (a.attempt.coupon, a.attempt.customer))
            .collect();
        let http = reqwest::Client::new();
        let base = api_url(self.api_ports[0]);
        let mut issued = 0;
        for (coupon, customer) in unconfirmed {
            let url = format!("{base}/api/v1/coupons/{coupon}/customers/{customer}");
            let what = format!("customer {customer}'s unconfirmed answer for coupon {coupon} to resolve");
            let resolved_issued = coupon_testkit::poll_until(&what, timeout, || async {
                let attempt: serde_json::Value =
                    http.get(&url).bearer_auth(ADMIN_TOKEN).send().await?.error_for_status()?.json().await?;
                Ok(match (attempt["issued"].as_bool(), attempt["persisted"].as_bool()) {
                    (Some(true), Some(true)) => Some(true),
                    (Some(false), _) => Some(false),
                    _ => None,
                })
            })
            .await?;
            issued += usize::from(resolved_issued);
        }
        Ok(issued)
    }

    /// Checks every promise for every coupon, runs reconciliation, and appends
    /// the scenario's row to the report.
    pub async fn verify(&self, coupons: &[i64], stock: i64, spike: &Spike) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        let mut drain_time = Duration::ZERO;
        for &coupon in coupons {
            let (seen, took) = self.drain(coupon, stock, Duration::from_secs(180)).await.expect("draining");
            drain_time = drain_time.max(took);
            verdicts.push(invariants::check(coupon, spike, &seen));
        }
        let clean = self.reconcile(coupons).await.expect("reconciling");
        let under_faults = self.issued_under_faults(spike);
        let cost = FaultCost::of(spike);
        crate::report::append(&self.name, &verdicts, clean, under_faults, cost, spike.elapsed, drain_time);
        for verdict in &verdicts {
            assert!(verdict.violations.is_empty(), "{}: {}", self.name, verdict.describe());
        }
        assert!(clean, "{}: coupon-reconcile reported drift (see e2e-logs/reconcile.log)", self.name);
        verdicts
    }
}

/// What PostgreSQL holds for a coupon.
struct DbState {
    holders: BTreeSet<i64>,
    rows: i64,
    remaining: i64,
    sold_out_at_write: i64,
}

/// Resolves once `progress` has counted `at_least` answers.
pub async fn reached(progress: &AtomicU64, at_least: u64) {
    while progress.load(Ordering::Relaxed) < at_least {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn api_client(api_ports: &[u16], management_ports: &[u16]) -> ApiClient {
    ApiClient::new(
        &api_urls(api_ports),
        &api_urls(management_ports),
        ADMIN_TOKEN,
        CustomerAuth::Jwt(Arc::new(Signer::new(JWT_SECRET.as_bytes(), Some(AUDIENCE)))),
        256,
    )
    .expect("an HTTP client")
}

fn api_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn api_urls(ports: &[u16]) -> String {
    ports.iter().map(|port| api_url(*port)).collect::<Vec<_>>().join(",")
}
