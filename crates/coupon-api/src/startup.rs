//! Builds the service from its settings and runs it until told to stop.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::config::Settings;
use crate::issuer::Issuer;
use crate::metrics::Metrics;
use crate::outbox::{Acknowledger, Outbox};
use crate::publisher::Publisher;
use crate::relay::Relay;
use crate::state::AppState;
use crate::{prime, routes};

/// How long shutdown waits for Kafka to acknowledge what is queued; whatever is
/// left stays in the outbox for the next relay.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Application {
    listener: TcpListener,
    state: web::Data<AppState>,
    acknowledger: Acknowledger,
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let redis = coupon_infra::redis::pool(&settings.redis)?;
        let shared = coupon_infra::redis::shared_connection(&settings.redis)?;
        let issuer = Arc::new(Issuer::new(redis.clone(), shared, settings.redis.key_prefix.clone()));
        let outbox = Arc::new(Outbox::new(redis, settings.redis.key_prefix.clone()));
        let (acks, acknowledger) = Acknowledger::new(outbox.clone());
        let catalog = Catalog::new(coupon_infra::db::pool(&settings.database)?);
        let publisher = Arc::new(Publisher::new(&settings.kafka, metrics.clone(), acks.clone())?);
        if settings.kafka.client.create_topics {
            // Kafka may be down at start; issuance does not need it to be up.
            let kafka = settings.kafka.client.clone();
            tokio::spawn(async move {
                let topics = [(kafka.topic.as_str(), kafka.partitions), (kafka.dlq_topic.as_str(), 1)];
                if let Err(err) = coupon_infra::kafka::ensure_topics(&kafka, &topics, 1).await {
                    tracing::warn!(error = %err, "could not ensure the Kafka topics exist");
                }
            });
        }
        let listener = TcpListener::bind(settings.http.addr)
            .with_context(|| format!("binding http.addr {}", settings.http.addr))?;
        let state = web::Data::new(AppState {
            issuer,
            outbox,
            acks,
            publisher,
            catalog,
            metrics,
            admin_token: settings.admin.token.clone(),
            ack_timeout: Duration::from_millis(settings.kafka.ack_timeout_ms),
            mode: settings.issue.mode,
        });
        Ok(Self { listener, state, acknowledger, settings })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes; then stops accepting, finishes
    /// in-flight requests, stops the relay and flushes the producer.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let stop = CancellationToken::new();
        // Stopped last, after the producer flush has delivered what it can.
        let stop_acks = CancellationToken::new();
        let acknowledger = tokio::spawn(self.acknowledger.run(stop_acks.clone()));
        let relay = Relay {
            outbox: self.state.outbox.clone(),
            publisher: self.state.publisher.clone(),
            metrics: self.state.metrics.clone(),
            settings: self.settings.relay.clone(),
        };
        let relay = tokio::spawn(relay.run(stop.clone()));
        let sync = tokio::spawn(prime::run_sync(
            self.state.catalog.clone(),
            self.state.issuer.clone(),
            Duration::from_millis(self.settings.relay.sync_interval_ms),
            stop.clone(),
        ));

        let server = http_server(self.listener, self.state.clone(), self.settings.http.workers)?;
        let handle = server.handle();
        let serving = tokio::spawn(server);
        tracing::info!(%addr, "coupon-api ready");

        shutdown.await;
        handle.stop(true).await;
        serving.await.context("joining the HTTP server")??;
        stop.cancel();
        let _ = tokio::join!(relay, sync);
        let publisher = self.state.publisher.clone();
        let flushed = tokio::task::spawn_blocking(move || publisher.flush(FLUSH_TIMEOUT)).await?;
        stop_acks.cancel();
        acknowledger.await.context("joining the outbox acknowledger")?;
        match flushed {
            Ok(()) => tracing::info!("coupon-api stopped; producer flushed"),
            Err(err) => tracing::warn!(error = %err, "coupon-api stopped; unflushed events stay in the outbox"),
        }
        Ok(())
    }
}

/// Built outside `run_until` so that future stays `Send` (the builder is not).
fn http_server(listener: TcpListener, state: web::Data<AppState>, workers: usize) -> std::io::Result<Server> {
    let mut server = HttpServer::new(move || App::new().app_data(state.clone()).configure(routes::configure))
        .disable_signals()
        .shutdown_timeout(30);
    if workers > 0 {
        server = server.workers(workers);
    }
    Ok(server.listen(listener)?.run())
}
