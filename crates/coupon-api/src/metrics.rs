//! Prometheus metrics of coupon-api, exposed at `GET /metrics`.

use coupon_infra::metrics::Register;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};

/// Cheap to clone: every field is a handle to the shared metric.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub issue_requests: IntCounterVec,
    pub issue_seconds: Histogram,
    pub issue_batch_size: Histogram,
    pub issue_queued: IntGauge,
    pub issue_from_memory: IntCounter,
    pub shard_refills: IntCounterVec,
    pub shard_units_moved: IntCounter,
    pub kafka_publish_seconds: Histogram,
    pub kafka_publish_failures: IntCounter,
    pub outbox_depth: IntGauge,
    pub relay_republished: IntCounter,
    pub relay_retries: IntCounter,
    pub outbox_malformed: IntCounter,
    pub fenced_coupons: IntGauge,
    pub rebuilds: IntCounter,
    pub redis_new_incarnations: IntCounter,
    pub replica_ack_failures: IntCounter,
    pub redis_unpromotable_replicas: IntGauge,
    pub usage_requests: IntCounterVec,
    pub usage_events_published: IntCounter,
    pub usage_outbox_depth: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];

impl Metrics {
    #[allow(clippy::too_many_lines, reason = "one registration per metric, in the struct's order")]
    pub fn new() -> Self {
        let r = Registry::new();
        Self {
            issue_requests: r.counter_vec(
                "coupon_issue_requests_total",
                "Issuance requests by outcome code",
                &["outcome"],
            ),
            issue_seconds: r.histogram(
                "coupon_issue_duration_seconds",
                "Issuance request handling time",
                LATENCY_BUCKETS,
            ),
            issue_batch_size: r.histogram(
                "coupon_issue_batch_size",
                "Requests one issue-script call decided (merged calls)",
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            ),
            issue_queued: r
                .gauge("coupon_issue_queued", "Issuance requests waiting for their coupon's next issue-script call"),
            issue_from_memory: r.counter(
                "coupon_issue_answered_from_memory_total",
                "Issue requests refused from this replica's memory of the coupon, without Redis",
            ),
            shard_refills: r.counter_vec(
                "coupon_shard_refills_total",
                "Refills of a sharded coupon's empty shard from its others, by outcome",
                &["outcome"],
            ),
            shard_units_moved: r.counter(
                "coupon_shard_units_moved_total",
                "Units transfers gave from one shard of a coupon to another",
            ),
            kafka_publish_seconds: r.histogram(
                "coupon_kafka_publish_duration_seconds",
                "Time from send to Kafka acknowledgement",
                LATENCY_BUCKETS,
            ),
            kafka_publish_failures: r
                .counter("coupon_kafka_publish_failures_total", "Sends Kafka did not acknowledge (in time)"),
            outbox_depth: r.gauge("coupon_outbox_depth", "Outbox entries not yet acknowledged by Kafka"),
            relay_republished: r
                .counter("coupon_relay_republished_total", "Events the relay delivered from the outbox"),
            relay_retries: r.counter("coupon_relay_retries_total", "Relay passes that failed and were retried"),
            outbox_malformed: r.counter(
                "coupon_outbox_malformed_total",
                "Outbox entries that were not an issuance, moved to the coupon's outbox:malformed stream",
            ),
            fenced_coupons: r
                .gauge("coupon_fenced_coupons", "Coupons this replica fenced for a rebuild from PostgreSQL"),
            rebuilds: r.counter("coupon_rebuilds_total", "Coupons rebuilt in Redis from PostgreSQL"),
            redis_new_incarnations: r.counter(
                "coupon_redis_new_incarnations_total",
                "Times Redis was found restarted or failed over (issue script missing) with open coupons to rebuild",
            ),
            replica_ack_failures: r.counter(
                "coupon_replica_ack_failures_total",
                "Issuances answered 503 because Redis replicas did not confirm them in time",
            ),
            redis_unpromotable_replicas: r.gauge(
                "coupon_redis_unpromotable_replicas",
                "Replicas of the Redis primary that the sentinels would not promote; a WAIT asks for this many more",
            ),
            usage_requests: r.counter_vec(
                "coupon_usage_requests_total",
                "Redeem and release requests by action and outcome code",
                &["action", "outcome"],
            ),
            usage_events_published: r.counter(
                "coupon_usage_events_published_total",
                "Use and release events Kafka acknowledged from the PostgreSQL outbox",
            ),
            usage_outbox_depth: r.gauge(
                "coupon_usage_outbox_depth",
                "Use and release events in the PostgreSQL outbox not yet acknowledged by Kafka",
            ),
            registry: r,
        }
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
