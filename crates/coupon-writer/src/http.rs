//! The small HTTP listener: liveness, readiness and metrics.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{get, web, App, HttpResponse, HttpServer};
use serde_json::json;

use crate::metrics::Metrics;

/// Whether the last batch attempt reached the database. A writer that is
/// retrying is alive but not ready.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn new(ready: bool) -> Self {
        Self(Arc::new(AtomicBool::new(ready)))
    }

    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

struct State {
    metrics: Metrics,
    readiness: Readiness,
}

pub fn server(listener: TcpListener, metrics: Metrics, readiness: Readiness) -> std::io::Result<Server> {
    let state = web::Data::new(State { metrics, readiness });
    let server = HttpServer::new(move || {
        App::new().app_data(state.clone()).service(health_live).service(health_ready).service(metrics_text)
    })
    .disable_signals()
    .workers(1)
    .listen(listener)?
    .run();
    Ok(server)
}

#[get("/health/live")]
async fn health_live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "UP" }))
}

#[get("/health/ready")]
async fn health_ready(state: web::Data<State>) -> HttpResponse {
    if state.readiness.get() {
        HttpResponse::Ok().json(json!({ "status": "UP" }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({ "status": "DOWN", "reason": "retrying a batch" }))
    }
}

#[get("/metrics")]
async fn metrics_text(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}
