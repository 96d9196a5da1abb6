//! A sustained flood (`make soak`): one coupon with stock for everyone, a new
//! customer per request at the highest rate this client reaches, for
//! minutes. Every second it samples what a flood strains: issuances, the
//! writer's rows and lag, its offset commits and group membership, and each
//! service's memory; after the flood it times the drain and checks the
//! three promises.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use coupon_infra::db::PgPool;
use futures::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::ApiClient;
use crate::durable;
use crate::latency::{self, Latency};
use crate::promises::Promises;
use crate::spike::{self, Attempt};

/// Where the soak reads what the services do besides answering.
pub struct Watch {
    /// coupon-writer's `/metrics`.
    pub writer_metrics: String,
    /// The Redis coupon-api uses, for its memory.
    pub redis_url: String,
}

/// One second of the soak.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Second {
    /// Since the flood started.
    pub at_s: f64,
    /// 201 answers in this second.
    pub issued: u64,
    /// Rows the writer inserted in this second.
    pub rows: u64,
    /// Issued so far and not yet in PostgreSQL.
    pub lag: i64,
    /// Offset commits in this second.
    pub commits: u64,
    /// Resident memory per service, MiB.
    pub rss_mib: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SoakRecord {
    pub coupon: i64,
    pub stock: i64,
    pub concurrency: usize,
    pub flood_s: f64,
    pub requests: u64,
    pub issued: u64,
    pub outcomes: BTreeMap<String, u64>,
    pub issued_per_s: f64,
    /// Of the flood's answers (`p50_ms` … `max_ms` in the JSON, beside the others).
    #[serde(flatten)]
    pub latency: Latency,
    pub timeline: Vec<Second>,
    /// Partitions assigned to or revoked from the writer during the soak.
    pub rebalances: u64,
    pub commits_per_s: f64,
    pub max_rss_mib: BTreeMap<String, f64>,
    pub redis_bytes_per_customer: f64,
    /// From the flood's last answer until PostgreSQL held every issuance.
    pub drain_s: f64,
    /// The writer's best second.
    pub peak_rows_per_s: u64,
    pub promises: Promises,
}

/// The flood coupon's stock: more than any flood here issues, so every
/// request takes one.
pub const FLOOD_STOCK: i64 = 100_000_000;

/// The services whose memory the soak samples, by process name.
const SERVICES: [&str; 2] = ["coupon-api", "coupon-writer"];

/// Floods `coupon` (of `stock`) for `duration` with `concurrency` requests in
/// flight, then waits up to `drain_timeout` for the writer.
pub async fn run(
    client: &ApiClient,
    db: &PgPool,
    watch: &Watch,
    (coupon, stock): (i64, i64),
    duration: Duration,
    concurrency: usize,
    drain_timeout: Duration,
) -> anyhow::Result<SoakRecord> {
    let writer_before = WriterCounters::scrape(client, &watch.writer_metrics).await?;
    let redis_before = redis_used_memory(&watch.redis_url).await?;
    client.open_connections(concurrency.max(1)).await;

    let issued_count = Arc::new(AtomicU64::new(0));
    let flooding = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_every_second(
        client.clone(),
        db.clone(),
        watch.writer_metrics.clone(),
        coupon,
        issued_count.clone(),
        flooding.clone(),
        drain_timeout,
    ));
    let Flood { elapsed: flood, latency, outcomes, issued } =
        Flood::run(client, coupon, duration, concurrency, &issued_count).await;
    flooding.store(false, Ordering::Relaxed);
    let (timeline, drain) = sampler.await.context("the sampler")??;

    let writer_after = WriterCounters::scrape(client, &watch.writer_metrics).await?;
    let redis_after = redis_used_memory(&watch.redis_url).await?;
    let soaked = flood + drain;
    Ok(SoakRecord {
        coupon,
        stock,
        concurrency,
        flood_s: flood.as_secs_f64(),
        requests: outcomes.values().sum(),
        issued: issued.len() as u64,
        issued_per_s: issued.len() as f64 / flood.as_secs_f64(),
        latency: Latency::of(&latency),
        outcomes,
        rebalances: writer_after.rebalances - writer_before.rebalances,
        commits_per_s: (writer_after.commits - writer_before.commits) as f64 / soaked.as_secs_f64(),
        max_rss_mib: max_rss_mib(&timeline),
        redis_bytes_per_customer: (redis_after - redis_before) as f64 / issued.len().max(1) as f64,
        drain_s: drain.as_secs_f64(),
        peak_rows_per_s: timeline.iter().map(|s| s.rows).max().unwrap_or(0),
        promises: promises(db, coupon, stock, &issued).await?,
        timeline,
    })
}

/// What the flood's answers said.
struct Flood {
    /// From the first request until the last answer.
    elapsed: Duration,
    /// Microseconds per request.
    latency: Histogram<u64>,
    outcomes: BTreeMap<String, u64>,
    /// The customers answered 201.
    issued: Vec<i64>,
}

