//! Reconciliation: per coupon, the Redis issued set and stock against the
//! `customer_coupon` rows and `remaining_quantity` in PostgreSQL.
//!
//! Run it after a promotion, after an incident (Kafka, PostgreSQL or a writer
//! was down), or periodically: exit code 0 means no drift, 1 drift, 2 it could
//! not check. `--repair` republishes the events of coupons that Redis issued
//! but PostgreSQL lacks, through Kafka, so the writer applies them as usual; it
//! never writes the database itself.

mod compare;
mod config;
mod push;
mod sources;

use std::time::Duration;

use anyhow::Context;
use coupon_domain::{CouponId, CouponIssuedEvent, CustomerId};
use rdkafka::producer::{FutureProducer, FutureRecord};
use time::OffsetDateTime;

pub use compare::{compare, CouponDrift, Report};
pub use config::Settings;
pub use push::{exposition, push};
use sources::Sources;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "coupon-reconcile", about = "Compare Redis with PostgreSQL per coupon; exit 1 on drift")]
pub struct Args {
    /// Coupons to check; without it, every coupon in PostgreSQL.
    #[arg(long = "coupon", value_name = "ID")]
    pub coupons: Vec<i64>,
    /// Republish through Kafka the events PostgreSQL is missing.
    #[arg(long)]
    pub repair: bool,
    /// How long a difference must last to be drift: a second read this much
    /// after a first that found any keeps only what both found. Issuances in
    /// flight (outbox, Kafka, the writer's batch) land well within it.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub settle_ms: u64,
    /// Push the outcome (`coupon_reconcile_drift`, the coupons with drift) to
    /// this Prometheus Pushgateway, for the drift alert.
    #[arg(long, env = "COUPON_RECONCILE_PUSHGATEWAY", value_name = "URL")]
    pub pushgateway: Option<String>,
    /// The environment's namespace, a grouping key of the push, so
    /// environments sharing a Pushgateway do not overwrite each other.
    #[arg(long, env = "COUPON_RECONCILE_NAMESPACE", value_name = "NAME")]
    pub namespace: Option<String>,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<Report> {
    let sources = Sources::connect(settings)?;
    let coupons = if args.coupons.is_empty() {
        sources.all_coupons().await?
    } else {
        args.coupons.iter().map(|id| CouponId::new(*id).context("coupon ids are positive")).collect::<Result<_, _>>()?
    };
    // Issuance goes on while this runs: only what is still wrong a settle
    // time later, and was wrong before, is drift.
    let mut report = check(&sources, &coupons).await?;
    if !report.is_clean() {
        let differing = report.coupons.iter().filter(|coupon| !coupon.is_clean()).count();
        tracing::info!(
            differing,
            settle_ms = args.settle_ms,
            "coupons differ; reading them again after the settle time"
        );
        tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
        report = check(&sources, &coupons).await?.lasting_since(&report);
    }
    if args.repair && !report.is_clean() {
        let republished = repair(settings, &sources, &report).await?;
        tracing::info!(republished, "missing events republished; rerun to confirm once the writer applied them");
    }
    Ok(report)
}

async fn check(sources: &Sources, coupons: &[CouponId]) -> anyhow::Result<Report> {
    let mut drifts = Vec::with_capacity(coupons.len());
    for coupon in coupons {
        let redis = sources.redis_view(*coupon).await?;
        let db = sources.db_view(*coupon).await?;
        drifts.push(compare(*coupon, &redis, db.as_ref()));
    }
    Ok(Report { coupons: drifts })
}

async fn repair(settings: &Settings, sources: &Sources, report: &Report) -> anyhow::Result<usize> {
    let producer: FutureProducer = coupon_infra::kafka::client_config(&settings.kafka, "coupon-reconcile")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    let mut republished = 0;
    for drift in &report.coupons {
        for customer in &drift.missing_in_db {
            // The original instant lives only in the outbox, if at all.
            let event = CouponIssuedEvent {
                coupon_id: drift.coupon,
                customer_id: CustomerId::new(*customer)?,
                issued_at: OffsetDateTime::now_utc(),
                issuance: sources.issuance(drift.coupon, *customer).await?,
            };
            let key = drift.coupon.to_string();
            let payload = event.to_json();
            producer
                .send(FutureRecord::to(&settings.kafka.topic).key(&key).payload(&payload), Duration::from_secs(30))
                .await
                .map_err(|(err, _)| err)
                .context("republishing a missing event")?;
            republished += 1;
        }
    }
    Ok(republished)
}
