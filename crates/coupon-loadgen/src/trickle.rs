//! Steady traffic at a fixed rate, to show what the writer's batch limits
//! trade: how long an issued coupon waits until its row is in PostgreSQL,
//! against how many transactions the writer spends on it.
//!
//! One coupon's events share one partition and are applied in order, so the
//! k-th row to appear belongs to the k-th 201; sampling the row count every
//! few milliseconds gives each issuance's delay to within a sample.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use coupon_infra::db::PgPool;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::client::ApiClient;
use crate::spike::{send, Attempt};
use crate::{dbstats, durable};

const SAMPLE_EVERY: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrickleRecord {
    pub rate: u64,
    pub seconds: u64,
    pub issued: usize,
    /// From the 201 until the row was in PostgreSQL.
    pub durable_mean_ms: f64,
    pub durable_p99_ms: f64,
    pub durable_max_ms: f64,
    /// Write transactions per 1,000 issued coupons.
    pub transactions_per_1k: f64,
}

pub async fn run(client: &ApiClient, db: &PgPool, rate: u64, seconds: u64) -> anyhow::Result<TrickleRecord> {
    warm_up(client, db).await?;
    let total = rate * seconds;
    let coupon = client.create_coupon("loadgen trickle", total).await?;
    let transactions_before = dbstats::next_transaction_id(db).await?;
    let started = Instant::now();

    // Rows seen over time, until the count reaches `expected` (known once all are answered).
    let expected = Arc::new(AtomicI64::new(i64::MAX));
    let sampler = tokio::spawn(sample_rows(db.clone(), coupon, started, expected.clone()));
    let answered = issue_at_rate(client, coupon, rate, total, started).await;
    expected.store(answered.len() as i64, Ordering::Relaxed);
    let samples = tokio::time::timeout(Duration::from_secs(120), sampler)
        .await
        .context("the writer did not apply every issued coupon within 120 s")???;
    let transactions = dbstats::next_transaction_id(db).await? - transactions_before;

    let delays = delays_ms(&answered, &samples);
    let issued = delays.len();
    let at = |q: f64| delays.get(((issued as f64 * q) as usize).min(issued.saturating_sub(1))).copied();
    Ok(TrickleRecord {
        rate,
        seconds,
        issued,
        durable_mean_ms: delays.iter().sum::<f64>() / issued.max(1) as f64,
        durable_p99_ms: at(0.99).unwrap_or(0.0),
        durable_max_ms: delays.last().copied().unwrap_or(0.0),
        transactions_per_1k: transactions as f64 * 1000.0 / issued.max(1) as f64,
    })
}

/// One issuance awaited until durable, so a writer still joining its group is
/// not measured.
async fn warm_up(client: &ApiClient, db: &PgPool) -> anyhow::Result<()> {
    let warm_up = client.create_coupon("loadgen trickle warm-up", 1).await?;
    send(client, Attempt { coupon: warm_up, customer: 1 }, Instant::now()).await;
    durable::wait_for_rows(db, warm_up, 1, Duration::from_secs(60)).await?;
    Ok(())
}

/// `coupon`'s row count every few milliseconds, with the time since
/// `started`, until it reaches `expected`.
async fn sample_rows(
    db: PgPool,
    coupon: i64,
    started: Instant,
    expected: Arc<AtomicI64>,
) -> anyhow::Result<Vec<(Duration, i64)>> {
    let mut samples = Vec::new();
    loop {
        let rows = durable::rows(&db, coupon).await?;
        samples.push((started.elapsed(), rows));
        if rows >= expected.load(Ordering::Relaxed) {
            return Ok(samples);
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// `total` requests on `coupon`, customers 1 to `total`, `rate` a second;
/// when each 201 arrived, since `started`, in order.
async fn issue_at_rate(client: &ApiClient, coupon: i64, rate: u64, total: u64, started: Instant) -> Vec<Duration> {
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    let mut requests = JoinSet::new();
    for customer in 1..=total as i64 {
        pace.tick().await;
        let client = client.clone();
        requests.spawn(async move { send(&client, Attempt { coupon, customer }, started).await });
    }
    let mut answered: Vec<Duration> =
        requests.join_all().await.into_iter().filter(|a| a.status == Some(201)).map(|a| a.at).collect();
    answered.sort();
    answered
}

/// Each issuance's wait in milliseconds from its 201 until the sampled rows
/// included it (the k-th row is the k-th 201's), shortest first.
fn delays_ms(answered: &[Duration], samples: &[(Duration, i64)]) -> Vec<f64> {
    let mut delays: Vec<f64> = answered
        .iter()
        .enumerate()
        .map(|(k, at)| {
            let visible = samples.iter().find(|(_, rows)| *rows > k as i64).map_or(*at, |(t, _)| *t);
            visible.saturating_sub(*at).as_secs_f64() * 1000.0
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    delays
}
