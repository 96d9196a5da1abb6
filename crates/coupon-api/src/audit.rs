//! The record of every admin action: who (the named admin credential), what,
//! the values before and after, when, and the request. Each entry is written
//! by the action's own PostgreSQL transaction, so no change commits without
//! its entry; an action that changes only Redis (prime) is recorded before
//! it is taken. Read back by `Catalog::audit`.

use coupon_domain::CouponId;
use coupon_infra::db::schema::admin_audit;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use time::OffsetDateTime;

/// Who asks, for the audit.
pub struct Actor<'a> {
    pub name: &'a str,
    pub request_id: &'a str,
}

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
    /// A change of `coupon` from `before` to `after`.
    pub fn new(
        actor: &Actor<'_>,
        action: &str,
        coupon: CouponId,
        before: &impl Serialize,
        after: &impl Serialize,
    ) -> Self {
        Self { before: Some(json(before)), ..Self::made(actor, action, coupon, after) }
    }

    /// An action with nothing before it: a creation, or a request such as a prime.
    pub fn made(actor: &Actor<'_>, action: &str, coupon: CouponId, after: &impl Serialize) -> Self {
        Self {
            actor: actor.name.to_string(),
            action: action.to_string(),
            coupon_id: Some(coupon.get()),
            before: None,
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
    /// JSON; `null` for an action with nothing before it.
    pub before: Option<String>,
    /// JSON.
    pub after: Option<String>,
    pub request_id: Option<String>,
}
