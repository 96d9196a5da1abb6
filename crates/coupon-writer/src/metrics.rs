//! Prometheus metrics of coupon-writer, exposed at `GET /metrics`. Each
//! `Metrics` has a registry of its own, so writers in one test process do not
//! count each other's work.

use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Cheap to clone: every field is a handle to the shared metric.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub batches_applied: IntCounter,
    pub batch_size: Histogram,
    pub rows_inserted: IntCounter,
    pub duplicates_skipped: IntCounter,
    pub sold_out_at_write: IntCounter,
    pub transaction_seconds: Histogram,
    pub retries: IntCounter,
    pub dead_lettered: IntCounter,
    pub consumer_lag: IntGaugeVec,
    /// By `event`: `assigned` (joining counts once) or `revoked`. Any count
    /// beyond a member's first assignment means it lost or shared partitions.
    pub rebalances: IntCounterVec,
    /// By `result`: `committed` or `failed`; an interval with nothing new
    /// stored commits nothing and counts nothing.
    pub offset_commits: IntCounterVec,
}

const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0];
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];

impl Metrics {
    pub fn new() -> Self {
        let batches_applied = IntCounter::new("coupon_writer_batches_applied_total", "Batches applied and committed")
            .expect("valid metric");
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("coupon_writer_batch_size", "Records per applied batch").buckets(SIZE_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let rows_inserted = IntCounter::new("coupon_writer_rows_inserted_total", "customer_coupon rows inserted")
            .expect("valid metric");
        let duplicates_skipped = IntCounter::new(
            "coupon_writer_duplicates_skipped_total",
            "Events whose row already existed (redelivery), applied as no-ops",
        )
        .expect("valid metric");
        let sold_out_at_write = IntCounter::new(
            "coupon_writer_sold_out_at_write_total",
            "Events recorded in sold_out_at_write: the coupon had no stock left in PostgreSQL",
        )
        .expect("valid metric");
        let transaction_seconds = Histogram::with_opts(
            HistogramOpts::new("coupon_writer_db_transaction_seconds", "Duration of each database transaction")
                .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let retries =
            IntCounter::new("coupon_writer_retries_total", "Batch attempts that failed with a transient error")
                .expect("valid metric");
        let dead_lettered =
            IntCounter::new("coupon_writer_dead_lettered_total", "Records published to the dead-letter topic")
                .expect("valid metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "coupon_writer_consumer_lag",
                "High watermark minus the group's committed offset, per partition, read from the broker",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let rebalances = IntCounterVec::new(
            Opts::new("coupon_writer_rebalances_total", "Partition assignments and revocations this member received, and consumers replaced after failing to rejoin"),
            &["event"],
        )
        .expect("valid metric");
        let offset_commits = IntCounterVec::new(
            Opts::new("coupon_writer_offset_commits_total", "Offset commits of stored offsets, by result"),
            &["result"],
        )
        .expect("valid metric");
        // Every known label value exported from the start, at 0: a series
        // that first appears at 1 hides that increase from increase() and rate().
        for event in ["assigned", "revoked", "consumer_replaced"] {
            rebalances.with_label_values(&[event]);
        }
        for result in ["committed", "failed"] {
            offset_commits.with_label_values(&[result]);
        }
        let registry = coupon_infra::telemetry::registry(vec![
            Box::new(batches_applied.clone()) as Box<dyn Collector>,
            Box::new(batch_size.clone()),
            Box::new(rows_inserted.clone()),
            Box::new(duplicates_skipped.clone()),
            Box::new(sold_out_at_write.clone()),
            Box::new(transaction_seconds.clone()),
            Box::new(retries.clone()),
            Box::new(dead_lettered.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(rebalances.clone()),
            Box::new(offset_commits.clone()),
        ]);
        Self {
            registry,
            batches_applied,
            batch_size,
            rows_inserted,
            duplicates_skipped,
            sold_out_at_write,
            transaction_seconds,
            retries,
            dead_lettered,
            consumer_lag,
            rebalances,
            offset_commits,
        }
    }

    pub fn render(&self) -> String {
        coupon_infra::telemetry::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
