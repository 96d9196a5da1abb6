//! Who the request acts for, as handler arguments: handlers take these
//! extractors first, so the credential is checked before the body is read.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use coupon_domain::CustomerId;

use crate::auth::Access;
use crate::error::ApiError;

fn access(req: &HttpRequest) -> Result<&Access, ApiError> {
    req.app_data::<web::Data<Access>>()
        .map(|access| access.get_ref())
        .ok_or(ApiError::Unavailable("the service is not configured"))
}

/// Support staff: the request carries the admin token.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(access(req).and_then(|access| if access.is_admin(req) { Ok(Admin) } else { Err(ApiError::Unauthorized) }))
    }
}

/// The customer the request acts for.
pub struct Customer(pub CustomerId);

impl FromRequest for Customer {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let customer = access(req).and_then(|access| Ok(access.authenticator.customer(req)?));
        if let Ok(customer) = customer {
            super::request_span::record_customer(customer);
        }
        ready(customer.map(Customer))
    }
}

/// Who may read a customer's holdings: that customer, or support staff.
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
        ready(access(req).and_then(|access| {
            if access.is_admin(req) {
                Ok(Reader::Admin)
            } else {
                Ok(access.authenticator.customer(req).map(Reader::Customer)?)
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
}
