//! Which outboxes this replica's relay reads, so background work follows what
//! is pending, not how many coupons exist or how many replicas run. Each
//! outbox is a coupon's shard's (`CouponShard`); an unsharded coupon has one,
//! and "coupon" below means either.
//!
//! A replica remembers each coupon it wrote an outbox entry to and the time of
//! its latest entry there (Redis's clock, from the entry id). Its relay reads
//! only those outboxes, and forgets one once a read finds no entry left up to
//! a time after that latest entry: everything this replica wrote there is
//! delivered. An idle replica reads nothing.
//!
//! What one replica remembers dies with it, so before its first issuance for a
//! coupon it claims the coupon in Redis (its claims set), and it keeps an
//! `alive` key with a TTL. Every replica sweeps on each heartbeat: a replica
//! whose `alive` key lapsed has its claims moved into the sweeper's, whose
//! relay then reads those outboxes. A killed replica's entries are therefore
//! sent again within `relay.replica_ttl_ms`, one heartbeat, and
//! `relay.min_age_ms`. A replica that stops cleanly deletes its `alive` key,
//! so its claims are taken over at the next heartbeat of any other.
//!
//! An issuance whose reply was lost (`503 UNCONFIRMED`) may have written an
//! entry nobody knows the id of. Its coupon is read until the outbox is seen
//! empty up to a moment after the relay next reads Redis's clock: the script,
//! if it ran, ran before Redis answered that.
//!
//! A replica whose `alive` key lapsed while it was stalled (not dead) claims
//! its coupons again at its next heartbeat; an entry it writes between waking
//! and that heartbeat is covered only if it lives until then.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coupon_domain::keys::SystemKeys;
use coupon_domain::shards::CouponShard;
use coupon_infra::redis::SharedRedis;
use redis::Script;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::store::RedisUnavailable;

pub struct Watchlist {
    redis: Arc<SharedRedis>,
    keys: SystemKeys,
    replica: String,
    ttl_ms: u64,
    claim: Script,
    heartbeat: Script,
    adopt: Script,
    watched: Mutex<Watched>,
}

#[derive(Default)]
struct Watched {
    /// Coupons this replica claimed (`true`) or is claiming. One claim per
    /// coupon: the requests of a spike's first moment wait for it rather
    /// than each sending its own.
    claims: HashMap<CouponShard, Arc<OnceCell<bool>>>,
    /// Coupon → the time (Redis ms) up to which its outbox must be seen empty
    /// before the relay may stop reading it.
    pending: HashMap<CouponShard, i64>,
    /// Coupons whose issue script may have written an entry of unknown id,
    /// until the relay has read Redis's clock since.
    unconfirmed: HashSet<CouponShard>,
}

impl Watched {
    /// The relay reads `coupon`'s outbox until it is seen empty up to `at_ms`
    /// (or a later time already asked for).
    fn read_until(&mut self, coupon: CouponShard, at_ms: i64) {
        let until = self.pending.entry(coupon).or_insert(at_ms);
        *until = (*until).max(at_ms);
    }
}

impl Watchlist {
    pub fn new(redis: Arc<SharedRedis>, key_prefix: &str, ttl: Duration) -> Self {
        Self {
            redis,
            keys: SystemKeys::new(key_prefix),
            replica: format!("{:016x}", rand::random::<u64>()),
            ttl_ms: ttl.as_millis() as u64,
            claim: Script::new(include_str!("claim.lua")),
            heartbeat: Script::new(include_str!("heartbeat.lua")),
            adopt: Script::new(include_str!("adopt.lua")),
            watched: Mutex::new(Watched::default()),
        }
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.watched.lock().expect("not poisoned")
    }

    /// Claims `coupon` unless this replica did already; before an issuance.
    /// A coupon Redis does not hold is not claimed (the issue script answers
    /// for it without writing anything), and the next request tries again.
    pub async fn claim(&self, coupon: CouponShard) -> Result<(), RedisUnavailable> {
        let cell = self.watched().claims.entry(coupon).or_default().clone();
        let claimed = *cell
            .get_or_try_init(|| async {
                let mut claim = self.claim.key(self.keys.index());
                claim
                    .key(self.keys.claims(&self.replica))
                    .key(self.keys.replicas())
                    .arg(coupon.coupon.get())
                    .arg(&self.replica)
                    .arg(coupon.to_string());
                Ok::<_, RedisUnavailable>(self.redis.invoke::<i64>(&claim).await? == 1)
            })
            .await?;
        if !claimed {
            let mut watched = self.watched();
            if watched.claims.get(&coupon).is_some_and(|current| Arc::ptr_eq(current, &cell)) {
                watched.claims.remove(&coupon);
            }
        }
        Ok(())
    }

