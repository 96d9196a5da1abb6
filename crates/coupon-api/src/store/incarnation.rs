//! Which Redis answers, and whether issuance may trust it.
//!
//! The issue script is the incarnation marker of the Redis it runs on: Redis
//! keeps scripts in memory only and replicates none, so a Redis that restarted
//! (from whatever data) or a replica that was promoted for the first time
//! answers its EVALSHA with NOSCRIPT before touching any key. Issuance
//! therefore calls it by SHA and never reloads it; only the recovery loads it
//! ([`Incarnations::trust`]), after fencing every coupon that Redis may hold
//! stale. Its text carries the key prefix, so systems sharing one Redis under
//! different prefixes each have their own marker.
//!
//! A former primary keeps its script cache when it is demoted, so a failback
//! to it would pass for the incarnation the recovery trusted. The recovery
//! therefore also records the incarnation it trusted (`run_id:master_replid`,
//! `trusted.lua`/`trust.lua`); a promotion makes a new replication id, and a
//! connection is used for issuance only once its server proved to be that
//! incarnation ([`Incarnations::proven`]). In cluster mode this record lives
//! on the node of the system keys' slot only, so every replica is instead
//! kept clear of the script ([`Incarnations::keep_off_replicas`]): a master
//! demoted in place loses it within a second, and a failback to it finds no
//! script, as a restart does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coupon_infra::redis::Link;
use redis::Script;
use tokio_util::sync::CancellationToken;

use super::{CouponStore, RedisUnavailable};

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

pub struct Incarnations {
    store: Arc<CouponStore>,
    /// The issue script's text, which only the recovery loads.
    marker: String,
    marker_sha: String,
    trusted: Script,
    trust: Script,
    /// The newest connection generation whose server proved to be the
    /// incarnation the recovery trusted; one check per new connection.
    verified: AtomicU64,
    verifying: tokio::sync::Mutex<()>,
}

impl Incarnations {
    /// `marker`: the text of the issue script (issuance's), whose presence
    /// tells an incarnation the recovery made safe.
    pub fn new(store: Arc<CouponStore>, marker: String) -> Self {
        Self {
            store,
            marker_sha: Script::new(&marker).get_hash().to_string(),
            marker,
            trusted: Script::new(&with_incarnation(include_str!("trusted.lua"))),
            trust: Script::new(&with_incarnation(include_str!("trust.lua"))),
            verified: AtomicU64::new(0),
            verifying: tokio::sync::Mutex::new(()),
        }
    }

    /// The SHA of the issue script, the incarnation marker.
    pub fn marker_sha(&self) -> &str {
        &self.marker_sha
    }

    /// Whether the server behind `link` is the incarnation the recovery
    /// trusted; asked once per connection, before its first issuance. A
    /// failover or a failback breaks the connection (the old primary turns
    /// read-only or goes away), so every new primary is asked.
    pub async fn proven(&self, link: &Link) -> Result<bool, RedisUnavailable> {
        if self.verified.load(Ordering::Acquire) >= link.generation {
            return Ok(true);
        }
        let _one_check = self.verifying.lock().await;
        if self.verified.load(Ordering::Acquire) >= link.generation {
            return Ok(true);
        }
        let probe = self.trusted.key(self.store.system().trusted());
        let reply = probe.invoke_async(&mut link.conn.clone()).await;
        let (id, recorded): (String, Option<String>) = self.store.redis().observe(link, reply)?;
        let proven = recorded.is_none_or(|recorded| recorded == id);
        if proven {
            self.verified.fetch_max(link.generation, Ordering::AcqRel);
        }
        Ok(proven)
    }

    /// In cluster mode, every `every` until `stop`, takes the issue script
    /// off any replica that holds it (a master demoted in place keeps its
    /// scripts). Returns at once in the other modes.
    pub async fn keep_off_replicas(&self, every: Duration, stop: CancellationToken) {
        let redis = self.store.redis();
        if !redis.is_cluster() {
            return;
        }
        loop {
            match redis.flush_script_from_replicas(&self.marker_sha).await {
                Ok(flushed) if !flushed.is_empty() => {
                    tracing::warn!(replicas = ?flushed, "took the issue script off replicas that were masters")
                }
                Ok(_) => {}
                Err(err) => tracing::debug!(error = %err, "could not look for the issue script on the replicas"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// The Redis that answers now: which incarnation, and whether it has not
    /// restarted or failed over since the recovery last made it safe.
    pub async fn current(&self) -> Result<Incarnation, RedisUnavailable> {
        let redis = self.store.redis();
        let exists: Vec<bool> = redis.query(redis::cmd("SCRIPT").arg("EXISTS").arg(&self.marker_sha)).await?;
        let (id, recorded): (String, Option<String>) =
            redis.invoke(&self.trusted.key(self.store.system().trusted())).await?;
        let loaded = exists.first().copied().unwrap_or(false);
        let trusted = loaded && recorded.as_ref().is_none_or(|recorded| *recorded == id);
        Ok(Incarnation { id, trusted, recorded: recorded.is_some() })
    }

    pub async fn is_trusted(&self) -> Result<bool, RedisUnavailable> {
        Ok(self.current().await?.trusted)
    }

    /// Lets requests decide again on Redis incarnation `id`, whose coupons
    /// that may be stale are fenced. Returns false, changing nothing, when
    /// Redis is another incarnation by now.
    pub async fn trust(&self, id: &str) -> Result<bool, RedisUnavailable> {
        let mut trust = self.trust.key(self.store.system().trusted());
        trust.arg(id);
        let redis = self.store.redis();
        if redis.invoke::<i64>(&trust).await? == 0 {
            return Ok(false);
        }
        // Primaries only: a replica holding the script would, once promoted,
        // look like the incarnation it replaced (Redis replicates no script).
        let _: redis::Value = redis.query_primaries(redis::cmd("SCRIPT").arg("LOAD").arg(&self.marker)).await?;
        Ok(true)
    }
}

/// `script` with the `incarnation()` function it calls defined before it.
pub fn with_incarnation(script: &str) -> String {
    format!("{}{script}", include_str!("incarnation.lua"))
}
