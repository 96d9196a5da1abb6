//! One benchmark run as data, written as JSON so a report can compare runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::latency::Latency;
use crate::spike::Spike;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// e.g. `kafka` or `sync-db`.
    pub mode: String,
    pub round: u32,
    pub coupon: i64,
    pub customers: u64,
    pub stock: u64,
    pub concurrency: usize,
    pub requests: usize,
    pub issued: usize,
    pub elapsed_s: f64,
    pub requests_per_s: f64,
    /// Successful issuances per second over the spike.
    pub issued_per_s: f64,
    /// Of every answer (`p50_ms` … `max_ms` in the JSON, beside the others).
    #[serde(flatten)]
    pub latency: Latency,
    pub outcomes: Vec<(String, u64)>,
    /// Answers per second, second by second.
    pub timeline: Vec<u64>,
    /// Seconds after the spike until PostgreSQL held every issued coupon.
    pub durable_after_s: f64,
    /// (seconds after the spike, issued but not yet in PostgreSQL).
    pub lag: Vec<(f64, i64)>,
    /// Write transactions in the database for the run (coupon, spike and drain).
    pub db_transactions: i64,
    pub peak_db_connections: u64,
    /// Percent of all cores per component during the spike (`cpu::COMPONENTS`).
    #[serde(default)]
    pub cpu_share: BTreeMap<String, f64>,
}

impl RunRecord {
    pub fn from_spike(
        mode: &str,
        round: u32,
        coupon: i64,
        stock: u64,
        customers: u64,
        concurrency: usize,
        spike: &Spike,
    ) -> Self {
        let issued = spike.issued().count();
        Self {
            mode: mode.to_string(),
            round,
            coupon,
            customers,
            stock,
            concurrency,
            requests: spike.answers.len(),
            issued,
            elapsed_s: spike.elapsed.as_secs_f64(),
            requests_per_s: spike.requests_per_second(),
            issued_per_s: issued as f64 / issued_window(spike),
            latency: Latency::of(&spike.latency()),
            outcomes: spike.by_outcome().into_iter().collect(),
            timeline: spike.timeline(),
            durable_after_s: 0.0,
            lag: Vec::new(),
            db_transactions: 0,
            peak_db_connections: 0,
            cpu_share: spike.cpu_share.clone(),
        }
    }

    /// Database transactions per 10,000 issuances.
    pub fn transactions_per_10k(&self) -> f64 {
        self.db_transactions as f64 * 10_000.0 / self.issued.max(1) as f64
    }
}

/// Seconds from the spike's start until its last successful issuance.
fn issued_window(spike: &Spike) -> f64 {
    spike.issued().map(|a| a.at.as_secs_f64()).fold(0.0, f64::max).max(1e-3)
}
