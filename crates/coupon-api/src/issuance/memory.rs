//! Answers from memory: once Redis has answered a coupon's request `PAUSED`,
//! `NOT_STARTED` or `SOLD_OUT`, this replica takes a snapshot of what every
//! request for the coupon would be answered (`remember.lua`: paused; not
//! started, until when by Redis's clock; sold out, and who holds it) and
//! answers from it without Redis until it may have changed. A hot coupon's
//! requests after its sell-out, the bulk of a drop, then cost Redis nothing.
//!
//! The answers are the issue script's, customer by customer: a holder is told
//! `ALREADY_ISSUED` and anyone else `SOLD_OUT`. Nothing is ever issued from
//! memory, so the promises do not rest on it; only how fresh a refusal is.
//! Freshness: the snapshot carries a token that every change of the coupon
//! removes in Redis (a control, a unit back in stock, a rebuild, a
//! retirement, a fence). Every `check` interval (100 ms by default) each
//! replica reads the tokens of the coupons it remembers and forgets those
//! whose token went, or all of them when Redis does not answer. An answer is
//! given only from a snapshot whose token was read, by a read sent less than
//! [`Memory::max_age`] (two intervals) ago, so a change is in every
//! replica's answers once that long has passed: an operator's change answers
//! after waiting that long ([`Memory::outlived`]), and from its answer on every
//! replica answers by it, as without memory. The clock retires a not-started
//! or sold-out answer at the start or the end of the period. A sold-out
//! coupon with more than `MAX_HOLDERS` holders is not remembered (the
//! snapshot would cost more than it saves).
//!
//! A sharded coupon's snapshot reads every shard, one after the other, and
//! holds only if they all give the same answer with no transfer in flight;
//! it answers nothing until the next check finds every shard's token
//! unchanged, so that the shards were as read at one moment (any unit
//! arriving removes its shard's token).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use coupon_domain::shards::CouponShard;
use coupon_domain::{CouponId, CustomerId, Rejection};
use prometheus::IntCounter;
use redis::{Script, Value};
use tokio_util::sync::CancellationToken;

use crate::store::{CouponStore, RedisUnavailable};

/// The most holders a remembered sold-out coupon may have.
const MAX_HOLDERS: usize = 100_000;

/// The most coupons remembered at once; past it, new ones are not.
const MAX_COUPONS: usize = 10_000;

#[derive(Debug, PartialEq, Eq)]
enum State {
    Paused,
    NotStartedUntil(Instant),
    SoldOutUntil { end: Instant, holders: HashSet<i64> },
}

#[derive(Debug)]
struct Remembered {
    /// One per shard, in shard order.
    tokens: Vec<String>,
    /// When the last read that found the tokens was sent; `None` until a
    /// read after the snapshot found them (a sharded coupon's: its shards
    /// were read one after the other, so only an unchanged second reading
    /// says they held at one moment).
    verified: Option<Instant>,
    state: State,
}

impl Remembered {
    /// The answer for `customer`, or `None` once the clock has voided it.
    fn answer(&self, customer: CustomerId, now: Instant) -> Option<Rejection> {
        match &self.state {
            State::Paused => Some(Rejection::Paused),
            State::NotStartedUntil(start) => (now < *start).then_some(Rejection::NotStarted),
            State::SoldOutUntil { end, holders } => (now < *end).then(|| match holders.contains(&customer.get()) {
                true => Rejection::AlreadyIssued,
                false => Rejection::SoldOut,
            }),
        }
    }
}

pub struct Memory {
    store: Arc<CouponStore>,
    remember: Script,
    check: Duration,
    coupons: Mutex<HashMap<CouponId, Remembered>>,
    /// Coupons whose snapshot is being taken.
    pending: Mutex<HashSet<CouponId>>,
    answered: IntCounter,
}

impl Memory {
    /// `answered` counts the requests answered from memory.
    pub fn new(store: Arc<CouponStore>, check: Duration, answered: IntCounter) -> Arc<Self> {
        Arc::new(Self {
            store,
            remember: Script::new(include_str!("remember.lua")),
            check,
            coupons: Mutex::default(),
            pending: Mutex::default(),
            answered,
        })
    }

    /// How long after its token was last read a snapshot still answers.
    pub fn max_age(&self) -> Duration {
        self.check * 2
    }

    /// Waits until every replica's answers from memory come from reads sent
    /// after this call: a change applied in Redis before it is in all of them.
    pub async fn outlived(&self) {
        tokio::time::sleep(self.max_age()).await;
    }

    /// The answer Redis would give `customer` now, if this replica knows it.
    pub fn answer(&self, coupon: CouponId, customer: CustomerId) -> Option<Rejection> {
        let now = Instant::now();
        let mut coupons = lock(&self.coupons);
        let remembered = coupons.get(&coupon)?;
        if remembered.verified.is_none_or(|verified| now.duration_since(verified) >= self.max_age()) {
            // Not confirmed lately: Redis answers until the next check.
            return None;
        }
        let answer = remembered.answer(customer, now);
        match answer {
            Some(_) => self.answered.inc(),
            None => {
                coupons.remove(&coupon);
            }
        }
        answer
    }

