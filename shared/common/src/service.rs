//! The seam between the composition root (the `geomatch` binary) and each service.
//!
//! The root builds [`Deps`] once per process: the settings, the index, the metrics
//! registry, the clock and, in Redis mode, the process's one [`Redis`] handle. Each
//! service's `build(&Deps, …)` returns a [`Part`]: its routes, its OpenAPI paths and the
//! background tasks it needs. The root mounts the parts of the selected services behind
//! one middleware stack and spawns their tasks; nothing else about a service is known
//! to it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use geomatch_index::Index;

use crate::clock::Clock;
use crate::config::{Mode, Settings};
use crate::health::{NotReady, Readiness};
use crate::metrics::Metrics;
use crate::redis::Redis;

/// What every service is built from. Cheap to clone.
#[derive(Clone)]
pub struct Deps {
    /// The validated settings of the whole process.
    pub settings: Arc<Settings>,
    /// The process's index of drivers and profiles (in Redis mode, a replica of Redis).
    pub index: Arc<Index>,
    /// The process's registry; each service registers its own series on it.
    pub metrics: Metrics,
    /// The process's Redis handle: `Some` exactly in Redis mode.
    pub redis: Option<Redis>,
    /// Where every time rule reads `now`.
    pub clock: Clock,
}

impl Deps {
    /// Validates `settings` and builds the shared pieces. The one place the mode decides
    /// what exists: Redis mode gets a Redis handle (connected lazily), embedded none.
    pub fn new(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        use anyhow::Context;
        settings.validate()?;
        let index = Arc::new(Index::new(settings.index).context("creating the index")?);
        let metrics = Metrics::new().context("registering metrics")?;
        let redis = match settings.mode {
            Mode::Embedded => None,
            Mode::Redis => {
                Some(Redis::connect(&settings.redis).context("creating the Redis handle")?)
            }
        };
        Ok(Deps {
            settings: Arc::new(settings),
            index,
            metrics,
            redis,
            clock,
        })
    }

    /// What `/health/ready` asks: always ready in embedded mode, Redis answering PING in
    /// Redis mode.
    pub fn readiness(&self) -> Readiness {
        match self.redis.clone() {
            None => Readiness::always(),
            Some(redis) => Readiness::new(move || {
                let redis = redis.clone();
                async move { redis.ping().await.map_err(|e| NotReady(e.to_string())) }
            }),
        }
    }
}

/// A background task of a service: runs until the server stops.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

type Routes = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// What a service contributes to a process: routes, OpenAPI paths and schemas, and
/// background tasks. Built once; its routes are registered on every HTTP worker.
#[derive(Default)]
pub struct Part {
    routes: Vec<Routes>,
    paths: serde_json::Map<String, serde_json::Value>,
    schemas: serde_json::Map<String, serde_json::Value>,
    tasks: Vec<(&'static str, Task)>,
}

impl Part {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds routes (called once per HTTP worker).
    pub fn routes(
        mut self,
        configure: impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static,
    ) -> Self {
        self.routes.push(Arc::new(configure));
        self
    }

    /// Adds OpenAPI paths and component schemas (JSON objects; anything else is ignored).
    pub fn openapi(mut self, paths: serde_json::Value, schemas: serde_json::Value) -> Self {
        if let serde_json::Value::Object(p) = paths {
            self.paths.extend(p);
        }
        if let serde_json::Value::Object(s) = schemas {
            self.schemas.extend(s);
        }
        self
    }

    /// Adds a background task, named for the log.
    pub fn task(
        mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.tasks.push((name, Box::pin(task)));
        self
    }

    /// Adds everything of `other` after what this part has (routes keep their order: an
    /// earlier resource wins a path both match).
    pub fn merge(mut self, other: Part) -> Self {
        self.routes.extend(other.routes);
        self.paths.extend(other.paths);
        self.schemas.extend(other.schemas);
        self.tasks.extend(other.tasks);
        self
    }

    /// The routes alone, shareable with every HTTP worker.
    pub fn mounted(&self) -> Mounted {
        Mounted(self.routes.clone().into())
    }

    /// The OpenAPI paths and schemas, to merge into the process's document.
    pub fn openapi_parts(
        &self,
    ) -> (
        &serde_json::Map<String, serde_json::Value>,
        &serde_json::Map<String, serde_json::Value>,
    ) {
        (&self.paths, &self.schemas)
    }

    /// Takes the background tasks out, to spawn them.
    pub fn take_tasks(&mut self) -> Vec<(&'static str, Task)> {
        std::mem::take(&mut self.tasks)
    }
}

/// The routes of the mounted parts, registered on each HTTP worker's app.
#[derive(Clone)]
pub struct Mounted(Arc<[Routes]>);

impl Mounted {
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        for routes in self.0.iter() {
            routes(cfg);
        }
    }
}

/// Runs `step` every `every` (delayed, never bursting after a stall), forever: the shape
/// of every periodic background task. `step` gets the clock's time.
pub async fn every<F, Fut>(every: Duration, clock: Clock, mut step: F)
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        step(clock.now()).await;
    }
}
