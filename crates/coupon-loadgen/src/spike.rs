//! Fires a planned list of issuance requests with fixed concurrency over
//! keep-alive connections and records each answer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use rand::seq::SliceRandom;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;

use crate::client::ApiClient;
use crate::cpu::CpuSnapshot;
use crate::latency::{self, Latency};

/// One request of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub coupon: i64,
    pub customer: i64,
}

/// What came back: the HTTP status and error code, or nothing when the
/// connection failed (e.g. the API process was killed mid-request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub attempt: Attempt,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub latency: Duration,
    /// Time since the spike started when the answer arrived.
    pub at: Duration,
}

impl Answer {
    /// `ISSUED`, the error code, `HTTP <status>`, or `NO ANSWER`.
    pub fn outcome(&self) -> String {
        match (self.status, &self.code) {
            (Some(201), _) => "ISSUED".to_string(),
            (Some(_), Some(code)) => code.clone(),
            (Some(status), None) => format!("HTTP {status}"),
            (None, _) => "NO ANSWER".to_string(),
        }
    }
}

/// `customers` distinct customers per coupon (ids `first_customer..`), plus
/// `repeat_share` of them asking again, all shuffled together so coupons and
/// repeats interleave.
pub fn plan(coupons: &[i64], customers: u64, first_customer: i64, repeat_share: f64) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    for &coupon in coupons {
        for i in 0..customers as i64 {
            attempts.push(Attempt { coupon, customer: first_customer + i });
        }
        let repeats = (customers as f64 * repeat_share) as i64;
        for i in 0..repeats {
            attempts.push(Attempt { coupon, customer: first_customer + i });
        }
    }
    attempts.shuffle(&mut rand::rng());
    attempts
}

pub struct Spike {
    pub answers: Vec<Answer>,
    /// When the first request could go out (connections open): each
    /// answer's `at` counts from here.
    pub started: Instant,
    pub elapsed: Duration,
    /// Percent of all cores per component while it ran (empty where `/proc` is not readable).
    pub cpu_share: BTreeMap<String, f64>,
}

