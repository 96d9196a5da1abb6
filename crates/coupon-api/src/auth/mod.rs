//! Who a request acts for: a customer (from a verified JWT, or from the header
//! of a gateway that authenticated the customer) or support staff (the admin
//! token). The HTTP extractors that ask this are in `http::caller`.

use actix_web::http::header::{HeaderName, AUTHORIZATION};
use actix_web::HttpRequest;
use anyhow::Context;
use coupon_domain::CustomerId;
use coupon_infra::auth::CustomerClaims;
use coupon_infra::settings::{AuthMode, AuthSettings};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// No customer credential, or one that does not verify.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unauthenticated(pub String);

/// The credentials this service accepts.
pub struct Access {
    pub authenticator: Authenticator,
    pub admin_token: Option<SecretString>,
}

impl Access {
    pub fn new(settings: &AuthSettings, admin_token: Option<SecretString>) -> anyhow::Result<Self> {
        Ok(Self { authenticator: Authenticator::new(settings)?, admin_token })
    }

    /// Whether the request carries the admin token (compared in constant time).
    pub fn is_admin(&self, req: &HttpRequest) -> bool {
        match (&self.admin_token, bearer(req)) {
            (Some(expected), Some(given)) => bool::from(given.as_bytes().ct_eq(expected.expose_secret().as_bytes())),
            _ => false,
        }
    }
}

pub enum Authenticator {
    Jwt { key: Box<DecodingKey>, validation: Box<Validation> },
    Gateway { header: HeaderName },
}

impl Authenticator {
    pub fn new(settings: &AuthSettings) -> anyhow::Result<Self> {
        if settings.mode == AuthMode::Gateway {
            let header = HeaderName::try_from(settings.customer_header.trim()).context("auth.customer_header")?;
            tracing::warn!(
                header = %header,
                "gateway mode: the customer is whoever this header names; coupon-api must be reachable only through the gateway"
            );
            return Ok(Self::Gateway { header });
        }
        let (key, algorithm) = match (&settings.jwt_secret, &settings.jwt_public_key_file) {
            (Some(secret), _) => (DecodingKey::from_secret(secret.expose_secret().as_bytes())?, Algorithm::HS256),
            (None, Some(path)) => {
                let pem = std::fs::read(path).with_context(|| format!("reading auth.jwt_public_key_file {path:?}"))?;
                match DecodingKey::from_rsa_pem(&pem) {
                    Ok(key) => (key, Algorithm::RS256),
                    Err(_) => (
                        DecodingKey::from_ec_pem(&pem)
                            .context("auth.jwt_public_key_file is neither an RSA nor an EC public key")?,
                        Algorithm::ES256,
                    ),
                }
            }
            (None, None) => anyhow::bail!("jwt mode needs auth.jwt_secret or auth.jwt_public_key_file"),
        };
        // One algorithm, the key's: a token claiming another (`none`, or HS256
        // signed with the public key) is refused.
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(issuer) = &settings.jwt_issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &settings.jwt_audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        Ok(Self::Jwt { key: Box::new(key), validation: Box::new(validation) })
    }

    /// The customer the request's credential names.
    pub fn customer(&self, req: &HttpRequest) -> Result<CustomerId, Unauthenticated> {
        let customer = match self {
            Self::Jwt { key, validation } => {
                let token = bearer(req).ok_or(Unauthenticated("missing bearer token".into()))?;
                let claims = jsonwebtoken::decode::<CustomerClaims>(token, key, validation)
                    .map_err(|err| Unauthenticated(format!("invalid token: {err}")))?
                    .claims;
                claims.sub
            }
            Self::Gateway { header } => req
                .headers()
                .get(header)
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| Unauthenticated(format!("missing {header} header")))?
                .to_string(),
        };
        customer
            .trim()
            .parse::<CustomerId>()
            .map_err(|_| Unauthenticated("the credential does not name a customer id".into()))
    }
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers().get(AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::test::TestRequest;
    use secrecy::SecretString;

    use super::*;

    const SECRET: &str = "unit-test-secret";

    fn jwt() -> Authenticator {
        let settings = AuthSettings { jwt_secret: Some(SecretString::from(SECRET)), ..Default::default() };
        Authenticator::new(&settings).unwrap()
    }

    fn with_bearer(token: &str) -> HttpRequest {
        TestRequest::default().insert_header((AUTHORIZATION, format!("Bearer {token}"))).to_http_request()
    }

    #[test]
    fn a_valid_token_names_its_customer() {
        let token = coupon_infra::auth::mint(SECRET.as_bytes(), 7, Duration::from_secs(60)).unwrap();
        assert_eq!(jwt().customer(&with_bearer(&token)).unwrap(), CustomerId::new(7).unwrap());
    }

    #[test]
    fn missing_expired_forged_and_unsigned_tokens_are_refused() {
        let forged = coupon_infra::auth::mint(b"another secret", 7, Duration::from_secs(60)).unwrap();
        let claims = CustomerClaims { sub: "7".into(), exp: 1, iss: None, aud: None };
        let expired = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        // {"alg":"none"} with a valid-looking payload and no signature.
        let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", expired.split('.').nth(1).unwrap());
        for token in [forged.as_str(), expired.as_str(), unsigned.as_str(), "garbage"] {
            let err = jwt().customer(&with_bearer(token)).unwrap_err();
            let _: Unauthenticated = err;
        }
        assert!(jwt().customer(&TestRequest::default().to_http_request()).is_err(), "no token at all");
    }

    #[test]
    fn a_gateway_header_names_the_customer() {
        let gateway = Authenticator::new(&AuthSettings { mode: AuthMode::Gateway, ..Default::default() }).unwrap();
        let req = TestRequest::default().insert_header(("X-Customer-Id", "42")).to_http_request();
        assert_eq!(gateway.customer(&req).unwrap(), CustomerId::new(42).unwrap());
        let zero = TestRequest::default().insert_header(("X-Customer-Id", "0")).to_http_request();
        assert!(gateway.customer(&zero).is_err());
    }
}
