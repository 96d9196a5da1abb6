//! The comparison itself: pure, so every kind of drift is unit-tested.

use std::collections::BTreeSet;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use coupon_domain::CouponId;

#[derive(Debug, Clone, Default)]
pub struct RedisView {
    /// `None` when Redis does not know the coupon.
    pub total: Option<i64>,
    pub stock: Option<i64>,
    /// The issued set's size, read atomically with `stock`.
    pub issued_count: i64,
    /// Holders whose revoked unit went back into stock, read with `stock`.
    pub returned_count: i64,
    /// The issued set's members (read in pages, not one snapshot).
    pub issued: BTreeSet<i64>,
    /// Events not yet acknowledged by Kafka.
    pub outbox: u64,
    /// The outbox's oldest and newest entry ids, `(milliseconds, sequence)`.
    pub outbox_span: Option<(EntryId, EntryId)>,
}

/// A Redis stream entry id; ids grow with time.
pub type EntryId = (u64, u64);

#[derive(Debug, Clone, Default)]
pub struct DbView {
    pub total: i64,
    pub remaining: i64,
    pub holders: BTreeSet<i64>,
    /// Rows revoked with their unit returned to stock.
    pub returned: i64,
}

/// One way Redis and PostgreSQL disagree about a coupon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    NotInPostgres,
    NotInRedis,
    RemainingMiscounted {
        remaining: i64,
        total: i64,
        rows: usize,
    },
    OversoldInPostgres {
        rows: usize,
        total: i64,
    },
    RedisStockMismatch {
        stock: i64,
        issued: i64,
        total: i64,
    },
    RedisStockNegative(i64),
    /// Issued in Redis (the customer got a 201) but not in PostgreSQL.
    MissingInPostgres(usize),
    /// In PostgreSQL but not issued in Redis.
    ExtraInPostgres(usize),
    OutboxNotEmpty(u64),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::NotInPostgres => write!(f, "not in PostgreSQL"),
            Problem::NotInRedis => write!(f, "not primed in Redis"),
            Problem::RemainingMiscounted { remaining, total, rows } => {
                write!(f, "PostgreSQL remaining {remaining} != total {total} - rows holding a unit {rows}")
            }
            Problem::OversoldInPostgres { rows, total } => write!(f, "oversold in PostgreSQL: {rows} rows for {total}"),
            Problem::RedisStockMismatch { stock, issued, total } => {
                write!(f, "Redis stock {stock} + issued {issued} != total {total}")
            }
            Problem::RedisStockNegative(stock) => write!(f, "Redis stock below zero: {stock}"),
            Problem::MissingInPostgres(n) => write!(f, "{n} issued but not in PostgreSQL"),
            Problem::ExtraInPostgres(n) => write!(f, "{n} in PostgreSQL but not issued in Redis"),
            Problem::OutboxNotEmpty(n) => write!(f, "{n} events still in the outbox"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CouponDrift {
    pub coupon: CouponId,
    pub total: Option<i64>,
    pub redis_issued: usize,
    pub redis_stock: Option<i64>,
    pub outbox: u64,
    /// The outbox's oldest and newest entry when read, for telling later
    /// which entries were already there.
    pub outbox_span: Option<(EntryId, EntryId)>,
    pub db_rows: usize,
    pub db_remaining: Option<i64>,
    pub missing_in_db: Vec<i64>,
    pub extra_in_db: Vec<i64>,
    pub problems: Vec<Problem>,
}

impl CouponDrift {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// What of `self`, read `settle` after `earlier`, was already wrong in
    /// `earlier`: differences that lasted at least that long. While coupons
    /// are issued the last moments are always in flight (in the outbox, in
    /// Kafka, in the writer's batch); only what outlasts the settle time is
    /// drift. Customers must be missing (or extra) in both reads, outbox
    /// entries must have been there at the first, and any other problem
    /// must show in both.
    pub fn lasting_since(mut self, earlier: &CouponDrift) -> CouponDrift {
        let before_missing: BTreeSet<i64> = earlier.missing_in_db.iter().copied().collect();
        let before_extra: BTreeSet<i64> = earlier.extra_in_db.iter().copied().collect();
        self.missing_in_db.retain(|customer| before_missing.contains(customer));
        self.extra_in_db.retain(|customer| before_extra.contains(customer));
        let (missing, extra) = (self.missing_in_db.len(), self.extra_in_db.len());
        // Entry ids grow with time: an entry no newer than the first read's
        // newest was there at the first read.
        let outbox_stayed = match (self.outbox_span, earlier.outbox_span) {
            (Some((oldest, _)), Some((_, newest_before))) => oldest <= newest_before,
            _ => false,
        };
        let kept: Vec<Problem> = self
            .problems
            .iter()
            .filter_map(|problem| match problem {
                Problem::MissingInPostgres(_) => (missing > 0).then_some(Problem::MissingInPostgres(missing)),
                Problem::ExtraInPostgres(_) => (extra > 0).then_some(Problem::ExtraInPostgres(extra)),
                Problem::OutboxNotEmpty(_) => outbox_stayed.then(|| problem.clone()),
                other => earlier
                    .problems
                    .iter()
                    .any(|before| std::mem::discriminant(before) == std::mem::discriminant(other))
                    .then(|| other.clone()),
            })
            .collect();
        self.problems = kept;
        self
    }
}

pub fn compare(coupon: CouponId, redis: &RedisView, db: Option<&DbView>) -> CouponDrift {
    let mut problems = Vec::new();
    let empty = BTreeSet::new();
    let holders = db.map_or(&empty, |db| &db.holders);
    let missing_in_db: Vec<i64> = redis.issued.difference(holders).copied().collect();
    let extra_in_db: Vec<i64> = holders.difference(&redis.issued).copied().collect();

    match db {
        None => problems.push(Problem::NotInPostgres),
        Some(db) => {
            // A row revoked with its unit returned holds none.
            let rows = db.holders.len().saturating_sub(db.returned.max(0) as usize);
            if db.remaining != db.total - rows as i64 {
                problems.push(Problem::RemainingMiscounted { remaining: db.remaining, total: db.total, rows });
            }
            if rows as i64 > db.total {
                problems.push(Problem::OversoldInPostgres { rows, total: db.total });
            }
        }
    }
    match (redis.total, redis.stock) {
        (Some(total), Some(stock)) => {
            let held = redis.issued_count - redis.returned_count;
            if stock + held != total {
                problems.push(Problem::RedisStockMismatch { stock, issued: held, total });
            }
            if stock < 0 {
                problems.push(Problem::RedisStockNegative(stock));
            }
        }
        _ => problems.push(Problem::NotInRedis),
    }
    if !missing_in_db.is_empty() {
        problems.push(Problem::MissingInPostgres(missing_in_db.len()));
    }
    if !extra_in_db.is_empty() {
        problems.push(Problem::ExtraInPostgres(extra_in_db.len()));
    }
    if redis.outbox > 0 {
        problems.push(Problem::OutboxNotEmpty(redis.outbox));
    }

    CouponDrift {
        coupon,
        total: redis.total.or(db.map(|db| db.total)),
        redis_issued: redis.issued.len(),
        redis_stock: redis.stock,
        outbox: redis.outbox,
        outbox_span: redis.outbox_span,
        db_rows: holders.len(),
        db_remaining: db.map(|db| db.remaining),
        missing_in_db,
        extra_in_db,
        problems,
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub coupons: Vec<CouponDrift>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.coupons.iter().all(CouponDrift::is_clean)
    }

    /// Per coupon, what was already wrong in `earlier` (the same coupons, in
    /// the same order): see `CouponDrift::lasting_since`.
    pub fn lasting_since(self, earlier: &Report) -> Report {
        let coupons = self
            .coupons
            .into_iter()
            .zip(&earlier.coupons)
            .map(|(later, earlier)| later.lasting_since(earlier))
            .collect();
        Report { coupons }
    }

    pub fn table(&self) -> Table {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_header([
            "coupon",
            "total",
            "redis issued",
            "redis stock",
            "outbox",
            "db rows",
            "db remaining",
            "status",
        ]);
        let show = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        for c in &self.coupons {
            table.add_row([
                c.coupon.to_string(),
                show(c.total),
                c.redis_issued.to_string(),
                show(c.redis_stock),
                c.outbox.to_string(),
                c.db_rows.to_string(),
                show(c.db_remaining),
                if c.is_clean() {
                    "OK".to_string()
                } else {
                    format!("DRIFT: {}", c.problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("; "))
                },
            ]);
        }
        table
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A coupon whose stores agree, for other modules' tests.
    pub(crate) fn clean_drift() -> CouponDrift {
        compare(id(), &redis(3, &[1]), Some(&db(3, &[1])))
    }

    /// A coupon with one issuance missing in PostgreSQL.
    pub(crate) fn drifting() -> CouponDrift {
        compare(id(), &redis(3, &[1, 2]), Some(&db(3, &[1])))
    }

    fn id() -> CouponId {
        CouponId::new(42).unwrap()
    }

    fn set(ids: &[i64]) -> BTreeSet<i64> {
        ids.iter().copied().collect()
    }

    fn redis(total: i64, issued: &[i64]) -> RedisView {
        RedisView {
            total: Some(total),
            stock: Some(total - issued.len() as i64),
            issued_count: issued.len() as i64,
            issued: set(issued),
            ..RedisView::default()
        }
    }

    fn db(total: i64, holders: &[i64]) -> DbView {
        DbView { total, remaining: total - holders.len() as i64, holders: set(holders), returned: 0 }
    }

    #[test]
    fn matching_stores_are_clean() {
        let drift = compare(id(), &redis(3, &[1, 2]), Some(&db(3, &[1, 2])));
        assert!(drift.is_clean(), "{:?}", drift.problems);
    }

    #[test]
    fn a_unit_returned_to_stock_is_counted_in_both_stores() {
        // 1 revoked with its unit returned, which 3 then took.
        let mut redis = redis(2, &[1, 2, 3]);
        (redis.stock, redis.returned_count) = (Some(0), 1);
        let db = DbView { returned: 1, ..db(2, &[1, 2, 3]) };
        let db = DbView { remaining: 0, ..db };
        let drift = compare(id(), &redis, Some(&db));
        assert!(drift.is_clean(), "{:?}", drift.problems);
        // Redis missed the return: it sells one less, and says so.
        let mut missed = redis.clone();
        missed.returned_count = 0;
        let drift = compare(id(), &missed, Some(&db));
        assert_eq!(drift.problems, [Problem::RedisStockMismatch { stock: 0, issued: 3, total: 2 }]);
    }

    #[test]
    fn an_issued_coupon_missing_in_the_database_is_drift() {
        let drift = compare(id(), &redis(3, &[1, 2]), Some(&db(3, &[1])));
        assert_eq!(drift.missing_in_db, vec![2]);
        assert!(!drift.is_clean());
    }

    #[test]
    fn a_row_without_an_issuance_is_drift() {
        let drift = compare(id(), &redis(3, &[1]), Some(&db(3, &[1, 5])));
        assert_eq!(drift.extra_in_db, vec![5]);
        assert!(!drift.is_clean());
    }

    #[test]
    fn a_miscounted_remaining_quantity_is_drift() {
        let mut counted_twice = db(3, &[1]);
        counted_twice.remaining = 1;
        let drift = compare(id(), &redis(3, &[1]), Some(&counted_twice));
        assert_eq!(drift.problems, [Problem::RemainingMiscounted { remaining: 1, total: 3, rows: 1 }]);
    }

    #[test]
    fn redis_stock_must_add_up_and_the_outbox_must_be_empty() {
        let mut view = redis(3, &[1]);
        view.stock = Some(1);
        view.outbox = 2;
        let drift = compare(id(), &view, Some(&db(3, &[1])));
        assert_eq!(
            drift.problems,
            [Problem::RedisStockMismatch { stock: 1, issued: 1, total: 3 }, Problem::OutboxNotEmpty(2)]
        );
    }

    #[test]
    fn what_is_in_flight_during_issuance_is_not_drift() {
        // First read: 2 and 3 issued, not yet written; two outbox entries.
        let mut first = redis(10, &[1, 2, 3]);
        first.outbox = 2;
        first.outbox_span = Some(((100, 0), (105, 0)));
        let earlier = compare(id(), &first, Some(&db(10, &[1])));
        // Settle later: 2 and 3 written, 4 and 5 issued meanwhile and in flight.
        let mut second = redis(10, &[1, 2, 3, 4, 5]);
        second.outbox = 1;
        second.outbox_span = Some(((230, 0), (230, 0)));
        let later = compare(id(), &second, Some(&db(10, &[1, 2, 3])));
        assert!(!later.is_clean());
        assert!(later.lasting_since(&earlier).is_clean());
    }

    #[test]
    fn what_outlasts_the_settle_time_is_drift() {
        let mut first = redis(10, &[1, 2, 3]);
        first.outbox = 1;
        first.outbox_span = Some(((100, 0), (100, 0)));
        let earlier = compare(id(), &first, Some(&db(10, &[1, 7])));
        let mut second = redis(10, &[1, 2, 3, 4]);
        second.outbox = 2;
        second.outbox_span = Some(((100, 0), (230, 0)));
        let lasting = compare(id(), &second, Some(&db(10, &[1, 7]))).lasting_since(&earlier);
        assert_eq!(lasting.missing_in_db, [2, 3], "4 is in flight");
        assert_eq!(lasting.extra_in_db, [7]);
        assert_eq!(
            lasting.problems,
            [Problem::MissingInPostgres(2), Problem::ExtraInPostgres(1), Problem::OutboxNotEmpty(2)]
        );
    }

    #[test]
    fn unknown_coupons_are_drift() {
        assert!(!compare(id(), &RedisView::default(), Some(&db(3, &[]))).is_clean());
        assert!(!compare(id(), &redis(3, &[]), None).is_clean());
    }

    #[test]
    fn the_table_names_each_problem() {
        let report = Report { coupons: vec![compare(id(), &redis(3, &[1, 2]), Some(&db(3, &[1])))] };
        let text = report.table().to_string();
        assert!(text.contains("DRIFT: 1 issued but not in PostgreSQL"), "{text}");
    }
}
