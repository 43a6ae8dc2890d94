//! location-ingest: owns the driver location push API. Drivers (and people-nearby
//! profiles) report where they are every few seconds; this service authenticates,
//! validates and orders each report and keeps the shared index (and, in Redis mode, the
//! shared state in Redis) current.
//!
//! # Front door
//! [`build`] (a process serving ingest: routes, OpenAPI, housekeeping, and in Redis mode
//! the follower) and [`follow`] (a process that does not: only the follower); [`Hub`],
//! drivers' WebSockets, through which dispatch pushes offers
//! ([`geomatch_common::ports::DriverPush`]).
//!
//! # Layout
//! - `report`: the report body and its validation.
//! - `ingest`: the core (`Ingest`): validate, let the store judge and write, count, tell
//!   the move observer, map views. Names no mode.
//! - `store/`: the mode seam and its contract (`mod.rs`): `memory.rs` (embedded: index +
//!   rate limiter), `redis.rs` (Lua scripts, keys); `contract.rs` tests both.
//! - `follower`: Redis mode: this process's index follows Redis.
//! - `model`: shared small types (`Outcome`, `Verdict`, `IngestError`, bodies, views).
//! - `ratelimit`: per-driver token buckets (memory store).
//! - `routes`, `stream`: thin HTTP and WebSocket adapters; `openapi`; `metrics`.
//!
//! Routes are registered as one `web::resource` per path holding all its methods (a wrong
//! method then gets 405 with `Allow`).

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use anyhow::Context;
use geomatch_common::ports::{Engagement, MoveObserver};
use geomatch_common::service::every;
use geomatch_common::{Deps, Part, ServiceInfo};
use geomatch_index::{Filter, Kind};

mod follower;
mod ingest;
mod metrics;
mod model;
mod openapi;
mod ratelimit;
mod report;
mod routes;
mod store;
mod stream;

pub use stream::Hub;

use follower::Follower;
use ingest::Ingest;
use store::Store;

/// The service's name, as in `--service location-ingest` and its info route.
pub const NAME: &str = "location-ingest";

/// What ingest needs of the other services.
pub struct Ports {
    /// Told of every accepted move of a driver (eta-pricing's speed learner).
    pub moves: Option<Arc<dyn MoveObserver>>,
    /// Dispatch's hold on drivers (matching): an engaged driver cannot change its own
    /// status, and its state shows the engagement.
    pub engagement: Arc<dyn Engagement>,
    /// The drivers' WebSockets of this process (shared with dispatch, which pushes offers).
    pub hub: Arc<Hub>,
}

/// Ingest served by this process: its routes and OpenAPI, the housekeeping task (every
/// second: silent drivers go offline; in Redis mode, once a minute, profiles not seen for
/// `people.not_seen_for_s` leave the shared live set) and, in Redis mode, the follower of
/// this process's index (skipping this process's own writes).
pub fn build(deps: &Deps, ports: Ports) -> anyhow::Result<Part> {
    let metrics =
        metrics::IngestMetrics::new(&deps.metrics).context("registering ingest metrics")?;
    let store = Store::new(deps, metrics.clone());
    let follower = Follower::of(deps, store.writer())?;
    let ingest = Arc::new(Ingest::new(
        store,
        ingest::Parts {
            index: deps.index.clone(),
            settings: deps.settings.ingest.clone(),
            profile_ttl_ms: (deps.settings.people.not_seen_for_s * 1000) as i64,
            metrics,
            clock: deps.clock.clone(),
            moves: ports.moves,
            engagement: ports.engagement,
        },
    ));
    let routes = {
        let ingest = web::Data::from(ingest.clone());
        let hub = web::Data::from(ports.hub);
        move |cfg: &mut web::ServiceConfig| configure(cfg, ingest.clone(), hub.clone())
    };
    let housekeeping = every(Duration::from_secs(1), deps.clock.clone(), move |now| {
        let ingest = ingest.clone();
        async move { ingest.housekeep(now).await }
    });
    let part = Part::new()
        .routes(routes)
        .openapi(openapi::paths(), openapi::schemas())
        .task("ingest housekeeping", housekeeping);
    Ok(match follower {
        Some(f) => part.task("replica follower", f.run()),
        None => part,
    })
}

