//! matching: ride dispatch and people nearby. A rider's request is offered to the nearest
//! suitable available drivers one at a time, best first, until one accepts.
//!
//! # Layout
//! - This file: the front door. [`build`] (routes, OpenAPI, background tasks),
//!   [`engagement`] (dispatch's hold on drivers, for location ingest), [`offer_relay`]
//!   (Redis mode: offers to the drivers connected to this process).
//! - `dispatch.rs`: `Dispatcher`, the offer cycle and its invariants (transport-free);
//!   `assign.rs`: candidate ranking, batch assignment (Kuhn–Munkres), engagement hints.
//! - `book/`: the mode seam. `Book` (`mod.rs`, with the contract both books keep),
//!   `model.rs` (rides, offers, claims), `memory.rs` (embedded), `redis.rs` (Lua scripts,
//!   the key layout), `contract.rs` (the same cases against both).
//! - `ride.rs`: ids, ride states, the request body, views, errors with their codes.
//! - `events.rs`: Redis mode's pub/sub (published offers, engagement announcements).
//! - `routes.rs` (thin HTTP, the route table), `openapi.rs`, `metrics.rs`.
//! - [`people`]: people nearby (profiles, recommendations, swipes, matches), with its own
//!   front door, `people::build`.
//!
//! Modules point one way: `ride` ← `book` ← `assign` ← `dispatch` ← `routes`;
//! `events` uses `book` and `assign`; this file wires them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use geomatch_common::ports::{DriverPush, Engagement, TripPricing};
use geomatch_common::service::every;
use geomatch_common::{Deps, Part};
use geomatch_eta::EtaModel;

mod assign;
mod book;
mod dispatch;
mod events;
mod metrics;
mod openapi;
pub mod people;
mod ride;
mod routes;

use book::Book;
use dispatch::{Dispatcher, Wiring};

pub use routes::NAME;

/// What matching needs of the other services.
pub struct Ports {
    /// Quotes, fares and demand (eta-pricing).
    pub pricing: Arc<dyn TripPricing>,
    /// Ranks candidates by pickup ETA (eta-pricing's learned-speed model).
    pub model: Arc<dyn EtaModel>,
    /// The drivers' live connections (location ingest's hub), where embedded mode pushes
    /// offers; Redis mode publishes them instead (see [`offer_relay`]).
    pub drivers: Option<Arc<dyn DriverPush>>,
}

/// Matching for a process: dispatch's routes and OpenAPI, then people nearby's; tasks:
/// the dispatch sweep every `matching.sweep_interval_ms` (offer timeouts, scheduled rides,
/// rides left without an offer), batched assignment every `matching.batch_window_ms` when
/// above 0, and in Redis mode the follower of other replicas' driver engagement.
pub fn build(deps: &Deps, ports: Ports) -> anyhow::Result<Part> {
    let settings = &deps.settings.matching;
    let metrics =
        metrics::MatchingMetrics::new(&deps.metrics).context("registering matching metrics")?;
    let book = Book::new(
        deps.index.clone(),
        deps.redis.clone(),
        metrics.redis_seconds.clone(),
    );
    let push = match &deps.redis {
        Some(redis) => {
            Some(Arc::new(events::OfferPublisher::new(redis.clone())) as Arc<dyn DriverPush>)
        }
        None => ports.drivers,
    };
    let dispatcher = Arc::new(Dispatcher::new(
        deps.index.clone(),
        settings.clone(),
        deps.settings.ingest.vehicle_classes.clone(),
        deps.clock.clone(),
        Wiring {
            book,
            metrics,
            pricing: ports.pricing,
            eta: ports.model,
            push,
        },
    ));

    let sweeps = periodic(
        &dispatcher,
        deps,
        settings.sweep_interval_ms,
        "dispatch sweep failed; retrying",
        |d, now| async move { d.sweep(now).await },
    );
    let routes = dispatcher.clone();
    let mut part = Part::new()
        .routes(move |cfg| routes::configure(cfg, routes.clone()))
        .openapi(openapi::paths(), openapi::schemas())
        .task("dispatch sweep", sweeps);
    if settings.batch_window_ms > 0 {
        let batches = periodic(
            &dispatcher,
            deps,
            settings.batch_window_ms,
            "batch assignment failed; retrying",
            |d, now| async move { d.batch(now).await },
        );
        part = part.task("dispatch batches", batches);
    }
    if let Some(redis) = &deps.redis {
        let follow = events::follow_hints(redis.clone(), dispatcher.hints(), deps.clock.clone());
        part = part.task("dispatch engagement hints", follow);
    }
    Ok(part.merge(people::build(deps)?))
}

/// Runs `step` on the dispatcher every `interval_ms` of the process's clock, logging a
/// failure as `failed` and trying again next time.
fn periodic<F, Fut>(
    dispatcher: &Arc<Dispatcher>,
    deps: &Deps,
    interval_ms: u64,
    failed: &'static str,
    step: F,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    F: Fn(Arc<Dispatcher>, i64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<usize, ride::DispatchError>> + Send + 'static,
{
    let dispatcher = dispatcher.clone();
    every(
        Duration::from_millis(interval_ms),
        deps.clock.clone(),
        move |now| {
            let run = step(dispatcher.clone(), now);
            async move {
                if let Err(e) = run.await {
                    tracing::warn!(error = %e, "{failed}");
                }
            }
        },
    )
}

/// Dispatch's hold on drivers, for location ingest: in Redis mode read from dispatch's
/// driver lock; embedded, `None` (the index status is the lock there, and ingest's
/// compare-and-set honours it).
pub fn engagement(deps: &Deps) -> Arc<dyn Engagement> {
    book::engagement(deps.redis.clone())
}

/// Redis mode: a task delivering the offers any replica publishes to the drivers connected
/// to this process through `drivers`. Empty in embedded mode (offers go to `drivers`
/// directly, see [`Ports::drivers`]).
pub fn offer_relay(deps: &Deps, drivers: Arc<dyn DriverPush>) -> Part {
    match &deps.redis {
        Some(redis) => Part::new().task(
            "dispatch offer relay",
            events::relay_offers(redis.clone(), drivers),
        ),
        None => Part::new(),
    }
}
