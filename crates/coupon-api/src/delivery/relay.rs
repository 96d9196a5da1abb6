//! The relay: re-publishes outbox entries that Kafka has not acknowledged (the
//! API crashed before the acknowledgement, the broker was down, a send timed
//! out) and removes each entry only after its acknowledgement.
//!
//! Delivery guarantee: at least once. An entry younger than `relay.min_age_ms`
//! is left to the request that wrote it; an older one may be sent twice, which
//! the idempotent writer absorbs. Nothing is removed unacknowledged.
//!
//! Cost: the relay reads only the outboxes on this replica's watchlist (the
//! coupons it wrote to, took over from a dead replica, or rebuilt) until each
//! is seen drained; with nothing pending it sends Redis nothing
//! (crate::delivery::watchlist).

use std::sync::Arc;

use coupon_domain::shards::CouponShard;
use coupon_infra::backoff::Backoff;
use futures::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::config::RelaySettings;
use crate::delivery::outbox::{Delivered, Outbox, PendingEvent};
use crate::delivery::publisher::{PublishError, Publisher};
use crate::delivery::watchlist::Watchlist;
use crate::metrics::Metrics;
use crate::store::RedisUnavailable;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Redis(#[from] RedisUnavailable),
    #[error(transparent)]
    Kafka(#[from] PublishError),
}

/// How much later than the relay's reading of Redis's clock a script whose
/// reply was lost may still run.
const LOST_REPLY_LAG_MS: i64 = 1_000;

pub struct Relay {
    pub outbox: Arc<Outbox>,
    pub publisher: Arc<Publisher>,
    pub watchlist: Arc<Watchlist>,
    pub metrics: Metrics,
    pub settings: RelaySettings,
}

impl Relay {
    /// Runs until `stop` is cancelled, backing off exponentially while Redis or
    /// Kafka fail.
    pub async fn run(self, stop: CancellationToken) {
        let idle = self.settings.interval;
        let max_backoff = self.settings.max_backoff;
        // The pause after a failed pass; reset by a pass that succeeds.
        let mut backoff = Backoff::new(idle * 2, max_backoff);
        let mut wait = idle;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            fail::fail_point!("relay-pass");
            wait = match self.relay_once().await {
                Ok(_) => {
                    backoff.reset();
                    idle
                }
                Err(err) => {
                    self.metrics.relay_retries.inc();
                    let retry_in = backoff.next_delay();
                    tracing::warn!(error = %err, ?retry_in, "outbox relay failed");
                    retry_in
                }
            };
        }
        tracing::info!("outbox relay stopped");
    }

    /// One pass over the watched outboxes; returns how many events it delivered.
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        // Before Redis's clock is read, so the clock is later than their scripts.
        let lost_replies = self.watchlist.lost_replies();
        let watched = self.watchlist.pending();
        let coupons: Vec<CouponShard> = watched.iter().map(|(coupon, _)| *coupon).collect();
        // Before relaying, so a failed delivery (Kafka down) still updates
        // the depth, which the outbox alert watches grow.
        self.metrics.outbox_depth.set(self.outbox.depth(&coupons).await? as i64);
        if watched.is_empty() && lost_replies.is_empty() {
            return Ok(0);
        }
        let now = self.outbox.server_time_ms().await?;
        // A script sent on a connection that broke may still have been read
        // by Redis a moment after this clock on another connection.
        self.watchlist.clock_read_after(&lost_replies, now + LOST_REPLY_LAG_MS);
        let until = now - self.settings.min_age.as_millis() as i64;
        let mut delivered = 0;
        for (coupon, _) in self.watchlist.pending() {
            delivered += self.relay_coupon(coupon, until).await?;
        }
        Ok(delivered)
    }

    /// Sends `coupon`'s entries up to `until` until a read finds none, which
    /// settles the coupon on the watchlist.
    async fn relay_coupon(&self, coupon: CouponShard, until: i64) -> Result<usize, RelayError> {
        let mut delivered = 0;
        loop {
            match self.outbox.pending(coupon, until, self.settings.batch_size).await? {
                // Fenced: the rebuild keeps the entries, which wait for it.
                None => return Ok(delivered),
                Some(page) if page.read == 0 => {
                    self.watchlist.settled(coupon, until);
                    return Ok(delivered);
                }
                Some(page) => {
                    self.metrics.outbox_malformed.inc_by(page.moved_aside as u64);
                    if !page.events.is_empty() {
                        delivered += self.deliver(page.events).await?;
                    }
                }
            }
        }
    }

    async fn deliver(&self, pending: Vec<PendingEvent>) -> Result<usize, RelayError> {
        // Removed here rather than by the delivery callback, so the next page
        // read does not find them again.
        let results = join_all(pending.iter().map(|p| self.publisher.send(&p.event, None, None))).await;
        let mut delivered = Vec::with_capacity(pending.len());
        let mut first_error = None;
        for (entry, result) in pending.into_iter().zip(results) {
            match result {
                Ok(()) => delivered.push(Delivered { shard: entry.shard, entry: entry.entry }),
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
