//! Keeps Redis's coupon state exact when Redis forgets: a fenced rebuild from
//! PostgreSQL, the source of truth for coupons.
//!
//! Every `201` is in Kafka before it is answered (while Kafka is healthy) or in
//! the coupon's outbox. So once coupon-writer has applied everything published
//! up to a moment after issuance for a coupon stopped, PostgreSQL's holders
//! plus the outbox's customers are exactly the coupon's holders, and its stock
//! is the total less their number. A rebuild therefore:
//! 1. takes the recovery lock (one rebuild at a time over all API replicas);
//! 2. fences the coupons (the issue script answers FENCED, the API `503`);
//! 3. when the Redis is a new incarnation (no issue script: it restarted or
//!    failed over), loads the issue script now that every coupon it may hold
//!    stale is fenced. A coupon created on this very incarnation cannot be
//!    stale (nothing was issued from it without the script), so it is neither
//!    fenced nor rebuilt: a brand-new Redis with no older coupons serves at once;
//! 4. waits `settle`, the producer's `message.timeout.ms`, so that whatever a
//!    request sent to Kafka before the fence is either there or failed;
//! 5. reads the topic's high watermarks and waits until the writer's group has
//!    committed them;
//! 6. writes each coupon's state from its PostgreSQL holders and its outbox,
//!    overwriting what Redis holds, and lifts its fence (rebuild.lua).
//!
//! A pass runs at start (looking at every open coupon), every
//! `recovery.sync_interval_ms` (looking at the fenced set only, so its cost does
//! not grow with the number of coupons), and whenever a request finds the
//! issue script missing or an open coupon missing from Redis. Whoever dies
//! mid-way leaves fences behind, listed in the fenced set; the lock expires
//! and the next pass of any replica rebuilds them. A rebuilt coupon's outbox
//! goes on the rebuilder's watchlist, so its entries are relayed whoever
//! wrote them.

pub mod fence;
pub mod lock;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coupon_domain::shards::CouponShard;
use coupon_domain::CouponId;
use coupon_infra::kafka::{GroupProgress, Mark};
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogError, Controlled, CouponRow};
use crate::config::RecoverySettings;
use crate::delivery::watchlist::Watchlist;
use crate::metrics::Metrics;
use crate::readiness::{Readiness, Stage};
use crate::store::incarnation::Incarnations;
use crate::store::{unix_ms, Control, CouponState, CouponStore, Presence, RedisUnavailable};
use fence::Fences;
use lock::RecoveryLock;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Redis(#[from] RedisUnavailable),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("reading the writer's progress from Kafka: {0:#}")]
    Kafka(anyhow::Error),
    #[error("lost the recovery lock; another replica goes on")]
    LockLost,
    #[error("another replica holds the recovery lock and has not made this Redis safe to issue from yet")]
    TakenOverElsewhere,
    #[error("Redis failed over or restarted while it was being made safe; starting over")]
    IncarnationChanged,
    #[error("stopped")]
    Stopped,
}

/// What requests ask the recovery to look at.
#[derive(Default)]
struct Asked {
    node: bool,
    coupons: BTreeSet<CouponId>,
}

/// Lets request handlers ask for a recovery pass; never waits.
#[derive(Clone, Default)]
pub struct RecoveryRequests {
    asked: Arc<Mutex<Asked>>,
    wake: Arc<Notify>,
}

impl RecoveryRequests {
    /// The Redis answered NOSCRIPT: it may hold any coupon stale.
    pub fn new_incarnation(&self) {
        self.asked.lock().expect("not poisoned").node = true;
        self.wake.notify_one();
    }

    /// An open coupon that Redis lacks or that an operator fenced.
    pub fn coupon(&self, coupon: CouponId) {
        self.asked.lock().expect("not poisoned").coupons.insert(coupon);
        self.wake.notify_one();
    }

    /// Whether the coupon awaits a pass, so a request need not ask PostgreSQL again.
    pub fn is_asked(&self, coupon: CouponId) -> bool {
        self.asked.lock().expect("not poisoned").coupons.contains(&coupon)
    }

    fn take(&self) -> Asked {
        std::mem::take(&mut *self.asked.lock().expect("not poisoned"))
    }
}

pub struct Recovery {
    pub catalog: Catalog,
    pub store: Arc<CouponStore>,
    pub incarnations: Arc<Incarnations>,
    pub fences: Arc<Fences>,
    pub lock: RecoveryLock,
    pub watchlist: Arc<Watchlist>,
    pub progress: Arc<GroupProgress>,
    pub metrics: Metrics,
    pub settings: RecoverySettings,
    pub requests: RecoveryRequests,
    /// How long a request may still be on its way to Kafka (`message.timeout.ms`).
    pub settle: Duration,
    pub interval: Duration,
    /// Waited for before the first pass (the schema), and told once a pass
    /// has fenced what it must and loaded the issue script.
    pub readiness: Readiness,
}

