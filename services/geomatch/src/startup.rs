//! The composition root: builds the shared pieces ([`Deps`]), asks each selected service
//! for its [`Part`] (routes, OpenAPI, background tasks), wires the services to each other
//! through ports, and runs the server with graceful shutdown.

use std::{future::Future, io, net::TcpListener, sync::Arc};

use actix_web::{dev::Server, middleware::from_fn, web, App, HttpServer};
use anyhow::Context;
use geomatch_common::ports::DriverPush;
use geomatch_common::service::Mounted;
use geomatch_common::{
    auth::Authenticator, error, health, http, metrics, telemetry, Clock, Deps, Metrics, Part,
    Readiness, Settings,
};
use geomatch_index::Index;
use location_ingest::Hub;

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
    fn includes_ingest(self) -> bool {
        matches!(self, Services::All | Services::LocationIngest)
    }

    fn includes_matching(self) -> bool {
        matches!(self, Services::All | Services::Matching)
    }

    fn includes_eta_pricing(self) -> bool {
        matches!(self, Services::All | Services::EtaPricing)
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
    auth: web::Data<Authenticator>,
    /// The mounted services' routes.
    routes: Mounted,
    openapi: web::Data<serde_json::Value>,
}

/// A bound, ready-to-run server.
pub struct Application {
    port: u16,
    server: Server,
    /// The services' background tasks (sweeps, followers, syncs); stopped with the server.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Builds the server with every service mounted (embedded mode).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Services::All).await
    }

    /// Builds the server with the selected services mounted, on the system clock.
    pub async fn build_with(settings: Settings, services: Services) -> anyhow::Result<Self> {
        Self::build_in(settings, services, Clock::System).await
    }

    /// Builds the shared pieces ([`Deps`]), the selected services' parts ([`compose`]), and
    /// binds `server.host:server.port` (port 0 picks a free port; see [`Self::port`]).
    /// Nothing is served until [`Self::run_until_stopped`] is awaited; `clock` is where
    /// every time rule of the process reads `now` (tests pass a manual one).
    pub async fn build_in(
        settings: Settings,
        services: Services,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let deps = Deps::new(settings, clock)?;
        if deps.settings.auth.uses_dev_secret() {
            tracing::warn!("auth.jwt_secret is the built-in development secret; set GEOMATCH__AUTH__JWT_SECRET outside development");
        }
        let mut part = compose(&deps, services)?;
        let background = part
            .take_tasks()
            .into_iter()
            .map(|(name, task)| {
                tracing::debug!(task = name, "starting background task");
                tokio::spawn(task)
            })
            .collect();
        let (port, server) = serve(&deps, &part)?;
        tracing::info!(port, mode = ?deps.settings.mode, ?services, "listening");
        Ok(Self {
            port,
            server,
            background,
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
        let background = self.background;
        tokio::select! {
            result = &mut server => {
                background.iter().for_each(tokio::task::JoinHandle::abort);
                return result;
            }
            () = shutdown => {}
        }
        tracing::info!("stop requested: refusing new connections, finishing in-flight requests");
        let (result, ()) = tokio::join!(server, handle.stop(true));
        background.iter().for_each(tokio::task::JoinHandle::abort);
        tracing::info!("stopped");
        result
    }
}

/// `GET /openapi.json`
async fn openapi(doc: web::Data<serde_json::Value>) -> web::Json<serde_json::Value> {
    web::Json(doc.get_ref().clone())
}

/// The selected services' parts, each given what it needs of the others through ports.
/// Every process builds the pricing engine (matching prices and ranks with it, ingest
/// feeds it moves) and keeps its index current (in Redis mode, by following Redis); a
/// service's routes and own tasks exist only where it is selected.
fn compose(deps: &Deps, services: Services) -> anyhow::Result<Part> {
    let (pricing, mut part) = eta_pricing::engine(deps)?;
    let hub = services.includes_ingest().then(|| Arc::new(Hub::default()));
    if services.includes_matching() {
        // First: matching's `/v1/drivers/nearby` must win over ingest's
        // `/v1/drivers/{driver_id}`.
        let ports = matching::Ports {
            pricing: pricing.clone(),
            model: pricing.model(),
            drivers: hub.clone().map(|h| h as Arc<dyn DriverPush>),
        };
        part = part.merge(matching::build(deps, ports)?);
    }
    part = match hub {
        Some(hub) => {
            let ports = location_ingest::Ports {
                moves: Some(pricing.clone()),
                engagement: matching::engagement(deps),
                hub: hub.clone(),
            };
            part.merge(location_ingest::build(deps, ports)?)
                .merge(matching::offer_relay(deps, hub))
        }
        None => part.merge(location_ingest::follow(deps)?),
    };
    if services.includes_eta_pricing() {
        part = part.merge(eta_pricing::build(deps, pricing));
    }
    Ok(part)
}

/// Binds the listener and builds the HTTP server: the parts' routes behind one middleware
/// stack (request id → metrics → body limit → problem+json).
fn serve(deps: &Deps, part: &Part) -> anyhow::Result<(u16, Server)> {
    let shared = Shared {
        index: web::Data::from(deps.index.clone()),
        metrics: deps.metrics.clone(),
        readiness: deps.readiness(),
        max_body_bytes: deps.settings.server.max_body_bytes,
        auth: web::Data::new(Authenticator::new(&deps.settings.auth)),
        openapi: web::Data::new(openapi_document(part)),
        routes: part.mounted(),
    };
    let server = &deps.settings.server;
    let listener = TcpListener::bind((server.host.as_str(), server.port))
        .with_context(|| format!("binding {}:{}", server.host, server.port))?;
    let address = listener.local_addr()?;
    let mut http_server = HttpServer::new(move || {
        let shared = shared.clone();
        App::new()
            .app_data(shared.index.clone())
            .app_data(shared.auth.clone())
            .app_data(shared.openapi.clone())
            .service(web::resource("/openapi.json").route(web::get().to(openapi)))
            .configure(|cfg| http::configure(cfg, shared.max_body_bytes))
            .configure(|cfg| health::configure(cfg, shared.readiness.clone()))
            .configure(|cfg| metrics::configure(cfg, shared.metrics.clone()))
            .configure(|cfg| shared.routes.configure(cfg))
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
    Ok((address.port(), http_server.run()))
}

/// The OpenAPI 3 document of the mounted routes.
fn openapi_document(part: &Part) -> serde_json::Value {
    let (paths, schemas) = part.openapi_parts();
    let mut schemas = schemas.clone();
    schemas.insert("Problem".into(), serde_json::json!({
        "type": "object", "description": "RFC 9457 problem details, application/problem+json",
        "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                       "detail": {"type": "string"}, "code": {"type": "string", "description": "stable machine-readable code"}}
    }));
    serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "geomatch", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
        }
    })
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
    async fn invalid_settings_are_refused_before_binding() {
        let mut settings = Settings::default();
        settings.server.max_body_bytes = 0;

        assert!(Application::build(settings).await.is_err());
    }
}
