//! The promises, checked against what each store holds after a scenario.

use std::collections::BTreeSet;
use std::fmt;

use coupon_loadgen::promises::Promises;
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
    /// Events the writer found no stock for in PostgreSQL (table `sold_out_at_write`).
    pub sold_out_at_write: i64,
}

/// A broken promise or a store out of step with the others; text only in the report and the test's panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// More 201s than customers answered 201: someone was granted twice.
    GrantedTwice {
        answers: usize,
        customers: usize,
    },
    /// More customers hold a 201 than there was stock.
    OversoldAnswers {
        customers: usize,
        stock: i64,
    },
    OversoldRows {
        rows: i64,
        stock: i64,
    },
    OversoldInRedis {
        issued: usize,
        stock: i64,
    },
    /// Customers with a 201 and no row.
    Lost {
        customers: usize,
    },
    /// Rows of customers who never got a 201 (and whose answer was not lost with a killed API).
    RowsWithout201 {
        count: usize,
        sample: Vec<i64>,
    },
    RedisDiffersFromPostgres,
    HeldTwice {
        rows: i64,
        holders: usize,
    },
    RemainingMismatch {
        remaining: i64,
        stock: i64,
        rows: i64,
    },
    RedisStockMismatch {
        redis: i64,
        remaining: i64,
    },
    DeadLettered {
        records: i64,
    },
    SoldOutAtWrite {
        events: i64,
    },
    OutboxNotEmpty {
        events: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::GrantedTwice { answers, customers } => write!(f, "{answers} 201s for {customers} customers"),
            Self::OversoldAnswers { customers, stock } => {
                write!(f, "oversold: {customers} customers answered 201 for stock {stock}")
            }
            Self::OversoldRows { rows, stock } => write!(f, "oversold: {rows} rows for stock {stock}"),
            Self::OversoldInRedis { issued, stock } => write!(f, "oversold in Redis: {issued} for stock {stock}"),
            Self::Lost { customers } => write!(f, "{customers} customers with a 201 have no row"),
            Self::RowsWithout201 { count, sample } => write!(f, "{count} rows without a 201: {sample:?}"),
            Self::RedisDiffersFromPostgres => write!(f, "Redis issued set differs from PostgreSQL holders"),
            Self::HeldTwice { rows, holders } => {
                write!(f, "a customer holds the coupon twice: {rows} rows for {holders} holders")
            }
            Self::RemainingMismatch { remaining, stock, rows } => {
                write!(f, "remaining {remaining} != stock {stock} - rows {rows}")
            }
            Self::RedisStockMismatch { redis, remaining } => write!(f, "Redis stock {redis} != remaining {remaining}"),
            Self::DeadLettered { records } => write!(f, "{records} records dead-lettered"),
            Self::SoldOutAtWrite { events } => {
                write!(f, "{events} events found no stock in PostgreSQL (sold_out_at_write)")
            }
            Self::OutboxNotEmpty { events } => write!(f, "{events} events left in the outbox"),
        }
    }
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
    /// Answers that never arrived (the API process was killed mid-request) or
    /// said UNCONFIRMED (maybe issued).
    pub unanswered: usize,
    pub violations: Vec<Violation>,
}

impl Verdict {
    /// The violations as one line each, for a panic message.
    pub fn describe(&self) -> String {
        self.violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    }
}

