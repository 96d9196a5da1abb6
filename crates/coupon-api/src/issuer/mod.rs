//! The issuance decision: one atomic Lua script per request (`issue.lua`), and
//! the priming that gives a coupon its Redis state (`prime.lua`).
//!
//! The scripts are built once; `redis::Script` calls them by SHA (EVALSHA) and
//! reloads them transparently when Redis answers NOSCRIPT.

use coupon_domain::{CouponId, CustomerId, IssueOutcome, Rejection};
use deadpool_redis::Pool;
use redis::aio::ConnectionManager;
use redis::{Script, Value};
use time::OffsetDateTime;

pub use coupon_domain::keys::{self, CouponKeys};

/// Redis could not decide: unreachable, timed out, or answered something the
/// script never returns. In each case nothing was changed that we know of.
#[derive(Debug, thiserror::Error)]
pub enum RedisUnavailable {
    #[error("no Redis connection: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("Redis command failed: {0}")]
    Command(#[from] redis::RedisError),
    #[error("unexpected reply from the issue script: {0:?}")]
    Reply(Value),
}

/// A granted coupon as recorded in the coupon's outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub outbox_entry: String,
    pub issued_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Issued(Issued),
    Rejected(Rejection),
}

impl Decision {
    pub fn outcome(&self) -> IssueOutcome {
        match self {
            Decision::Issued(_) => IssueOutcome::Issued,
            Decision::Rejected(rejection) => IssueOutcome::Rejected(*rejection),
        }
    }
}

/// A coupon's period and stock as Redis needs them.
#[derive(Debug, Clone)]
pub struct CouponState {
    pub id: CouponId,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub total_quantity: i32,
    pub remaining_quantity: i32,
    /// Customers who already hold the coupon (empty for a new coupon).
    pub holders: Vec<i64>,
}

pub struct Issuer {
    pool: Pool,
    /// The hot path's connection, shared by all requests.
    shared: ConnectionManager,
    key_prefix: String,
    issue: Script,
    prime: Script,
}

/// SADD in chunks so one command never carries an unbounded argument list.
const HOLDERS_CHUNK: usize = 1_000;

impl Issuer {
    pub fn new(pool: Pool, shared: ConnectionManager, key_prefix: String) -> Self {
        Self {
            pool,
            shared,
            key_prefix,
            issue: Script::new(include_str!("issue.lua")),
            prime: Script::new(include_str!("prime.lua")),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn keys(&self, coupon: CouponId) -> CouponKeys {
        CouponKeys::new(&self.key_prefix, coupon)
    }

    pub async fn issue(&self, coupon: CouponId, customer: CustomerId) -> Result<Decision, RedisUnavailable> {
        let keys = self.keys(coupon);
        let mut conn = self.shared.clone();
        let reply: Value = self
            .issue
            .key(&keys.meta)
            .key(&keys.stock)
            .key(&keys.issued)
            .key(&keys.outbox)
            .arg(customer.get())
            .invoke_async(&mut conn)
            .await?;
        parse_decision(reply)
    }

    /// Gives a coupon its Redis state unless it has one; returns whether it did.
    pub async fn prime(&self, state: &CouponState) -> Result<bool, RedisUnavailable> {
        let keys = self.keys(state.id);
        let mut conn = self.pool.get().await?;
        // Holders first: the coupon opens only when meta appears, below.
        for chunk in state.holders.chunks(HOLDERS_CHUNK) {
            let _: () = redis::cmd("SADD").arg(&keys.issued).arg(chunk).query_async(&mut conn).await?;
        }
        let created: i64 = self
            .prime
            .key(&keys.meta)
            .key(&keys.stock)
            .arg(unix_ms(state.starts_at))
            .arg(unix_ms(state.ends_at))
            .arg(state.total_quantity)
            .arg(state.remaining_quantity)
            .invoke_async(&mut conn)
            .await?;
        let _: () = redis::cmd("SADD")
            .arg(keys::index_key(&self.key_prefix))
            .arg(state.id.get())
            .query_async(&mut conn)
            .await?;
        Ok(created == 1)
    }

    /// Live stock, or `None` when Redis does not know the coupon.
    pub async fn stock(&self, coupon: CouponId) -> Result<Option<i64>, RedisUnavailable> {
        let mut conn = self.pool.get().await?;
        Ok(redis::cmd("GET").arg(self.keys(coupon).stock).query_async(&mut conn).await?)
    }

    pub async fn is_primed(&self, coupon: CouponId) -> Result<bool, RedisUnavailable> {
        let mut conn = self.pool.get().await?;
        Ok(redis::cmd("EXISTS").arg(self.keys(coupon).meta).query_async(&mut conn).await?)
    }

    pub async fn holds(&self, coupon: CouponId, customer: CustomerId) -> Result<bool, RedisUnavailable> {
        let mut conn = self.pool.get().await?;
        Ok(redis::cmd("SISMEMBER").arg(self.keys(coupon).issued).arg(customer.get()).query_async(&mut conn).await?)
    }

    pub async fn ping(&self) -> Result<(), RedisUnavailable> {
        let mut conn = self.pool.get().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}

pub fn unix_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

fn parse_decision(reply: Value) -> Result<Decision, RedisUnavailable> {
    let parsed = match &reply {
        Value::Array(items) => match items.as_slice() {
            [Value::BulkString(code)] => Rejection::from_code(&String::from_utf8_lossy(code)).map(Decision::Rejected),
            [Value::BulkString(code), Value::BulkString(entry), Value::Int(now_ms)] if code == b"ISSUED" => {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(*now_ms) * 1_000_000).ok().map(|issued_at| {
                    Decision::Issued(Issued { outbox_entry: String::from_utf8_lossy(entry).into_owned(), issued_at })
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
            assert_eq!(parse_decision(reply).unwrap(), Decision::Rejected(rejection));
        }
    }

    #[test]
    fn parses_an_issuance() {
        let reply = Value::Array(vec![bulk("ISSUED"), bulk("1764000000123-0"), Value::Int(1_764_000_000_123)]);
        let Decision::Issued(issued) = parse_decision(reply).unwrap() else { panic!("not issued") };
        assert_eq!(issued.outbox_entry, "1764000000123-0");
        assert_eq!(unix_ms(issued.issued_at), 1_764_000_000_123);
    }

    #[test]
    fn an_unknown_reply_is_an_error_not_a_guess() {
        assert!(parse_decision(Value::Array(vec![bulk("MAYBE")])).is_err());
        assert!(parse_decision(Value::Int(1)).is_err());
    }
}
