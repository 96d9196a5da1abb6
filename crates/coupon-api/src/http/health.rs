//! Liveness, readiness and metrics.

use actix_web::{get, web, HttpResponse};
use serde_json::json;

use crate::http::state::AppState;
use crate::readiness::Stage;

#[get("/health/live")]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "UP" }))
}

/// Ready once started (crate::readiness) and while Redis answers. Kafka's
/// state is reported but does not make the API unready: the outbox keeps
/// issuance safe while Kafka is away.
#[get("/health/ready")]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let stage = state.readiness.stage();
    if stage != Stage::Ready {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "STARTING", "waitingFor": stage.waiting_for() }));
    }
    let kafka = if state.issuance.publisher.is_healthy() { "UP" } else { "DEGRADED" };
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "UP", "redis": "UP", "kafka": kafka })),
        Err(err) => {
            tracing::warn!(error = %err, "not ready: Redis does not answer");
            HttpResponse::ServiceUnavailable().json(json!({ "status": "DOWN", "redis": "DOWN", "kafka": kafka }))
        }
    }
}

#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}
