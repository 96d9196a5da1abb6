//! Logging: human-readable lines by default, JSON with `COUPON__LOG__FORMAT=json`,
//! level filter from `RUST_LOG` (default `info`). Metrics: each service's
//! Prometheus registry and its text rendering for `GET /metrics`.

use prometheus::core::Collector;
use prometheus::{Encoder, Registry, TextEncoder};
use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A log line that cannot be written (the reader of stdout went away) is
    // dropped: reporting it on stderr would panic when stderr is gone too,
    // and a panic mid-shutdown is how a service fails to stop.
    let builder = tracing_subscriber::fmt().with_env_filter(filter).log_internal_errors(false);
    // A second init (tests in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A registry holding `metrics`. Each service instance gets its own, so
/// instances in one test process do not count each other's work.
pub fn registry(metrics: Vec<Box<dyn Collector>>) -> Registry {
    let registry = Registry::new();
    for metric in metrics {
        registry.register(metric).expect("metric names are unique");
    }
    registry
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
    fn a_sample_is_found_by_its_whole_series_name() {
        let scrape = "# HELP x_total X\n# TYPE x_total counter\nx_total 3\nx_total_more 9\n\
                      y_total{event=\"revoked\"} 2\ny_total{event=\"assigned\"} 1\n";
        assert_eq!(sample(scrape, "x_total"), Some(3.0));
        assert_eq!(sample(scrape, "y_total{event=\"assigned\"}"), Some(1.0));
        assert_eq!(sample(scrape, "y_total"), None);
        assert_eq!(sample(scrape, "z_total"), None);
    }
}
