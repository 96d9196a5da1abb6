//! Liveness and readiness.

use actix_web::{get, HttpResponse};
use serde_json::json;

#[get("/health/live")]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "UP" }))
}
