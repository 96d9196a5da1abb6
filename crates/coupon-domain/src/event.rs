//! The event that travels from coupon-api to coupon-writer through Kafka.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{CouponId, CustomerId};

/// One granted coupon. JSON with camelCase fields; unknown fields are ignored so
/// producers can add fields before every consumer knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CouponIssuedEvent {
    pub coupon_id: CouponId,
    pub customer_id: CustomerId,
    #[serde(with = "rfc3339_millis")]
    pub issued_at: OffsetDateTime,
    /// Which issuance of this coupon to this customer: 0 the first, n after
    /// n revocations that let the customer get it again. Absent when 0, as
    /// events had it before reissues existed.
    #[serde(default, skip_serializing_if = "is_first")]
    pub issuance: u32,
}

fn is_first(issuance: &u32) -> bool {
    *issuance == 0
}

/// The Kafka header naming the HTTP request that issued an event (absent when
/// the relay re-sent it), so one request can be followed through the logs of
/// coupon-api and coupon-writer.
pub const REQUEST_ID_HEADER: &str = "request-id";

#[derive(Debug, thiserror::Error)]
#[error("undecodable coupon event: {0}")]
pub struct EventDecodeError(#[from] serde_json::Error);

impl CouponIssuedEvent {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a struct of integers and a timestamp always serializes")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, EventDecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-24T10:00:00.123Z`;
/// any RFC 3339 offset is accepted on input.
mod rfc3339_millis {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    use time::{OffsetDateTime, UtcOffset};

    pub fn serialize<S: Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        let text = at.to_offset(UtcOffset::UTC).format(&format).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = <&str>::deserialize(d)?;
        OffsetDateTime::parse(text, &Rfc3339).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn wire_format_is_camel_case_with_millis() {
        let event = CouponIssuedEvent {
            coupon_id: CouponId::new(42).unwrap(),
            customer_id: CustomerId::new(7).unwrap(),
            issued_at: datetime!(2026-11-24 10:00:00.123456 UTC),
            issuance: 0,
        };
        assert_eq!(event.to_json(), r#"{"couponId":42,"customerId":7,"issuedAt":"2026-11-24T10:00:00.123Z"}"#);
        let again = CouponIssuedEvent { issuance: 2, ..event };
        assert_eq!(
            again.to_json(),
            r#"{"couponId":42,"customerId":7,"issuedAt":"2026-11-24T10:00:00.123Z","issuance":2}"#
        );
        assert_eq!(CouponIssuedEvent::from_json(again.to_json().as_bytes()).unwrap().issuance, 2);
    }

    #[test]
    fn decodes_and_ignores_unknown_fields() {
        let event = CouponIssuedEvent::from_json(
            br#"{"couponId":42,"customerId":7,"issuedAt":"2026-11-24T19:00:00.5+09:00","channel":"app"}"#,
        )
        .unwrap();
        assert_eq!(event.coupon_id.get(), 42);
        assert_eq!(event.issued_at, datetime!(2026-11-24 10:00:00.5 UTC));
    }

    #[test]
    fn rejects_bad_records() {
        for bad in [
            &b"not json"[..],
            br#"{"couponId":42,"customerId":7}"#,
            br#"{"couponId":0,"customerId":7,"issuedAt":"2026-11-24T10:00:00Z"}"#,
            br#"{"couponId":"42","customerId":7,"issuedAt":"2026-11-24T10:00:00Z"}"#,
            br#"{"couponId":42,"customerId":7,"issuedAt":"yesterday"}"#,
        ] {
            assert!(CouponIssuedEvent::from_json(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
