//! The Redis side of issuance: the decision (`issue.lua`) and a new coupon's
//! state (`create.lua`, stamped with the Redis incarnation it was born on,
//! which the recovery's `born_here.lua` compares). The issue script is also
//! the incarnation marker (crate::store::incarnation): it is called by SHA
//! and never loaded here.

use std::sync::Arc;

use coupon_domain::{CouponId, CustomerId, Rejection};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind, Value};
use time::OffsetDateTime;

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
}

/// The issue script's text for one key prefix: the incarnation marker of
/// that system's coupons.
pub fn issue_script(key_prefix: &str) -> String {
    format!("-- key prefix {key_prefix:?}\n{}", include_str!("issue.lua"))
}

pub struct Issuer {
    store: Arc<CouponStore>,
    incarnations: Arc<Incarnations>,
    create: Script,
}

impl Issuer {
    pub fn new(store: Arc<CouponStore>, incarnations: Arc<Incarnations>) -> Self {
        Self { store, incarnations, create: Script::new(&with_incarnation(include_str!("create.lua"))) }
    }

    pub async fn issue(&self, coupon: CouponId, customer: CustomerId) -> Result<Decision, RedisUnavailable> {
        let keys = self.store.keys(coupon);
        let redis = self.store.redis();
        let link = redis.link().await?;
        if !self.incarnations.proven(&link).await? {
            return Ok(Decision::Fenced(Fence::Node));
        }
        let reply = redis::cmd("EVALSHA")
            .arg(self.incarnations.marker_sha())
            .arg(5)
            .arg(&keys.meta)
            .arg(&keys.stock)
            .arg(&keys.issued)
            .arg(&keys.outbox)
            .arg(&keys.reissued)
            .arg(customer.get())
            .query_async::<Value>(&mut link.once.clone())
            .await;
        match redis.observe(&link, reply) {
            Ok(reply) => parse_decision(reply, link.generation),
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => Ok(Decision::Fenced(Fence::Node)),
            Err(err) if may_have_run(&err) => {
                tracing::warn!(error = %err, coupon = %coupon, customer = %customer, "the issue script's reply was lost");
                Ok(Decision::Unknown)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Gives a new coupon its Redis state unless it has one; returns whether it did.
    /// The coupon joins the index first, so a coupon whose state failed to be
    /// written is found and rebuilt by the recovery's periodic pass.
    pub async fn create(&self, state: &CouponState) -> Result<bool, RedisUnavailable> {
        let keys = self.store.keys(state.id);
        self.store.index(state.id, state.ends_at).await?;
        let mut create = self.create.key(&keys.meta);
        create
            .key(&keys.stock)
            .arg(unix_ms(state.starts_at))
            .arg(unix_ms(state.ends_at))
            .arg(state.total_quantity)
            .arg(state.total_quantity);
        Ok(self.store.redis().invoke::<i64>(&create).await? == 1)
    }
}

/// Whether the issue script may have run although the command failed.
/// A server's error reply (a redirection included), or a refused
/// connection, means it did not. The script is sent once (`Link::once`):
/// a client's retry could answer ALREADY_ISSUED, or NOSCRIPT after a
/// failover, for a first attempt that issued.
fn may_have_run(err: &RedisError) -> bool {
    !(matches!(err.kind(), ErrorKind::Server(_)) || err.is_connection_refusal())
}

fn parse_decision(reply: Value, generation: u64) -> Result<Decision, RedisUnavailable> {
    let parsed = match &reply {
        Value::Array(items) => match items.as_slice() {
            [Value::BulkString(code)] if code == b"FENCED" => Some(Decision::Fenced(Fence::Coupon)),
            [Value::BulkString(code)] => Rejection::from_code(&String::from_utf8_lossy(code)).map(Decision::Rejected),
            [Value::BulkString(code), Value::BulkString(entry), Value::Int(now_ms), Value::Int(issuance)]
                if code == b"ISSUED" =>
            {
                let issuance = u32::try_from(*issuance).ok();
                from_unix_ms(*now_ms).zip(issuance).map(|(issued_at, issuance)| {
                    Decision::Issued(Issued {
                        outbox_entry: String::from_utf8_lossy(entry).into_owned(),
                        issued_at,
                        issuance,
                        generation,
                    })
                })
            }
            _ => None,
        },
        _ => None,
    };
    parsed.ok_or(RedisUnavailable::Reply(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_every_rejection() {
        for rejection in Rejection::ALL {
            let reply = Value::Array(vec![bulk(rejection.code())]);
            assert_eq!(parse_decision(reply, 1).unwrap(), Decision::Rejected(rejection));
        }
    }

    #[test]
    fn parses_a_fence() {
        assert_eq!(parse_decision(Value::Array(vec![bulk("FENCED")]), 1).unwrap(), Decision::Fenced(Fence::Coupon));
    }

    #[test]
    fn parses_an_issuance() {
        let reply =
            Value::Array(vec![bulk("ISSUED"), bulk("1764000000123-0"), Value::Int(1_764_000_000_123), Value::Int(2)]);
        let Decision::Issued(issued) = parse_decision(reply, 7).unwrap() else { panic!("not issued") };
        assert_eq!(issued.outbox_entry, "1764000000123-0");
        assert_eq!(unix_ms(issued.issued_at), 1_764_000_000_123);
        assert_eq!((issued.issuance, issued.generation), (2, 7));
    }

    #[test]
    fn an_unknown_reply_is_an_error_not_a_guess() {
        assert!(parse_decision(Value::Array(vec![bulk("MAYBE")]), 1).is_err());
        assert!(parse_decision(Value::Int(1), 1).is_err());
        let negative = vec![bulk("ISSUED"), bulk("1-0"), Value::Int(1), Value::Int(-1)];
        assert!(parse_decision(Value::Array(negative), 1).is_err());
    }

    #[test]
    fn each_key_prefix_has_its_own_issue_script() {
        let sha = |prefix: &str| Script::new(&issue_script(prefix)).get_hash().to_string();
        assert_ne!(sha("a:"), sha("b:"));
    }
}
