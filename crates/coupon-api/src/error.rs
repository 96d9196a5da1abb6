//! The API's errors and their one mapping to HTTP.
//!
//! Policy: a client's mistake is a 4xx with a stable code and a message about
//! the request; a backing service that cannot answer is a 503 and nothing was
//! changed. Internal error text is logged, never sent.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use coupon_domain::{Rejection, UseRejection};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::redemption::RedemptionError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Rejected(Rejection),
    /// A redeem or release refused.
    #[error("{0}")]
    Usage(UseRejection),
    #[error("{0}")]
    InvalidRequest(String),
    /// Well-formed and schema-valid, but the dates are out of order.
    #[error("{0}")]
    InvalidPeriod(&'static str),
    #[error("this Idempotency-Key was used within its day for another coupon; use a new key for a new coupon")]
    IdempotencyKeyReused,
    /// The change asked for is where the resource already is.
    #[error("{message}")]
    Conflict { code: &'static str, message: &'static str },
    /// Well-formed, but the resource's state does not admit it.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: &'static str },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("method not allowed; this resource allows {allow}")]
    MethodNotAllowed { allow: String },
    #[error("missing or wrong admin token")]
    Unauthorized,
    /// No customer credential, or one that does not verify.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("too many requests; retry after {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{0}")]
    NotFound(&'static str),
    /// Redis or PostgreSQL could not answer; the cause is logged where it happened.
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("the coupon is being restored after a Redis failure; nothing was changed, try again shortly")]
    Fenced,
    #[error("the coupon may have been issued but Redis did not confirm it in time; ask GET /api/v1/coupons/{{couponId}}/customers/{{customerId}}")]
    Unconfirmed,
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Unauthenticated(reason) => ApiError::Unauthenticated(reason),
            AuthError::Malformed(reason) => ApiError::InvalidRequest(reason),
        }
    }
}

impl From<RedemptionError> for ApiError {
    fn from(err: RedemptionError) -> Self {
        match err {
            RedemptionError::Rejected(rejection) => ApiError::Usage(rejection),
            RedemptionError::Undecided => ApiError::Fenced,
            RedemptionError::ReturnPending => ApiError::Unavailable(
                "revoked, but Redis has not got the returned unit yet: send the revoke again (it answers 409 ALREADY_REVOKED once done)",
            ),
            RedemptionError::Redis(err) => ApiError::unavailable("Redis is unavailable; nothing was changed", &err),
            err @ (RedemptionError::Pool(_) | RedemptionError::Query(_) | RedemptionError::Publish(_)) => {
                ApiError::unavailable("PostgreSQL is unavailable; nothing was changed", &err)
            }
        }
    }
}

/// What `Retry-After` says on a 503: the seconds after which a retry may succeed.
const RETRY_AFTER_SECS: &str = "1";

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `SOLD_OUT`.
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Rejected(rejection) => rejection.code(),
            ApiError::Usage(rejection) => rejection.code(),
            ApiError::InvalidRequest(_) => "INVALID_REQUEST",
            ApiError::InvalidPeriod(_) => "INVALID_PERIOD",
            ApiError::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ApiError::Conflict { code, .. } | ApiError::Unprocessable { code, .. } => code,
            ApiError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            ApiError::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ApiError::Unauthorized | ApiError::Unauthenticated(_) => "UNAUTHORIZED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::TooManyRequests { .. } => "TOO_MANY_REQUESTS",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Unavailable(_) | ApiError::Fenced => "UNAVAILABLE",
            ApiError::Unconfirmed => "UNCONFIRMED",
        }
    }

    /// Logs the cause of an outage and returns the error clients see.
    pub fn unavailable(what: &'static str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{what}");
        ApiError::Unavailable(what)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Rejected(Rejection::CouponNotFound) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Rejected(Rejection::AlreadyIssued | Rejection::SoldOut | Rejection::Paused)
            | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Rejected(Rejection::NotStarted | Rejection::Expired) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Usage(UseRejection::CouponNotFound | UseRejection::NotHeld) => StatusCode::NOT_FOUND,
            ApiError::Usage(
                UseRejection::AlreadyUsed
                | UseRejection::OrderReleased
                | UseRejection::NotUsedByOrder
                | UseRejection::Paused
                | UseRejection::Revoked
                | UseRejection::AlreadyRevoked,
            ) => StatusCode::CONFLICT,
            ApiError::Usage(UseRejection::Expired | UseRejection::BelowMinimum | UseRejection::NotRedeemable) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidPeriod(_) | ApiError::IdempotencyKeyReused | ApiError::Unprocessable { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized | ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Fenced | ApiError::Unconfirmed => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unavailable(_) | ApiError::Fenced | ApiError::Unconfirmed => {
                response.insert_header((actix_web::http::header::RETRY_AFTER, RETRY_AFTER_SECS));
            }
            ApiError::Unauthorized | ApiError::Unauthenticated(_) => {
                response.insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                response.insert_header((actix_web::http::header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            ApiError::MethodNotAllowed { allow } => {
                response.insert_header((actix_web::http::header::ALLOW, allow.as_str()));
            }
            _ => {}
        }
        response.json(ErrorBody { code: self.code(), message: self.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_map_to_the_documented_statuses() {
        let expect = [
            (Rejection::CouponNotFound, 404),
            (Rejection::AlreadyIssued, 409),
            (Rejection::SoldOut, 409),
            (Rejection::Paused, 409),
            (Rejection::NotStarted, 422),
            (Rejection::Expired, 422),
        ];
        for (rejection, status) in expect {
            let err = ApiError::Rejected(rejection);
            assert_eq!(err.status_code().as_u16(), status, "{rejection:?}");
            assert_eq!(err.code(), rejection.code());
        }
    }

    #[test]
    fn use_rejections_map_to_the_documented_statuses() {
        let expect = [
            (UseRejection::CouponNotFound, 404),
            (UseRejection::NotHeld, 404),
            (UseRejection::AlreadyUsed, 409),
            (UseRejection::OrderReleased, 409),
            (UseRejection::NotUsedByOrder, 409),
            (UseRejection::Expired, 422),
            (UseRejection::BelowMinimum, 422),
            (UseRejection::NotRedeemable, 422),
        ];
        for (rejection, status) in expect {
            let err = ApiError::Usage(rejection);
            assert_eq!(err.status_code().as_u16(), status, "{rejection:?}");
            assert_eq!(err.code(), rejection.code());
        }
    }

    #[test]
    fn client_mistakes_are_4xx_and_outages_503() {
        assert_eq!(ApiError::InvalidRequest("x".into()).status_code(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::Unauthorized.status_code(), StatusCode::UNAUTHORIZED);
        assert_eq!(ApiError::Unavailable("redis").status_code(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn a_fenced_coupon_is_a_503_with_retry_after() {
        let response = ApiError::Fenced.error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(actix_web::http::header::RETRY_AFTER).unwrap(), "1");
        assert_eq!(ApiError::Fenced.code(), "UNAVAILABLE");
    }
}
