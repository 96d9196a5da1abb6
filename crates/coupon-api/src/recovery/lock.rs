//! The recovery lock: one rebuild at a time over all API replicas. Held for a
//! TTL and renewed between steps, so a replica that dies leaves it to expire.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use crate::store::{CouponStore, RedisUnavailable, SystemKeys};

pub struct RecoveryLock {
    store: Arc<CouponStore>,
    key: String,
    /// Sets the lock's TTL if it is still the token's; a zero TTL deletes it.
    set_ttl: Script,
}

impl RecoveryLock {
    pub fn new(store: Arc<CouponStore>) -> Self {
        let key = SystemKeys::recovery_lock(store.key_prefix());
        Self { store, key, set_ttl: Script::new(include_str!("unlock.lua")) }
    }

    /// Takes the lock for `ttl` unless another holds it.
    pub async fn lock(&self, token: &str, ttl: Duration) -> Result<bool, RedisUnavailable> {
        let set: Option<String> = self
            .store
            .redis()
            .query(redis::cmd("SET").arg(&self.key).arg(token).arg("NX").arg("PX").arg(ttl.as_millis() as u64))
            .await?;
        Ok(set.is_some())
    }

    /// Extends the lock to `ttl` from now; false when it was lost.
    pub async fn renew(&self, token: &str, ttl: Duration) -> Result<bool, RedisUnavailable> {
        self.set_ttl(token, ttl).await
    }

    /// Releases the lock if it is still `token`'s.
    pub async fn unlock(&self, token: &str) -> Result<(), RedisUnavailable> {
        self.set_ttl(token, Duration::ZERO).await.map(drop)
    }

    async fn set_ttl(&self, token: &str, ttl: Duration) -> Result<bool, RedisUnavailable> {
        let mut set_ttl = self.set_ttl.key(&self.key);
        set_ttl.arg(token).arg(ttl.as_millis() as u64);
        Ok(self.store.redis().invoke::<i64>(&set_ttl).await? == 1)
    }
}
