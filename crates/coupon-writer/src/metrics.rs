//! Prometheus metrics of coupon-writer, exposed at `GET /metrics`. Each
//! `Metrics` has a registry of its own, so writers in one test process do not
//! count each other's work.

use coupon_infra::metrics::Register;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGaugeVec, Registry};

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
        let r = Registry::new();
        let metrics = Self {
            batches_applied: r.counter("coupon_writer_batches_applied_total", "Batches applied and committed"),
            batch_size: r.histogram("coupon_writer_batch_size", "Records per applied batch", SIZE_BUCKETS),
            rows_inserted: r.counter("coupon_writer_rows_inserted_total", "customer_coupon rows inserted"),
            duplicates_skipped: r.counter(
                "coupon_writer_duplicates_skipped_total",
                "Events whose row already existed (redelivery), applied as no-ops",
            ),
            sold_out_at_write: r.counter(
                "coupon_writer_sold_out_at_write_total",
                "Events recorded in sold_out_at_write: the coupon had no stock left in PostgreSQL",
            ),
            transaction_seconds: r.histogram(
                "coupon_writer_db_transaction_seconds",
                "Duration of each database transaction",
                LATENCY_BUCKETS,
            ),
            retries: r.counter("coupon_writer_retries_total", "Batch attempts that failed with a transient error"),
            dead_lettered: r.counter("coupon_writer_dead_lettered_total", "Records published to the dead-letter topic"),
            consumer_lag: r.gauge_vec(
                "coupon_writer_consumer_lag",
                "High watermark minus the group's committed offset, per partition, read from the broker",
                &["partition"],
            ),
            rebalances: r.counter_vec(
                "coupon_writer_rebalances_total",
                "Partition assignments and revocations this member received, and consumers replaced after failing to rejoin",
                &["event"],
            ),
            offset_commits: r.counter_vec(
                "coupon_writer_offset_commits_total",
                "Offset commits of stored offsets, by result",
                &["result"],
            ),
            registry: r,
        };
        // Every known label value exported from the start, at 0: a series
        // that first appears at 1 hides that increase from increase() and rate().
        for event in ["assigned", "revoked", "consumer_replaced"] {
            metrics.rebalances.with_label_values(&[event]);
        }
        for result in ["committed", "failed"] {
            metrics.offset_commits.with_label_values(&[result]);
        }
        metrics
    }

    pub fn render(&self) -> String {
        coupon_infra::metrics::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