// A flat list: one check per invariant.
#[allow(clippy::too_many_lines)]
pub fn check(coupon: i64, spike: &Spike, seen: &Observed) -> Verdict {
    let answers: Vec<_> = spike.answers.iter().filter(|a| a.attempt.coupon == coupon).collect();
    let issued: Vec<i64> = answers.iter().filter(|a| a.status == Some(201)).map(|a| a.attempt.customer).collect();
    // Customers who cannot know whether they got the coupon: no answer (the API
    // process was killed mid-request), or UNCONFIRMED (maybe issued: the
    // required Redis replicas did not confirm it in time, or Redis's reply
    // was lost).
    let unanswered: BTreeSet<i64> = answers
        .iter()
        .filter(|a| a.status.is_none() || a.code.as_deref() == Some("UNCONFIRMED"))
        .map(|a| a.attempt.customer)
        .collect();
    // Customers told they already hold it: a retry (theirs, or the Redis
    // Cluster client's after a failover) of a request whose first answer was
    // lost finds the issuance that request made.
    let told_held: BTreeSet<i64> = answers
        .iter()
        .filter(|a| a.status == Some(409) && a.code.as_deref() == Some("ALREADY_ISSUED"))
        .map(|a| a.attempt.customer)
        .collect();
    // A row without a 201 is allowed only where the customer was not told
    // either way, or told it holds the coupon.
    let promises = Promises::judge(&issued, &seen.db_holders, seen.db_rows, seen.stock, seen.sold_out_at_write, |c| {
        unanswered.contains(&c) || told_held.contains(&c)
    });
    let mut violations = Vec::new();
    let mut expect = |ok: bool, violation: Violation| {
        if !ok {
            violations.push(violation);
        }
    };

    expect(
        promises.answers_201 == promises.customers_201,
        Violation::GrantedTwice { answers: promises.answers_201, customers: promises.customers_201 },
    );
    // What customers were told, whatever the stores say afterwards.
    expect(
        promises.customers_201 as i64 <= seen.stock,
        Violation::OversoldAnswers { customers: promises.customers_201, stock: seen.stock },
    );
    expect(seen.db_rows <= seen.stock, Violation::OversoldRows { rows: seen.db_rows, stock: seen.stock });
    expect(
        seen.redis_issued.len() as i64 <= seen.stock,
        Violation::OversoldInRedis { issued: seen.redis_issued.len(), stock: seen.stock },
    );
    expect(promises.lost.is_empty(), Violation::Lost { customers: promises.lost.len() });
    expect(
        promises.rows_without_201.is_empty(),
        Violation::RowsWithout201 {
            count: promises.rows_without_201.len(),
            sample: promises.rows_without_201.iter().take(5).copied().collect(),
        },
    );
    expect(seen.redis_issued == seen.db_holders, Violation::RedisDiffersFromPostgres);
    expect(
        seen.db_rows == promises.holders as i64,
        Violation::HeldTwice { rows: seen.db_rows, holders: promises.holders },
    );
    expect(
        seen.db_remaining == seen.stock - seen.db_rows,
        Violation::RemainingMismatch { remaining: seen.db_remaining, stock: seen.stock, rows: seen.db_rows },
    );
    expect(
        seen.redis_stock == seen.db_remaining,
        Violation::RedisStockMismatch { redis: seen.redis_stock, remaining: seen.db_remaining },
    );
    expect(seen.dlq_records == 0, Violation::DeadLettered { records: seen.dlq_records });
    expect(seen.sold_out_at_write == 0, Violation::SoldOutAtWrite { events: seen.sold_out_at_write });
    expect(seen.outbox == 0, Violation::OutboxNotEmpty { events: seen.outbox });

    Verdict {
        requests: answers.len(),
        issued: promises.customers_201,
        rows: seen.db_rows,
        duplicates: seen.db_rows - promises.holders as i64,
        lost: promises.lost.len(),
        unanswered: unanswered.len(),
        violations,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use coupon_loadgen::spike::{Answer, Attempt};

    use super::*;

    fn spike(granted: &[i64]) -> Spike {
        let answers = granted
            .iter()
            .map(|&customer| Answer {
                attempt: Attempt { coupon: 1, customer },
                status: Some(201),
                code: None,
                latency: Duration::ZERO,
                at: Duration::ZERO,
            })
            .collect();
        Spike { answers, started: std::time::Instant::now(), elapsed: Duration::ZERO, cpu_share: BTreeMap::new() }
    }

    fn consistent(holders: &[i64], stock: i64) -> Observed {
        let holders: BTreeSet<i64> = holders.iter().copied().collect();
        let rows = holders.len() as i64;
        Observed {
            stock,
            redis_issued: holders.clone(),
            redis_stock: stock - rows,
            db_holders: holders,
            db_rows: rows,
            db_remaining: stock - rows,
            ..Observed::default()
        }
    }

    #[test]
    fn a_consistent_sale_breaks_nothing() {
        assert_eq!(check(1, &spike(&[7, 8]), &consistent(&[7, 8], 2)).violations, vec![]);
    }

    #[test]
    fn more_customers_told_201_than_stock_is_overselling_whatever_the_stores_hold() {
        let verdict = check(1, &spike(&[7, 8, 9]), &consistent(&[7, 8], 2));
        assert!(verdict.violations.contains(&Violation::OversoldAnswers { customers: 3, stock: 2 }));
    }

    #[test]
    fn an_event_without_stock_at_the_writer_is_a_violation() {
        let seen = Observed { sold_out_at_write: 1, ..consistent(&[7], 2) };
        assert_eq!(check(1, &spike(&[7]), &seen).violations, vec![Violation::SoldOutAtWrite { events: 1 }]);
    }
}
