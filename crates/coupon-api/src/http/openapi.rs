//! The OpenAPI document, generated from the handlers' annotations.

use actix_web::{get, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
        promotion::pause,
        promotion::resume,
        promotion::end,
        promotion::audit
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
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
