//! Customers spending what a spike gave them: each tries two orders at the
//! same moment, and asks again while the answer says it may (503, or no answer
//! at all), as a checkout would. Nothing a customer holds may be refused for
//! good (least of all as `NOT_HELD`, which an order service takes as "not
//! theirs"), and exactly one of the two orders may use it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coupon_loadgen::client::ApiClient;
use futures::stream::{self, StreamExt};

/// Customers redeeming at once.
const CONCURRENCY: usize = 64;

/// What each order pays before its discount.
const ORDER_AMOUNT: i64 = 10_000;

const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A customer's winning order and what it got off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    pub customer: i64,
    pub order_id: String,
    pub discount_amount: i64,
}

#[derive(Debug, Default)]
pub struct Redemptions {
    pub uses: Vec<Use>,
    /// Broken promises: a holder refused for good, a coupon used twice or never.
    pub violations: Vec<String>,
    /// Holders answered `404 NOT_HELD` (also among `violations`).
    pub not_held: Vec<i64>,
    /// Requests asked again after a 503 or no answer.
    pub retries: u64,
}

enum Decided {
    Used(i64),
    AlreadyUsed,
    NotHeld,
    Refused(String),
}

/// A customer's two orders, decided.
enum Outcome {
    Used(Use),
    NotHeld,
    Broken(String),
}

/// Each of `customers` redeems `coupon` for orders `<customer>-a` and
/// `<customer>-b` at once; `progress` counts customers decided.
pub async fn redeem_twice_each(
    api: &ApiClient,
    coupon: i64,
    customers: &[i64],
    progress: Arc<AtomicU64>,
    timeout: Duration,
) -> Redemptions {
    let deadline = Instant::now() + timeout;
    let retries = AtomicU64::new(0);
    let outcomes: Vec<(i64, Outcome)> = stream::iter(customers)
        .map(|&customer| {
            let (progress, retries) = (progress.clone(), &retries);
            async move {
                let (a, b) = (format!("{customer}-a"), format!("{customer}-b"));
                let (first, second) = tokio::join!(
                    decide(api, coupon, customer, &a, deadline, retries),
                    decide(api, coupon, customer, &b, deadline, retries)
                );
                progress.fetch_add(1, Ordering::Relaxed);
                let outcome = match (first, second) {
                    (Decided::Used(off), Decided::AlreadyUsed) => {
                        Outcome::Used(Use { customer, order_id: a, discount_amount: off })
                    }
                    (Decided::AlreadyUsed, Decided::Used(off)) => {
                        Outcome::Used(Use { customer, order_id: b, discount_amount: off })
                    }
                    (Decided::NotHeld, _) | (_, Decided::NotHeld) => Outcome::NotHeld,
                    (Decided::Refused(why), _) | (_, Decided::Refused(why)) => {
                        Outcome::Broken(format!("customer {customer}: {why}"))
                    }
                    (Decided::Used(_), Decided::Used(_)) => {
                        Outcome::Broken(format!("customer {customer}: both orders used the coupon"))
                    }
                    (Decided::AlreadyUsed, Decided::AlreadyUsed) => {
                        Outcome::Broken(format!("customer {customer}: neither order used it"))
                    }
                };
                (customer, outcome)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut redemptions = Redemptions { retries: retries.into_inner(), ..Default::default() };
    for (customer, outcome) in outcomes {
        match outcome {
            Outcome::Used(used) => redemptions.uses.push(used),
            Outcome::NotHeld => {
                redemptions.not_held.push(customer);
                redemptions.violations.push(format!("customer {customer}: 404 NOT_HELD for a coupon it holds"));
            }
            Outcome::Broken(violation) => redemptions.violations.push(violation),
        }
    }
    redemptions
}

/// Redeems until the answer is final: used, or used by the other order.
async fn decide(
    api: &ApiClient,
    coupon: i64,
    customer: i64,
    order: &str,
    deadline: Instant,
    retries: &AtomicU64,
) -> Decided {
    loop {
        let answer = api.redeem(coupon, customer, order, ORDER_AMOUNT).await;
        let why = match answer {
            Ok((200, body)) => match body["discountAmount"].as_i64() {
                Some(off) if body["orderId"] == order => return Decided::Used(off),
                _ => return Decided::Refused(format!("order {order}: 200 with {body}")),
            },
            Ok((409, body)) if body["code"] == "ALREADY_USED" => return Decided::AlreadyUsed,
            Ok((404, body)) if body["code"] == "NOT_HELD" => return Decided::NotHeld,
            Ok((503, body)) => format!("503 {body}"),
            Ok((status, body)) => return Decided::Refused(format!("order {order}: {status} {body}")),
            Err(err) => format!("no answer: {err}"),
        };
        if Instant::now() > deadline {
            return Decided::Refused(format!("order {order} still undecided at the deadline; last: {why}"));
        }
        retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}
