//! Why a batch failed, sorted by what the writer does about it.
//!
//! - Retryable: the database or Kafka is unavailable or a transaction lost a
//!   race (connection refused or reset, pool timeout, serialization failure,
//!   deadlock). The same batch is retried with backoff; nothing is committed or
//!   dead-lettered.
//! - Poison: the data itself can never be applied (a foreign-key, check,
//!   not-null, unique or exclusion violation). The bad records are isolated and
//!   dead-lettered, and the partition moves on.
//!
//! Anything not recognised as poison is retried: retrying a bad record forever
//! stalls one partition visibly, dead-lettering a good one loses it quietly.
//! Records that do not decode never reach the database; they are poison from
//! the start.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::PoolError;
use rdkafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no database connection: {0}")]
    Pool(#[from] PoolError),
    #[error("database error: {0}")]
    Database(#[from] DieselError),
    #[error("publishing to the dead-letter topic: {0}")]
    DeadLetter(#[source] KafkaError),
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
            WriteError::Database(_) | WriteError::Pool(_) | WriteError::DeadLetter(_) => false,
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
    }
}
