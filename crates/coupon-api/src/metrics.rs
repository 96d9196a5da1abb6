//! Prometheus metrics of coupon-api, exposed at `GET /metrics`.

use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Cheap to clone: every field is a handle to the shared metric.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub issue_requests: IntCounterVec,
    pub issue_seconds: Histogram,
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
    pub usage_requests: IntCounterVec,
    pub usage_events_published: IntCounter,
    pub usage_outbox_depth: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];

impl Metrics {
    pub fn new() -> Self {
        let issue_requests = IntCounterVec::new(
            Opts::new("coupon_issue_requests_total", "Issuance requests by outcome code"),
            &["outcome"],
        )
        .expect("valid metric");
        let issue_seconds = Histogram::with_opts(
            HistogramOpts::new("coupon_issue_duration_seconds", "Issuance request handling time")
                .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let kafka_publish_seconds = Histogram::with_opts(
            HistogramOpts::new("coupon_kafka_publish_duration_seconds", "Time from send to Kafka acknowledgement")
                .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let kafka_publish_failures =
            IntCounter::new("coupon_kafka_publish_failures_total", "Sends Kafka did not acknowledge (in time)")
                .expect("valid metric");
        let outbox_depth =
            IntGauge::new("coupon_outbox_depth", "Outbox entries not yet acknowledged by Kafka").expect("valid metric");
        let relay_republished =
            IntCounter::new("coupon_relay_republished_total", "Events the relay delivered from the outbox")
                .expect("valid metric");
        let relay_retries = IntCounter::new("coupon_relay_retries_total", "Relay passes that failed and were retried")
            .expect("valid metric");
        let outbox_malformed = IntCounter::new(
            "coupon_outbox_malformed_total",
            "Outbox entries that were not an issuance, moved to the coupon's outbox:malformed stream",
        )
        .expect("valid metric");
        let fenced_coupons =
            IntGauge::new("coupon_fenced_coupons", "Coupons this replica fenced for a rebuild from PostgreSQL")
                .expect("valid metric");
        let rebuilds =
            IntCounter::new("coupon_rebuilds_total", "Coupons rebuilt in Redis from PostgreSQL").expect("valid metric");
        let redis_new_incarnations = IntCounter::new(
            "coupon_redis_new_incarnations_total",
            "Times Redis was found restarted or failed over (issue script missing) with open coupons to rebuild",
        )
        .expect("valid metric");
        let replica_ack_failures = IntCounter::new(
            "coupon_replica_ack_failures_total",
            "Issuances answered 503 because Redis replicas did not confirm them in time",
        )
        .expect("valid metric");
        let usage_requests = IntCounterVec::new(
            Opts::new("coupon_usage_requests_total", "Redeem and release requests by action and outcome code"),
            &["action", "outcome"],
        )
        .expect("valid metric");
        let usage_events_published = IntCounter::new(
            "coupon_usage_events_published_total",
            "Use and release events Kafka acknowledged from the PostgreSQL outbox",
        )
        .expect("valid metric");
        let usage_outbox_depth = IntGauge::new(
            "coupon_usage_outbox_depth",
            "Use and release events in the PostgreSQL outbox not yet acknowledged by Kafka",
        )
        .expect("valid metric");
        let registry = coupon_infra::telemetry::registry(vec![
            Box::new(issue_requests.clone()) as Box<dyn Collector>,
            Box::new(issue_seconds.clone()),
            Box::new(kafka_publish_seconds.clone()),
            Box::new(kafka_publish_failures.clone()),
            Box::new(outbox_depth.clone()),
            Box::new(relay_republished.clone()),
            Box::new(relay_retries.clone()),
            Box::new(outbox_malformed.clone()),
            Box::new(fenced_coupons.clone()),
            Box::new(rebuilds.clone()),
            Box::new(redis_new_incarnations.clone()),
            Box::new(replica_ack_failures.clone()),
            Box::new(usage_requests.clone()),
            Box::new(usage_events_published.clone()),
            Box::new(usage_outbox_depth.clone()),
        ]);
        Self {
            registry,
            issue_requests,
            issue_seconds,
            kafka_publish_seconds,
            kafka_publish_failures,
            outbox_depth,
            relay_republished,
            relay_retries,
            outbox_malformed,
            fenced_coupons,
            rebuilds,
            redis_new_incarnations,
            replica_ack_failures,
            usage_requests,
            usage_events_published,
            usage_outbox_depth,
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
