//! Customer credentials: the JWT claims coupon-api accepts, and minting them
//! for the tools and tests that act for customers (the load generator, the
//! end-to-end suite, `make token`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// What a customer's token says: `sub` is the customer id, in decimal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustomerClaims {
    pub sub: String,
    /// Expiry, seconds since the epoch; required.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// An HS256 token for `customer`, valid for `ttl`.
pub fn mint(secret: &[u8], customer: i64, ttl: Duration) -> anyhow::Result<String> {
    let exp = (SystemTime::now() + ttl).duration_since(UNIX_EPOCH)?.as_secs();
    let claims = CustomerClaims { sub: customer.to_string(), exp, iss: None, aud: None };
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret)?)?)
}
