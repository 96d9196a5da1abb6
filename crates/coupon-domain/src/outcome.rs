//! The outcomes of an issuance attempt, with the stable codes clients see.

/// Why a request did not get a coupon. The codes are part of the HTTP contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("coupon not found")]
    CouponNotFound,
    #[error("the coupon's issuance period has not started")]
    NotStarted,
    #[error("the coupon's issuance period has ended")]
    Expired,
    #[error("the customer already holds this coupon")]
    AlreadyIssued,
    #[error("the coupon is sold out")]
    SoldOut,
    #[error("an operator paused the promotion; nothing was changed")]
    Paused,
}

impl Rejection {
    pub const ALL: [Rejection; 6] = [
        Rejection::CouponNotFound,
        Rejection::NotStarted,
        Rejection::Expired,
        Rejection::AlreadyIssued,
        Rejection::SoldOut,
        Rejection::Paused,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Rejection::CouponNotFound => "COUPON_NOT_FOUND",
            Rejection::NotStarted => "NOT_STARTED",
            Rejection::Expired => "EXPIRED",
            Rejection::AlreadyIssued => "ALREADY_ISSUED",
            Rejection::SoldOut => "SOLD_OUT",
            Rejection::Paused => "PAUSED",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for rejection in Rejection::ALL {
            assert_eq!(Rejection::from_code(rejection.code()), Some(rejection));
        }
        assert_eq!(Rejection::from_code("ISSUED"), None);
    }
}