/// For a process that does not serve ingest: its index must still follow Redis (the
/// follower task, Redis mode) and let silent drivers go (every tenth of the TTL, at least
/// every second, as ingest's own sweep does: a replica never offers a ride to a driver
/// whose `offline` event it missed).
pub fn follow(deps: &Deps) -> anyhow::Result<Part> {
    let index = deps.index.clone();
    let ttl_ms = (deps.settings.ingest.ttl_s * 1000) as i64;
    let drivers = Filter::any().kind(Kind::Driver);
    let every_ms = (deps.settings.ingest.ttl_s * 100).max(1000);
    let expiry = every(
        Duration::from_millis(every_ms),
        deps.clock.clone(),
        move |now| {
            index.evict_older_than_where(now - ttl_ms, &drivers);
            std::future::ready(())
        },
    );
    let part = Part::new().task("local driver expiry", expiry);
    Ok(match Follower::of(deps, None)? {
        Some(f) => part.task("replica follower", f.run()),
        None => part,
    })
}

/// Registers this service's routes, with `ingest` and `hub` as their shared state.
fn configure(cfg: &mut web::ServiceConfig, ingest: web::Data<Ingest>, hub: web::Data<Hub>) {
    cfg.app_data(ingest)
        .app_data(hub)
        .service(web::resource("/v1/location-ingest/info").route(web::get().to(info)))
        .service(
            web::resource("/v1/drivers/{driver_id}/location")
                .route(web::put().to(routes::put_location)),
        )
        .service(web::resource("/v1/locations/batch").route(web::post().to(routes::post_batch)))
        .service(
            web::resource("/v1/profiles/{profile_id}/location")
                .route(web::put().to(routes::put_profile_location)),
        )
        .service(
            web::resource("/v1/drivers/{driver_id}/status")
                .route(web::put().to(routes::put_status)),
        )
        .service(web::resource("/v1/drivers/{driver_id}").route(web::get().to(routes::get_driver)))
        .service(
            web::resource("/v1/drivers/{driver_id}/stream").route(web::get().to(stream::connect)),
        );
}

/// `GET /v1/location-ingest/info`: which service answered, which build.
async fn info() -> web::Json<ServiceInfo> {
    web::Json(ServiceInfo::new(NAME, env!("CARGO_PKG_VERSION")))
}

#[cfg(test)]
mod tests {
    use geomatch_common::{Clock, Settings};
    use geomatch_index::{EntryId, Position, Update};

    use super::*;

    fn put(deps: &Deps, id: &str, kind: Kind, at_ms: i64) {
        deps.index
            .upsert(&Update::moved(
                EntryId::parse(id).unwrap(),
                kind,
                Position::new(37.5, 127.0).unwrap(),
                at_ms,
            ))
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_not_serving_ingest_still_lets_silent_drivers_go() {
        let clock = Clock::manual(1_000_000);
        let mut settings = Settings::default();
        settings.ingest.ttl_s = 30;
        let deps = Deps::new(settings, clock.clone()).unwrap();
        put(&deps, "silent", Kind::Driver, 1_000_000);
        put(&deps, "profile", Kind::Profile, 1_000_000);
        let tasks: Vec<_> = follow(&deps)
            .unwrap()
            .take_tasks()
            .into_iter()
            .map(|(_, t)| tokio::spawn(t))
            .collect();

        clock.advance(29_000);
        put(&deps, "talking", Kind::Driver, clock.now());
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(deps.index.len(), 3, "nobody is past the TTL yet");

        clock.advance(2_000);
        tokio::time::sleep(Duration::from_secs(4)).await;
        let left = |id: &str| deps.index.get(&EntryId::parse(id).unwrap()).is_some();
        assert!(!left("silent"), "31 s silent with a 30 s TTL: gone");
        assert!(left("talking"), "heard 2 s ago: stays");
        assert!(
            left("profile"),
            "profiles leave on people nearby's clock, not this one"
        );
        tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}
