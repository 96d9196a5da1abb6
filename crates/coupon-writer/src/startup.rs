//! Builds the writer from its settings and runs it until told to stop.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::Context;
use coupon_infra::kafka::GroupProgress;
use coupon_infra::shutdown::Essential;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::consumer::Writer;
use crate::http::{self, Readiness};
use crate::lag;
use crate::metrics::Metrics;

pub struct Application {
    listener: TcpListener,
    writer: Writer,
    /// Reads the group's lag from the broker for `coupon_writer_consumer_lag`.
    progress: GroupProgress,
    lag_interval: Duration,
    metrics: Metrics,
    readiness: Readiness,
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
            )
            .await?;
        }
        let pool = coupon_infra::db::pool(&settings.database)?;
        let metrics = Metrics::new();
        // The migrations just ran, so the database answered.
        let readiness = Readiness::new(true);
        let writer = Writer::new(&settings, pool, metrics.clone(), readiness.clone())
            .context("creating the Kafka consumer and producer")?;
        let listener = TcpListener::bind(settings.writer.http.addr)
            .with_context(|| format!("binding writer.http.addr {}", settings.writer.http.addr))?;
        let progress = GroupProgress::new(&settings.kafka, &settings.writer.group)?;
        let lag_interval = settings.writer.stats_interval;
        Ok(Self { listener, writer, progress, lag_interval, metrics, readiness })
    }

    /// The address of the HTTP listener, with the port chosen when it was 0.
    pub fn http_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Consumes until `shutdown` completes; then finishes the current batch,
    /// commits it, leaves the group and stops the HTTP listener. If the
    /// consumer, the HTTP server or the lag reporter ends first, it stops
    /// the same way and fails, so the process exits non-zero and is restarted.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let addr = self.http_addr();
        let server = http::server(self.listener, self.metrics.clone(), self.readiness)?;
        let handle = server.handle();
        let mut essential = Essential::default();
        essential.spawn("the HTTP server", server);
        tracing::info!(%addr, "coupon-writer ready");

        let stop = CancellationToken::new();
        essential.spawn("the lag reporter", lag::report(self.progress, self.metrics, self.lag_interval, stop.clone()));
        essential.spawn("the consumer", self.writer.run(stop.clone()));
        let ended_early = essential.until_shutdown_or_ended(shutdown).await;
        // The consumer finishes and commits its batch, then leaves the group.
        stop.cancel();
        handle.stop(true).await;
        let joined = essential.join().await;
        match ended_early {
            Some(ended) => anyhow::bail!("{} ended unexpectedly", ended.task),
            None => {
                tracing::info!("coupon-writer stopped");
                joined
            }
        }
    }
}
