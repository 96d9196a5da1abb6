//! The record of every admin change: who (the named admin token), what, the
//! values before and after, when, and the request. Written by the change's
//! own transaction, so no change commits without its entry.

use coupon_domain::CouponId;
use coupon_infra::db::schema::admin_audit;
use coupon_infra::db::PgPool;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use time::OffsetDateTime;

use super::Actor;
use crate::catalog::CatalogError;

#[derive(Insertable)]
#[diesel(table_name = admin_audit)]
pub struct Entry {
    actor: String,
    action: String,
    coupon_id: Option<i64>,
    before: Option<String>,
    after: Option<String>,
    request_id: Option<String>,
}

impl Entry {
    pub fn new(
        actor: &Actor<'_>,
        action: &str,
        coupon: CouponId,
        before: &impl Serialize,
        after: &impl Serialize,
    ) -> Self {
        Self {
            actor: actor.name.to_string(),
            action: action.to_string(),
            coupon_id: Some(coupon.get()),
            before: Some(json(before)),
            after: Some(json(after)),
            request_id: Some(actor.request_id.to_string()),
        }
    }

    pub async fn insert(self, conn: &mut AsyncPgConnection) -> Result<(), diesel::result::Error> {
        diesel::insert_into(admin_audit::table).values(self).execute(conn).await.map(drop)
    }
}

/// A value as the audit stores it.
fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("audit values serialize")
}

/// One audit entry as read back.
#[derive(Debug, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = admin_audit)]
#[serde(rename_all = "camelCase")]
pub struct Recorded {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub coupon_id: Option<i64>,
    /// JSON.
    pub before: Option<String>,
    /// JSON.
    pub after: Option<String>,
    pub request_id: Option<String>,
}

/// Entries after `after` (an id), oldest first, of one coupon or of all.
pub async fn list(
    pool: &PgPool,
    coupon: Option<CouponId>,
    after: i64,
    limit: i64,
) -> Result<Vec<Recorded>, CatalogError> {
    let mut conn = pool.get().await?;
    let mut query = admin_audit::table.filter(admin_audit::id.gt(after)).into_boxed();
    if let Some(coupon) = coupon {
        query = query.filter(admin_audit::coupon_id.eq(coupon.get()));
    }
    Ok(query.order(admin_audit::id).limit(limit).select(Recorded::as_select()).load(&mut conn).await?)
}
