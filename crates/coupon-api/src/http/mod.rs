//! The HTTP face: who calls (`caller`), how often (`limits`), the request
//! span, and the routes, one module per resource, and the extractor settings that turn
//! every malformed request into a 4xx: `400 INVALID_REQUEST`, `413` for a body
//! over the limit, `415` for a body that is not JSON, `405` (with `Allow`) for
//! a method a known path does not serve.

pub mod caller;
pub mod console;
pub mod coupons;
pub mod customers;
pub mod health;
pub mod issue;
pub mod limits;
pub mod openapi;
pub mod promotion;
pub mod redemption;
pub mod request_span;
pub mod state;

use std::sync::LazyLock;

use actix_web::dev::ResourceDef;
use actix_web::error::{JsonPayloadError, PathError};
use actix_web::{web, HttpRequest, HttpResponse};
use utoipa::OpenApi;

use crate::error::ApiError;

/// Request bodies are tiny; anything larger is a mistake or an attack.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(MAX_BODY_BYTES).error_handler(|err, _req| invalid_json(err).into()))
        .app_data(web::PathConfig::default().error_handler(|err, _req| invalid_path(err).into()))
        .app_data(
            web::QueryConfig::default()
                .error_handler(|err, _req| ApiError::InvalidRequest(format!("invalid query: {err}")).into()),
        )
        .service(issue::issue)
        .service(coupons::create)
        .service(coupons::get)
        .service(coupons::list)
        .service(coupons::prime_coupon)
        .service(promotion::pause)
        .service(promotion::resume)
        .service(promotion::end)
        .service(promotion::change_coupon)
        .service(promotion::stats)
        .service(promotion::stats_stream)
        .service(promotion::audit)
        .service(customers::my_coupons)
        .service(redemption::redeem_for)
        .service(redemption::release_for)
        .service(redemption::revoke)
        .service(customers::coupons)
        .service(customers::attempt)
        .service(openapi::document)
        .service(openapi::swagger_ui())
        .service(console::to_page)
        .service(console::page)
        .service(console::script)
        .service(console::style)
        .default_service(web::to(not_found));
}

/// The management port's routes: probes and metrics, for the orchestrator
/// and Prometheus only; the API port answers 404 for them.
pub fn configure_management(cfg: &mut web::ServiceConfig) {
    cfg.service(health::live).service(health::ready).service(health::metrics).default_service(web::to(not_found));
}

fn invalid_json(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType("Content-Type must be application/json".into()),
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::PayloadTooLarge(format!("body larger than {MAX_BODY_BYTES} bytes"))
        }
        JsonPayloadError::Deserialize(err) => ApiError::InvalidRequest(format!("invalid JSON body: {err}")),
        _ => ApiError::InvalidRequest("unreadable request body".into()),
    }
}

fn invalid_path(err: PathError) -> ApiError {
    ApiError::InvalidRequest(format!("invalid path: {err}"))
}

/// Every path the API port serves and its methods: the OpenAPI document's,
/// plus the document itself, Swagger UI and the console.
static ROUTES: LazyLock<Vec<(ResourceDef, String)>> = LazyLock::new(|| {
    let documented = openapi::ApiDoc::openapi().paths.paths.into_iter().map(|(path, item)| {
        let methods = [
            ("GET", item.get.is_some()),
            ("PUT", item.put.is_some()),
            ("POST", item.post.is_some()),
            ("DELETE", item.delete.is_some()),
            ("PATCH", item.patch.is_some()),
        ];
        let allow: Vec<&str> = methods.iter().filter(|(_, served)| *served).map(|(method, _)| *method).collect();
        (path, allow.join(", "))
    });
    let operational = ["/api-docs/openapi.json", openapi::SWAGGER_UI].map(|path| (path.to_string(), "GET".to_string()));
    documented.chain(operational).map(|(path, allow)| (ResourceDef::new(path), allow)).collect()
});

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if let Some((_, allow)) = ROUTES.iter().find(|(route, _)| route.is_match(req.path())) {
        return Err(ApiError::MethodNotAllowed { allow: allow.clone() });
    }
    tracing::debug!(path = req.path(), "no such route");
    Err(ApiError::NotFound("no such resource"))
}

/// A free text field as stored: trimmed, 1 to `max` characters, not all
/// blank, no control characters (PostgreSQL refuses NUL, and none belongs in
/// a name or a reason), else 400 naming `field`.
pub fn valid_text(field: &str, text: &str, max: usize) -> Result<String, ApiError> {
    let trimmed = text.trim();
    if trimmed.is_empty() || text.chars().count() > max {
        return Err(ApiError::InvalidRequest(format!("{field} must have 1 to {max} characters, not all blank")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(format!("{field} must not contain control characters")));
    }
    Ok(trimmed.to_string())
}

/// Parses an id from the path: positive and within BIGINT, else 400.
pub fn parse_id<T: std::str::FromStr>(raw: &str, name: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    raw.parse().map_err(|err| ApiError::InvalidRequest(format!("{name} {err}")))
}

/// Parses the `couponId` path parameter and names the coupon on the request's span.
pub fn parse_coupon(raw: &str) -> Result<coupon_domain::CouponId, ApiError> {
    let coupon = parse_id(raw, "couponId")?;
    crate::http::request_span::record_coupon(coupon);
    Ok(coupon)
}
