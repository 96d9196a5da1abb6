//! The batch's write as one typed statement with a fixed text and a static
//! query id, so each connection prepares it once and reuses the plan (diesel
//! never caches a `sql_query`). Arrays keep the text fixed whatever the batch
//! size, and one statement is one implicit transaction: a batch costs one
//! round trip instead of five (BEGIN, lock, insert, decrement, COMMIT).

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Integer, Timestamptz};
use diesel::QueryResult;
use time::OffsetDateTime;

/// Applies a batch of issuances, given as three parallel arrays:
/// - locks the batch's coupons in id order, so writers that share coupons
///   queue instead of deadlocking;
/// - inserts the rows of existing coupons, skipping those already there;
/// - takes the rows actually inserted off each coupon's remaining quantity.
///
/// Returns one `(coupon id, rows inserted)` per existing coupon of the batch;
/// a coupon of the batch missing from the answer does not exist. A constraint
/// violation fails the whole statement and changes nothing.
pub struct ApplyBatch<'a> {
    pub coupons: &'a [i64],
    pub customers: &'a [i64],
    pub issued_at: &'a [OffsetDateTime],
}

impl QueryId for ApplyBatch<'_> {
    type QueryId = ApplyBatch<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for ApplyBatch<'_> {
    type SqlType = (BigInt, Integer);
}

impl QueryFragment<Pg> for ApplyBatch<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH batch AS (SELECT * FROM unnest(");
        out.push_bind_param::<Array<BigInt>, _>(self.coupons)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(self.customers)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamptz>, _>(self.issued_at)?;
        out.push_sql(
            ") AS b(coupon_id, customer_id, issued_at)), \
             locked AS (SELECT id FROM coupon WHERE id IN (SELECT coupon_id FROM batch) \
                 ORDER BY id FOR NO KEY UPDATE), \
             inserted AS (INSERT INTO customer_coupon (coupon_id, customer_id, issued_at) \
                 SELECT coupon_id, customer_id, issued_at FROM batch WHERE coupon_id IN (SELECT id FROM locked) \
                 ON CONFLICT (coupon_id, customer_id) DO NOTHING RETURNING coupon_id), \
             counts AS (SELECT coupon_id, count(*)::int AS n FROM inserted GROUP BY coupon_id), \
             taken AS (UPDATE coupon SET remaining_quantity = coupon.remaining_quantity - counts.n \
                 FROM counts WHERE coupon.id = counts.coupon_id RETURNING coupon.id) \
             SELECT locked.id, coalesce(counts.n, 0) FROM locked LEFT JOIN counts ON counts.coupon_id = locked.id",
        );
        Ok(())
    }
}
