//! Who a request acts for. Three kinds of caller:
//! - a customer, named by a verified JWT (`sub` = its id, no `scope`) or, in
//!   gateway mode, by the header of a gateway that proved itself with the
//!   gateway secret; a customer acts only for itself;
//! - a service (the order service), by a JWT from the same issuer whose
//!   `scope` grants `coupons:redeem` and `coupons:release`: it spends any
//!   customer's coupon;
//! - support staff, by the admin token.
//!
//! The HTTP extractors that ask this are in `http::caller`.

use actix_web::http::header::{HeaderName, AUTHORIZATION};
use actix_web::HttpRequest;
use anyhow::Context;
use coupon_domain::CustomerId;
use coupon_infra::auth::{Claims, SCOPE_REDEEM, SCOPE_RELEASE};
use coupon_infra::settings::{AuthMode, AuthSettings};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// Why a request's credential names no caller.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential, or one that does not verify.
    #[error("{0}")]
    Unauthenticated(String),
    /// The request names its caller ambiguously (a header sent twice).
    #[error("{0}")]
    Malformed(String),
}

/// What a verified credential names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Customer(CustomerId),
    Service(Service),
}

/// A service's name and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub scopes: Vec<String>,
}

impl Service {
    pub fn may(&self, scope: &str) -> bool {
        self.scopes.iter().any(|granted| granted == scope)
    }
}

/// The scopes that make a token a service's.
const SERVICE_SCOPES: [&str; 2] = [SCOPE_REDEEM, SCOPE_RELEASE];

/// The header a gateway proves itself with.
pub const GATEWAY_TOKEN_HEADER: &str = "X-Gateway-Token";

/// The credentials this service accepts.
pub struct Access {
    pub authenticator: Authenticator,
    /// Support staff's tokens, each with the name logs give who used it.
    pub admin_tokens: Vec<(String, SecretString)>,
}

impl Access {
    pub fn new(settings: &AuthSettings, admin_tokens: Vec<(String, SecretString)>) -> anyhow::Result<Self> {
        Ok(Self { authenticator: Authenticator::new(settings)?, admin_tokens })
    }

    /// The name of the admin token the request carries, if any. Every token
    /// is compared (in constant time), so the answer's timing tells nothing.
    pub fn admin(&self, req: &HttpRequest) -> Option<&str> {
        let given = bearer(req)?;
        self.admin_tokens.iter().fold(None, |found, (name, expected)| {
            let matches = constant_time_eq(given, expected);
            if matches {
                Some(name.as_str())
            } else {
                found
            }
        })
    }

    pub fn is_admin(&self, req: &HttpRequest) -> bool {
        self.admin(req).is_some()
    }
}

/// Verifies JWTs: one algorithm, the key's.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

pub struct Gateway {
    header: HeaderName,
    secret: SecretString,
}

pub struct Authenticator {
    mode: AuthMode,
    /// Present whenever a key is configured: customers in jwt mode, and
    /// services in either mode.
    jwt: Option<JwtVerifier>,
    gateway: Option<Gateway>,
}

impl Authenticator {
    pub fn new(settings: &AuthSettings) -> anyhow::Result<Self> {
        let gateway = match settings.mode {
            AuthMode::Gateway => {
                let header = HeaderName::try_from(settings.customer_header.trim()).context("auth.customer_header")?;
                let secret = settings.gateway_secret.clone().context("gateway mode needs auth.gateway_secret")?;
                Some(Gateway { header, secret })
            }
            AuthMode::Jwt => None,
        };
        let jwt = JwtVerifier::new(settings)?;
        if settings.mode == AuthMode::Jwt && jwt.is_none() {
            anyhow::bail!("jwt mode needs auth.jwt_secret or auth.jwt_public_key_file");
        }
        Ok(Self { mode: settings.mode, jwt, gateway })
    }

    /// The caller the request's credential names.
    pub fn caller(&self, req: &HttpRequest) -> Result<Caller, AuthError> {
        if let (Some(jwt), Some(token)) = (&self.jwt, bearer(req)) {
            let claims = jwt.verify(token)?;
            if let Some(service) = service(&claims) {
                return Ok(Caller::Service(service));
            }
            if self.mode == AuthMode::Jwt {
                return customer_id(&claims.sub).map(Caller::Customer);
            }
        }
        match (&self.gateway, &self.jwt) {
            (Some(gateway), _) => gateway.customer(req).map(Caller::Customer),
            (None, _) => Err(AuthError::Unauthenticated("missing bearer token".into())),
        }
    }

