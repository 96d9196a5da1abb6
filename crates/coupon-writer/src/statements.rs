//! The batch's write as one typed statement with a fixed text and a static
//! query id, so each connection prepares it once and reuses the plan (diesel
//! never caches a `sql_query`). Arrays keep the text fixed whatever the batch
//! size, and one statement is one implicit transaction: a batch costs one
//! round trip instead of several (BEGIN, lock, insert, record, decrement, COMMIT).

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Text, Timestamptz};
use diesel::QueryResult;
use time::OffsetDateTime;

/// Why an event was recorded in `sold_out_at_write` (its `reason` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoldOutReason {
    /// The coupon's `remaining_quantity` could not cover the customer.
    StockExhausted,
}

impl SoldOutReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            SoldOutReason::StockExhausted => "STOCK_EXHAUSTED",
        }
    }
}

/// Applies a batch of issuances, given as four parallel arrays:
/// - locks the batch's coupons in id order with `FOR NO KEY UPDATE`, so
///   writers that share coupons queue instead of deadlocking;
/// - per coupon, takes the batch's new customers (no `customer_coupon` row and
///   no `sold_out_at_write` record yet; a customer twice in the batch once,
///   its latest issuance at its earliest `issued_at`), and those whose row
///   was revoked with leave to reissue and who come with a newer issuance
///   (a late copy of the revoked one is not new), in `(issued_at,
///   customer_id)` order, grants the
///   first `remaining_quantity` of them a `customer_coupon` row and records
///   the rest in `sold_out_at_write` (`STOCK_EXHAUSTED`), both
///   `ON CONFLICT DO NOTHING` (a reissuable row is replaced by the newer
///   issuance: a fresh holding, as catalog::grant writes it), in index order (coupon, customer) rather than
///   the order the stock goes out in, so neighbouring keys share index pages
///   (a one-partition backlog drained ~10% faster);
/// - takes the rows actually inserted off the coupon's remaining quantity,
///   which therefore never goes below 0: running out of stock is an outcome,
///   not a constraint violation;
/// - gives a row that coupon-api wrote early (a redeem before this writer,
///   `issued_at_estimated`) its issuance's own `issued_at`, counting nothing.
///
/// A concurrent writer (partition key `customer` spreads a coupon over
/// writers) may commit rows for a coupon between this statement's snapshot and
/// the moment it gets the coupon's lock. The lock returns the coupon row as
/// committed (PostgreSQL re-reads a row it had to wait for), but
/// `customer_coupon` and `sold_out_at_write` are still read as of the
/// snapshot, so such rows look new. Whoever inserts rows for a coupon updates
/// the coupon row in the same transaction, so `seen` (the snapshot's row
/// version, `xmin`) differing from `locked` tells exactly when that happened.
/// With a current snapshot the split is exact. With a stale one, a coupon whose
/// new customers all fit in the stock is still safe (all are granted, and
/// `ON CONFLICT` skips those already written); one that would refuse some is
/// *deferred*: nothing is written for it, and the caller applies its events
/// again in a new statement, whose snapshot sees the other writer's rows. So
/// the race can never oversell, lose a granted row, or record as sold out a
/// customer who holds a row or whom the stock covered; at worst it costs a
/// deferred coupon another round trip. Recording sold out needs a current
/// snapshot and leaves the coupon at 0; later batches see the record and
/// skip the customer, unless an operator raised the total and a batch with a
/// stale snapshot grants the customer its row after all (the customer then
/// holds the coupon Redis issued, and the record stays for the operator).
/// Across batches, the last units go to the batch that locks the coupon
/// first, not strictly by `issued_at`.
///
/// Returns one `(coupon id, rows inserted, rows recorded as sold out,
/// deferred)` per existing coupon of the batch; a coupon of the batch missing
/// from the answer does not exist. A constraint violation fails the whole
/// statement and changes nothing.
pub struct ApplyBatch<'a> {
    pub coupons: &'a [i64],
    pub customers: &'a [i64],
    pub issued_at: &'a [OffsetDateTime],
    pub issuance: &'a [i32],
}

impl QueryId for ApplyBatch<'_> {
    type QueryId = ApplyBatch<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for ApplyBatch<'_> {
    type SqlType = (BigInt, Integer, Integer, Bool);
}