    /// Redis refused a request for `coupon` with `rejection`: when every
    /// request would be refused alike for a while, remember how.
    pub fn learn(self: &Arc<Self>, coupon: CouponId, rejection: Rejection) {
        if !matches!(rejection, Rejection::Paused | Rejection::NotStarted | Rejection::SoldOut)
            || lock(&self.coupons).contains_key(&coupon)
            || !lock(&self.pending).insert(coupon)
        {
            return;
        }
        let memory = Arc::clone(self);
        tokio::spawn(async move {
            match memory.snapshot(coupon).await {
                Ok(Some(remembered)) => {
                    let mut coupons = lock(&memory.coupons);
                    if coupons.len() < MAX_COUPONS {
                        coupons.insert(coupon, remembered);
                    }
                }
                Ok(None) => {}
                Err(err) => tracing::debug!(error = %err, coupon = %coupon, "no snapshot of the coupon's answers"),
            }
            lock(&memory.pending).remove(&coupon);
        });
    }

    /// Forgets `coupon`: this replica just changed it.
    pub fn forget(&self, coupon: CouponId) {
        lock(&self.coupons).remove(&coupon);
    }

    async fn snapshot(&self, coupon: CouponId) -> Result<Option<Remembered>, RedisUnavailable> {
        let shards = self.store.shard_count(coupon).await?;
        // The deadlines count from before the script ran, so they fall no
        // later than Redis's own clock says.
        let sent = Instant::now();
        let mut each = Vec::with_capacity(usize::from(shards));
        for shard in CouponShard::all(coupon, shards) {
            let keys = self.store.shard_keys(shard);
            let mut call = self.remember.key(&keys.meta);
            call.key(&keys.stock).key(&keys.issued).key(&keys.transfers).arg(MAX_HOLDERS);
            let reply: Value = self.store.redis().invoke(&call).await?;
            match parse_snapshot(reply, sent).ok_or(RedisUnavailable::Reply(Value::Nil))? {
                Some(remembered) => each.push(remembered),
                None => return Ok(None),
            }
        }
        Ok(combine(each))
    }

