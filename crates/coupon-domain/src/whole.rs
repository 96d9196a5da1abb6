//! JSON numbers that must be whole. To JSON Schema (and to clients whose
//! numbers are all doubles) `7` and `7.0` are the same integer, so both are
//! accepted; `7.5` and anything out of range are refused.
//!
//! Use as `#[serde(deserialize_with = "whole::number")]`, or
//! `whole::optional` for an `Option` field (with `#[serde(default)]`).

use std::fmt::Display;

use serde::de::Error;
use serde::{Deserialize, Deserializer};

/// The largest magnitude a double holds exactly; beyond it `x.0` may not be
/// the integer the client meant.
const EXACT_IN_DOUBLE: f64 = 9_007_199_254_740_992.0;

pub fn number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
    T::Error: Display,
{
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = match number.as_i64() {
        Some(whole) => whole,
        None => match number.as_f64() {
            Some(x) if x.fract() == 0.0 && x.abs() <= EXACT_IN_DOUBLE => x as i64,
            _ => return Err(D::Error::custom(format!("expected a whole number, got {number}"))),
        },
    };
    T::try_from(whole).map_err(D::Error::custom)
}

pub fn optional<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
    T::Error: Display,
{
    #[derive(Deserialize)]
    struct Whole<T: TryFrom<i64>>(#[serde(deserialize_with = "number")] T)
    where
        T::Error: Display;
    Ok(Option::<Whole<T>>::deserialize(deserializer)?.map(|Whole(value)| value))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Amounts {
        #[serde(deserialize_with = "super::number")]
        amount: i16,
        #[serde(default, deserialize_with = "super::optional")]
        customer: Option<crate::CustomerId>,
    }

    fn parse(json: &str) -> Result<Amounts, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn whole_numbers_are_accepted_with_or_without_a_fraction() {
        let expected = Amounts { amount: 30, customer: Some(crate::CustomerId::new(7).unwrap()) };
        assert_eq!(parse(r#"{"amount": 30, "customer": 7}"#).unwrap(), expected);
        assert_eq!(parse(r#"{"amount": 30.0, "customer": 7.0}"#).unwrap(), expected);
        assert_eq!(parse(r#"{"amount": 3e1, "customer": null}"#).unwrap().customer, None);
        assert_eq!(parse(r#"{"amount": 1}"#).unwrap().customer, None);
    }

    #[test]
    fn fractions_and_out_of_range_numbers_are_refused() {
        assert!(parse(r#"{"amount": 30.5}"#).is_err());
        assert!(parse(r#"{"amount": 40000}"#).is_err(), "beyond i16");
        assert!(parse(r#"{"amount": 1, "customer": 0}"#).is_err(), "not a customer id");
        assert!(parse(r#"{"amount": 1, "customer": 1e300}"#).is_err());
        assert!(parse(r#"{"amount": "30"}"#).is_err());
    }
}
