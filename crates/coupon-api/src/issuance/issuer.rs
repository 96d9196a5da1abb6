//! The Redis side of issuance: the decision (`issue.lua`) and a new coupon's
//! state (`create.lua`, stamped with the Redis incarnation it was born on,
//! which the recovery's `born_here.lua` compares). The issue script is also
//! the incarnation marker (crate::store::incarnation): it is called by SHA
//! and never loaded here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use coupon_domain::shards::{home_shard, split_stock, CouponShard};
use coupon_domain::{CouponId, CustomerId, Rejection};
use prometheus::{Histogram, IntGauge};
use redis::{ErrorKind, RedisError, RedisResult, Script, ServerErrorKind, Value};
use time::OffsetDateTime;

use super::lanes::Lanes;
use super::refill::{Refill, RefillCounters, Refilled};
use crate::store::incarnation::{with_incarnation, Incarnations};
use crate::store::{from_unix_ms, unix_ms, CouponState, CouponStore, RedisUnavailable};

/// A granted coupon as recorded in the coupon's outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub outbox_entry: String,
    pub issued_at: OffsetDateTime,
    /// Which issuance of the coupon to this customer (see `CouponIssuedEvent`).
    pub issuance: u32,
    /// The generation of the Redis connection the script ran on.
    pub generation: u64,
}

/// Why Redis may not decide for a coupon now; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// The coupon's state is being rebuilt from PostgreSQL.
    Coupon,
    /// Redis restarted or failed over since the issue script was loaded: all
    /// its coupons are suspect until the recovery has fenced them.
    Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Issued(Issued),
    Rejected(Rejection),
    Fenced(Fence),
    /// The script may have run, but its reply was lost (the connection broke
    /// or timed out after the command was sent): nobody knows whether the
    /// customer got the coupon until it is asked for again.
    Unknown,
    /// The coupon has this many shards, not as many as the request was
    /// routed by; nothing was decided. Route it again (`Issuer::route`).
    Reroute(u16),
}

/// Where a request is decided: its customer's home shard, by the number of
/// shards this replica knows the coupon to have. Requests are merged per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub shard: CouponShard,
    pub shards: u16,
}

/// The issue script's text for one key prefix: the incarnation marker of
/// that system's coupons.
pub fn issue_script(key_prefix: &str) -> String {
    format!("-- key prefix {key_prefix:?}\n{}", include_str!("issue.lua"))
}

pub struct Issuer {
    decider: Decider,
    /// Merges the requests for a coupon that arrive while its call is in
    /// flight; `None` when `issue.max_batch` is 1 (a call per request).
    lanes: Option<Arc<Lanes>>,
    create: Script,
    /// The coupons this replica learnt have more than one shard (a coupon's
    /// number never changes); every other coupon has one.
    shard_counts: Mutex<HashMap<CouponId, u16>>,
}

impl Issuer {
    /// `gauges`: the size of each call, and the requests waiting for one.
    pub fn new(
        store: Arc<CouponStore>,
        incarnations: Arc<Incarnations>,
        max_batch: usize,
        gauges: (Histogram, IntGauge),
        refills: RefillCounters,
    ) -> Self {
        let refill = Arc::new(Refill::new(store.clone(), refills));
        let decider = Decider { store, incarnations, refill };
        let lanes = (max_batch > 1).then(|| Arc::new(Lanes::new(decider.clone(), max_batch, gauges)));
        Self {
            decider,
            lanes,
            create: Script::new(&with_incarnation(include_str!("create.lua"))),
            shard_counts: Mutex::default(),
        }
    }

    /// Where `customer`'s request for `coupon` is decided.
    pub fn route(&self, coupon: CouponId, customer: CustomerId) -> Route {
        let shards = self.shard_counts.lock().expect("not poisoned").get(&coupon).copied().unwrap_or(1);
        Route { shard: CouponShard { coupon, shard: home_shard(customer, shards) }, shards }
    }

    pub async fn issue(&self, route: Route, customer: CustomerId) -> Result<Decision, RedisUnavailable> {
        let decision = match &self.lanes {
            Some(lanes) => lanes.issue(route, customer).await?,
            None => {
                let decisions = self.decider.decide(route, &[customer]).await?;
                decisions.into_iter().next().ok_or(RedisUnavailable::Reply(Value::Nil))?
            }
        };
        if let Decision::Reroute(shards) = decision {
            let mut counts = self.shard_counts.lock().expect("not poisoned");
            match shards {
                0 | 1 => counts.remove(&route.shard.coupon),
                shards => counts.insert(route.shard.coupon, shards),
            };
        }
        Ok(decision)
    }