    /// Every `check` interval, forgets the coupons whose token Redis no
    /// longer holds, and all of them when Redis does not answer; until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.check) => {}
            }
            let held: Vec<(CouponId, Vec<String>)> =
                lock(&self.coupons).iter().map(|(coupon, remembered)| (*coupon, remembered.tokens.clone())).collect();
            if held.is_empty() {
                continue;
            }
            let reads: Vec<redis::Cmd> = held
                .iter()
                .flat_map(|(coupon, tokens)| CouponShard::all(*coupon, tokens.len() as u16))
                .map(|shard| {
                    redis::cmd("HMGET").arg(self.store.shard_keys(shard).meta).arg("changed").arg("fenced").to_owned()
                })
                .collect();
            let sent = Instant::now();
            let current = self.store.redis().query_each::<(Option<String>, Option<String>)>(&reads).await;
            let mut coupons = lock(&self.coupons);
            match current {
                Ok(current) => {
                    let mut current = current.into_iter();
                    for (coupon, tokens) in held {
                        let read: Vec<_> = current.by_ref().take(tokens.len()).collect();
                        let unchanged = read.len() == tokens.len()
                            && read
                                .iter()
                                .zip(&tokens)
                                .all(|((now, fenced), token)| now.as_ref() == Some(token) && fenced.is_none());
                        if !unchanged {
                            coupons.remove(&coupon);
                        } else if let Some(remembered) = coupons.get_mut(&coupon).filter(|r| r.tokens == tokens) {
                            remembered.verified = Some(sent);
                        }
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "could not check the remembered answers: forgetting them");
                    coupons.clear();
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `remember.lua`'s reply: `Some(None)` for nothing to remember, `None` for a
/// reply it cannot give.
fn parse_snapshot(reply: Value, sent: Instant) -> Option<Option<Remembered>> {
    let items = match reply {
        Value::Nil => return Some(None),
        Value::Array(items) => items,
        _ => return None,
    };
    let text = |value: &Value| match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    };
    let after = |value: &Value| match value {
        Value::Int(ms) => Some(sent + Duration::from_millis(u64::try_from(*ms).ok()?)),
        _ => None,
    };
    let token = text(items.first()?)?;
    let state = match (text(items.get(1)?)?.as_str(), &items[2..]) {
        ("PAUSED", []) => State::Paused,
        ("NOT_STARTED", [start]) => State::NotStartedUntil(after(start)?),
        ("SOLD_OUT", [end, Value::Array(holders)]) => State::SoldOutUntil {
            end: after(end)?,
            holders: holders.iter().map(|holder| text(holder)?.parse().ok()).collect::<Option<_>>()?,
        },
        _ => return None,
    };
    Some(Some(Remembered { tokens: vec![token], verified: Some(sent), state }))
}

/// One snapshot of a coupon from one per shard: the answer they all give
/// (the earliest deadline; every holder), unverified when there are several.
fn combine(mut each: Vec<Remembered>) -> Option<Remembered> {
    if each.len() <= 1 {
        return each.pop();
    }
    let tokens = each.iter().flat_map(|remembered| remembered.tokens.clone()).collect();
    let mut states = each.into_iter().map(|remembered| remembered.state);
    let first = states.next()?;
    let state = states.try_fold(first, |whole, shard| match (whole, shard) {
        (State::Paused, State::Paused) => Some(State::Paused),
        (State::NotStartedUntil(a), State::NotStartedUntil(b)) => Some(State::NotStartedUntil(a.min(b))),
        (State::SoldOutUntil { end: a, mut holders }, State::SoldOutUntil { end: b, holders: more }) => {
            holders.extend(more);
            Some(State::SoldOutUntil { end: a.min(b), holders })
        }
        _ => None,
    })?;
    Some(Remembered { tokens, verified: None, state })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn customer(id: i64) -> CustomerId {
        CustomerId::new(id).unwrap()
    }

    #[test]
    fn a_sold_out_coupon_tells_holders_apart_until_its_end() {
        let sent = Instant::now();
        let reply = Value::Array(vec![
            bulk("1.2"),
            bulk("SOLD_OUT"),
            Value::Int(60_000),
            Value::Array(vec![bulk("7"), bulk("9")]),
        ]);
        let remembered = parse_snapshot(reply, sent).unwrap().unwrap();
        assert_eq!(remembered.tokens, ["1.2"]);
        assert_eq!(remembered.answer(customer(7), sent), Some(Rejection::AlreadyIssued));
        assert_eq!(remembered.answer(customer(8), sent), Some(Rejection::SoldOut));
        assert_eq!(remembered.answer(customer(8), sent + Duration::from_secs(60)), None, "ended: Redis answers");
    }

    #[test]
    fn not_started_holds_until_the_start_and_paused_until_a_change() {
        let sent = Instant::now();
        let reply = Value::Array(vec![bulk("1.2"), bulk("NOT_STARTED"), Value::Int(1_000)]);
        let remembered = parse_snapshot(reply, sent).unwrap().unwrap();
        assert_eq!(remembered.answer(customer(1), sent + Duration::from_millis(999)), Some(Rejection::NotStarted));
        assert_eq!(remembered.answer(customer(1), sent + Duration::from_millis(1_000)), None);
        let paused = parse_snapshot(Value::Array(vec![bulk("1.2"), bulk("PAUSED")]), sent).unwrap().unwrap();
        assert_eq!(paused.answer(customer(1), sent + Duration::from_secs(3_600)), Some(Rejection::Paused));
    }

    #[test]
    fn a_sharded_coupon_is_sold_out_when_every_shard_is_and_answers_only_once_verified() {
        let sent = Instant::now();
        let sold_out = |token: &str, end_ms: i64, holders: &[&str]| {
            let holders = holders.iter().map(|h| bulk(h)).collect();
            let reply = Value::Array(vec![bulk(token), bulk("SOLD_OUT"), Value::Int(end_ms), Value::Array(holders)]);
            parse_snapshot(reply, sent).unwrap().unwrap()
        };
        let mut whole = combine(vec![sold_out("a", 60_000, &["7"]), sold_out("b", 50_000, &["9"])]).unwrap();
        assert_eq!(whole.tokens, ["a", "b"]);
        assert_eq!(whole.answer(customer(8), sent), Some(Rejection::SoldOut));
        assert_eq!(whole.answer(customer(9), sent), Some(Rejection::AlreadyIssued), "a holder of another shard");
        assert_eq!(whole.answer(customer(8), sent + Duration::from_secs(50)), None, "the earliest end");
        assert!(whole.verified.is_none(), "not answered from until a second reading of every token");
        whole.verified = Some(sent);

        let paused = parse_snapshot(Value::Array(vec![bulk("c"), bulk("PAUSED")]), sent).unwrap().unwrap();
        assert!(combine(vec![paused, sold_out("d", 1_000, &[])]).is_none(), "shards that disagree");
    }

    #[test]
    fn nothing_to_remember_and_unreadable_replies_are_told_apart() {
        let sent = Instant::now();
        assert!(parse_snapshot(Value::Nil, sent).unwrap().is_none());
        for bad in [
            Value::Int(1),
            Value::Array(vec![bulk("1.2"), bulk("SOLD_OUT"), Value::Int(5)]),
            Value::Array(vec![bulk("1.2"), bulk("NOT_STARTED"), Value::Int(-5)]),
            Value::Array(vec![bulk("1.2"), bulk("SOLD_OUT"), Value::Int(5), Value::Array(vec![bulk("x")])]),
            Value::Array(vec![bulk("1.2"), bulk("EXPIRED")]),
        ] {
            assert!(parse_snapshot(bad.clone(), sent).is_none(), "{bad:?}");
        }
    }
}
