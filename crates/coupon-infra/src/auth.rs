//! Credentials: the JWT claims coupon-api accepts, and minting them for the
//! tools and tests that act for customers or for the order service (the load
//! generator, the end-to-end suite, `make token`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// The development credentials `make run`, the dev overlay and the tools'
/// defaults share. coupon-api refuses them unless `COUPON__DEV=true`.
pub const DEV_ADMIN_TOKEN: &str = "dev-admin-token-not-for-production";
pub const DEV_JWT_SECRET: &str = "dev-jwt-secret-not-for-production";
/// The audience development tokens are minted for.
pub const DEV_AUDIENCE: &str = "coupon-api";

/// The scope that lets a service redeem any customer's coupon.
pub const SCOPE_REDEEM: &str = "coupons:redeem";
/// The scope that lets a service release any customer's coupon.
pub const SCOPE_RELEASE: &str = "coupons:release";

/// What a token says. A customer's: `sub` is the customer id in canonical
/// decimal and there is no `scope`. A service's: `sub` names the service and
/// `scope` lists what it may do, space-separated (OAuth 2.0's `scope`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// Expiry, seconds since the epoch; required.
    pub exp: u64,
    /// Not before, seconds since the epoch; checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Mints HS256 tokens for one API's secret and audience.
#[derive(Debug, Clone)]
pub struct Signer {
    secret: Vec<u8>,
    audience: Option<String>,
}

impl Signer {
    pub fn new(secret: &[u8], audience: Option<&str>) -> Self {
        Self { secret: secret.to_vec(), audience: audience.map(str::to_string) }
    }

    /// A token for `customer`, valid for `ttl`.
    pub fn customer(&self, customer: i64, ttl: Duration) -> anyhow::Result<String> {
        self.sign(customer.to_string(), None, ttl)
    }

    /// A token for the service `name` with `scopes`, valid for `ttl`.
    pub fn service(&self, name: &str, scopes: &[&str], ttl: Duration) -> anyhow::Result<String> {
        self.sign(name.to_string(), Some(scopes.join(" ")), ttl)
    }

    /// A token with these claims as they are (tests of refusals).
    pub fn claims(&self, claims: &Claims) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(&self.secret)?)?)
    }

    fn sign(&self, sub: String, scope: Option<String>, ttl: Duration) -> anyhow::Result<String> {
        let exp = (SystemTime::now() + ttl).duration_since(UNIX_EPOCH)?.as_secs();
        self.claims(&Claims { sub, exp, nbf: None, iss: None, aud: self.audience.clone(), scope })
    }
}