/// Runs the plan with `concurrency` requests in flight over connections opened
/// beforehand; `progress` counts answers.
pub async fn run(client: &ApiClient, attempts: Vec<Attempt>, concurrency: usize, progress: Arc<AtomicU64>) -> Spike {
    client.open_connections(concurrency.max(1)).await;
    let cpu_before = CpuSnapshot::take();
    let started = Instant::now();
    let answers = stream::iter(attempts)
        .map(|attempt| {
            let progress = progress.clone();
            async move {
                let answer = send(client, attempt, started).await;
                progress.fetch_add(1, Ordering::Relaxed);
                answer
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed();
    let cpu_share = match (cpu_before, CpuSnapshot::take()) {
        (Some(before), Some(after)) => after.shares_since(&before),
        _ => BTreeMap::new(),
    };
    Spike { answers, started, elapsed, cpu_share }
}

/// Requests per second of a request the API answers at once (`GET /noop`, a
/// 404 with no work behind it): what this client and the HTTP server reach on
/// their own, the ceiling of any endpoint.
pub async fn noop_rate(client: &ApiClient, requests: usize, concurrency: usize) -> f64 {
    client.open_connections(concurrency.max(1)).await;
    let url = format!("{}{}", client.base(), crate::client::NOOP_PATH);
    let started = Instant::now();
    stream::iter(0..requests)
        .map(|_| async { client.http().get(&url).send().await.map(|r| r.status() == reqwest::StatusCode::NOT_FOUND) })
        .buffer_unordered(concurrency.max(1))
        .for_each(|_| async {})
        .await;
    requests as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

/// The part of an answer's body a run looks at: the error code, if any.
#[derive(Deserialize)]
struct AnswerBody {
    code: Option<String>,
}

/// Sends one request; `at` in the answer counts from `spike_started`.
pub async fn send(client: &ApiClient, attempt: Attempt, spike_started: Instant) -> Answer {
    let sent = Instant::now();
    // Written and read by hand-picked types rather than `serde_json::Value`:
    // the load generator shares the cores with the services it measures.
    let body = format!(r#"{{"customerId":{}}}"#, attempt.customer);
    let response = client
        .send(|http, base| {
            let request = http
                .post(format!("{base}/api/v1/coupons/{}/issue", attempt.coupon))
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
            client.customers().apply(request, attempt.customer)
        })
        .await;
    let (status, code) = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let code = response.json::<AnswerBody>().await.ok().and_then(|body| body.code);
            (Some(status), code)
        }
        Err(_) => (None, None),
    };
    Answer { attempt, status, code, latency: sent.elapsed(), at: spike_started.elapsed() }
}

impl Spike {
    pub fn issued(&self) -> impl Iterator<Item = &Answer> {
        self.answers.iter().filter(|a| a.status == Some(201))
    }

    /// Answers by outcome (`Answer::outcome`).
    pub fn by_outcome(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for answer in &self.answers {
            *counts.entry(answer.outcome()).or_default() += 1;
        }
        counts
    }

    pub fn latency(&self) -> Histogram<u64> {
        Self::histogram_of(self.answers.iter())
    }

    fn histogram_of<'a>(answers: impl Iterator<Item = &'a Answer>) -> Histogram<u64> {
        let mut histogram = latency::histogram();
        for answer in answers {
            histogram.saturating_record(answer.latency.as_micros() as u64);
        }
        histogram
    }

    /// When the last `201` arrived, from the spike's start: the sell-out as
    /// customers saw it. `None` when nothing was issued.
    pub fn last_issued_at(&self) -> Option<Duration> {
        self.issued().map(|answer| answer.at).max()
    }

    /// `SOLD_OUT` answers that arrived before a request that was then issued
    /// had been sent: stock remained when they were decided (nothing adds
    /// stock during a spike), so each is a sold-out answered too early.
    pub fn sold_out_while_stock_remained(&self) -> usize {
        let Some(last_issued_sent) = self.issued().map(|answer| answer.at.saturating_sub(answer.latency)).max() else {
            return 0;
        };
        self.answers
            .iter()
            .filter(|answer| answer.code.as_deref() == Some("SOLD_OUT") && answer.at < last_issued_sent)
            .count()
    }

    pub fn requests_per_second(&self) -> f64 {
        self.answers.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Answers per whole second of the spike.
    pub fn timeline(&self) -> Vec<u64> {
        let seconds = self.elapsed.as_secs() as usize + 1;
        let mut per_second = vec![0; seconds];
        for answer in &self.answers {
            per_second[(answer.at.as_secs() as usize).min(seconds - 1)] += 1;
        }
        per_second
    }

    /// One line per percentile, in milliseconds.
    pub fn latency_summary(&self) -> String {
        summary(&self.latency())
    }

    /// The same for the `201`s alone and for every other answer: a `201`
    /// waits for Kafka's acknowledgement, a refusal answers from Redis alone.
    pub fn latency_by_answer(&self) -> [(&'static str, String); 2] {
        let issued = |a: &&Answer| a.status == Some(201);
        [
            ("issued", summary(&Self::histogram_of(self.answers.iter().filter(issued)))),
            ("refused", summary(&Self::histogram_of(self.answers.iter().filter(|a| !issued(a))))),
        ]
    }
}

fn summary(histogram: &Histogram<u64>) -> String {
    let points = Latency::of(histogram).points();
    Latency::NAMES.iter().zip(points).map(|(name, ms)| format!("{name} {ms:.2} ms")).collect::<Vec<_>>().join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_has_every_customer_once_per_coupon_plus_repeats() {
        let attempts = plan(&[1, 2], 100, 1_000, 0.1);
        assert_eq!(attempts.len(), 220);
        for coupon in [1, 2] {
            let mut customers: Vec<i64> = attempts.iter().filter(|a| a.coupon == coupon).map(|a| a.customer).collect();
            customers.sort();
            customers.dedup();
            assert_eq!(customers, (1_000..1_100).collect::<Vec<_>>());
        }
    }

    fn answer(code: Option<&str>, sent_ms: u64, answered_ms: u64) -> Answer {
        Answer {
            attempt: Attempt { coupon: 1, customer: 1 },
            status: Some(if code.is_some() { 409 } else { 201 }),
            code: code.map(str::to_string),
            latency: Duration::from_millis(answered_ms - sent_ms),
            at: Duration::from_millis(answered_ms),
        }
    }

    #[test]
    fn a_sold_out_counts_as_early_only_when_it_arrived_before_an_issued_request_was_sent() {
        let spike =
            |answers| Spike { answers, started: Instant::now(), elapsed: Duration::ZERO, cpu_share: BTreeMap::new() };
        let overlapping = vec![answer(None, 5, 30), answer(Some("SOLD_OUT"), 0, 10), answer(Some("SOLD_OUT"), 6, 7)];
        assert_eq!(spike(overlapping).sold_out_while_stock_remained(), 0);
        let early = vec![answer(Some("SOLD_OUT"), 0, 4), answer(None, 5, 30), answer(Some("SOLD_OUT"), 0, 5)];
        assert_eq!(spike(early).sold_out_while_stock_remained(), 1);
        assert_eq!(spike(vec![answer(Some("SOLD_OUT"), 0, 1)]).sold_out_while_stock_remained(), 0);
    }
}
