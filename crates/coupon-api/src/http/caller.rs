//! Who the request acts for, as handler arguments: handlers take these
//! extractors first, so the credential is checked before the body is read.
//! Failed authentication counts against the client address's allowance of
//! failures (`limits.failed_auth_per_minute`): past it, the answer is 429.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use coupon_domain::CustomerId;

use super::state::AppState;
use crate::auth::{Caller, Service};
use crate::error::ApiError;

/// Runs `check` with the state; a refused credential is counted.
fn authenticate<T>(req: &HttpRequest, check: impl FnOnce(&AppState) -> Result<T, ApiError>) -> Result<T, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.get_ref())
        .ok_or(ApiError::Unavailable("the service is not configured"))?;
    check(state).map_err(|err| match err {
        ApiError::Unauthorized | ApiError::Unauthenticated(_) => state.limits.failed_auth(req).err().unwrap_or(err),
        err => err,
    })
}

/// Support staff: the request carries an admin token. Holds who acted,
/// `admin:<token name>`, as logs and the audit name it.
pub struct Admin(pub String);

/// Names the admin who acts on the request's span; returns that name.
fn record_admin(name: &str) -> String {
    let actor = format!("admin:{name}");
    super::request_span::record_caller(&actor);
    actor
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req, |state| {
            let name = state.access.admin(req).ok_or(ApiError::Unauthorized)?;
            Ok(Admin(record_admin(name)))
        }))
    }
}

/// The customer the request acts for.
pub struct Customer(pub CustomerId);

impl FromRequest for Customer {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let customer = authenticate(req, |state| Ok(state.access.authenticator.customer(req)?));
        if let Ok(customer) = customer {
            super::request_span::record_customer(customer);
        }
        ready(customer.map(Customer))
    }
}

/// Who may read a customer's holdings: that customer (within its limits),
/// or support staff.
pub enum Reader {
    Admin,
    Customer(CustomerId),
}

impl Reader {
    pub fn may_read(&self, customer: CustomerId) -> Result<(), ApiError> {
        match self {
            Reader::Customer(own) if *own != customer => {
                Err(ApiError::Forbidden("a customer sees only its own coupons"))
            }
            _ => Ok(()),
        }
    }
}

impl FromRequest for Reader {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req, |state| {
            if state.access.is_admin(req) {
                return Ok(Reader::Admin);
            }
            let customer = state.access.authenticator.customer(req)?;
            state.limits.check(req, Some(customer))?;
            Ok(Reader::Customer(customer))
        }))
    }
}

/// Who may spend (redeem or release) any customer's coupon: the order
/// service, with the scope for it, or support staff. A customer may not: it
/// would choose its own order amount, and release and redeem again.
pub enum Spender {
    /// Support staff, by the name their actions are audited under.
    Admin(String),
    Service(Service),
}

impl Spender {
    /// The name to audit the request under: support staff's actions are
    /// recorded, the order service's are its business.
    pub fn audited(&self) -> Option<&str> {
        match self {
            Spender::Admin(name) => Some(name),
            Spender::Service(_) => None,
        }
    }

    /// Refuses a service whose token lacks `scope`.
    pub fn may(&self, scope: &str) -> Result<(), ApiError> {
        match self {
            Spender::Service(service) if !service.may(scope) => Err(ApiError::Forbidden(SPENDING_IS_THE_SERVICES)),
            _ => Ok(()),
        }
    }
}

const SPENDING_IS_THE_SERVICES: &str = "redeem and release are the order service's: a token with scope coupons:redeem or coupons:release, or the admin token";

impl FromRequest for Spender {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req, |state| {
            if let Some(name) = state.access.admin(req) {
                return Ok(Spender::Admin(record_admin(name)));
            }
            match state.access.authenticator.caller(req)? {
                Caller::Service(service) => {
                    super::request_span::record_caller(&format!("service:{}", service.name));
                    Ok(Spender::Service(service))
                }
                Caller::Customer(_) => Err(ApiError::Forbidden(SPENDING_IS_THE_SERVICES)),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_reads_only_its_own() {
        let (seven, eight) = (CustomerId::new(7).unwrap(), CustomerId::new(8).unwrap());
        assert!(Reader::Customer(seven).may_read(seven).is_ok());
        assert!(matches!(Reader::Customer(seven).may_read(eight), Err(ApiError::Forbidden(_))));
        assert!(Reader::Admin.may_read(eight).is_ok());
    }

    #[test]
    fn a_service_spends_only_with_its_scope() {
        let redeemer = Spender::Service(Service { name: "orders".into(), scopes: vec!["coupons:redeem".into()] });
        assert!(redeemer.may("coupons:redeem").is_ok());
        assert!(matches!(redeemer.may("coupons:release"), Err(ApiError::Forbidden(_))));
        assert!(Spender::Admin("admin:ops".into()).may("coupons:release").is_ok());
    }
}
