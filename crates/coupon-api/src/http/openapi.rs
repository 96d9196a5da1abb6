//! The OpenAPI document, generated from the handlers' annotations, and
//! Swagger UI to read and try it.

use actix_web::{get, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::http::{coupons, customers, issue, promotion, redemption};

#[derive(OpenApi)]
#[openapi(
    info(title = "coupon-api", description = "First-come-first-served coupon issuance"),
    paths(
        issue::issue,
        coupons::create,
        coupons::get,
        coupons::list,
        coupons::prime_coupon,
        customers::my_coupons,
        customers::coupons,
        customers::attempt,
        redemption::redeem_for,
        redemption::release_for,
        redemption::revoke,
        promotion::pause,
        promotion::resume,
        promotion::end,
        promotion::change_coupon,
        promotion::stats,
        promotion::stats_stream,
        promotion::audit
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&Components)
)]
pub struct ApiDoc;

/// What the derives cannot say: the security schemes, and that a change
/// names at least one field.
struct Components;

impl Modify for Components {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        if let Some(RefOr::T(Schema::Object(change))) = components.schemas.get_mut("ChangeCouponRequest") {
            change.min_properties = Some(1);
        }
        // The admin token.
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // A customer's JWT (`sub`: the customer id); in gateway mode the
        // gateway's header stands in for it.
        components.add_security_scheme(
            "customer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        // A service's JWT from the same issuer: `sub` names the service,
        // `scope` grants coupons:redeem and coupons:release.
        components.add_security_scheme(
            "service",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

#[get("/api-docs/openapi.json")]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// Where Swagger UI is served (`/swagger-ui/`).
pub const SWAGGER_UI: &str = "/swagger-ui/{_:.*}";

/// Swagger UI on the document above; its assets are compiled into the
/// binary, so it needs nothing from the internet.
pub fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new(SWAGGER_UI).config(Config::from("/api-docs/openapi.json"))
}
