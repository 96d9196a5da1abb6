//! One issuance: the Redis decision, then the hand-off of the event to Kafka.
//!
//! The 201 waits for Kafka's acknowledgement (up to `kafka.ack_timeout_ms`) while
//! Kafka is healthy: then an issued coupon survives even a Redis crash inside
//! its AOF fsync window, because its event is already replicated in Kafka.
//! While Kafka is failing the request does not wait; the outbox entry written
//! by the script keeps the event, and the relay delivers it later.
//!
//! With `redis.min_replicas` > 0 the 201 also waits until that many Redis
//! replicas have the script's writes (`replica_wait`), so a failover to one
//! of them keeps the issuance.
//!
//! Redis that lost a coupon, or lost everything (NOSCRIPT), answers nothing
//! from suspect state: the request gets 503 and the recovery rebuilds
//! (crate::recovery).
//!
//! In the `sync-db` baseline mode the request instead writes its own database
//! transaction (`baseline`).

pub mod baseline;
pub mod issuer;
mod lanes;
pub mod memory;
pub mod refill;
pub mod replica_wait;

use std::sync::Arc;
use std::time::Duration;

use coupon_domain::shards::CouponShard;
use coupon_domain::{CouponId, CouponIssuedEvent, CustomerId, Rejection};
use time::OffsetDateTime;

use crate::catalog::cache::CouponCache;
use crate::catalog::CatalogError;
use crate::config::IssueMode;
use crate::delivery::outbox::{AckQueue, Delivered};
use crate::delivery::publisher::Publisher;
use crate::delivery::watchlist::Watchlist;
use crate::recovery::RecoveryRequests;
use crate::store::RedisUnavailable;
use baseline::WriteThrough;
use issuer::{Decision, Fence, Issued, Issuer, Route};
use memory::Memory;
use replica_wait::ReplicaWait;

/// What the customer is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Issued,
    Rejected(Rejection),
    /// Redis may not decide for this coupon now (being rebuilt); nothing changed.
    Fenced,
    /// Maybe issued: the required replicas did not confirm it in time, or
    /// Redis's reply was lost. The customer is told to check rather than
    /// told either way.
    Unconfirmed,
}

impl Answer {
    /// The answer's code (`ISSUED`, or the refusal's), unless the coupon is
    /// unknown: counts of those would grow with every made-up id.
    pub fn about_a_known_coupon(&self) -> Option<&'static str> {
        match self {
            Answer::Issued => Some("ISSUED"),
            Answer::Rejected(Rejection::CouponNotFound) => None,
            Answer::Rejected(rejection) => Some(rejection.code()),
            Answer::Fenced => Some("UNAVAILABLE"),
            Answer::Unconfirmed => Some("UNCONFIRMED"),
        }
    }
}

/// Where an issued event goes before the customer is answered.
pub enum HandOff {
    /// To Kafka, for coupon-writer (the design).
    Kafka,
    /// Into PostgreSQL by the request itself (the baseline).
    WriteThrough(WriteThrough),
}

