//! Coupon rows for the public read and for issue requests Redis cannot
//! answer, kept for a short while so that a flood of either costs PostgreSQL
//! one query per coupon per `ttl`, not one per request. Concurrent misses for
//! one coupon share one query. A coupon that does not exist is cached too
//! (as absent), so unknown ids do not reach PostgreSQL on every request.
//!
//! What is cached is only what changes rarely (a coupon's definition, or its
//! absence); live stock comes from Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coupon_domain::CouponId;
use tokio::sync::OnceCell;

use super::{Catalog, CatalogError, CouponRow};

/// At most this many coupons are cached; past it, expired entries go, and if
/// none has expired a read goes to PostgreSQL uncached.
const MAX_ENTRIES: usize = 10_000;

struct Slot {
    loaded_at: Instant,
    row: OnceCell<Option<CouponRow>>,
}

pub struct CouponCache {
    catalog: Catalog,
    ttl: Duration,
    slots: Mutex<HashMap<CouponId, Arc<Slot>>>,
}

impl CouponCache {
    pub fn new(catalog: Catalog, ttl: Duration) -> Self {
        Self { catalog, ttl, slots: Mutex::default() }
    }

    /// The coupon's row, at most `ttl` old; `None` when it does not exist.
    pub async fn get(&self, id: CouponId) -> Result<Option<CouponRow>, CatalogError> {
        let slot = self.slot(id);
        // A failed query leaves the cell empty: the next request asks again.
        slot.row.get_or_try_init(|| self.catalog.get(id)).await.cloned()
    }

    /// Drops what is cached for `id` (this replica created it just now).
    pub fn forget(&self, id: CouponId) {
        self.slots.lock().expect("not poisoned").remove(&id);
    }

    fn slot(&self, id: CouponId) -> Arc<Slot> {
        let mut slots = self.slots.lock().expect("not poisoned");
        if let Some(slot) = slots.get(&id).filter(|slot| slot.loaded_at.elapsed() < self.ttl) {
            return slot.clone();
        }
        let slot = Arc::new(Slot { loaded_at: Instant::now(), row: OnceCell::new() });
        if slots.len() >= MAX_ENTRIES {
            slots.retain(|_, slot| slot.loaded_at.elapsed() < self.ttl);
        }
        if slots.len() < MAX_ENTRIES {
            slots.insert(id, slot.clone());
        }
        slot
    }
}