    /// The customer the request's credential names; a service is no customer.
    pub fn customer(&self, req: &HttpRequest) -> Result<CustomerId, AuthError> {
        match self.caller(req)? {
            Caller::Customer(customer) => Ok(customer),
            Caller::Service(service) => {
                Err(AuthError::Unauthenticated(format!("{} is a service, not a customer", service.name)))
            }
        }
    }
}

impl JwtVerifier {
    fn new(settings: &AuthSettings) -> anyhow::Result<Option<Self>> {
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
            (None, None) => return Ok(None),
        };
        // One algorithm, the key's: a token claiming another (`none`, or HS256
        // signed with the public key) is refused.
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = settings.jwt_leeway_s;
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
        Ok(Some(Self { key, validation }))
    }

    fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| AuthError::Unauthenticated(format!("invalid token: {err}")))
    }
}

impl Gateway {
    /// The customer the gateway names, once the request proved it passed the
    /// gateway. One header value only: a gateway that appends its header to
    /// the client's would otherwise let the client's win.
    fn customer(&self, req: &HttpRequest) -> Result<CustomerId, AuthError> {
        let proof = req.headers().get(GATEWAY_TOKEN_HEADER).and_then(|value| value.to_str().ok());
        if !proof.is_some_and(|proof| constant_time_eq(proof, &self.secret)) {
            return Err(AuthError::Unauthenticated(format!(
                "missing or wrong {GATEWAY_TOKEN_HEADER}: requests must come through the gateway"
            )));
        }
        let mut values = req.headers().get_all(&self.header);
        let value =
            values.next().ok_or_else(|| AuthError::Unauthenticated(format!("missing {} header", self.header)))?;
        if values.next().is_some() {
            return Err(AuthError::Malformed(format!("{} must be sent once", self.header)));
        }
        customer_id(value.to_str().unwrap_or_default())
    }
}

/// A service's token: one that grants a service scope.
fn service(claims: &Claims) -> Option<Service> {
    let scopes: Vec<String> = claims.scope.as_deref()?.split_whitespace().map(str::to_string).collect();
    scopes
        .iter()
        .any(|scope| SERVICE_SCOPES.contains(&scope.as_str()))
        .then(|| Service { name: claims.sub.clone(), scopes })
}