    fn claimed(&self) -> Vec<String> {
        self.watched().claims.iter().filter(|(_, cell)| cell.get() == Some(&true)).map(|(c, _)| c.to_string()).collect()
    }

    /// This replica wrote an outbox entry for `coupon` with this id.
    pub fn wrote(&self, coupon: CouponShard, entry: &str) {
        // The id's first part is Redis's clock at the write.
        let at = entry.split_once('-').and_then(|(ms, _)| ms.parse().ok()).unwrap_or(i64::MAX);
        self.watched().read_until(coupon, at);
    }

    /// Claims `coupon` and has the relay read its outbox until it holds no
    /// entry up to `since_ms`: for coupons whose entries nobody else watches
    /// (taken over from a dead replica, rebuilt by the recovery).
    pub async fn watch(&self, coupon: CouponShard, since_ms: i64) -> Result<(), RedisUnavailable> {
        self.claim(coupon).await?;
        self.watched().read_until(coupon, since_ms);
        Ok(())
    }

    /// An issue script for `coupon` may have run without its reply reaching
    /// this replica (which claimed the coupon before sending it).
    pub fn unconfirmed(&self, coupon: CouponShard) {
        self.watched().unconfirmed.insert(coupon);
    }

    /// The coupons of lost replies so far; read before Redis's clock is.
    pub fn lost_replies(&self) -> Vec<CouponShard> {
        self.watched().unconfirmed.iter().copied().collect()
    }

    /// Redis's clock read `now_ms` after `coupons`' lost replies: each
    /// outbox is read until it is seen empty up to then.
    pub fn clock_read_after(&self, coupons: &[CouponShard], now_ms: i64) {
        let mut watched = self.watched();
        for coupon in coupons {
            watched.unconfirmed.remove(coupon);
            watched.read_until(*coupon, now_ms);
        }
    }

    /// The outboxes to read, each with the time up to which it must be seen empty.
    pub fn pending(&self) -> Vec<(CouponShard, i64)> {
        self.watched().pending.iter().map(|(coupon, until)| (*coupon, *until)).collect()
    }

    /// A read found no entry in `coupon`'s outbox up to `until_ms`: stop
    /// reading it unless this replica wrote there since.
    pub fn settled(&self, coupon: CouponShard, until_ms: i64) {
        let mut watched = self.watched();
        if watched.pending.get(&coupon).is_some_and(|latest| *latest <= until_ms) {
            watched.pending.remove(&coupon);
        }
    }

    /// Forgets retired coupons: out of every replica's claims and of this
    /// replica's memory.
    pub async fn forget(&self, coupons: &[CouponShard]) -> Result<(), RedisUnavailable> {
        if coupons.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = coupons.iter().map(|c| c.to_string()).collect();
        let replicas: Vec<String> = self.redis.query(redis::cmd("SMEMBERS").arg(self.keys.replicas())).await?;
        let removals: Vec<redis::Cmd> = replicas
            .iter()
            .map(|replica| redis::cmd("SREM").arg(self.keys.claims(replica)).arg(&ids).to_owned())
            .collect();
        let _: Vec<i64> = self.redis.query_each(&removals).await?;
        let mut watched = self.watched();
        for coupon in coupons {
            watched.claims.remove(coupon);
            watched.pending.remove(coupon);
            watched.unconfirmed.remove(coupon);
        }
        Ok(())
    }

    /// Beats, then takes over the claims of replicas that died. Returns how
    /// many coupons were taken over.
    pub async fn beat(&self) -> Result<usize, RedisUnavailable> {
        let mut heartbeat = self.heartbeat.key(self.keys.replicas());
        heartbeat.key(self.keys.alive(&self.replica)).arg(&self.replica).arg(self.ttl_ms);
        if self.redis.invoke::<i64>(&heartbeat).await? == 1 {
            self.claim_again().await?;
        }
        self.adopt_dead().await
    }

