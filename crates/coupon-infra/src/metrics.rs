//! Prometheus metrics made and registered in one call, so a service's
//! `Metrics` writes each metric's name once, beside the field that holds it:
//! `rows_inserted: registry.counter("coupon_writer_rows_inserted_total", "…")`.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Makes a metric and registers it in this registry. Each panics on an invalid
/// name or one the registry already holds: both are mistakes in the code.
pub trait Register {
    /// A counter `name`.
    fn counter(&self, name: &str, help: &str) -> IntCounter;
    /// A counter `name` with one series per value of `labels`.
    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec;
    /// A gauge `name`.
    fn gauge(&self, name: &str, help: &str) -> IntGauge;
    /// A gauge `name` with one series per value of `labels`.
    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec;
    /// A histogram `name` with the upper bounds `buckets`.
    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram;
}

impl Register for Registry {
    fn counter(&self, name: &str, help: &str) -> IntCounter {
        registered(self, IntCounter::new(name, help))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        registered(self, IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        registered(self, IntGauge::new(name, help))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        registered(self, IntGaugeVec::new(Opts::new(name, help), labels))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        registered(self, Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())))
    }
}

/// The metric, registered in `registry`: it is a handle, so the registry and
/// the caller count in the same place.
fn registered<M: Collector + Clone + 'static>(registry: &Registry, metric: prometheus::Result<M>) -> M {
    let metric = metric.expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

/// The registry in Prometheus' text format.
pub fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buffer).expect("encoding to memory cannot fail");
    String::from_utf8(buffer).expect("the text format is UTF-8")
}

/// The value of one series in a text-format scrape, named as it is written
/// there (`coupon_writer_rows_inserted_total`,
/// `coupon_writer_rebalances_total{event="revoked"}`); `None` when absent or
/// not a number.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, value)| value.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_metric_is_registered_with_its_name_help_labels_and_buckets() {
        let registry = Registry::new();
        let issued = registry.counter("t_issued_total", "Issued");
        let by_outcome = registry.counter_vec("t_requests_total", "Requests by outcome", &["outcome"]);
        let depth = registry.gauge("t_depth", "Depth");
        let lag = registry.gauge_vec("t_lag", "Lag by partition", &["partition"]);
        let seconds = registry.histogram("t_seconds", "Seconds", &[0.1, 1.0]);
        issued.inc_by(3);
        by_outcome.with_label_values(&["issued"]).inc();
        depth.set(7);
        lag.with_label_values(&["2"]).set(5);
        seconds.observe(0.5);

        let scrape = render(&registry);
        assert!(scrape.contains("# HELP t_issued_total Issued\n# TYPE t_issued_total counter\n"));
        assert!(scrape.contains("# TYPE t_depth gauge\n"));
        assert!(scrape.contains("# TYPE t_seconds histogram\n"));
        assert_eq!(sample(&scrape, "t_issued_total"), Some(3.0));
        assert_eq!(sample(&scrape, r#"t_requests_total{outcome="issued"}"#), Some(1.0));
        assert_eq!(sample(&scrape, "t_depth"), Some(7.0));
        assert_eq!(sample(&scrape, r#"t_lag{partition="2"}"#), Some(5.0));
        assert_eq!(sample(&scrape, r#"t_seconds_bucket{le="0.1"}"#), Some(0.0));
        assert_eq!(sample(&scrape, r#"t_seconds_bucket{le="1"}"#), Some(1.0));
        assert_eq!(sample(&scrape, "t_seconds_count"), Some(1.0));
    }

    #[test]
    #[should_panic(expected = "metric names are unique")]
    fn a_name_registered_twice_is_refused() {
        let registry = Registry::new();
        registry.counter("t_twice_total", "Once");
        registry.gauge("t_twice_total", "Twice");
    }

    #[test]
    fn a_sample_is_found_by_its_whole_series_name() {
        let scrape = "# HELP x_total X\n# TYPE x_total counter\nx_total 3\nx_total_more 9\n\
                      y_total{event=\"revoked\"} 2\ny_total{event=\"assigned\"} 1\n";
        assert_eq!(sample(scrape, "x_total"), Some(3.0));
        assert_eq!(sample(scrape, "y_total{event=\"assigned\"}"), Some(1.0));
        assert_eq!(sample(scrape, "y_total"), None);
        assert_eq!(sample(scrape, "z_total"), None);
    }
}
