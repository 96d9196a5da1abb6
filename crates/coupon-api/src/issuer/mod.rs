//! The coupon state in Redis and the scripts that change it: the issuance
//! decision (`issue.lua`), a new coupon's state (`create.lua`, stamped with
//! the Redis incarnation it was born on, which `born_here.lua` compares), the
//! rebuild of a fenced coupon (`rebuild.lua`), removal of delivered outbox entries
//! (`release.lua`), retirement of ended coupons (`retire.lua`), and the
//! recovery lock (`unlock.lua`). Every script touches one coupon's keys, which
//! share one hash tag.
//!
//! The issue script is the incarnation marker of the Redis it runs on: Redis
//! keeps scripts in memory only and replicates none, so a Redis that restarted
//! (from whatever data) or a replica that was promoted for the first time
//! answers its EVALSHA with NOSCRIPT before touching any key. It is therefore
//! called by SHA and never reloaded here; only the recovery loads it, after
//! fencing every coupon that Redis may hold stale (crate::recovery). Its text
//! carries the key prefix, so systems sharing one Redis under different
//! prefixes each have their own marker. The other scripts reload themselves
//! on NOSCRIPT.
//!
//! A former primary keeps its script cache when it is demoted, so a failback
//! to it would pass for the incarnation the recovery trusted. The recovery
//! therefore also records the incarnation it trusted (`run_id:master_replid`,
//! `trusted.lua`/`trust.lua`); a promotion makes a new replication id, and a
//! connection is used for issuance only once its server proved to be that
//! incarnation. (In cluster mode this record lives on the node of the system
//! keys' slot only; the other masters have the script cache alone.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coupon_domain::{CouponId, CustomerId, Rejection};
use coupon_infra::redis::{Link, SharedRedis};
use futures::future::try_join_all;
use redis::{ErrorKind, RedisError, Script, ServerErrorKind, Value};
use time::OffsetDateTime;

pub use coupon_domain::keys::{CouponKeys, SystemKeys};

/// Redis could not decide: unreachable, timed out, or answered something the
/// script never returns. In each case nothing was changed that we know of.
#[derive(Debug, thiserror::Error)]
pub enum RedisUnavailable {
    #[error("Redis command failed: {0}")]
    Command(#[from] RedisError),
    #[error("unexpected reply from the issue script: {0:?}")]
    Reply(Value),
}

/// A granted coupon as recorded in the coupon's outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub outbox_entry: String,
    pub issued_at: OffsetDateTime,
    /// The generation of the Redis connection the script ran on.
    pub generation: u64,
}

/// Why Redis may not decide for a coupon now; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// The coupon's state is being rebuilt from PostgreSQL.
    Coupon,
    /// Redis restarted or failed over since the issue script was loaded: all
    /// its coupons are suspect until the recovery has fenced them.
    Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Issued(Issued),
    Rejected(Rejection),
    Fenced(Fence),
    /// The script may have run, but its reply was lost (the connection broke
    /// or timed out after the command was sent): nobody knows whether the
    /// customer got the coupon until it is asked for again.
    Unknown,
}

/// A coupon's period and stock as Redis needs them.
#[derive(Debug, Clone)]
pub struct CouponState {
    pub id: CouponId,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub total_quantity: i32,
    /// Customers who hold the coupon in PostgreSQL (empty for a new coupon).
    pub holders: Vec<i64>,
}

/// What Redis holds for a coupon, as far as the recovery cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Ready,
    Fenced,
    /// No state at all, or only part of it (a wiped or half-created coupon).
    Missing,
}

pub struct Issuer {
    redis: Arc<SharedRedis>,
    key_prefix: String,
    system: SystemKeys,
    issue: Script,
    /// The issue script's text, which only the recovery loads.
    issue_code: String,
    create: Script,
    born_here: Script,
    trusted: Script,
    trust: Script,
    rebuild: Script,
    release: Script,
    retire: Script,
    unlock: Script,
    /// The newest connection generation whose server proved to be the
    /// incarnation the recovery trusted; one check per new connection.
    verified: AtomicU64,
    verifying: tokio::sync::Mutex<()>,
}

