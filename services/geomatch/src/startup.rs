//! Building and running the server.

use std::{future::Future, io, net::TcpListener, sync::Arc};

use actix_web::{dev::Server, middleware::from_fn, web, App, HttpServer};
use anyhow::{bail, Context};
use geomatch_common::{
    error, health, http, metrics, telemetry, Metrics, Mode, Readiness, Settings,
};
use geomatch_index::Index;

/// Which services' routes a process mounts (`--service`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Services {
    /// Every service in one process: embedded mode.
    #[default]
    All,
    /// The driver location push API.
    LocationIngest,
    /// Ride dispatch and people nearby.
    Matching,
    /// ETA, quotes and surge.
    EtaPricing,
}

impl Services {
    /// Registers the selected services' routes.
    fn configure(self, cfg: &mut web::ServiceConfig) {
        match self {
            Services::All => {
                location_ingest::configure(cfg);
                matching::configure(cfg);
                eta_pricing::configure(cfg);
            }
            Services::LocationIngest => location_ingest::configure(cfg),
            Services::Matching => matching::configure(cfg),
            Services::EtaPricing => eta_pricing::configure(cfg),
        }
    }
}

/// State every HTTP worker gets a handle on. Cloned once per worker thread.
#[derive(Clone)]
struct Shared {
    /// The index of drivers and profiles; handlers take it as `web::Data<Index>`.
    index: web::Data<Index>,
    /// The process's registry; services register their own metrics on it.
    metrics: Metrics,
    /// What `/health/ready` asks.
    readiness: Readiness,
    max_body_bytes: usize,
    services: Services,
}

/// A bound, ready-to-run server.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Builds the server with every service mounted (embedded mode).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Services::All).await
    }

    /// Builds the server with the selected services mounted: creates the shared state and
    /// binds `server.host:server.port` (port 0 picks a free port; see [`Self::port`]).
    /// Nothing is served until [`Self::run_until_stopped`] is awaited.
    pub async fn build_with(settings: Settings, services: Services) -> anyhow::Result<Self> {
        settings.validate()?;
        if settings.mode == Mode::Redis {
            bail!(
                "mode \"redis\" is not available in this build yet: state is kept in-process \
                 only; run with mode = \"embedded\" (GEOMATCH__MODE=embedded)"
            );
        }
        if settings.auth.uses_dev_secret() {
            tracing::warn!("auth.jwt_secret is the built-in development secret; set GEOMATCH__AUTH__JWT_SECRET outside development");
        }

        let index = Arc::new(Index::new(settings.index).context("creating the index")?);
        let shared = Shared {
            index: web::Data::from(index),
            metrics: Metrics::new().context("registering metrics")?,
            readiness: Readiness::always(),
            max_body_bytes: settings.server.max_body_bytes,
            services,
        };

        let server = &settings.server;
        let listener = TcpListener::bind((server.host.as_str(), server.port))
            .with_context(|| format!("binding {}:{}", server.host, server.port))?;
        let address = listener.local_addr()?;

        let mut http_server = HttpServer::new(move || {
            let shared = shared.clone();
            App::new()
                .app_data(shared.index.clone())
                .configure(|cfg| http::configure(cfg, shared.max_body_bytes))
                .configure(|cfg| health::configure(cfg, shared.readiness.clone()))
                .configure(|cfg| metrics::configure(cfg, shared.metrics.clone()))
                .configure(|cfg| shared.services.configure(cfg))
                // Outermost last: the request id and span cover everything, metrics see
                // the final status, and every error leaves as problem+json.
                .wrap(from_fn(error::problem_responses))
                .wrap(http::BodyLimit::new(shared.max_body_bytes))
                .wrap(shared.metrics.middleware())
                .wrap(from_fn(telemetry::request_context))
        })
        .listen(listener)?
        // Signals are handled in `run_until_stopped`, so tests can stop the server too.
        .disable_signals()
        .shutdown_timeout(server.shutdown_timeout_s);
        if server.workers > 0 {
            http_server = http_server.workers(server.workers);
        }

        tracing::info!(
            %address,
            mode = ?settings.mode,
            ?services,
            workers = server.workers,
            "listening"
        );
        Ok(Self {
            port: address.port(),
            server: http_server.run(),
        })
    }

    /// The port actually bound (useful when the configured port was 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or Ctrl-C, then stops gracefully.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` resolves, then stops accepting connections and gives
    /// in-flight requests up to `server.shutdown_timeout_s` to finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let mut server = self.server;
        let handle = server.handle();
        tokio::select! {
            result = &mut server => return result,
            () = shutdown => {}
        }
        tracing::info!("stop requested: refusing new connections, finishing in-flight requests");
        let (result, ()) = tokio::join!(server, handle.stop(true));
        tracing::info!("stopped");
        result
    }
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes sends before killing a pod).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn redis_mode_is_refused_until_it_is_implemented() {
        let mut settings = Settings {
            mode: Mode::Redis,
            ..Settings::default()
        };
        settings.auth.jwt_secret =
            geomatch_common::config::Secret::new("a-production-secret-of-at-least-32-bytes");
        settings.server.port = 0;
        let message = Application::build(settings)
            .await
            .err()
            .expect("refused")
            .to_string();

        assert!(message.contains("redis"), "{message}");
    }

    #[tokio::test]
    async fn invalid_settings_are_refused_before_binding() {
        let mut settings = Settings::default();
        settings.server.max_body_bytes = 0;

        assert!(Application::build(settings).await.is_err());
    }
}