impl Flood {
    /// A new customer per request on `coupon`, `concurrency` in flight, until
    /// `duration` is over; each 201 also counts in `issued_count`.
    async fn run(
        client: &ApiClient,
        coupon: i64,
        duration: Duration,
        concurrency: usize,
        issued_count: &AtomicU64,
    ) -> Self {
        let started = Instant::now();
        let deadline = started + duration;
        let mut latency = latency::histogram();
        let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
        let mut issued: Vec<i64> = Vec::new();
        // The deadline stops new requests; those in flight are answered, so
        // every customer knows what it got.
        let mut answers = stream::iter(1i64..)
            .take_while(|_| std::future::ready(Instant::now() < deadline))
            .map(|customer| spike::send(client, Attempt { coupon, customer }, started))
            .buffer_unordered(concurrency.max(1));
        while let Some(answer) = answers.next().await {
            latency.saturating_record(answer.latency.as_micros() as u64);
            *outcomes.entry(answer.outcome()).or_default() += 1;
            if answer.status == Some(201) {
                issued.push(answer.attempt.customer);
                issued_count.fetch_add(1, Ordering::Relaxed);
            }
        }
        Self { elapsed: started.elapsed(), latency, outcomes, issued }
    }
}

/// Each service's highest resident memory over the seconds.
fn max_rss_mib(timeline: &[Second]) -> BTreeMap<String, f64> {
    let mut max_rss_mib: BTreeMap<String, f64> = BTreeMap::new();
    for second in timeline {
        for (service, mib) in &second.rss_mib {
            let max = max_rss_mib.entry(service.clone()).or_default();
            *max = max.max(*mib);
        }
    }
    max_rss_mib
}

/// Samples every second until the flood is over and PostgreSQL holds every
/// issuance; returns the seconds and how long the drain took.
async fn sample_every_second(
    client: ApiClient,
    db: PgPool,
    writer_metrics: String,
    coupon: i64,
    issued: Arc<AtomicU64>,
    flooding: Arc<AtomicBool>,
    drain_timeout: Duration,
) -> anyhow::Result<(Vec<Second>, Duration)> {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut seconds = Vec::new();
    let mut last_rows = 0;
    let mut last_issued = 0;
    let mut last_commits = WriterCounters::scrape(&client, &writer_metrics).await?.commits;
    let mut flood_ended: Option<Instant> = None;
    loop {
        ticks.tick().await;
        let still_flooding = flooding.load(Ordering::Relaxed);
        let rows = durable::taken(&db, coupon).await?;
        let issued_now = issued.load(Ordering::Relaxed) as i64;
        let commits = WriterCounters::scrape(&client, &writer_metrics).await?.commits;
        seconds.push(Second {
            at_s: started.elapsed().as_secs_f64(),
            issued: (issued_now - last_issued) as u64,
            rows: (rows - last_rows).max(0) as u64,
            lag: issued_now - rows,
            commits: commits.saturating_sub(last_commits),
            rss_mib: rss_mib(),
        });
        (last_rows, last_issued, last_commits) = (rows, issued_now, commits);
        if still_flooding {
            continue;
        }
        let ended = *flood_ended.get_or_insert_with(Instant::now);
        if rows >= issued_now {
            // Drained between this sample and the last: the poll below says when.
            return Ok((seconds, drained_at(&db, coupon, issued_now, ended).await?));
        }
        if ended.elapsed() > drain_timeout {
            bail!("coupon {coupon}: {rows} of {issued_now} rows {drain_timeout:?} after the flood");
        }
    }
}

/// How long after `ended` the rows reached `issued`, to the nearest 50 ms.
async fn drained_at(db: &PgPool, coupon: i64, issued: i64, ended: Instant) -> anyhow::Result<Duration> {
    loop {
        if durable::taken(db, coupon).await? >= issued {
            return Ok(ended.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The writer's counters that a flood must not disturb.
struct WriterCounters {
    rebalances: u64,
    commits: u64,
}

impl WriterCounters {
    async fn scrape(client: &ApiClient, url: &str) -> anyhow::Result<Self> {
        let text = client.http().get(url).send().await?.error_for_status()?.text().await?;
        let count = |series: &str| coupon_infra::metrics::sample(&text, series).unwrap_or(0.0) as u64;
        Ok(Self {
            rebalances: count(r#"coupon_writer_rebalances_total{event="assigned"}"#)
                + count(r#"coupon_writer_rebalances_total{event="revoked"}"#),
            commits: count(r#"coupon_writer_offset_commits_total{result="committed"}"#),
        })
    }
}

/// Resident memory of each running service, summed over its processes.
fn rss_mib() -> BTreeMap<String, f64> {
    let page_mib = procfs::page_size() as f64 / (1024.0 * 1024.0);
    let mut rss = BTreeMap::new();
    let Ok(processes) = procfs::process::all_processes() else { return rss };
    for stat in processes.filter_map(|p| p.ok()?.stat().ok()) {
        if let Some(service) = SERVICES.iter().find(|s| stat.comm == **s) {
            *rss.entry(service.to_string()).or_default() += stat.rss as f64 * page_mib;
        }
    }
    rss
}

async fn redis_used_memory(url: &str) -> anyhow::Result<i64> {
    let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
        .context("no used_memory in INFO memory")
}

async fn promises(db: &PgPool, coupon: i64, stock: i64, issued: &[i64]) -> anyhow::Result<Promises> {
    let holders = durable::holders(db, coupon).await?;
    let rows = durable::taken(db, coupon).await?;
    let sold_out_at_write = durable::sold_out_at_write(db, coupon).await?;
    // Every request of the flood was answered: no row is excused.
    Ok(Promises::judge(issued, &holders, rows, stock, sold_out_at_write, |_| false))
}
