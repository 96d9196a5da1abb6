//! Builds the writer from its settings and runs it until told to stop.

use std::future::Future;
use std::net::TcpListener;

use actix_web::{get, App, HttpResponse, HttpServer};
use anyhow::Context;
use secrecy::ExposeSecret;

use crate::config::Settings;

pub struct Application {
    listener: TcpListener,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let applied = coupon_infra::db::migrate(settings.database.url.expose_secret()).await?;
        if !applied.is_empty() {
            tracing::info!(?applied, "migrations applied");
        }
        if settings.kafka.create_topics {
            coupon_infra::kafka::ensure_topics(
                &settings.kafka,
                &[(&settings.kafka.topic, settings.kafka.partitions), (&settings.kafka.dlq_topic, 1)],
                1,
            )
            .await?;
        }
        let listener = TcpListener::bind(settings.writer.http.addr)
            .with_context(|| format!("binding writer.http.addr {}", settings.writer.http.addr))?;
        Ok(Self { listener })
    }

    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let addr = self.listener.local_addr()?;
        let server =
            HttpServer::new(|| App::new().service(live)).disable_signals().workers(1).listen(self.listener)?.run();
        let handle = server.handle();
        let serving = tokio::spawn(server);
        tracing::info!(%addr, "coupon-writer ready");
        shutdown.await;
        handle.stop(true).await;
        serving.await.context("joining the HTTP server")??;
        tracing::info!("coupon-writer stopped");
        Ok(())
    }
}

#[get("/health/live")]
async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "UP" }))
}
