//! The group's lag per partition, as the broker sees it: high watermark minus
//! committed offset, read every `writer.stats_interval_ms` without joining the
//! group. librdkafka's own statistics stop refreshing the watermarks of
//! paused partitions, and the writer pauses them while a batch waits for
//! PostgreSQL: the lag would freeze exactly when it grows. Every writer
//! reports every partition; the alert takes the maximum per partition.

use std::sync::Arc;
use std::time::Duration;

use coupon_infra::kafka::GroupProgress;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How long one read of the watermarks and committed offsets may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reports the lag until `stop`; a failed read leaves the last values and
/// is tried again at the next interval.
pub async fn report(progress: GroupProgress, metrics: Metrics, interval: Duration, stop: CancellationToken) {
    let progress = Arc::new(progress);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let progress = progress.clone();
        // Blocking librdkafka calls: off the async workers.
        let read = tokio::task::spawn_blocking(move || {
            let marks = progress.marks(READ_TIMEOUT)?;
            progress.lag(&marks, READ_TIMEOUT)
        })
        .await;
        match read {
            Ok(Ok(lags)) => {
                for (partition, lag) in lags {
                    metrics.consumer_lag.with_label_values(&[partition.to_string()]).set(lag);
                }
            }
            Ok(Err(err)) => tracing::debug!(error = %err, "could not read the group's lag; keeping the last values"),
            Err(err) => tracing::warn!(error = %err, "the lag reader panicked"),
        }
    }
}