/// The Redis that answers now, as the recovery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incarnation {
    /// `run_id:master_replid`, new on every restart and every promotion.
    pub id: String,
    /// It has the issue script and is the incarnation the recovery trusted
    /// (or no incarnation was ever recorded: a system from before the record).
    pub trusted: bool,
    /// An incarnation was ever recorded.
    pub recorded: bool,
}

/// SADD in chunks so one command never carries an unbounded argument list.
const HOLDERS_CHUNK: usize = 1_000;

impl Issuer {
    pub fn new(redis: Arc<SharedRedis>, key_prefix: String) -> Self {
        let issue_code = format!("-- key prefix {key_prefix:?}\n{}", include_str!("issue.lua"));
        Self {
            redis,
            system: SystemKeys::new(&key_prefix),
            key_prefix,
            issue: Script::new(&issue_code),
            issue_code,
            create: Script::new(&with_incarnation(include_str!("create.lua"))),
            born_here: Script::new(&with_incarnation(include_str!("born_here.lua"))),
            trusted: Script::new(&with_incarnation(include_str!("trusted.lua"))),
            trust: Script::new(&with_incarnation(include_str!("trust.lua"))),
            rebuild: Script::new(include_str!("rebuild.lua")),
            release: Script::new(include_str!("release.lua")),
            retire: Script::new(include_str!("retire.lua")),
            unlock: Script::new(include_str!("unlock.lua")),
            verified: AtomicU64::new(0),
            verifying: tokio::sync::Mutex::new(()),
        }
    }

    /// The SHA of the issue script, the incarnation marker.
    pub fn issue_sha(&self) -> &str {
        self.issue.get_hash()
    }

    pub fn redis(&self) -> &SharedRedis {
        &self.redis
    }

    pub fn keys(&self, coupon: CouponId) -> CouponKeys {
        CouponKeys::new(&self.key_prefix, coupon)
    }

    /// Adds `coupon` to the index, scored by the end of its period.
    async fn index(&self, coupon: CouponId, ends_at: OffsetDateTime) -> Result<(), RedisUnavailable> {
        let _: () = self
            .redis
            .query(redis::cmd("ZADD").arg(self.system.index()).arg(unix_ms(ends_at)).arg(coupon.get()))
            .await?;
        Ok(())
    }

    /// Carries the coupons of an index from before it was sorted by end (a
    /// plain set) into the sorted one; a no-op once done. Every replica runs
    /// it at start; running it twice at once does no harm.
    pub async fn migrate_index(&self) -> Result<usize, RedisUnavailable> {
        let legacy = SystemKeys::legacy_index(&self.key_prefix);
        let ids: Vec<i64> = self.redis.query(redis::cmd("SMEMBERS").arg(&legacy)).await?;
        let coupons: Vec<CouponId> = ids.into_iter().filter_map(|id| CouponId::new(id).ok()).collect();
        let reads: Vec<redis::Cmd> = coupons
            .iter()
            .map(|coupon| redis::cmd("HGET").arg(self.keys(*coupon).meta).arg("ends_ms").to_owned())
            .collect();
        let ends: Vec<Option<i64>> = self.redis.query_each(&reads).await?;
        for (coupon, ends) in coupons.iter().zip(&ends) {
            // A coupon without state yet gets indexed now and its state from
            // the recovery's first pass, which looks at every open coupon.
            let score = ends.unwrap_or(i64::MAX);
            let _: () =
                self.redis.query(redis::cmd("ZADD").arg(self.system.index()).arg(score).arg(coupon.get())).await?;
        }
        if !coupons.is_empty() {
            let _: () = self.redis.query(redis::cmd("DEL").arg(&legacy)).await?;
        }
        Ok(coupons.len())
    }