    async fn claim_again(&self) -> Result<(), RedisUnavailable> {
        let ids = self.claimed();
        if !ids.is_empty() {
            let _: () = self.redis.query(redis::cmd("SADD").arg(self.keys.claims(&self.replica)).arg(ids)).await?;
        }
        Ok(())
    }

    async fn adopt_dead(&self) -> Result<usize, RedisUnavailable> {
        let replicas: Vec<String> = self.redis.query(redis::cmd("SMEMBERS").arg(self.keys.replicas())).await?;
        let others: Vec<&String> = replicas.iter().filter(|r| **r != self.replica).collect();
        if others.is_empty() {
            return Ok(0);
        }
        let probes: Vec<redis::Cmd> =
            others.iter().map(|replica| redis::cmd("EXISTS").arg(self.keys.alive(replica)).to_owned()).collect();
        let alive: Vec<bool> = self.redis.query_each(&probes).await?;
        let mut adopted = 0;
        for (replica, _) in others.into_iter().zip(alive).filter(|(_, alive)| !alive) {
            let mut adopt = self.adopt.key(self.keys.replicas());
            adopt.key(self.keys.alive(replica)).key(self.keys.claims(replica)).key(self.keys.claims(&self.replica));
            let coupons: Vec<String> = self.redis.invoke(adopt.arg(replica)).await?;
            let now_ms = self.redis.server_time_ms().await?;
            let mut watched = self.watched();
            for coupon in coupons.iter().filter_map(|claim| claim.parse::<CouponShard>().ok()) {
                watched.claims.insert(coupon, Arc::new(OnceCell::new_with(Some(true))));
                watched.read_until(coupon, now_ms);
            }
            drop(watched);
            tracing::warn!(replica = %replica, coupons = coupons.len(), "took over a stopped API replica's outboxes");
            adopted += coupons.len();
        }
        Ok(adopted)
    }

    /// Beats every third of the TTL until `stop`; then leaves, so the claims
    /// are taken over at once by the others (or dropped when nothing is left).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let every = Duration::from_millis((self.ttl_ms / 3).max(1));
        loop {
            if let Err(err) = self.beat().await {
                tracing::warn!(error = %err, "relay heartbeat failed; will retry");
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Stops claiming: with nothing pending the claims go; otherwise the
    /// `alive` key goes and another replica takes them over.
    pub async fn leave(&self) -> Result<(), RedisUnavailable> {
        let done = self.watched().pending.is_empty();
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(self.keys.alive(&self.replica)).ignore();
        if done {
            pipe.cmd("DEL").arg(self.keys.claims(&self.replica)).ignore();
            pipe.cmd("SREM").arg(self.keys.replicas()).arg(&self.replica).ignore();
        }
        let _: () = self.redis.query_pipe(&pipe).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watchlist() -> Watchlist {
        let redis = SharedRedis::new(&coupon_infra::settings::RedisSettings::default()).unwrap();
        Watchlist::new(Arc::new(redis), "t:", Duration::from_secs(10))
    }

    fn coupon(id: i64) -> CouponShard {
        CouponShard::first(coupon_domain::CouponId::new(id).unwrap())
    }

    #[test]
    fn a_coupon_is_read_until_its_latest_entry_is_seen_gone() {
        let watchlist = watchlist();
        watchlist.wrote(coupon(1), "1000-0");
        watchlist.wrote(coupon(1), "3000-5");
        watchlist.wrote(coupon(1), "2000-0");
        assert_eq!(watchlist.pending(), vec![(coupon(1), 3000)]);
        watchlist.settled(coupon(1), 2999);
        assert_eq!(watchlist.pending(), vec![(coupon(1), 3000)], "an entry after the read may be left");
        watchlist.settled(coupon(1), 3000);
        assert!(watchlist.pending().is_empty());
    }

    #[test]
    fn an_unreadable_entry_id_keeps_the_coupon_watched() {
        let watchlist = watchlist();
        watchlist.wrote(coupon(2), "garbage");
        watchlist.settled(coupon(2), i64::MAX - 1);
        assert_eq!(watchlist.pending().len(), 1);
    }
}
