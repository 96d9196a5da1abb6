//! Keeps Redis in step with PostgreSQL, the source of truth for coupons.
//!
//! A coupon is written to PostgreSQL first and then primed in Redis. If the
//! second step fails, the coupon exists but cannot be issued yet; the sync task
//! primes every open coupon that Redis does not know, at start and then
//! periodically, so the two stores converge without an operator. The same path
//! rebuilds a coupon after Redis lost its data: holders from `customer_coupon`,
//! stock from `remaining_quantity` (exact once the writer has caught up).

use std::sync::Arc;
use std::time::Duration;

use coupon_domain::CouponId;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogError, CouponRow};
use crate::issuer::{CouponState, Issuer, RedisUnavailable};

#[derive(Debug, thiserror::Error)]
pub enum PrimeError {
    #[error(transparent)]
    Redis(#[from] RedisUnavailable),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("coupon not found")]
    NotFound,
}

/// Primes one coupon from its PostgreSQL row; returns whether Redis lacked it.
pub async fn prime_from_row(catalog: &Catalog, issuer: &Issuer, row: &CouponRow) -> Result<bool, PrimeError> {
    let id = CouponId::new(row.id).map_err(|_| PrimeError::NotFound)?;
    if issuer.is_primed(id).await? {
        return Ok(false);
    }
    let state = CouponState {
        id,
        starts_at: row.starts_at,
        ends_at: row.ends_at,
        total_quantity: row.total_quantity,
        remaining_quantity: row.remaining_quantity,
        holders: catalog.holders(id).await?,
    };
    Ok(issuer.prime(&state).await?)
}

pub async fn prime(catalog: &Catalog, issuer: &Issuer, id: CouponId) -> Result<bool, PrimeError> {
    let row = catalog.get(id).await?.ok_or(PrimeError::NotFound)?;
    prime_from_row(catalog, issuer, &row).await
}

/// Primes every open coupon Redis does not know; returns how many it primed.
pub async fn sync_open_coupons(catalog: &Catalog, issuer: &Issuer) -> Result<usize, PrimeError> {
    let mut primed = 0;
    for row in catalog.open().await? {
        if prime_from_row(catalog, issuer, &row).await? {
            tracing::info!(coupon = row.id, "primed coupon in Redis from PostgreSQL");
            primed += 1;
        }
    }
    Ok(primed)
}

pub async fn run_sync(catalog: Catalog, issuer: Arc<Issuer>, interval: Duration, stop: CancellationToken) {
    loop {
        if let Err(err) = sync_open_coupons(&catalog, &issuer).await {
            tracing::warn!(error = %err, "coupon sync from PostgreSQL to Redis failed; will retry");
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
