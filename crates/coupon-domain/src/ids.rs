//! Identifiers. Both are positive and fit PostgreSQL's BIGINT, which is what
//! the API validates at the door and the writer relies on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("must be a positive integer")]
    NotPositive,
    #[error("must be a positive integer no larger than {}", i64::MAX)]
    Malformed,
}

macro_rules! positive_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "i64", into = "i64")]
        pub struct $name(i64);

        impl $name {
            pub fn new(value: i64) -> Result<Self, InvalidId> {
                if value > 0 {
                    Ok(Self(value))
                } else {
                    Err(InvalidId::NotPositive)
                }
            }

            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl TryFrom<i64> for $name {
            type Error = InvalidId;
            fn try_from(value: i64) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let value: i64 = s.parse().map_err(|_| InvalidId::Malformed)?;
                Self::new(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

positive_id!(
    /// A coupon (promotion) id, as assigned by PostgreSQL.
    CouponId
);
positive_id!(
    /// A customer id, as given by the shop.
    CustomerId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_positive_ids() {
        assert_eq!(CouponId::new(1).unwrap().get(), 1);
        assert_eq!("9223372036854775807".parse::<CustomerId>().unwrap().get(), i64::MAX);
    }

    #[test]
    fn rejects_zero_negative_and_overflow() {
        assert_eq!(CouponId::new(0), Err(InvalidId::NotPositive));
        assert_eq!("-3".parse::<CouponId>(), Err(InvalidId::NotPositive));
        assert_eq!("9223372036854775808".parse::<CouponId>(), Err(InvalidId::Malformed));
        assert_eq!("4x".parse::<CouponId>(), Err(InvalidId::Malformed));
    }

    #[test]
    fn serde_enforces_positivity() {
        assert!(serde_json::from_str::<CustomerId>("0").is_err());
        assert!(serde_json::from_str::<CustomerId>("1.5").is_err());
        assert_eq!(serde_json::from_str::<CustomerId>("7").unwrap().get(), 7);
    }
}
