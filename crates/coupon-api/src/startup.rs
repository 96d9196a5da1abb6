//! Builds the service from its settings and runs it until told to stop.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use coupon_infra::db::PgPool;
use coupon_infra::kafka::GroupProgress;
use coupon_infra::redis::SharedRedis;
use coupon_infra::shutdown::Essential;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing_actix_web::TracingLogger;

use crate::auth::Access;
use crate::catalog::cache::CouponCache;
use crate::catalog::Catalog;
use crate::config::{HttpSettings, Settings};
use crate::delivery::outbox::{Acknowledger, Outbox};
use crate::delivery::publisher::Publisher;
use crate::delivery::relay::Relay;
use crate::delivery::watchlist::Watchlist;
use crate::http::limits::Limits;
use crate::http::request_span::RequestSpan;
use crate::http::state::AppState;
use crate::issuance::issuer::{issue_script, Issuer};
use crate::issuance::memory::Memory;
use crate::issuance::refill::RefillCounters;
use crate::issuance::replica_wait::ReplicaWait;
use crate::issuance::{HandOff, Issuance};
use crate::metrics::Metrics;
use crate::promotion::stats::Stats;
use crate::promotion::Controls;
use crate::readiness::{Readiness, Stage};
use crate::recovery::fence::Fences;
use crate::recovery::lock::RecoveryLock;
use crate::recovery::{Recovery, RecoveryRequests};
use crate::redemption::usage_relay::UsageRelay;
use crate::redemption::Redemptions;
use crate::store::incarnation::Incarnations;
use crate::store::CouponStore;

/// How long shutdown waits for Kafka to acknowledge what is queued; whatever is
/// left stays in the outbox for the next relay.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// In sentinel mode, how often the sentinels are asked which node is the
/// primary (coupon_infra::redis::SharedRedis::follow_primary); in cluster
/// mode, how often the replicas are cleared of the issue script
/// (crate::store::incarnation::Incarnations::keep_off_replicas).
const PRIMARY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

pub struct Application {
    listeners: Listeners,
    state: web::Data<AppState>,
    acknowledger: Acknowledger,
    recovery: Recovery,
    usage_relay: UsageRelay,
    /// Stops the background tasks that serve requests (replica acknowledgements).
    stop_serving: CancellationToken,
    replica_wait: Option<JoinHandle<()>>,
    settings: Settings,
}

/// What the Redis side of every capability is built on.
struct RedisParts {
    redis: Arc<SharedRedis>,
    store: Arc<CouponStore>,
    incarnations: Arc<Incarnations>,
    fences: Arc<Fences>,
}

impl RedisParts {
    fn new(settings: &Settings) -> anyhow::Result<Self> {
        let redis = Arc::new(SharedRedis::new(&settings.redis)?);
        let prefix = settings.redis.key_prefix.clone();
        let store = Arc::new(CouponStore::new(redis.clone(), prefix.clone()));
        let incarnations = Arc::new(Incarnations::new(store.clone(), issue_script(&prefix)));
        let fences = Arc::new(Fences::new(store.clone()));
        Ok(Self { redis, store, incarnations, fences })
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let parts = RedisParts::new(&settings)?;
        let outbox = Arc::new(Outbox::new(parts.store.clone()));
        let watchlist =
            Arc::new(Watchlist::new(parts.redis.clone(), &settings.redis.key_prefix, settings.relay.replica_ttl));
        let (acks, acknowledger) = Acknowledger::new(outbox.clone());
        let pool = coupon_infra::db::pool(&settings.database)?;
        let catalog = Catalog::new(pool.clone());
        let coupons = Arc::new(CouponCache::new(catalog.clone(), settings.cache.coupon_ttl));
        let publisher = Arc::new(Publisher::new(&settings.kafka, metrics.clone(), acks.clone())?);
        create_topics(&settings);
        let listeners = Listeners::bind(&settings)?;
        let stop_serving = CancellationToken::new();
        let (replicas, replica_wait) = replica_wait(&settings, &parts.redis, &metrics, &stop_serving);
        let requests = RecoveryRequests::default();
        let readiness = Readiness::default();
        let recovery = recovery(&settings, &parts, &catalog, &watchlist, &metrics, &requests, &readiness)?;
        let usage_relay = usage_relay(&settings, &pool, &publisher, &metrics);
        let (issuer, memory) = issuer(&settings, &parts, &metrics);
        let issuance = Issuance {
            issuer,
            watchlist,
            publisher,
            acks,
            hand_off: HandOff::new(settings.issue.mode, pool.clone()),
            ack_timeout: settings.kafka.ack_timeout,
            replicas,
            recovery: requests.clone(),
            coupons: coupons.clone(),
            memory,
        };
        let redis_side = (parts.store.clone(), parts.incarnations.clone());
        let controls = Controls::new(pool.clone(), parts.store.clone(), issuance.replicas.clone(), refills(&metrics));
        let stats = Arc::new(Stats::new(pool.clone(), parts.store.clone()));
        let redemptions =
            Redemptions::new(pool, redis_side, usage_relay.committed.clone(), settings.recovery.ended_grace);
        let state = web::Data::new(AppState {
            issuance,
            store: parts.store,
            outbox,
            fences: parts.fences,
            catalog,
            coupons,
            redemptions,
            controls,
            stats,
            metrics,
            access: Arc::new(Access::new(&settings.auth, settings.admin.named()?)?),
            limits: Arc::new(Limits::new(&settings.limits)),
            recovery: requests,
            readiness,
            stopping: CancellationToken::new(),
        });
        Ok(Self { listeners, state, acknowledger, recovery, usage_relay, stop_serving, replica_wait, settings })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listeners.api.local_addr().expect("a bound listener has an address")
    }

