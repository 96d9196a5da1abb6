//! The synchronous baseline (`issue.mode = sync-db`) that the Kafka design
//! replaces, kept so that `make bench` measures both on the same stack. Not
//! part of the design's request path: each issuance answers only after a
//! PostgreSQL transaction of its own, as coupon-writer would write it
//! (`catalog::grant`). A failed transaction leaves the outbox entry to the
//! relay, so even the baseline loses nothing.

use coupon_domain::shards::CouponShard;
use coupon_domain::{CouponId, CustomerId};
use coupon_infra::db::PgPool;
use diesel_async::AsyncConnection;

use super::issuer::Issued;
use crate::catalog::{self, CatalogError};
use crate::delivery::outbox::{AckQueue, Delivered};

pub struct WriteThrough {
    pool: PgPool,
}

impl WriteThrough {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Writes the issuance and, once committed, hands its outbox entry to the
    /// acknowledger.
    pub async fn write(&self, acks: &AckQueue, shard: CouponShard, customer: CustomerId, issued: &Issued) {
        let coupon = shard.coupon;
        match self.transaction(coupon, customer, issued).await {
            Ok(()) => acks.push(Delivered { shard, entry: issued.outbox_entry.clone() }),
            Err(err) => tracing::warn!(
                error = %err,
                coupon = %coupon,
                "database write failed; event left in the outbox for the relay"
            ),
        }
    }

    async fn transaction(&self, coupon: CouponId, customer: CustomerId, issued: &Issued) -> Result<(), CatalogError> {
        let mut conn = self.pool.get().await?;
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let grant = catalog::Grant { issued_at: issued.issued_at, issuance: issued.issuance, estimated: false };
            catalog::grant(conn, coupon, customer, grant).await
        })
        .await?;
        Ok(())
    }
}
