//! Logging: human-readable lines by default, JSON with `COUPON__LOG__FORMAT=json`,
//! level filter from `RUST_LOG` (default `info`). Metrics: each service's
//! Prometheus registry and its text rendering for `GET /metrics`.

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
