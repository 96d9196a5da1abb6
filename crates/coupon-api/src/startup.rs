//! Builds the service from its settings and runs it until told to stop.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};

use actix_web::{App, HttpServer};
use anyhow::Context;

use crate::config::Settings;
use crate::routes::health;

pub struct Application {
    listener: TcpListener,
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.http.addr)
            .with_context(|| format!("binding http.addr {}", settings.http.addr))?;
        Ok(Self { listener, settings })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then drains in-flight requests.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let mut server = HttpServer::new(|| App::new().service(health::live))
            .disable_signals()
            .listen(self.listener)?;
        if self.settings.http.workers > 0 {
            server = server.workers(self.settings.http.workers);
        }
        let server = server.run();
        let handle = server.handle();
        tracing::info!(%addr, "coupon-api ready");
        let serving = tokio::spawn(server);
        shutdown.await;
        handle.stop(true).await;
        serving.await.context("joining the HTTP server")??;
        tracing::info!("coupon-api stopped");
        Ok(())
    }
}
