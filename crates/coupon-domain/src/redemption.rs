//! Spending a coupon: its discount policy, what an order gets off, and the
//! events a use and a release publish.
//!
//! Money is an integer count of the currency's smallest unit (cents, won), so
//! no amount is ever rounded twice. A rate discount rounds down (the shop never
//! gives more than the percentage), then the cap applies; no discount exceeds
//! the order.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use crate::{CouponId, CustomerId};

/// The largest amount (order, discount, minimum) the service accepts: far above
/// any order, and small enough that `amount × 100` cannot overflow.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// Order ids are the order service's; they only have to be short and plain.
pub const MAX_ORDER_ID_LEN: usize = 64;

/// What a coupon takes off an order: `{"type": "FIXED", "amount": 3000}` or
/// `{"type": "RATE", "percent": 30, "maxAmount": 5000}` (`maxAmount` optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum Discount {
    /// A fixed amount off.
    Fixed {
        #[serde(deserialize_with = "crate::whole::number")]
        amount: i64,
    },
    /// A percentage of the order, rounded down, optionally capped.
    Rate {
        #[serde(deserialize_with = "crate::whole::number")]
        percent: i16,
        #[serde(
            default,
            rename = "maxAmount",
            skip_serializing_if = "Option::is_none",
            deserialize_with = "crate::whole::optional"
        )]
        max_amount: Option<i64>,
    },
}

/// Written out because utoipa's derive cannot mark an internally tagged
/// variant closed (`additionalProperties: false`), and the service refuses
/// unknown fields: the document has to say so.
impl utoipa::PartialSchema for Discount {
    fn schema() -> RefOr<Schema> {
        let integer = |min: i64, max: i64| {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(min))
                .maximum(Some(max))
        };
        let variant = |tag: &str, description: &str| {
            ObjectBuilder::new()
                .description(Some(description))
                .property("type", ObjectBuilder::new().schema_type(Type::String).enum_values(Some([tag])))
                .required("type")
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        };
        let fixed = variant("FIXED", "A fixed amount off; never more than the order.")
            .property("amount", integer(1, MAX_AMOUNT))
            .required("amount");
        let rate = variant("RATE", "A percentage of the order, rounded down, capped at maxAmount if given.")
            .property("percent", integer(1, 100))
            .required("percent")
            .property("maxAmount", integer(1, MAX_AMOUNT));
        OneOfBuilder::new()
            .item(fixed)
            .item(rate)
            .description(Some("What a coupon takes off an order, in the currency's smallest unit."))
            .into()
    }
}

impl ToSchema for Discount {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDiscount {
    #[error("discount.amount must be between 1 and {MAX_AMOUNT}")]
    Amount,
    #[error("discount.percent must be between 1 and 100")]
    Percent,
    #[error("discount.maxAmount must be between 1 and {MAX_AMOUNT}")]
    MaxAmount,
}

impl Discount {
    pub fn validate(&self) -> Result<(), InvalidDiscount> {
        match *self {
            Discount::Fixed { amount } if !(1..=MAX_AMOUNT).contains(&amount) => Err(InvalidDiscount::Amount),
            Discount::Rate { percent, .. } if !(1..=100).contains(&percent) => Err(InvalidDiscount::Percent),
            Discount::Rate { max_amount: Some(max), .. } if !(1..=MAX_AMOUNT).contains(&max) => {
                Err(InvalidDiscount::MaxAmount)
            }
            _ => Ok(()),
        }
    }