    /// Where `/metrics` and `/health/*` are served.
    pub fn management_addr(&self) -> SocketAddr {
        self.listeners.management.local_addr().expect("a bound listener has an address")
    }

    /// Listens at once (liveness) and is ready once the schema is migrated,
    /// a recovery pass has made Redis safe to issue from and the producer is
    /// warm (crate::readiness). Serves until `shutdown` completes; then stops
    /// accepting, finishes in-flight requests, stops the relay and the recovery, and flushes the
    /// producer. If the HTTP server, the relay or the recovery ends before
    /// that, the service cannot do its work: it stops the others and returns
    /// the error, so the process exits non-zero and is restarted.
    /// The tasks that follow which Redis nodes may be trusted, and what this
    /// replica remembers of its coupons, until `stop`.
    fn watch_redis(&self, stop: &CancellationToken) {
        let store = self.state.store.clone();
        let follow = stop.clone();
        let unpromotable = self.state.metrics.redis_unpromotable_replicas.clone();
        let counted = move |count: u32| unpromotable.set(i64::from(count));
        tokio::spawn(async move { store.redis().follow_primary(PRIMARY_CHECK_INTERVAL, counted, follow).await });
        let (incarnations, scrub) = (self.recovery.incarnations.clone(), stop.clone());
        tokio::spawn(async move { incarnations.keep_off_replicas(PRIMARY_CHECK_INTERVAL, scrub).await });
        if let Some(memory) = &self.state.issuance.memory {
            tokio::spawn(memory.clone().run(stop.clone()));
        }
    }

    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let stop = CancellationToken::new();
        self.watch_redis(&stop);
        // Stopped last, after the producer flush has delivered what it can.
        let stop_acks = CancellationToken::new();
        let acknowledger = tokio::spawn(self.acknowledger.run(stop_acks.clone()));
        tokio::spawn(self.state.limits.clone().clean_up(stop.clone()));
        // Its last flush runs once requests have stopped.
        let stats = tokio::spawn(self.state.stats.clone().run(stop.clone()));
        let issuance = &self.state.issuance;
        let mut essential = Essential::default();
        essential.spawn("the relay heartbeat", issuance.watchlist.clone().run(stop.clone()));
        let relay = Relay {
            outbox: self.state.outbox.clone(),
            publisher: issuance.publisher.clone(),
            watchlist: issuance.watchlist.clone(),
            metrics: self.state.metrics.clone(),
            settings: self.settings.relay.clone(),
        };
        essential.spawn("the outbox relay", relay.run(stop.clone()));
        essential.spawn("the recovery", self.recovery.run(stop.clone()));
        essential.spawn("the usage relay", self.usage_relay.run(stop.clone()));
        let server = http_server(self.listeners.api, self.state.clone(), &self.settings.http)?;
        let handle = server.handle();
        essential.spawn("the HTTP server", server);
        let management = management_server(self.listeners.management, self.state.clone())?;
        let management_handle = management.handle();
        essential.spawn("the management server", management);
        tracing::info!(%addr, "coupon-api listening; starting: waiting for {}", Stage::MigratingSchema.waiting_for());
        tokio::spawn(start_up(
            self.state.readiness.clone(),
            self.settings.database.url.clone(),
            issuance.publisher.clone(),
            self.settings.kafka.message_timeout,
            addr,
            stop.clone(),
        ));