    /// Gives a new coupon its Redis state unless it has one; returns whether it did.
    /// The coupon joins the index first, so a coupon whose state failed to be
    /// written is found and rebuilt by the recovery's periodic pass. The first
    /// shard is written last: while it is missing, no request is decided.
    pub async fn create(&self, state: &CouponState) -> Result<bool, RedisUnavailable> {
        let store = &self.decider.store;
        store.index(state.id, state.ends_at).await?;
        let split = split_stock(i64::from(state.total_quantity), state.shards);
        let mut created = false;
        for (shard, stock) in split.into_iter().enumerate().rev() {
            let keys = store.shard_keys(CouponShard { coupon: state.id, shard: shard as u16 });
            let mut create = self.create.key(&keys.meta);
            create
                .key(&keys.stock)
                .arg(unix_ms(state.starts_at))
                .arg(unix_ms(state.ends_at))
                .arg(state.total_quantity)
                .arg(stock)
                .arg(state.shards);
            created = store.redis().invoke::<i64>(&create).await? == 1;
        }
        Ok(created)
    }
}

/// One issue-script call: a coupon and its customers, in arrival order.
#[derive(Clone)]
pub(crate) struct Decider {
    store: Arc<CouponStore>,
    incarnations: Arc<Incarnations>,
    refill: Arc<Refill>,
}

/// How often one call's customers may find their shard empty and have it
/// refilled before they are answered as for a fenced coupon: each time, units
/// reached the shard and other requests took them first.
const MAX_REFILLS: usize = 8;

impl Decider {
    /// One decision per customer, in their order. On a sharded coupon, the
    /// customers the shard had no stock for wait for a refill and are decided
    /// again; `SOLD_OUT` only once every shard was found empty.
    pub(crate) async fn decide(
        &self,
        route: Route,
        customers: &[CustomerId],
    ) -> Result<Vec<Decision>, RedisUnavailable> {
        let mut decisions = self.call(route, customers).await?;
        if route.shards <= 1 {
            return Ok(decisions);
        }
        let short = |decisions: &[Decision]| -> Vec<usize> {
            let sold_out = Decision::Rejected(Rejection::SoldOut);
            decisions.iter().enumerate().filter(|(_, decision)| **decision == sold_out).map(|(i, _)| i).collect()
        };
        for _ in 0..MAX_REFILLS {
            let waiting = short(&decisions);
            if waiting.is_empty() {
                return Ok(decisions);
            }
            let coupon = route.shard.coupon;
            // From here on some customers of the call may hold a unit: an error
            // answers only those still waiting, as for a fenced coupon
            // (nothing was issued to them), and never takes the others' answers.
            let refilled = self.refill.refill(route, waiting.len() as i64).await;
            let answer = match refilled.unwrap_or_else(|err| {
                tracing::warn!(error = %err, coupon = %coupon, "refilling a shard failed");
                Refilled::Fenced
            }) {
                Refilled::Stock => {
                    let again: Vec<CustomerId> = waiting.iter().map(|i| customers[*i]).collect();
                    let redecided = self.call(route, &again).await.unwrap_or_else(|err| {
                        tracing::warn!(error = %err, coupon = %coupon, "deciding again after a refill failed");
                        vec![Decision::Fenced(Fence::Coupon); again.len()]
                    });
                    for (i, decision) in waiting.into_iter().zip(redecided) {
                        decisions[i] = decision;
                    }
                    continue;
                }
                Refilled::SoldOut => return Ok(decisions),
                Refilled::Fenced | Refilled::Contended => Decision::Fenced(Fence::Coupon),
                Refilled::Missing => Decision::Rejected(Rejection::CouponNotFound),
            };
            for i in waiting {
                decisions[i] = answer.clone();
            }
            return Ok(decisions);
        }
        for i in short(&decisions) {
            decisions[i] = Decision::Fenced(Fence::Coupon);
        }
        Ok(decisions)
    }

    /// One issue-script call on the route's shard.
    async fn call(&self, route: Route, customers: &[CustomerId]) -> Result<Vec<Decision>, RedisUnavailable> {
        let every = |decision: Decision| vec![decision; customers.len()];
        let coupon = route.shard.coupon;
        let keys = self.store.shard_keys(route.shard);
        let redis = self.store.redis();
        let link = redis.link().await?;
        if !self.incarnations.proven(&link).await? {
            return Ok(every(Decision::Fenced(Fence::Node)));
        }
        let mut call = redis::cmd("EVALSHA");
        call.arg(self.incarnations.marker_sha())
            .arg(5)
            .arg(&keys.meta)
            .arg(&keys.stock)
            .arg(&keys.issued)
            .arg(&keys.outbox)
            .arg(&keys.reissued)
            .arg(route.shards);
        for customer in customers {
            call.arg(customer.get());
        }
        let reply = as_received(&keys.meta, call.query_async::<Value>(&mut link.once.clone()).await);
        match redis.observe(&link, reply) {
            Ok(reply) => parse_decisions(reply, customers.len(), link.generation),
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                Ok(every(Decision::Fenced(Fence::Node)))
            }
            Err(err) if may_have_run(&err) => {
                tracing::warn!(error = %err, coupon = %coupon, customers = customers.len(), "the issue script's reply was lost");
                Ok(every(Decision::Unknown))
            }
            Err(err) => Err(err.into()),
        }
    }
}

/// The reply, unless the `issue-reply-lost` fail point names the coupon by
/// its meta key (`return(<key>)`, which carries the key prefix): then it is
/// lost after the script ran, as when the connection breaks. For the tests;
/// a no-op without the `failpoints` feature.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn as_received(meta: &str, reply: RedisResult<Value>) -> RedisResult<Value> {
    fail::fail_point!("issue-reply-lost", |named: Option<String>| match named {
        Some(named) if named == meta => {
            Err(RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "the reply was lost (fail point)")))
        }
        _ => reply.clone(),
    });
    reply
}