/// A customer id written the one way: decimal digits, no sign, no leading
/// zero, no spaces; `"+7"`, `"007"` and `" 7"` name nobody.
fn customer_id(sub: &str) -> Result<CustomerId, AuthError> {
    let canonical = !sub.is_empty() && sub.bytes().all(|b| b.is_ascii_digit()) && !sub.starts_with('0');
    canonical
        .then(|| sub.parse::<CustomerId>().ok())
        .flatten()
        .ok_or_else(|| AuthError::Unauthenticated("the credential does not name a customer id".into()))
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers().get(AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

fn constant_time_eq(given: &str, expected: &SecretString) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.expose_secret().as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use actix_web::test::TestRequest;
    use coupon_infra::auth::Signer;

    use super::*;

    const SECRET: &str = "unit-test-secret-of-at-least-32-bytes";
    const AUDIENCE: &str = "coupon-api";

    fn settings() -> AuthSettings {
        AuthSettings {
            jwt_secret: Some(SecretString::from(SECRET)),
            jwt_audience: Some(AUDIENCE.into()),
            ..Default::default()
        }
    }

    fn jwt() -> Authenticator {
        Authenticator::new(&settings()).unwrap()
    }

    fn signer() -> Signer {
        Signer::new(SECRET.as_bytes(), Some(AUDIENCE))
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn claims(sub: &str) -> Claims {
        Claims { sub: sub.into(), exp: now() + 60, nbf: None, iss: None, aud: Some(AUDIENCE.into()), scope: None }
    }

    fn with_bearer(token: &str) -> HttpRequest {
        TestRequest::default().insert_header((AUTHORIZATION, format!("Bearer {token}"))).to_http_request()
    }

    #[test]
    fn a_valid_token_names_its_customer() {
        let token = signer().customer(7, Duration::from_secs(60)).unwrap();
        assert_eq!(jwt().customer(&with_bearer(&token)).unwrap(), CustomerId::new(7).unwrap());
    }

    #[test]
    fn a_token_with_service_scopes_names_a_service_not_a_customer() {
        let token = signer().service("orders", &[SCOPE_REDEEM, SCOPE_RELEASE], Duration::from_secs(60)).unwrap();
        let Caller::Service(service) = jwt().caller(&with_bearer(&token)).unwrap() else { panic!("not a service") };
        assert_eq!(service.name, "orders");
        assert!(service.may(SCOPE_REDEEM) && service.may(SCOPE_RELEASE));
        assert!(jwt().customer(&with_bearer(&token)).is_err(), "a service acts for no customer of its own");
    }

    #[test]
    fn missing_expired_forged_unsigned_and_foreign_tokens_are_refused() {
        let forged = Signer::new(b"another secret of at least 32 bytes!!", Some(AUDIENCE))
            .customer(7, Duration::from_secs(60))
            .unwrap();
        let expired = signer().claims(&Claims { exp: now() - 10, ..claims("7") }).unwrap();
        let not_yet = signer().claims(&Claims { nbf: Some(now() + 60), ..claims("7") }).unwrap();
        let other_audience = signer().claims(&Claims { aud: Some("another-service".into()), ..claims("7") }).unwrap();
        // {"alg":"none"} with a valid-looking payload and no signature.
        let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", expired.split('.').nth(1).unwrap());
        for token in [&forged, &expired, &not_yet, &other_audience, &unsigned, "garbage"] {
            let err = jwt().customer(&with_bearer(token)).unwrap_err();
            assert!(matches!(err, AuthError::Unauthenticated(_)), "{token}: {err:?}");
        }
        assert!(jwt().customer(&TestRequest::default().to_http_request()).is_err(), "no token at all");
    }

    #[test]
    fn expiry_has_the_configured_leeway_only() {
        let just_expired = signer().claims(&Claims { exp: now() - 3, ..claims("7") }).unwrap();
        assert!(jwt().customer(&with_bearer(&just_expired)).is_ok(), "within the default 5 s");
        let strict = Authenticator::new(&AuthSettings { jwt_leeway_s: 0, ..settings() }).unwrap();
        assert!(strict.customer(&with_bearer(&just_expired)).is_err());
    }

    #[test]
    fn only_a_canonical_decimal_subject_names_a_customer() {
        for sub in ["+7", "007", " 7", "7 ", "0", "-7", "7a", ""] {
            let token = signer().claims(&claims(sub)).unwrap();
            assert!(jwt().customer(&with_bearer(&token)).is_err(), "{sub:?}");
        }
    }

    fn gateway() -> Authenticator {
        Authenticator::new(&AuthSettings {
            mode: AuthMode::Gateway,
            gateway_secret: Some(SecretString::from(SECRET)),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn a_gateway_header_names_the_customer_only_with_the_gateway_proof() {
        let proven = || TestRequest::default().insert_header((GATEWAY_TOKEN_HEADER, SECRET));
        let req = proven().insert_header(("X-Customer-Id", "42")).to_http_request();
        assert_eq!(gateway().customer(&req).unwrap(), CustomerId::new(42).unwrap());
        let unproven = TestRequest::default().insert_header(("X-Customer-Id", "42")).to_http_request();
        assert!(matches!(gateway().customer(&unproven), Err(AuthError::Unauthenticated(_))));
        let wrong = TestRequest::default()
            .insert_header((GATEWAY_TOKEN_HEADER, "not the secret"))
            .insert_header(("X-Customer-Id", "42"))
            .to_http_request();
        assert!(matches!(gateway().customer(&wrong), Err(AuthError::Unauthenticated(_))));
        let zero = proven().insert_header(("X-Customer-Id", "0")).to_http_request();
        assert!(gateway().customer(&zero).is_err());
    }

    #[test]
    fn a_customer_header_sent_twice_is_malformed() {
        let req = TestRequest::default()
            .insert_header((GATEWAY_TOKEN_HEADER, SECRET))
            .append_header(("X-Customer-Id", "7"))
            .append_header(("X-Customer-Id", "8"))
            .to_http_request();
        assert!(matches!(gateway().customer(&req), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn an_admin_token_names_who_used_it() {
        let tokens = ["alice", "bob"].map(|name| (name.to_string(), SecretString::from(format!("{name}-{SECRET}"))));
        let access = Access::new(&settings(), tokens.to_vec()).unwrap();
        assert_eq!(access.admin(&with_bearer(&format!("bob-{SECRET}"))), Some("bob"));
        assert_eq!(access.admin(&with_bearer(&format!("carol-{SECRET}"))), None);
        assert_eq!(access.admin(&TestRequest::default().to_http_request()), None);
    }
}
