//! The promises, checked against what each store holds after a scenario.

use std::collections::BTreeSet;

use coupon_loadgen::spike::Spike;

/// What the stores hold for one coupon once everything has drained.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub stock: i64,
    pub redis_issued: BTreeSet<i64>,
    pub redis_stock: i64,
    pub outbox: u64,
    pub db_holders: BTreeSet<i64>,
    pub db_rows: i64,
    pub db_remaining: i64,
    pub dlq_records: i64,
}

/// The row of the reliability report for one coupon of one scenario.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub requests: usize,
    pub issued: usize,
    pub rows: i64,
    /// Customers holding the coupon more than once (rows beyond distinct holders).
    pub duplicates: i64,
    /// Customers who got a 201 but have no row.
    pub lost: usize,
    /// Answers that never arrived (the API process was killed mid-request).
    pub unanswered: usize,
    pub violations: Vec<String>,
}

pub fn check(coupon: i64, spike: &Spike, seen: &Observed) -> Verdict {
    let answers: Vec<_> = spike.answers.iter().filter(|a| a.attempt.coupon == coupon).collect();
    let issued: BTreeSet<i64> = answers.iter().filter(|a| a.status == Some(201)).map(|a| a.attempt.customer).collect();
    let issued_answers = answers.iter().filter(|a| a.status == Some(201)).count();
    let unanswered: BTreeSet<i64> = answers.iter().filter(|a| a.status.is_none()).map(|a| a.attempt.customer).collect();
    let mut violations = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            violations.push(what);
        }
    };

    expect(issued_answers == issued.len(), format!("{} 201s for {} customers", issued_answers, issued.len()));
    expect(seen.db_rows <= seen.stock, format!("oversold: {} rows for stock {}", seen.db_rows, seen.stock));
    expect(
        seen.redis_issued.len() as i64 <= seen.stock,
        format!("oversold in Redis: {} for stock {}", seen.redis_issued.len(), seen.stock),
    );
    let lost: Vec<i64> = issued.difference(&seen.db_holders).copied().collect();
    expect(lost.is_empty(), format!("{} customers with a 201 have no row", lost.len()));
    // A row without a 201 is allowed only where the answer was lost with a killed API process.
    let unexplained: Vec<i64> =
        seen.db_holders.difference(&issued).filter(|c| !unanswered.contains(c)).copied().collect();
    expect(
        unexplained.is_empty(),
        format!("{} rows without a 201: {:?}", unexplained.len(), &unexplained[..unexplained.len().min(5)]),
    );
    expect(seen.redis_issued == seen.db_holders, "Redis issued set differs from PostgreSQL holders".to_string());
    expect(seen.db_rows == seen.db_holders.len() as i64, "a customer holds the coupon twice".to_string());
    expect(
        seen.db_remaining == seen.stock - seen.db_rows,
        format!("remaining {} != stock {} - rows {}", seen.db_remaining, seen.stock, seen.db_rows),
    );
    expect(
        seen.redis_stock == seen.db_remaining,
        format!("Redis stock {} != remaining {}", seen.redis_stock, seen.db_remaining),
    );
    expect(seen.dlq_records == 0, format!("{} records dead-lettered", seen.dlq_records));
    expect(seen.outbox == 0, format!("{} events left in the outbox", seen.outbox));

    Verdict {
        requests: answers.len(),
        issued: issued.len(),
        rows: seen.db_rows,
        duplicates: seen.db_rows - seen.db_holders.len() as i64,
        lost: lost.len(),
        unanswered: unanswered.len(),
        violations,
    }
}