    /// What an order of `order_amount` gets off: never more than the order.
    /// Both inputs are validated (`1..=MAX_AMOUNT`), so nothing overflows.
    pub fn amount_off(&self, order_amount: i64) -> i64 {
        let off = match *self {
            Discount::Fixed { amount } => amount,
            Discount::Rate { percent, max_amount } => {
                let rounded_down = order_amount * i64::from(percent) / 100;
                max_amount.map_or(rounded_down, |max| rounded_down.min(max))
            }
        };
        off.min(order_amount)
    }
}

/// Why a redemption or release was refused. The codes are part of the HTTP contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UseRejection {
    #[error("coupon not found")]
    CouponNotFound,
    #[error("the customer does not hold this coupon")]
    NotHeld,
    #[error("the coupon has no discount policy, so it cannot be redeemed")]
    NotRedeemable,
    #[error("the coupon is already used by another order")]
    AlreadyUsed,
    /// The order's use was given back: a late retry of a cancelled order's
    /// redeem must not tie the coupon to that order again.
    #[error("this order's use of the coupon was released; redeem under a new order id")]
    OrderReleased,
    #[error("the coupon is not in use by this order")]
    NotUsedByOrder,
    #[error("the coupon is past its validity")]
    Expired,
    #[error("the order is below the coupon's minimum order amount")]
    BelowMinimum,
    /// An operator paused the promotion's redemption along with its issuance.
    #[error("the promotion is paused; redemption resumes with it")]
    Paused,
    /// Support staff revoked the held coupon.
    #[error("the coupon was revoked")]
    Revoked,
    #[error("the coupon is already revoked")]
    AlreadyRevoked,
}

impl UseRejection {
    pub fn code(self) -> &'static str {
        match self {
            UseRejection::CouponNotFound => "COUPON_NOT_FOUND",
            UseRejection::NotHeld => "NOT_HELD",
            UseRejection::NotRedeemable => "NOT_REDEEMABLE",
            UseRejection::AlreadyUsed => "ALREADY_USED",
            UseRejection::OrderReleased => "ORDER_RELEASED",
            UseRejection::NotUsedByOrder => "NOT_USED_BY_ORDER",
            UseRejection::Expired => "EXPIRED",
            UseRejection::BelowMinimum => "BELOW_MINIMUM",
            UseRejection::Paused => "PAUSED",
            UseRejection::Revoked => "REVOKED",
            UseRejection::AlreadyRevoked => "ALREADY_REVOKED",
        }
    }
}

/// A held coupon's state as customers see it. `Expired` is never stored: an
/// available coupon past its validity reads as expired, so nothing has to
/// rewrite rows when coupons expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HoldingStatus {
    Available,
    Used,
    Expired,
    /// Revoked by support staff: it cannot be used.
    Revoked,
}

impl HoldingStatus {
    /// The stored status (`AVAILABLE`, `USED` or `REVOKED`) as of `now`.
    pub fn as_of(stored: &str, valid_until: OffsetDateTime, now: OffsetDateTime) -> Self {
        match stored {
            "USED" => HoldingStatus::Used,
            "REVOKED" => HoldingStatus::Revoked,
            _ if now > valid_until => HoldingStatus::Expired,
            _ => HoldingStatus::Available,
        }
    }
}

/// Whether an order id is acceptable: 1 to 64 of `A-Z a-z 0-9 . _ : -`.
pub fn is_valid_order_id(order_id: &str) -> bool {
    !order_id.is_empty()
        && order_id.len() <= MAX_ORDER_ID_LEN
        && order_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// What happened to a held coupon; one event per committed change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UsageKind {
    Used,
    Released,
    Revoked,
}

impl UsageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageKind::Used => "USED",
            UsageKind::Released => "RELEASED",
            UsageKind::Revoked => "REVOKED",
        }
    }

    pub fn parse(kind: &str) -> Option<Self> {
        [UsageKind::Used, UsageKind::Released, UsageKind::Revoked].into_iter().find(|k| k.as_str() == kind)
    }
}

