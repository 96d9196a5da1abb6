//! The relay: re-publishes outbox entries that Kafka has not acknowledged (the
//! API crashed before the acknowledgement, the broker was down, a send timed
//! out) and removes each entry only after its acknowledgement.
//!
//! Delivery guarantee: at least once. An entry younger than `relay.min_age_ms`
//! is left to the request that wrote it; an older one may be sent twice, which
//! the idempotent writer absorbs. Nothing is removed unacknowledged.

use std::sync::Arc;
use std::time::Duration;

use coupon_domain::CouponId;
use futures::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::config::RelaySettings;
use crate::issuer::RedisUnavailable;
use crate::metrics::Metrics;
use crate::outbox::{Delivered, Outbox, PendingEvent};
use crate::publisher::{PublishError, Publisher};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Redis(#[from] RedisUnavailable),
    #[error(transparent)]
    Kafka(#[from] PublishError),
}

pub struct Relay {
    pub outbox: Arc<Outbox>,
    pub publisher: Arc<Publisher>,
    pub metrics: Metrics,
    pub settings: RelaySettings,
}

impl Relay {
    /// Runs until `stop` is cancelled, backing off exponentially while Redis or
    /// Kafka fail.
    pub async fn run(self, stop: CancellationToken) {
        let idle = Duration::from_millis(self.settings.interval_ms);
        let max_backoff = Duration::from_millis(self.settings.max_backoff_ms);
        let mut wait = idle;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = match self.relay_once().await {
                Ok(_) => idle,
                Err(err) => {
                    self.metrics.relay_retries.inc();
                    let next = (wait * 2).min(max_backoff);
                    tracing::warn!(error = %err, retry_in_ms = next.as_millis() as u64, "outbox relay failed");
                    next
                }
            };
        }
        tracing::info!("outbox relay stopped");
    }

    /// One pass over every coupon's outbox; returns how many events it delivered.
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let coupons = self.outbox.coupons().await?;
        let relayed = self.relay_coupons(&coupons).await;
        // Also after a failed delivery: while Kafka is down the depth is what
        // the outbox alert watches grow.
        self.metrics.outbox_depth.set(self.outbox.depth(&coupons).await? as i64);
        relayed
    }

    async fn relay_coupons(&self, coupons: &[CouponId]) -> Result<usize, RelayError> {
        let until = self.outbox.server_time_ms().await? - self.settings.min_age_ms as i64;
        let mut delivered = 0;
        for coupon in coupons {
            loop {
                let pending = self.outbox.pending(*coupon, until, self.settings.batch_size).await?;
                if pending.is_empty() {
                    break;
                }
                let full_page = pending.len() == self.settings.batch_size;
                delivered += self.deliver(pending).await?;
                if !full_page {
                    break;
                }
            }
        }
        Ok(delivered)
    }

    async fn deliver(&self, pending: Vec<PendingEvent>) -> Result<usize, RelayError> {
        // Removed here rather than by the delivery callback, so the next page
        // read does not find them again.
        let results = join_all(pending.iter().map(|p| self.publisher.send(&p.event, None))).await;
        let mut delivered = Vec::with_capacity(pending.len());
        let mut first_error = None;
        for (entry, result) in pending.into_iter().zip(results) {
            match result {
                Ok(()) => delivered.push(Delivered { coupon: entry.event.coupon_id, entry: entry.entry }),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        self.outbox.acknowledge(&delivered).await?;
        self.metrics.relay_republished.inc_by(delivered.len() as u64);
        match first_error {
            Some(err) => Err(err.into()),
            None => Ok(delivered.len()),
        }
    }
}