        let ended_early = essential.until_shutdown_or_ended(shutdown).await;
        self.state.stopping.cancel();
        handle.stop(true).await;
        management_handle.stop(true).await;
        stop.cancel();
        // Whatever failed while stopping, the producer is still flushed.
        let joined = essential.join().await;
        if let Err(err) = stats.await {
            tracing::warn!(error = %err, "the issue counts' last flush failed");
        }
        let stopping = Stopping { state: self.state, stop_serving: self.stop_serving, replica_wait: self.replica_wait };
        stopping.drain(stop_acks, acknowledger).await?;
        match ended_early {
            Some(ended) => anyhow::bail!("{} ended unexpectedly", ended.task),
            None => joined,
        }
    }
}

/// What is left once requests and background tasks have stopped.
struct Stopping {
    state: web::Data<AppState>,
    stop_serving: CancellationToken,
    replica_wait: Option<JoinHandle<()>>,
}

impl Stopping {
    /// Ends the replica wait, flushes the producer, removes what Kafka
    /// acknowledged from the outbox, and leaves the relay's replica set.
    async fn drain(self, stop_acks: CancellationToken, acknowledger: JoinHandle<()>) -> anyhow::Result<()> {
        self.stop_serving.cancel();
        if let Some(task) = self.replica_wait {
            task.await.context("joining the replica acknowledgements")?;
        }
        let publisher = self.state.issuance.publisher.clone();
        let flushed = tokio::task::spawn_blocking(move || publisher.flush(FLUSH_TIMEOUT)).await?;
        stop_acks.cancel();
        acknowledger.await.context("joining the outbox acknowledger")?;
        if let Err(err) = self.state.issuance.watchlist.leave().await {
            tracing::warn!(error = %err, "could not leave the relay's replica set; another replica takes over once the heartbeat lapses");
        }
        match flushed {
            Ok(()) => tracing::info!("coupon-api stopped; producer flushed"),
            Err(err) => tracing::warn!(error = %err, "coupon-api stopped; unflushed events stay in the outbox"),
        }
        Ok(())
    }
}

/// The API's port, and the management port (`/metrics`, `/health/*`) apart from it.
struct Listeners {
    api: TcpListener,
    management: TcpListener,
}

impl Listeners {
    fn bind(settings: &Settings) -> anyhow::Result<Self> {
        let bind = |setting: &str, addr: SocketAddr| {
            TcpListener::bind(addr).with_context(|| format!("binding {setting} {addr}"))
        };
        Ok(Self {
            api: bind("http.addr", settings.http.addr)?,
            management: bind("http.management_addr", settings.http.management_addr)?,
        })
    }
}

/// Creates the topics in the background, unless told not to: Kafka may be
/// down at start, and issuance does not need it to be up.
fn create_topics(settings: &Settings) {
    if !settings.kafka.client.create_topics {
        return;
    }
    let kafka = settings.kafka.clone();
    tokio::spawn(async move {
        let topics = [
            (kafka.client.topic.as_str(), kafka.client.partitions),
            (kafka.client.dlq_topic.as_str(), 1),
            (kafka.used_topic.as_str(), kafka.client.partitions),
            (kafka.released_topic.as_str(), kafka.client.partitions),
            (kafka.revoked_topic.as_str(), kafka.client.partitions),
        ];
        if let Err(err) = coupon_infra::kafka::ensure_topics(&kafka.client, &topics).await {
            tracing::warn!(error = %err, "could not ensure the Kafka topics exist");
        }
    });
}

/// The issue script's caller, and the memory of refusals unless it is off.
fn issuer(settings: &Settings, parts: &RedisParts, metrics: &Metrics) -> (Issuer, Option<Arc<Memory>>) {
    let issue = &settings.issue;
    let gauges = (metrics.issue_batch_size.clone(), metrics.issue_queued.clone());
    let issuer =
        Issuer::new(parts.store.clone(), parts.incarnations.clone(), issue.max_batch, gauges, refills(metrics));
    let memory = (!issue.memory_check.is_zero())
        .then(|| Memory::new(parts.store.clone(), issue.memory_check, metrics.issue_from_memory.clone()));
    (issuer, memory)
}

/// The counters the refills of sharded coupons keep.
fn refills(metrics: &Metrics) -> RefillCounters {
    RefillCounters::new(metrics.shard_refills.clone(), metrics.shard_units_moved.clone())
}