/// The record on `inside.coupon.used` / `inside.coupon.released` /
/// `inside.coupon.revoked` (key = coupon id). `eventId` grows with every
/// change and is unique: consumers order a coupon's events by it and drop a
/// redelivered one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CouponUsageEvent {
    pub event_id: i64,
    pub kind: UsageKind,
    pub coupon_id: CouponId,
    pub customer_id: CustomerId,
    /// The order of a use or a release; none on a revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// 0 on a revocation.
    pub discount_amount: i64,
    /// Why support staff revoked it; only on a revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_discounts_never_exceed_the_order() {
        let fixed = Discount::Fixed { amount: 3_000 };
        assert_eq!(fixed.amount_off(10_000), 3_000);
        assert_eq!(fixed.amount_off(2_000), 2_000);
    }

    #[test]
    fn rate_discounts_round_down_then_cap() {
        let rate = Discount::Rate { percent: 30, max_amount: Some(5_000) };
        assert_eq!(rate.amount_off(10_000), 3_000);
        assert_eq!(rate.amount_off(999), 299, "299.7 rounds down");
        assert_eq!(rate.amount_off(100_000), 5_000, "capped");
        assert_eq!(Discount::Rate { percent: 100, max_amount: None }.amount_off(MAX_AMOUNT), MAX_AMOUNT);
        assert_eq!(Discount::Rate { percent: 1, max_amount: None }.amount_off(99), 0);
    }

    #[test]
    fn policies_out_of_range_are_refused() {
        assert_eq!(Discount::Fixed { amount: 0 }.validate(), Err(InvalidDiscount::Amount));
        assert_eq!(Discount::Fixed { amount: MAX_AMOUNT + 1 }.validate(), Err(InvalidDiscount::Amount));
        assert_eq!(Discount::Rate { percent: 0, max_amount: None }.validate(), Err(InvalidDiscount::Percent));
        assert_eq!(Discount::Rate { percent: 101, max_amount: None }.validate(), Err(InvalidDiscount::Percent));
        assert_eq!(Discount::Rate { percent: 30, max_amount: Some(0) }.validate(), Err(InvalidDiscount::MaxAmount));
        assert_eq!(Discount::Rate { percent: 30, max_amount: Some(5_000) }.validate(), Ok(()));
    }

    #[test]
    fn the_policy_reads_as_the_api_documents_it() {
        let fixed: Discount = serde_json::from_str(r#"{"type":"FIXED","amount":3000}"#).unwrap();
        assert_eq!(fixed, Discount::Fixed { amount: 3_000 });
        let rate: Discount = serde_json::from_str(r#"{"type":"RATE","percent":30,"maxAmount":5000}"#).unwrap();
        assert_eq!(rate, Discount::Rate { percent: 30, max_amount: Some(5_000) });
        assert_eq!(serde_json::to_string(&rate).unwrap(), r#"{"type":"RATE","percent":30,"maxAmount":5000}"#);
        assert!(serde_json::from_str::<Discount>(r#"{"type":"FIXED","amount":1,"percent":3}"#).is_err());
        assert!(serde_json::from_str::<Discount>(r#"{"type":"BOGO"}"#).is_err());
    }

    #[test]
    fn an_available_coupon_past_its_validity_reads_as_expired() {
        let until = OffsetDateTime::UNIX_EPOCH + time::Duration::days(1);
        let before = until - time::Duration::seconds(1);
        let after = until + time::Duration::seconds(1);
        assert_eq!(HoldingStatus::as_of("AVAILABLE", until, before), HoldingStatus::Available);
        assert_eq!(HoldingStatus::as_of("AVAILABLE", until, after), HoldingStatus::Expired);
        assert_eq!(HoldingStatus::as_of("USED", until, after), HoldingStatus::Used);
        assert_eq!(HoldingStatus::as_of("REVOKED", until, before), HoldingStatus::Revoked);
    }

    #[test]
    fn order_ids_are_short_and_plain() {
        assert!(is_valid_order_id("o-1"));
        assert!(is_valid_order_id("2026:12:04_A.b"));
        assert!(!is_valid_order_id(""));
        assert!(!is_valid_order_id("o 1"));
        assert!(!is_valid_order_id("o\u{0}"));
        assert!(!is_valid_order_id(&"x".repeat(MAX_ORDER_ID_LEN + 1)));
    }
}