    pub async fn issue(&self, coupon: CouponId, customer: CustomerId) -> Result<Decision, RedisUnavailable> {
        let keys = self.keys(coupon);
        let link = self.redis.link().await?;
        if !self.proven(&link).await? {
            return Ok(Decision::Fenced(Fence::Node));
        }
        let reply = redis::cmd("EVALSHA")
            .arg(self.issue.get_hash())
            .arg(4)
            .arg(&keys.meta)
            .arg(&keys.stock)
            .arg(&keys.issued)
            .arg(&keys.outbox)
            .arg(customer.get())
            .query_async::<Value>(&mut link.once.clone())
            .await;
        match self.redis.observe(&link, reply) {
            Ok(reply) => parse_decision(reply, link.generation),
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => Ok(Decision::Fenced(Fence::Node)),
            Err(err) if self.may_have_run(&err) => {
                tracing::warn!(error = %err, coupon = %coupon, customer = %customer, "the issue script's reply was lost");
                Ok(Decision::Unknown)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Whether the issue script may have run although the command failed.
    /// A server's error reply (a redirection included), or a refused
    /// connection, means it did not. The script is sent once (`Link::once`):
    /// a client's retry could answer ALREADY_ISSUED, or NOSCRIPT after a
    /// failover, for a first attempt that issued.
    fn may_have_run(&self, err: &RedisError) -> bool {
        !(matches!(err.kind(), ErrorKind::Server(_)) || err.is_connection_refusal())
    }

    /// Whether the server behind `link` is the incarnation the recovery
    /// trusted; asked once per connection, before its first issuance. A
    /// failover or a failback breaks the connection (the old primary turns
    /// read-only or goes away), so every new primary is asked.
    async fn proven(&self, link: &Link) -> Result<bool, RedisUnavailable> {
        if self.verified.load(Ordering::Acquire) >= link.generation {
            return Ok(true);
        }
        let _one_check = self.verifying.lock().await;
        if self.verified.load(Ordering::Acquire) >= link.generation {
            return Ok(true);
        }
        let probe = self.trusted.key(self.system.trusted());
        let reply = probe.invoke_async(&mut link.conn.clone()).await;
        let (id, recorded): (String, Option<String>) = self.redis.observe(link, reply)?;
        let proven = recorded.is_none_or(|recorded| recorded == id);
        if proven {
            self.verified.fetch_max(link.generation, Ordering::AcqRel);
        }
        Ok(proven)
    }

    /// The Redis that answers now: which incarnation, and whether it has not
    /// restarted or failed over since the recovery last made it safe.
    pub async fn incarnation(&self) -> Result<Incarnation, RedisUnavailable> {
        let exists: Vec<bool> = self.redis.query(redis::cmd("SCRIPT").arg("EXISTS").arg(self.issue.get_hash())).await?;
        let (id, recorded): (String, Option<String>) =
            self.redis.invoke(&self.trusted.key(self.system.trusted())).await?;
        let loaded = exists.first().copied().unwrap_or(false);
        let trusted = loaded && recorded.as_ref().is_none_or(|recorded| *recorded == id);
        Ok(Incarnation { id, trusted, recorded: recorded.is_some() })
    }

    pub async fn is_trusted(&self) -> Result<bool, RedisUnavailable> {
        Ok(self.incarnation().await?.trusted)
    }

    /// Lets requests decide again on Redis incarnation `id`, whose coupons
    /// that may be stale are fenced. Returns false, changing nothing, when
    /// Redis is another incarnation by now.
    pub async fn trust(&self, id: &str) -> Result<bool, RedisUnavailable> {
        let mut trust = self.trust.key(self.system.trusted());
        trust.arg(id);
        if self.redis.invoke::<i64>(&trust).await? == 0 {
            return Ok(false);
        }
        // Primaries only: a replica holding the script would, once promoted,
        // look like the incarnation it replaced (Redis replicates no script).
        let _: redis::Value =
            self.redis.query_primaries(redis::cmd("SCRIPT").arg("LOAD").arg(&self.issue_code)).await?;
        Ok(true)
    }

    /// Gives a new coupon its Redis state unless it has one; returns whether it did.
    /// The coupon joins the index first, so a coupon whose state failed to be
    /// written is found and rebuilt by the recovery's periodic pass.
    pub async fn create(&self, state: &CouponState) -> Result<bool, RedisUnavailable> {
        let keys = self.keys(state.id);
        self.index(state.id, state.ends_at).await?;
        let mut create = self.create.key(&keys.meta);
        create
            .key(&keys.stock)
            .arg(unix_ms(state.starts_at))
            .arg(unix_ms(state.ends_at))
            .arg(state.total_quantity)
            .arg(state.total_quantity);
        Ok(self.redis.invoke::<i64>(&create).await? == 1)
    }

    /// For each coupon, whether its state was created on the Redis incarnation
    /// that holds it now and is whole and unfenced. On a Redis without the
    /// issue script, such a coupon never issued anything, so it needs no
    /// rebuild: it is new, not lost.
    pub async fn born_here(&self, coupons: &[CouponId]) -> Result<Vec<bool>, RedisUnavailable> {
        let probes = coupons.iter().map(|coupon| async move {
            let keys = self.keys(*coupon);
            let mut probe = self.born_here.key(&keys.meta);
            probe.key(&keys.stock);
            self.redis.invoke::<i64>(&probe).await.map(|born| born == 1)
        });
        Ok(try_join_all(probes).await?)
    }

    /// Fences coupons: the issue script answers FENCED for them from now on.
    /// They are listed in the fenced set first, so a recovery that dies before
    /// it rebuilt them leaves them where the next pass of any replica looks.
    pub async fn fence(&self, coupons: &[CouponId], token: &str) -> Result<(), RedisUnavailable> {
        if !coupons.is_empty() {
            let ids: Vec<i64> = coupons.iter().map(|c| c.get()).collect();
            let _: () = self.redis.query(redis::cmd("SADD").arg(self.system.fenced()).arg(ids)).await?;
        }
        let fences: Vec<redis::Cmd> = coupons
            .iter()
            .map(|coupon| redis::cmd("HSET").arg(self.keys(*coupon).meta).arg("fenced").arg(token).to_owned())
            .collect();
        let _: Vec<i64> = self.redis.query_each(&fences).await?;
        Ok(())
    }

    pub async fn presence(&self, coupons: &[CouponId]) -> Result<Vec<Presence>, RedisUnavailable> {
        // Per coupon, one slot: meta's (ends_ms, fence token), and whether stock exists.
        let probes: Vec<redis::Pipeline> = coupons
            .iter()
            .map(|coupon| {
                let keys = self.keys(*coupon);
                let mut pipe = redis::pipe();
                pipe.cmd("HMGET").arg(&keys.meta).arg("ends_ms").arg("fenced").cmd("EXISTS").arg(&keys.stock);
                pipe
            })
            .collect();
        type Reply = ((Option<i64>, Option<String>), bool);
        let replies: Vec<Reply> = try_join_all(probes.iter().map(|pipe| self.redis.query_pipe(pipe))).await?;
        Ok(replies
            .into_iter()
            .map(|((ends, fenced), stock)| match (ends, fenced, stock) {
                (_, Some(_), _) => Presence::Fenced,
                (Some(_), None, true) => Presence::Ready,
                _ => Presence::Missing,
            })
            .collect())
    }

    /// Replaces a fenced coupon's state with `state` plus the customers still
    /// in its outbox, and lifts the fence. Returns the stock it set, or `None`
    /// when the fence is no longer `token`'s.
    pub async fn rebuild(&self, state: &CouponState, token: &str) -> Result<Option<i64>, RedisUnavailable> {
        let keys = self.keys(state.id);
        let staged = format!("{}:rebuild", keys.issued);
        let _: () = self.redis.query(redis::cmd("DEL").arg(&staged)).await?;
        for chunk in state.holders.chunks(HOLDERS_CHUNK) {
            let _: () = self.redis.query(redis::cmd("SADD").arg(&staged).arg(chunk)).await?;
        }
        self.index(state.id, state.ends_at).await?;
        let mut rebuild = self.rebuild.key(&keys.meta);
        rebuild
            .key(&keys.stock)
            .key(&keys.issued)
            .key(&keys.outbox)
            .key(&staged)
            .arg(token)
            .arg(unix_ms(state.starts_at))
            .arg(unix_ms(state.ends_at))
            .arg(state.total_quantity);
        let stock: i64 = self.redis.invoke(&rebuild).await?;
        if stock < 0 {
            return Ok(None);
        }
        let _: () = self.redis.query(redis::cmd("SREM").arg(self.system.fenced()).arg(state.id.get())).await?;
        Ok(Some(stock))
    }

    /// The coupons a recovery fenced and has not rebuilt yet (as far as the
    /// fenced set knows: a coupon in it may have been rebuilt since).
    pub async fn fenced(&self) -> Result<Vec<CouponId>, RedisUnavailable> {
        let ids: Vec<i64> = self.redis.query(redis::cmd("SMEMBERS").arg(self.system.fenced())).await?;
        Ok(ids.into_iter().filter_map(|id| CouponId::new(id).ok()).collect())
    }

    /// Takes coupons that are not fenced out of the fenced set.
    pub async fn unlist_fenced(&self, coupons: &[CouponId]) -> Result<(), RedisUnavailable> {
        if !coupons.is_empty() {
            let ids: Vec<i64> = coupons.iter().map(|c| c.get()).collect();
            let _: () = self.redis.query(redis::cmd("SREM").arg(self.system.fenced()).arg(ids)).await?;
        }
        Ok(())
    }

    /// Removes delivered outbox entries of one coupon unless it is fenced;
    /// returns how many went.
    pub async fn release(&self, coupon: CouponId, entries: &[&str]) -> Result<u64, RedisUnavailable> {
        let keys = self.keys(coupon);
        let mut release = self.release.key(&keys.meta);
        release.key(&keys.outbox).arg(entries);
        Ok(self.redis.invoke(&release).await?)
    }

    /// The coupons in the index whose period ended at or before `now_ms`.
    pub async fn ended(&self, now_ms: i64) -> Result<Vec<CouponId>, RedisUnavailable> {
        let ids: Vec<i64> = self
            .redis
            .query(redis::cmd("ZRANGE").arg(self.system.index()).arg("-inf").arg(now_ms).arg("BYSCORE"))
            .await?;
        Ok(ids.into_iter().filter_map(|id| CouponId::new(id).ok()).collect())
    }

    /// Lets an ended coupon's keys expire after `grace` once its outbox is
    /// empty, and takes it out of the index; returns whether it did.
    pub async fn retire(&self, coupon: CouponId, grace: Duration) -> Result<bool, RedisUnavailable> {
        let keys = self.keys(coupon);
        let mut retire = self.retire.key(&keys.meta);
        retire.key(&keys.stock).key(&keys.issued).key(&keys.outbox).arg(grace.as_millis() as u64);
        if self.redis.invoke::<i64>(&retire).await? == 0 {
            return Ok(false);
        }
        let _: () = self.redis.query(redis::cmd("ZREM").arg(self.system.index()).arg(coupon.get())).await?;
        Ok(true)
    }

    fn lock_key(&self) -> String {
        format!("{}recovery-lock", self.key_prefix)
    }

    /// Takes the recovery lock for `ttl` unless another holds it.
    pub async fn lock(&self, token: &str, ttl: Duration) -> Result<bool, RedisUnavailable> {
        let set: Option<String> = self
            .redis
            .query(redis::cmd("SET").arg(self.lock_key()).arg(token).arg("NX").arg("PX").arg(ttl.as_millis() as u64))
            .await?;
        Ok(set.is_some())
    }

    /// Extends the lock to `ttl` from now; false when it was lost.
    pub async fn renew_lock(&self, token: &str, ttl: Duration) -> Result<bool, RedisUnavailable> {
        self.set_lock_ttl(token, ttl).await
    }

    /// Releases the lock if it is still `token`'s.
    pub async fn unlock(&self, token: &str) -> Result<(), RedisUnavailable> {
        self.set_lock_ttl(token, Duration::ZERO).await.map(drop)
    }

    /// `unlock.lua`: a zero `ttl` deletes the lock.
    async fn set_lock_ttl(&self, token: &str, ttl: Duration) -> Result<bool, RedisUnavailable> {
        let mut unlock = self.unlock.key(self.lock_key());
        unlock.arg(token).arg(ttl.as_millis() as u64);
        Ok(self.redis.invoke::<i64>(&unlock).await? == 1)
    }

    /// Live stock, or `None` when Redis does not know the coupon.
    pub async fn stock(&self, coupon: CouponId) -> Result<Option<i64>, RedisUnavailable> {
        Ok(self.redis.query(redis::cmd("GET").arg(self.keys(coupon).stock)).await?)
    }

    pub async fn holds(&self, coupon: CouponId, customer: CustomerId) -> Result<bool, RedisUnavailable> {
        Ok(self.redis.query(redis::cmd("SISMEMBER").arg(self.keys(coupon).issued).arg(customer.get())).await?)
    }

    pub async fn ping(&self) -> Result<(), RedisUnavailable> {
        let _: String = self.redis.query(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// Redis's clock in milliseconds; outbox entry ids are stamped with it.
    pub async fn server_time_ms(&self) -> Result<i64, RedisUnavailable> {
        Ok(self.redis.server_time_ms().await?)
    }
}

/// Runs `release` for each coupon's entries concurrently (pipelined on the
/// shared connection).
pub async fn release_all(issuer: &Issuer, by_coupon: &[(CouponId, Vec<&str>)]) -> Result<u64, RedisUnavailable> {
    let removed = try_join_all(by_coupon.iter().map(|(coupon, entries)| issuer.release(*coupon, entries))).await?;
    Ok(removed.iter().sum())
}

/// `script` with the `incarnation()` function it calls defined before it.
fn with_incarnation(script: &str) -> String {
    format!("{}{script}", include_str!("incarnation.lua"))
}

/// Milliseconds since the Unix epoch: how the script and the outbox write time.
pub fn unix_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The inverse of [`unix_ms`]; `None` outside the representable range.
pub fn from_unix_ms(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

fn parse_decision(reply: Value, generation: u64) -> Result<Decision, RedisUnavailable> {
    let parsed = match &reply {
        Value::Array(items) => match items.as_slice() {
            [Value::BulkString(code)] if code == b"FENCED" => Some(Decision::Fenced(Fence::Coupon)),
            [Value::BulkString(code)] => Rejection::from_code(&String::from_utf8_lossy(code)).map(Decision::Rejected),
            [Value::BulkString(code), Value::BulkString(entry), Value::Int(now_ms)] if code == b"ISSUED" => {
                from_unix_ms(*now_ms).map(|issued_at| {
                    Decision::Issued(Issued {
                        outbox_entry: String::from_utf8_lossy(entry).into_owned(),
                        issued_at,
                        generation,
                    })
                })
            }
            _ => None,
        },
        _ => None,
    };
    parsed.ok_or(RedisUnavailable::Reply(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_every_rejection() {
        for rejection in Rejection::ALL {
            let reply = Value::Array(vec![bulk(rejection.code())]);
            assert_eq!(parse_decision(reply, 1).unwrap(), Decision::Rejected(rejection));
        }
    }

    #[test]
    fn parses_a_fence() {
        assert_eq!(parse_decision(Value::Array(vec![bulk("FENCED")]), 1).unwrap(), Decision::Fenced(Fence::Coupon));
    }

    #[test]
    fn parses_an_issuance() {
        let reply = Value::Array(vec![bulk("ISSUED"), bulk("1764000000123-0"), Value::Int(1_764_000_000_123)]);
        let Decision::Issued(issued) = parse_decision(reply, 7).unwrap() else { panic!("not issued") };
        assert_eq!(issued.outbox_entry, "1764000000123-0");
        assert_eq!(unix_ms(issued.issued_at), 1_764_000_000_123);
        assert_eq!(issued.generation, 7);
    }

    #[test]
    fn an_unknown_reply_is_an_error_not_a_guess() {
        assert!(parse_decision(Value::Array(vec![bulk("MAYBE")]), 1).is_err());
        assert!(parse_decision(Value::Int(1), 1).is_err());
    }

    #[test]
    fn each_key_prefix_has_its_own_issue_script() {
        let redis = |prefix: &str| {
            let settings = coupon_infra::settings::RedisSettings::default();
            Issuer::new(Arc::new(SharedRedis::new(&settings).unwrap()), prefix.to_string())
        };
        assert_ne!(redis("a:").issue.get_hash(), redis("b:").issue.get_hash());
    }
}