/// The wait for Redis replicas before a 201, and its task (none when
/// `redis.min_replicas` is 0).
fn replica_wait(
    settings: &Settings,
    redis: &Arc<SharedRedis>,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> (ReplicaWait, Option<JoinHandle<()>>) {
    match settings.redis.min_replicas {
        0 => (ReplicaWait::disabled(), None),
        required => {
            let timeout = settings.redis.replica_ack_timeout;
            let (wait, task) = ReplicaWait::start(redis.clone(), required, timeout, metrics.clone(), stop.clone());
            (wait, Some(task))
        }
    }
}

/// Sends redeem, release and revoke events to Kafka; woken by each commit.
fn usage_relay(settings: &Settings, pool: &PgPool, publisher: &Arc<Publisher>, metrics: &Metrics) -> UsageRelay {
    UsageRelay {
        pool: pool.clone(),
        publisher: publisher.clone(),
        used_topic: settings.kafka.used_topic.clone(),
        released_topic: settings.kafka.released_topic.clone(),
        revoked_topic: settings.kafka.revoked_topic.clone(),
        metrics: metrics.clone(),
        committed: Arc::new(Notify::new()),
    }
}

fn recovery(
    settings: &Settings,
    parts: &RedisParts,
    catalog: &Catalog,
    watchlist: &Arc<Watchlist>,
    metrics: &Metrics,
    requests: &RecoveryRequests,
    readiness: &Readiness,
) -> anyhow::Result<Recovery> {
    Ok(Recovery {
        catalog: catalog.clone(),
        store: parts.store.clone(),
        incarnations: parts.incarnations.clone(),
        fences: parts.fences.clone(),
        lock: RecoveryLock::new(parts.store.clone()),
        watchlist: watchlist.clone(),
        progress: Arc::new(GroupProgress::new(&settings.kafka.client, &settings.writer.group)?),
        metrics: metrics.clone(),
        settings: settings.recovery.clone(),
        requests: requests.clone(),
        settle: settings.kafka.message_timeout,
        interval: settings.recovery.sync_interval,
        readiness: readiness.clone(),
    })
}

/// Passes the start-up stages that are not the recovery's: the schema before
/// the recovery's first pass (which reads it), the producer after it.
async fn start_up(
    readiness: Readiness,
    database: SecretString,
    publisher: Arc<Publisher>,
    warm_timeout: Duration,
    addr: SocketAddr,
    stop: CancellationToken,
) {
    let started = async {
        migrate_schema(database, &stop).await?;
        readiness.advance(Stage::FirstRecoveryPass);
        readiness.reached(Stage::WarmingProducer).await;
        if !publisher.warm_up(warm_timeout).await {
            tracing::warn!(
                timeout = ?warm_timeout,
                "Kafka gave the producer no topic metadata or producer id in time; serving anyway (the outbox keeps what Kafka does not take)"
            );
        }
        readiness.advance(Stage::Ready);
        Some(())
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        started = started => if started.is_some() { tracing::info!(%addr, "coupon-api ready") },
    }
}

/// Applies the schema's pending migrations under the migrators' lock (as
/// coupon-writer does), so coupon-api alone on a fresh database works.
/// Retried while PostgreSQL cannot be reached; `None` when stopped first.
async fn migrate_schema(url: SecretString, stop: &CancellationToken) -> Option<()> {
    loop {
        match coupon_infra::db::migrate(url.expose_secret()).await {
            Ok(applied) => {
                if applied.is_empty() {
                    tracing::info!("database schema up to date");
                } else {
                    tracing::info!(?applied, "database schema migrated");
                }
                return Some(());
            }
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "cannot migrate the database schema yet; will retry")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(MIGRATE_RETRY) => {}
        }
    }
}

/// How soon a failed schema migration is tried again.
const MIGRATE_RETRY: Duration = Duration::from_secs(2);

/// Built outside `run_until` so that future stays `Send` (the builder is not).
fn http_server(listener: TcpListener, state: web::Data<AppState>, settings: &HttpSettings) -> std::io::Result<Server> {
    let mut server = HttpServer::new(move || {
        App::new().wrap(TracingLogger::<RequestSpan>::new()).app_data(state.clone()).configure(crate::http::configure)
    })
    .client_request_timeout(settings.request_head_timeout)
    .disable_signals()
    .shutdown_timeout(30);
    if settings.workers > 0 {
        server = server.workers(settings.workers);
    }
    Ok(server.listen(listener)?.run())
}

/// One worker: probes and scrapes are few.
fn management_server(listener: TcpListener, state: web::Data<AppState>) -> std::io::Result<Server> {
    let server =
        HttpServer::new(move || App::new().app_data(state.clone()).configure(crate::http::configure_management))
            .disable_signals()
            .workers(1)
            .shutdown_timeout(5);
    Ok(server.listen(listener)?.run())
}
