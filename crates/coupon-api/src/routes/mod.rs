//! HTTP routes, one module per resource, and the extractor settings that turn
//! every malformed request into `400 INVALID_REQUEST`.

pub mod coupons;
pub mod customers;
pub mod health;
pub mod issue;
pub mod openapi;

use actix_web::error::{JsonPayloadError, PathError};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::ApiError;

/// Request bodies are tiny; anything larger is a mistake or an attack.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(MAX_BODY_BYTES).error_handler(|err, _req| invalid_json(err).into()))
        .app_data(web::PathConfig::default().error_handler(|err, _req| invalid_path(err).into()))
        .service(issue::issue)
        .service(coupons::create)
        .service(coupons::get)
        .service(coupons::prime_coupon)
        .service(customers::coupons)
        .service(customers::attempt)
        .service(health::live)
        .service(health::ready)
        .service(health::metrics)
        .service(openapi::document)
        .default_service(web::to(not_found));
}

fn invalid_json(err: JsonPayloadError) -> ApiError {
    let message = match err {
        JsonPayloadError::ContentType => "Content-Type must be application/json".to_string(),
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            format!("body larger than {MAX_BODY_BYTES} bytes")
        }
        JsonPayloadError::Deserialize(err) => format!("invalid JSON body: {err}"),
        _ => "unreadable request body".to_string(),
    };
    ApiError::InvalidRequest(message)
}

fn invalid_path(err: PathError) -> ApiError {
    ApiError::InvalidRequest(format!("invalid path: {err}"))
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    tracing::debug!(path = req.path(), "no such route");
    Err(ApiError::NotFound("no such resource"))
}

/// Parses an id from the path: positive and within BIGINT, else 400.
pub fn parse_id<T: std::str::FromStr>(raw: &str, name: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    raw.parse().map_err(|err| ApiError::InvalidRequest(format!("{name} {err}")))
}