/// Whether the issue script may have run although the command failed.
/// A server's error reply (a redirection included), or a refused
/// connection, means it did not. The script is sent once (`Link::once`):
/// a client's retry could answer ALREADY_ISSUED, or NOSCRIPT after a
/// failover, for a first attempt that issued.
fn may_have_run(err: &RedisError) -> bool {
    !(matches!(err.kind(), ErrorKind::Server(_)) || err.is_connection_refusal())
}

/// The script's reply: one outcome for the whole call (`{code}`: fenced, or
/// a refusal every customer shares), or one per customer, in their order.
fn parse_decisions(reply: Value, customers: usize, generation: u64) -> Result<Vec<Decision>, RedisUnavailable> {
    let parsed = match &reply {
        Value::Array(items) => match items.as_slice() {
            [Value::BulkString(code)] => parse_code(code).map(|decision| vec![decision; customers]),
            [Value::BulkString(code), Value::Int(shards)] if code == b"SHARDS" => {
                u16::try_from(*shards).ok().map(|shards| vec![Decision::Reroute(shards); customers])
            }
            answers if answers.len() == customers => {
                answers.iter().map(|answer| parse_decision(answer, generation)).collect::<Option<Vec<_>>>()
            }
            _ => None,
        },
        _ => None,
    };
    parsed.ok_or(RedisUnavailable::Reply(reply))
}

fn parse_code(code: &[u8]) -> Option<Decision> {
    match code {
        b"FENCED" => Some(Decision::Fenced(Fence::Coupon)),
        code => Rejection::from_code(&String::from_utf8_lossy(code)).map(Decision::Rejected),
    }
}

fn parse_decision(answer: &Value, generation: u64) -> Option<Decision> {
    let Value::Array(items) = answer else { return None };
    match items.as_slice() {
        [Value::BulkString(code)] => parse_code(code),
        [Value::BulkString(code), Value::BulkString(entry), Value::Int(now_ms), Value::Int(issuance)]
            if code == b"ISSUED" =>
        {
            let issuance = u32::try_from(*issuance).ok()?;
            from_unix_ms(*now_ms).map(|issued_at| {
                Decision::Issued(Issued {
                    outbox_entry: String::from_utf8_lossy(entry).into_owned(),
                    issued_at,
                    issuance,
                    generation,
                })
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn issued(entry: &str, issuance: i64) -> Value {
        Value::Array(vec![bulk("ISSUED"), bulk(entry), Value::Int(1_764_000_000_123), Value::Int(issuance)])
    }

    #[test]
    fn a_shared_outcome_answers_every_customer() {
        for rejection in Rejection::ALL {
            let reply = Value::Array(vec![bulk(rejection.code())]);
            assert_eq!(parse_decisions(reply, 3, 1).unwrap(), vec![Decision::Rejected(rejection); 3]);
        }
        let fenced = parse_decisions(Value::Array(vec![bulk("FENCED")]), 2, 1).unwrap();
        assert_eq!(fenced, vec![Decision::Fenced(Fence::Coupon); 2]);
    }

    #[test]
    fn each_customer_gets_its_own_answer_in_order() {
        let answers = vec![
            issued("1764000000123-0", 0),
            Value::Array(vec![bulk("ALREADY_ISSUED")]),
            issued("1764000000123-1", 2),
            Value::Array(vec![bulk("SOLD_OUT")]),
        ];
        let decisions = parse_decisions(Value::Array(answers), 4, 7).unwrap();
        let Decision::Issued(first) = &decisions[0] else { panic!("not issued: {decisions:?}") };
        assert_eq!((first.outbox_entry.as_str(), unix_ms(first.issued_at)), ("1764000000123-0", 1_764_000_000_123));
        assert_eq!((first.issuance, first.generation), (0, 7));
        assert_eq!(decisions[1], Decision::Rejected(Rejection::AlreadyIssued));
        assert!(matches!(&decisions[2], Decision::Issued(again) if again.issuance == 2));
        assert_eq!(decisions[3], Decision::Rejected(Rejection::SoldOut));
    }

    #[test]
    fn an_unknown_reply_is_an_error_not_a_guess() {
        assert!(parse_decisions(Value::Array(vec![bulk("MAYBE")]), 1, 1).is_err());
        assert!(parse_decisions(Value::Int(1), 1, 1).is_err());
        let negative = Value::Array(vec![issued("1-0", -1)]);
        assert!(parse_decisions(negative, 1, 1).is_err());
        let one_short = Value::Array(vec![issued("1-0", 0)]);
        assert!(parse_decisions(one_short, 2, 1).is_err(), "an answer per customer, or none");
    }

    #[test]
    fn each_key_prefix_has_its_own_issue_script() {
        let sha = |prefix: &str| Script::new(&issue_script(prefix)).get_hash().to_string();
        assert_ne!(sha("a:"), sha("b:"));
    }
}
