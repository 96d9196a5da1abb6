//! The three promises for one coupon, judged from what customers were told
//! (their 201s) and what PostgreSQL holds. One judgement serves the spike,
//! the soak and the end-to-end suite; coupon-reconcile compares the stores
//! with each other instead, since it has no answers to go by.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promises {
    pub stock: i64,
    /// 201 answers, and the distinct customers they went to.
    pub answers_201: usize,
    pub customers_201: usize,
    /// PostgreSQL's rows for the coupon, and the distinct customers holding them.
    pub rows: i64,
    pub holders: usize,
    /// Customers told 201 who hold no row.
    pub lost: Vec<i64>,
    /// Customers holding a row who were never told 201 and are not excused.
    pub rows_without_201: Vec<i64>,
    /// Events PostgreSQL found no stock for: customers told 201 that the
    /// database could not grant.
    pub sold_out_at_write: i64,
}

impl Promises {
    /// `issued` has the customer of every 201 answer (twice if answered
    /// twice). `excused` says which customers may hold a row without a 201:
    /// those who got no answer, or were told they already hold it.
    pub fn judge(
        issued: &[i64],
        holders: &BTreeSet<i64>,
        rows: i64,
        stock: i64,
        sold_out_at_write: i64,
        excused: impl Fn(i64) -> bool,
    ) -> Self {
        let told: BTreeSet<i64> = issued.iter().copied().collect();
        Self {
            stock,
            answers_201: issued.len(),
            customers_201: told.len(),
            rows,
            holders: holders.len(),
            lost: told.difference(holders).copied().collect(),
            rows_without_201: holders.difference(&told).copied().filter(|customer| !excused(*customer)).collect(),
            sold_out_at_write,
        }
    }

    pub fn never_oversold(&self) -> bool {
        self.customers_201 as i64 <= self.stock && self.rows <= self.stock
    }

    /// Every 201 has its row, and no row lacks a 201 it should have.
    pub fn never_lost(&self) -> bool {
        self.lost.is_empty() && self.rows_without_201.is_empty()
    }

    /// Grants beyond one per customer: 201s beyond the customers told, rows
    /// beyond the customers holding them.
    pub fn twice(&self) -> usize {
        (self.answers_201 - self.customers_201) + (self.rows - self.holders as i64).unsigned_abs() as usize
    }

    pub fn held(&self) -> bool {
        self.never_oversold() && self.never_lost() && self.twice() == 0 && self.sold_out_at_write == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(customers: &[i64]) -> BTreeSet<i64> {
        customers.iter().copied().collect()
    }

    #[test]
    fn matching_answers_and_rows_hold_every_promise() {
        let promises = Promises::judge(&[1, 2], &set(&[1, 2]), 2, 2, 0, |_| false);
        assert!(promises.held(), "{promises:?}");
    }

    #[test]
    fn each_broken_promise_is_named() {
        let oversold = Promises::judge(&[1, 2, 3], &set(&[1, 2, 3]), 3, 2, 0, |_| false);
        assert!(!oversold.never_oversold());
        let lost = Promises::judge(&[1, 2], &set(&[1]), 1, 2, 0, |_| false);
        assert_eq!(lost.lost, [2]);
        let twice = Promises::judge(&[1, 1], &set(&[1]), 2, 5, 0, |_| false);
        assert_eq!(twice.twice(), 2, "a second 201 and a second row");
        let sold_out = Promises::judge(&[1], &set(&[]), 0, 5, 1, |customer| customer == 1);
        assert!(!sold_out.held());
    }

    #[test]
    fn a_row_without_a_201_is_excused_only_for_customers_who_could_not_know() {
        let unexcused = Promises::judge(&[1], &set(&[1, 2]), 2, 5, 0, |_| false);
        assert_eq!(unexcused.rows_without_201, [2]);
        let excused = Promises::judge(&[1], &set(&[1, 2]), 2, 5, 0, |customer| customer == 2);
        assert!(excused.held(), "{excused:?}");
    }
}
