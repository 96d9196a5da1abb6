//! The comparison itself: pure, so every kind of drift is unit-tested.

use std::collections::BTreeSet;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use coupon_domain::CouponId;

#[derive(Debug, Clone, Default)]
pub struct RedisView {
    /// `None` when Redis does not know the coupon.
    pub total: Option<i64>,
    pub stock: Option<i64>,
    pub issued: BTreeSet<i64>,
    /// Events not yet acknowledged by Kafka.
    pub outbox: u64,
}

#[derive(Debug, Clone, Default)]
pub struct DbView {
    pub total: i64,
    pub remaining: i64,
    pub holders: BTreeSet<i64>,
}

#[derive(Debug, Clone)]
pub struct CouponDrift {
    pub coupon: CouponId,
    pub total: Option<i64>,
    pub redis_issued: usize,
    pub redis_stock: Option<i64>,
    pub outbox: u64,
    pub db_rows: usize,
    pub db_remaining: Option<i64>,
    /// Issued in Redis (the customer got a 201) but not in PostgreSQL.
    pub missing_in_db: Vec<i64>,
    /// In PostgreSQL but not issued in Redis.
    pub extra_in_db: Vec<i64>,
    pub problems: Vec<String>,
}

impl CouponDrift {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn compare(coupon: CouponId, redis: &RedisView, db: Option<&DbView>) -> CouponDrift {
    let mut problems = Vec::new();
    let empty = BTreeSet::new();
    let holders = db.map_or(&empty, |db| &db.holders);
    let missing_in_db: Vec<i64> = redis.issued.difference(holders).copied().collect();
    let extra_in_db: Vec<i64> = holders.difference(&redis.issued).copied().collect();

    match db {
        None => problems.push("not in PostgreSQL".to_string()),
        Some(db) => {
            if db.remaining != db.total - db.holders.len() as i64 {
                problems.push(format!(
                    "PostgreSQL remaining {} != total {} - rows {}",
                    db.remaining,
                    db.total,
                    db.holders.len()
                ));
            }
            if db.holders.len() as i64 > db.total {
                problems.push(format!("oversold in PostgreSQL: {} rows for {}", db.holders.len(), db.total));
            }
        }
    }
    match (redis.total, redis.stock) {
        (Some(total), Some(stock)) => {
            if stock + redis.issued.len() as i64 != total {
                problems.push(format!("Redis stock {stock} + issued {} != total {total}", redis.issued.len()));
            }
            if stock < 0 {
                problems.push(format!("Redis stock below zero: {stock}"));
            }
        }
        _ => problems.push("not primed in Redis".to_string()),
    }
    if !missing_in_db.is_empty() {
        problems.push(format!("{} issued but not in PostgreSQL", missing_in_db.len()));
    }
    if !extra_in_db.is_empty() {
        problems.push(format!("{} in PostgreSQL but not issued in Redis", extra_in_db.len()));
    }
    if redis.outbox > 0 {
        problems.push(format!("{} events still in the outbox", redis.outbox));
    }

    CouponDrift {
        coupon,
        total: redis.total.or(db.map(|db| db.total)),
        redis_issued: redis.issued.len(),
        redis_stock: redis.stock,
        outbox: redis.outbox,
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
                if c.is_clean() { "OK".to_string() } else { format!("DRIFT: {}", c.problems.join("; ")) },
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
        RedisView { total: Some(total), stock: Some(total - issued.len() as i64), issued: set(issued), outbox: 0 }
    }

    fn db(total: i64, holders: &[i64]) -> DbView {
        DbView { total, remaining: total - holders.len() as i64, holders: set(holders) }
    }

    #[test]
    fn matching_stores_are_clean() {
        let drift = compare(id(), &redis(3, &[1, 2]), Some(&db(3, &[1, 2])));
        assert!(drift.is_clean(), "{:?}", drift.problems);
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
        assert!(drift.problems.iter().any(|p| p.contains("PostgreSQL remaining")), "{:?}", drift.problems);
    }

    #[test]
    fn redis_stock_must_add_up_and_the_outbox_must_be_empty() {
        let mut view = redis(3, &[1]);
        view.stock = Some(1);
        view.outbox = 2;
        let drift = compare(id(), &view, Some(&db(3, &[1])));
        assert_eq!(drift.problems.len(), 2, "{:?}", drift.problems);
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
