//! The batch's two write statements as typed queries with a fixed text and a
//! static query id, so each connection prepares them once and reuses the plan
//! (diesel never caches a `sql_query`, which costs a prepare round trip per
//! statement per batch). Arrays keep the text fixed whatever the batch size.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Integer, Timestamptz};
use diesel::QueryResult;
use time::OffsetDateTime;

/// Inserts the rows, skipping those that exist; returns the coupon id of
/// each row actually inserted.
pub struct InsertIssued<'a> {
    pub coupons: &'a [i64],
    pub customers: &'a [i64],
    pub issued_at: &'a [OffsetDateTime],
}

impl QueryId for InsertIssued<'_> {
    type QueryId = InsertIssued<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for InsertIssued<'_> {
    type SqlType = BigInt;
}

impl QueryFragment<Pg> for InsertIssued<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("INSERT INTO customer_coupon (coupon_id, customer_id, issued_at) SELECT * FROM unnest(");
        out.push_bind_param::<Array<BigInt>, _>(self.coupons)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(self.customers)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamptz>, _>(self.issued_at)?;
        out.push_sql(") ON CONFLICT (coupon_id, customer_id) DO NOTHING RETURNING coupon_id");
        Ok(())
    }
}

/// Takes `counts[i]` off coupon `ids[i]`'s remaining quantity.
pub struct TakeStock<'a> {
    pub ids: &'a [i64],
    pub counts: &'a [i32],
}

impl QueryId for TakeStock<'_> {
    type QueryId = TakeStock<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for TakeStock<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE coupon SET remaining_quantity = coupon.remaining_quantity - d.n FROM unnest(");
        out.push_bind_param::<Array<BigInt>, _>(self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Integer>, _>(self.counts)?;
        out.push_sql(") AS d(id, n) WHERE coupon.id = d.id");
        Ok(())
    }
}
