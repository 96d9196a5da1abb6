//! Why a batch failed, sorted by what the writer does about it.
//!
//! - Retryable: the database or Kafka is unavailable or a transaction lost a
//!   race (connection refused or reset, pool timeout, serialization failure,
//!   deadlock, a coupon other writers kept changing under the batch). The same
//!   batch is retried with backoff; nothing is committed or dead-lettered.
//! - Poison: the data itself can never be applied (a foreign-key, check,
//!   not-null, unique or exclusion violation). The bad records are isolated and
//!   dead-lettered, and the partition moves on.
//!
//! A coupon without stock left for an event is neither: the batch statement
//! records the event in `sold_out_at_write` and succeeds (see `apply`).
//!
//! Anything not recognised as poison is retried: retrying a bad record forever
//! stalls one partition visibly, dead-lettering a good one loses it quietly.
//! Records that do not decode never reach the database; they are poison from
//! the start.

use coupon_domain::{CouponId, EventDecodeError};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::PoolError;
use rdkafka::error::KafkaError;

/// Why a record can never be applied: it is dead-lettered with this text as
/// its `reason` header.
#[derive(Debug, thiserror::Error)]
pub enum Poison<'a> {
    /// The payload is not a coupon event.
    #[error("{0}")]
    Undecodable(&'a EventDecodeError),
    /// The event names a coupon PostgreSQL does not have.
    #[error("unknown coupon id {0}")]
    UnknownCoupon(CouponId),
    /// PostgreSQL refused the event for good (a constraint violation, with
    /// the database's message).
    #[error("{0}")]
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no database connection: {0}")]
    Pool(#[from] PoolError),
    #[error("database error: {0}")]
    Database(#[from] DieselError),
    #[error("publishing to the dead-letter topic: {0}")]
    DeadLetter(#[source] KafkaError),
    /// Other writers committed rows for these coupons while each of
    /// `statements` statements in a row waited for their locks.
    #[error("coupons {coupons:?} were written by other writers during {statements} statements in a row")]
    Contended { coupons: Vec<CouponId>, statements: u32 },
}

impl WriteError {
    pub fn is_poison(&self) -> bool {
        match self {
            WriteError::Database(DieselError::DatabaseError(kind, _)) => matches!(
                kind,
                DatabaseErrorKind::ForeignKeyViolation
                    | DatabaseErrorKind::CheckViolation
                    | DatabaseErrorKind::NotNullViolation
                    | DatabaseErrorKind::UniqueViolation
                    | DatabaseErrorKind::RestrictViolation
                    | DatabaseErrorKind::ExclusionViolation
            ),
            WriteError::Database(_)
            | WriteError::Pool(_)
            | WriteError::DeadLetter(_)
            | WriteError::Contended { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(kind: DatabaseErrorKind) -> WriteError {
        WriteError::Database(DieselError::DatabaseError(kind, Box::new(String::from("boom"))))
    }

    #[test]
    fn constraint_violations_are_poison() {
        for kind in [DatabaseErrorKind::ForeignKeyViolation, DatabaseErrorKind::CheckViolation] {
            assert!(database(kind).is_poison(), "{kind:?}");
        }
    }

    #[test]
    fn outages_and_lost_races_are_retried() {
        for kind in [
            DatabaseErrorKind::SerializationFailure,
            DatabaseErrorKind::ClosedConnection,
            DatabaseErrorKind::UnableToSendCommand,
            // Deadlocks (40P01) arrive as Unknown.
            DatabaseErrorKind::Unknown,
        ] {
            assert!(!database(kind).is_poison(), "{kind:?}");
        }
        assert!(!WriteError::Database(DieselError::BrokenTransactionManager).is_poison());
        assert!(!WriteError::DeadLetter(KafkaError::Canceled).is_poison());
        let contended = WriteError::Contended { coupons: vec![CouponId::new(5).unwrap()], statements: 5 };
        assert!(!contended.is_poison());
    }
}