/// How soon a failed pass is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// How far apart the clocks of a cluster's Redis nodes may be (NTP keeps
/// them within milliseconds): a coupon that ended this recently by one clock
/// may still be open by another's.
const CLOCK_MARGIN: time::Duration = time::Duration::seconds(2);

/// Kafka calls (metadata, watermarks, committed offsets) give up after this.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);

/// What a rebuild makes safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target<'a> {
    /// Coupons a trusted Redis lacks or holds fenced.
    Coupons,
    /// A Redis incarnation not trusted yet (it restarted or failed over),
    /// with the coupons it may hold stale.
    Incarnation(&'a str),
}

/// Which coupons a pass looks at (besides those requests asked about).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every open coupon: the first pass, after which every coupon Redis may
    /// hold wrongly is fenced and listed in the fenced set.
    Open,
    /// The coupons in the fenced set: a periodic pass.
    Fenced,
    /// Only those asked about.
    Asked,
}

impl Recovery {
    pub async fn run(self, stop: CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => return tracing::info!("recovery stopped"),
            _ = self.readiness.reached(Stage::FirstRecoveryPass) => {}
        }
        let mut scope = Scope::Open;
        loop {
            let asked = self.requests.take();
            let passed = self.pass(asked, scope, &stop).await;
            // After a failure the next pass looks at every open coupon again,
            // soon: a failed rebuild leaves its coupons fenced.
            let next_full = match passed {
                Ok(()) if scope == Scope::Open => {
                    self.made_safe();
                    scope = Scope::Fenced;
                    self.interval
                }
                Ok(()) => self.interval,
                Err(RecoveryError::Stopped) => break,
                Err(RecoveryError::TakenOverElsewhere) => {
                    tracing::info!("another replica is making this Redis safe to issue from; looking again soon");
                    self.interval.min(RETRY_AFTER_FAILURE)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "recovery pass failed; will retry");
                    self.interval.min(RETRY_AFTER_FAILURE)
                }
            };
            // A pause between passes, so a flood of requests that find Redis
            // suspect costs one pass per poll, not one per request.
            let poll = tokio::time::sleep(self.settings.poll);
            let periodic = tokio::select! {
                _ = stop.cancelled() => break,
                _ = async { poll.await; self.requests.wake.notified().await } => false,
                _ = tokio::time::sleep(next_full) => true,
            };
            if scope != Scope::Open {
                scope = if periodic { Scope::Fenced } else { Scope::Asked };
            }
        }
        tracing::info!("recovery stopped");
    }

    /// One look: rebuilds the coupons that need it, and unless it only
    /// answers requests, retires ended coupons.
    async fn pass(&self, asked: Asked, scope: Scope, stop: &CancellationToken) -> Result<(), RecoveryError> {
        if scope == Scope::Open {
            let migrated = self.store.migrate_index().await?;
            if migrated > 0 {
                tracing::info!(coupons = migrated, "coupon index carried over to the index sorted by end");
            }
        }
        // Redis's clock, which the issue script judges periods by; the
        // margin covers other Redis nodes' clocks in cluster mode. A coupon
        // that ended within it is rebuilt for nothing, and answers EXPIRED.
        let now = self.store.server_now().await?;
        let open_since = now - CLOCK_MARGIN;
        let node = self.incarnations.current().await?;
        if !node.trusted {
            let open = self.catalog.open(open_since).await?;
            let born_here = self.fences.born_here(&sharded(&open)).await?;
            let (new, stale): (Vec<_>, Vec<_>) = open.into_iter().zip(born_here).partition(|(_, born)| *born);
            if !new.is_empty() {
                tracing::info!(coupons = new.len(), "coupons created on this Redis since it started need no rebuild");
            }
            self.rebuild(stale.into_iter().map(|(row, _)| row).collect(), Target::Incarnation(&node.id), stop).await?;
        } else {
            if !node.recorded {
                // A system from before the record: it is the incarnation
                // the script says it is; record it, so a failback is noticed.
                self.incarnations.trust(&node.id).await?;
            }
            let candidates = if scope == Scope::Open {
                self.catalog.open(open_since).await?
            } else {
                let mut wanted: BTreeSet<CouponId> = asked.coupons;
                if scope == Scope::Fenced {
                    wanted.extend(self.fences.listed().await?);
                }
                self.catalog.rows(&wanted.into_iter().collect::<Vec<_>>()).await?
            };
            let suspects = self.suspects(candidates, now).await?;
            if !suspects.is_empty() {
                self.rebuild(suspects, Target::Coupons, stop).await?;
            }
        }
        if scope != Scope::Asked {
            self.retire_ended(now).await?;
        }
        Ok(())
    }

    /// The candidates Redis holds fenced, or lacks while they are open; the
    /// others leave the fenced set.
    async fn suspects(&self, candidates: Vec<CouponRow>, now: OffsetDateTime) -> Result<Vec<CouponRow>, RecoveryError> {
        let presence = self.store.presence(&sharded(&candidates)).await?;
        // A coupon created moments ago may be in PostgreSQL and not yet
        // in Redis: its creation is still under way, not lost.
        let created_before = now - self.settle;
        let (suspects, sound): (Vec<_>, Vec<_>) =
            candidates.into_iter().zip(presence).partition(|(row, presence)| match presence {
                Presence::Ready => false,
                Presence::Fenced => true,
                Presence::Missing => row.created_at < created_before && row.ends_at > now - CLOCK_MARGIN,
            });
        self.fences.unlist(&sound.iter().map(|(row, _)| row.id).collect::<Vec<_>>()).await?;
        Ok(suspects.into_iter().map(|(row, _)| row).collect())
    }

    /// Rebuilds `coupons` behind fences; for a [`Target::Incarnation`], also
    /// makes that Redis safe to issue from.
    async fn rebuild(
        &self,
        coupons: Vec<CouponRow>,
        target: Target<'_>,
        stop: &CancellationToken,
    ) -> Result<(), RecoveryError> {
        // Step 1.
        let token = format!("{:032x}", rand::random::<u128>());
        if !self.lock.lock(&token, self.settings.lock_ttl).await? {
            // Until the issue script is loaded this replica cannot serve.
            if let Target::Incarnation(_) = target {
                return Err(RecoveryError::TakenOverElsewhere);
            }
            tracing::info!("another replica is rebuilding; leaving it to that one");
            return Ok(());
        }
        let result = self.rebuild_locked(&coupons, target, &token, stop).await;
        if let Err(err) = self.lock.unlock(&token).await {
            tracing::warn!(error = %err, "could not release the recovery lock; it expires by itself");
        }
        self.metrics.fenced_coupons.set(0);
        result
    }

    /// Steps 2 to 6 of the module header, under the lock.
    async fn rebuild_locked(
        &self,
        coupons: &[CouponRow],
        target: Target<'_>,
        token: &str,
        stop: &CancellationToken,
    ) -> Result<(), RecoveryError> {
        if self.taken_over_already(target).await? {
            return Ok(());
        }
        let ids = ids(coupons);
        self.fence(&sharded(coupons), token).await?;
        match target {
            Target::Incarnation(id) => self.trust_incarnation(id, ids.len()).await?,
            Target::Coupons => {
                tracing::warn!(coupons = ?ids, "coupons missing from Redis or fenced: rebuilding them from PostgreSQL")
            }
        }
        self.made_safe();
        if coupons.is_empty() {
            return Ok(());
        }
        self.hold_lock_for(self.settle, token, stop).await?;
        self.wait_for_writer(token, stop).await?;
        self.write_states(coupons, token).await
    }

    /// This replica saw the new incarnation before it had the lock; another
    /// one may have handled it meanwhile (replicas starting together on a
    /// fresh Redis, or noticing the same restart). That one fenced every
    /// open coupon before loading the script and rebuilt them, or left them
    /// fenced for the next pass, before it let the lock go: nothing is left
    /// to do here, and fencing again would stop coupons created since.
    async fn taken_over_already(&self, target: Target<'_>) -> Result<bool, RecoveryError> {
        if let Target::Incarnation(_) = target {
            if self.incarnations.is_trusted().await? {
                tracing::info!("another replica already took over this Redis; nothing to rebuild");
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Step 2.
    async fn fence(&self, coupons: &[(CouponId, u16)], token: &str) -> Result<(), RecoveryError> {
        self.fences.fence(coupons, token).await?;
        self.metrics.fenced_coupons.set(coupons.len() as i64);
        Ok(())
    }

    /// Step 3: loads the issue script on a Redis whose coupons that may be
    /// stale are all fenced now.
    async fn trust_incarnation(&self, incarnation: &str, fenced: usize) -> Result<(), RecoveryError> {
        if !self.incarnations.trust(incarnation).await? {
            return Err(RecoveryError::IncarnationChanged);
        }
        if fenced == 0 {
            tracing::info!("issue script loaded; no open coupon needed a rebuild");
        } else {
            self.metrics.redis_new_incarnations.inc();
            tracing::warn!(
                coupons = fenced,
                "Redis restarted or failed over: its coupons are fenced until rebuilt from PostgreSQL"
            );
        }
        Ok(())
    }

    /// Step 6: each coupon's state from its PostgreSQL holders and its outbox.
    async fn write_states(&self, coupons: &[CouponRow], token: &str) -> Result<(), RecoveryError> {
        for row in coupons {
            let id = row.id;
            let controlled = self.catalog.control(id).await?.unwrap_or(Controlled {
                control: Control::default(),
                ends_at: row.ends_at,
                total_quantity: row.total_quantity,
            });
            let holders = self.catalog.holders(id).await?;
            let state = CouponState {
                id,
                starts_at: row.starts_at,
                ends_at: controlled.ends_at,
                total_quantity: controlled.total_quantity,
                shards: row.shard_count(),
                holders,
                control: controlled.control,
            };
            match self.fences.rebuild(&state, token).await? {
                Some(stock) => {
                    // Whoever wrote the entries the rebuild kept may be gone.
                    let now_ms = self.store.server_time_ms().await?;
                    for shard in CouponShard::all(id, state.shards) {
                        self.watchlist.watch(shard, now_ms).await?;
                    }
                    self.metrics.rebuilds.inc();
                    tracing::info!(coupon = %id, holders = state.holders.customers.len(), stock, "coupon rebuilt from PostgreSQL");
                }
                None => tracing::warn!(coupon = %id, "another rebuild took the coupon's fence over"),
            }
        }
        Ok(())
    }

    /// Every coupon Redis may hold stale is fenced and the issue script is
    /// loaded: requests may be served from here on.
    fn made_safe(&self) {
        self.readiness.advance(Stage::WarmingProducer);
    }

    /// Sleeps for `wait` in steps, renewing the lock.
    async fn hold_lock_for(&self, wait: Duration, token: &str, stop: &CancellationToken) -> Result<(), RecoveryError> {
        let step = self.settings.lock_ttl / 3;
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = stop.cancelled() => return Err(RecoveryError::Stopped),
                _ = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + step)) => {}
            }
            self.renew(token).await?;
        }
        Ok(())
    }

    async fn renew(&self, token: &str) -> Result<(), RecoveryError> {
        if self.lock.renew(token, self.settings.lock_ttl).await? {
            Ok(())
        } else {
            Err(RecoveryError::LockLost)
        }
    }

    /// Step 5: reads the topic's high watermarks, then polls the writer's
    /// committed offsets until they reach them, for as long as it takes: a
    /// rebuild from a database that lacks issuances would sell their stock again.
    async fn wait_for_writer(&self, token: &str, stop: &CancellationToken) -> Result<(), RecoveryError> {
        let marks: Vec<Mark> = self.kafka(|progress| progress.marks(KAFKA_TIMEOUT)).await?;
        let poll = self.settings.poll;
        // A line about every 10 s.
        let log_every = (10_000 / (poll.as_millis() as u64).max(1)).max(1);
        let mut polls: u64 = 0;
        loop {
            let marks_owned = marks.to_vec();
            let behind = self.kafka(move |progress| progress.behind(&marks_owned, KAFKA_TIMEOUT)).await?;
            if behind == 0 {
                return Ok(());
            }
            if polls.is_multiple_of(log_every) {
                tracing::info!(records = behind, "waiting for coupon-writer to apply what was issued before the fence");
            }
            polls += 1;
            self.hold_lock_for(poll, token, stop).await?;
        }
    }

    async fn kafka<T: Send + 'static>(
        &self,
        call: impl FnOnce(&GroupProgress) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, RecoveryError> {
        let progress = self.progress.clone();
        tokio::task::spawn_blocking(move || call(&progress))
            .await
            .map_err(|err| RecoveryError::Kafka(err.into()))?
            .map_err(RecoveryError::Kafka)
    }

    async fn retire_ended(&self, now: OffsetDateTime) -> Result<(), RecoveryError> {
        let now_ms = unix_ms(now - CLOCK_MARGIN);
        let mut retired = Vec::new();
        for coupon in self.store.ended(now_ms).await? {
            if let Some(shards) = self.fences.retire(coupon, self.settings.ended_grace).await? {
                tracing::info!(coupon = %coupon, grace = ?self.settings.ended_grace, "ended coupon retired from Redis");
                retired.extend(CouponShard::all(coupon, shards));
            }
        }
        self.watchlist.forget(&retired).await?;
        Ok(())
    }
}

fn ids(rows: &[CouponRow]) -> Vec<CouponId> {
    rows.iter().map(|row| row.id).collect()
}

/// Each coupon with its number of shards.
fn sharded(rows: &[CouponRow]) -> Vec<(CouponId, u16)> {
    rows.iter().map(|row| (row.id, row.shard_count())).collect()
}