/// The statement after the batch's arrays: the plan, the grants, and the
/// start of the refusals (their reason is bound next).
const PLAN_AND_GRANT: &str = ") AS b(coupon_id, customer_id, issued_at, issuance)), \
     seen AS MATERIALIZED (SELECT id, xmin AS version FROM coupon \
         WHERE id IN (SELECT coupon_id FROM batch)), \
     locked AS MATERIALIZED (SELECT id, remaining_quantity, xmin AS version FROM coupon \
         WHERE id IN (SELECT coupon_id FROM batch) ORDER BY id FOR NO KEY UPDATE), \
     fresh AS (SELECT DISTINCT ON (b.coupon_id, b.customer_id) \
             b.coupon_id, b.customer_id, b.issued_at, b.issuance \
         FROM batch b \
         WHERE NOT EXISTS (SELECT 1 FROM customer_coupon c \
                 WHERE c.coupon_id = b.coupon_id AND c.customer_id = b.customer_id \
                     AND NOT (c.reissuable AND b.issuance > c.issuance)) \
             AND NOT EXISTS (SELECT 1 FROM sold_out_at_write s \
                 WHERE s.coupon_id = b.coupon_id AND s.customer_id = b.customer_id) \
         ORDER BY b.coupon_id, b.customer_id, b.issuance DESC, b.issued_at), \
     ranked AS (SELECT coupon_id, customer_id, issued_at, issuance, \
             row_number() OVER (PARTITION BY coupon_id ORDER BY issued_at, customer_id) AS rank \
         FROM fresh), \
     demand AS (SELECT coupon_id, count(*) AS n FROM fresh GROUP BY coupon_id), \
     plan AS (SELECT l.id, l.remaining_quantity AS stock, \
             l.version IS DISTINCT FROM s.version AND coalesce(d.n, 0) > l.remaining_quantity AS deferred \
         FROM locked l JOIN seen s ON s.id = l.id LEFT JOIN demand d ON d.coupon_id = l.id), \
     granted AS (INSERT INTO customer_coupon (coupon_id, customer_id, issued_at, issuance) \
         SELECT r.coupon_id, r.customer_id, r.issued_at, r.issuance \
         FROM ranked r JOIN plan p ON p.id = r.coupon_id \
         WHERE NOT p.deferred AND r.rank <= p.stock \
         ORDER BY r.coupon_id, r.customer_id \
         ON CONFLICT (coupon_id, customer_id) DO UPDATE SET \
             issued_at = excluded.issued_at, issuance = excluded.issuance, status = 'AVAILABLE', \
             order_id = NULL, discount_amount = NULL, used_at = NULL, released_order_id = NULL, \
             revoked_at = NULL, revoke_reason = NULL, stock_returned = false, reissuable = false, \
             issued_at_estimated = false \
         WHERE customer_coupon.reissuable AND excluded.issuance > customer_coupon.issuance \
         RETURNING coupon_id), \
     refused AS (INSERT INTO sold_out_at_write (coupon_id, customer_id, issued_at, reason) \
         SELECT r.coupon_id, r.customer_id, r.issued_at, ";

/// The rest of the statement after the refusals' reason: the estimated times
/// corrected, the stock taken, and the answer per coupon.
const REFUSE_AND_COUNT: &str = " FROM ranked r JOIN plan p ON p.id = r.coupon_id \
         WHERE NOT p.deferred AND r.rank > p.stock \
         ORDER BY r.coupon_id, r.customer_id \
         ON CONFLICT (coupon_id, customer_id) DO NOTHING RETURNING coupon_id), \
     timed AS (UPDATE customer_coupon c SET issued_at = e.issued_at, issued_at_estimated = false \
         FROM (SELECT coupon_id, customer_id, issuance, min(issued_at) AS issued_at FROM batch \
             GROUP BY coupon_id, customer_id, issuance) e \
         WHERE c.coupon_id = e.coupon_id AND c.customer_id = e.customer_id \
             AND c.issuance = e.issuance AND c.issued_at_estimated AND NOT c.reissuable), \
     inserted AS (SELECT coupon_id, count(*)::int AS n FROM granted GROUP BY coupon_id), \
     sold_out AS (SELECT coupon_id, count(*)::int AS n FROM refused GROUP BY coupon_id), \
     taken AS (UPDATE coupon SET remaining_quantity = coupon.remaining_quantity - inserted.n \
         FROM inserted WHERE coupon.id = inserted.coupon_id RETURNING coupon.id) \
     SELECT p.id, coalesce(i.n, 0), coalesce(s.n, 0), p.deferred FROM plan p \
         LEFT JOIN inserted i ON i.coupon_id = p.id LEFT JOIN sold_out s ON s.coupon_id = p.id";

impl QueryFragment<Pg> for ApplyBatch<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH batch AS (SELECT * FROM unnest(");
        out.push_bind_param::<Array<BigInt>, _>(self.coupons)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(self.customers)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamptz>, _>(self.issued_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Integer>, _>(self.issuance)?;
        out.push_sql(PLAN_AND_GRANT);
        out.push_bind_param::<Text, _>(SoldOutReason::StockExhausted.as_str())?;
        out.push_sql(REFUSE_AND_COUNT);
        Ok(())
    }
}