impl HandOff {
    pub fn new(mode: IssueMode, pool: coupon_infra::db::PgPool) -> Self {
        match mode {
            IssueMode::Kafka => HandOff::Kafka,
            IssueMode::SyncDb => HandOff::WriteThrough(WriteThrough::new(pool)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    Redis(#[from] RedisUnavailable),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Everything the hot path touches, and nothing else.
pub struct Issuance {
    pub issuer: Issuer,
    /// The outboxes this replica's relay reads.
    pub watchlist: Arc<Watchlist>,
    pub publisher: Arc<Publisher>,
    /// Delivered outbox entries, removed in batches.
    pub acks: AckQueue,
    pub hand_off: HandOff,
    /// How long a request waits for Kafka's acknowledgement; zero: not at all.
    pub ack_timeout: Duration,
    /// Waits for Redis replicas before a 201 (`redis.min_replicas`).
    pub replicas: ReplicaWait,
    /// Asks for a rebuild when a request finds Redis suspect.
    pub recovery: RecoveryRequests,
    /// Tells a coupon Redis lacks from one that does not exist.
    pub coupons: Arc<CouponCache>,
    /// Refusals answered without Redis; `None` when `issue.memory_check_ms` is 0.
    pub memory: Option<Arc<Memory>>,
}

impl Issuance {
    pub async fn issue(&self, coupon: CouponId, customer: CustomerId, request_id: &str) -> Result<Answer, IssueError> {
        if let Some(rejection) = self.memory.as_ref().and_then(|memory| memory.answer(coupon, customer)) {
            return Ok(Answer::Rejected(rejection));
        }
        // A first request for a sharded coupon is routed as for one shard and
        // told the number; once more at most, should that be refused too.
        for _ in 0..2 {
            let route = self.issuer.route(coupon, customer);
            // Before the script may write an entry, so that a replica dying right
            // after it leaves the entry to another replica's relay.
            self.watchlist.claim(route.shard).await?;
            let decision = self.issuer.issue(route, customer).await?;
            if !matches!(decision, Decision::Reroute(_)) {
                return self.answer(route, customer, decision, request_id).await;
            }
        }
        Ok(Answer::Fenced)
    }

    async fn answer(
        &self,
        route: Route,
        customer: CustomerId,
        decision: Decision,
        request_id: &str,
    ) -> Result<Answer, IssueError> {
        let coupon = route.shard.coupon;
        match decision {
            Decision::Issued(issued) => {
                self.watchlist.wrote(route.shard, &issued.outbox_entry);
                let handed_off = async {
                    match &self.hand_off {
                        HandOff::Kafka => self.hand_off(route.shard, customer, &issued, request_id).await,
                        HandOff::WriteThrough(baseline) => {
                            baseline.write(&self.acks, route.shard, customer, &issued).await
                        }
                    }
                };
                let (replicated, ()) = tokio::join!(self.replicas.acknowledged(issued.generation), handed_off);
                Ok(if replicated { Answer::Issued } else { Answer::Unconfirmed })
            }
            Decision::Rejected(Rejection::CouponNotFound) => self.unknown_to_redis(coupon).await,
            Decision::Rejected(rejection) => {
                if let Some(memory) = &self.memory {
                    memory.learn(coupon, rejection);
                }
                Ok(Answer::Rejected(rejection))
            }
            Decision::Fenced(Fence::Node) => {
                self.recovery.new_incarnation();
                Ok(Answer::Fenced)
            }
            Decision::Fenced(Fence::Coupon) | Decision::Reroute(_) => Ok(Answer::Fenced),
            Decision::Unknown => {
                // If the script ran, its entry waits in the outbox with an id
                // nobody heard: the relay must look for it.
                self.watchlist.unconfirmed(route.shard);
                Ok(Answer::Unconfirmed)
            }
        }
    }

    /// This replica changed the coupon in Redis (a control, a unit back in
    /// stock): forgets what it remembers of it, and returns once no replica
    /// answers from memory taken before the change.
    pub async fn changed(&self, coupon: CouponId) {
        if let Some(memory) = &self.memory {
            memory.forget(coupon);
            memory.outlived().await;
        }
    }

    /// Redis lacks the coupon: unknown, ended and retired, or lost by Redis
    /// (flushed, or not yet created). PostgreSQL tells which; an open coupon that
    /// Redis lost is rebuilt, and never answered 404.
    async fn unknown_to_redis(&self, coupon: CouponId) -> Result<Answer, IssueError> {
        if self.recovery.is_asked(coupon) {
            return Ok(Answer::Fenced);
        }
        let Some(row) = self.coupons.get(coupon).await? else {
            return Ok(Answer::Rejected(Rejection::CouponNotFound));
        };
        if row.ends_at <= OffsetDateTime::now_utc() {
            return Ok(Answer::Rejected(Rejection::Expired));
        }
        self.recovery.coupon(coupon);
        Ok(Answer::Fenced)
    }

    async fn hand_off(&self, shard: CouponShard, customer: CustomerId, issued: &Issued, request_id: &str) {
        let coupon = shard.coupon;
        let event = CouponIssuedEvent {
            coupon_id: coupon,
            customer_id: customer,
            issued_at: issued.issued_at,
            issuance: issued.issuance,
        };
        // The delivery callback removes the outbox entry, whether or not this
        // request is still waiting by then.
        let remove = Delivered { shard, entry: issued.outbox_entry.clone() };
        let delivery = self.publisher.send(&event, Some(remove), Some(request_id));
        if self.ack_timeout.is_zero() || !self.publisher.is_healthy() {
            return;
        }
        match tokio::time::timeout(self.ack_timeout, delivery).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(error = %err, coupon = %coupon, "event left in the outbox for the relay"),
            Err(_) => self.publisher.mark_unhealthy(),
        }
    }
}
