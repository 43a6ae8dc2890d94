//! The rules of location ingest, independent of HTTP: validate, rate-limit, order, check
//! plausibility, store. HTTP handlers and the WebSocket both call [`Ingest`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use geomatch_common::config::IngestSettings;
use geomatch_common::error::ErrorCode;
use geomatch_index::{
    Attributes, Entry, EntryId, Filter, IdError, Index, IndexError, Kind, Position, Previous,
    Status, Update, Upserted,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::metrics::IngestMetrics;
use crate::ratelimit::{Limit, RateLimiter};
use crate::report::{LocationBody, Report, ReportError};
use crate::store::{RedisStore, StoreError, StoreVerdict};

/// What happened to one accepted-for-processing report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The driver moved.
    Accepted,
    /// Older than what is stored (by seq, else device time); ignored.
    Stale,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("invalid driver id: {0}")]
    Id(#[from] IdError),
    #[error("too many updates for this driver; retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    #[error("the jump from the last position implies {speed_kmh:.0} km/h (at most {max_kmh:.0})")]
    ImplausibleJump { speed_kmh: f64, max_kmh: f64 },
    #[error("no driver {0}")]
    NotFound(EntryId),
    #[error("driver {0} has no position yet: push a location before going online")]
    LocationRequired(EntryId),
    #[error("the driver is {0:?}: offered or on a ride, the status is dispatch's to change")]
    Engaged(Status),
    #[error("vehicle class {0:?} is not one of the configured classes")]
    UnknownClass(String),
    #[error("seats must be 1..=16, got {0}")]
    Seats(u8),
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
    #[error("batch of {got} updates is above the limit of {max}")]
    BatchTooLarge { got: usize, max: usize },
    #[error("a batch needs at least one update")]
    EmptyBatch,
}

impl ErrorCode for IngestError {
    fn status(&self) -> StatusCode {
        match self {
            IngestError::Report(e) => e.status(),
            IngestError::Id(_) => StatusCode::BAD_REQUEST,
            IngestError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngestError::ImplausibleJump { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            IngestError::NotFound(_) => StatusCode::NOT_FOUND,
            IngestError::LocationRequired(_) | IngestError::Engaged(_) => StatusCode::CONFLICT,
            IngestError::UnknownClass(_) | IngestError::Seats(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            IngestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::EmptyBatch => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
    fn code(&self) -> &'static str {
        match self {
            IngestError::Report(e) => e.code(),
            IngestError::Id(_) => "invalid_driver_id",
            IngestError::RateLimited { .. } => "rate_limited",
            IngestError::ImplausibleJump { .. } => "implausible_jump",
            IngestError::NotFound(_) => "driver_not_found",
            IngestError::LocationRequired(_) => "location_required",
            IngestError::Engaged(_) => "driver_engaged",
            IngestError::UnknownClass(_) => "unknown_vehicle_class",
            IngestError::Seats(_) => "invalid_seats",
            IngestError::Unavailable(_) => "store_unavailable",
            IngestError::BatchTooLarge { .. } => "batch_too_large",
            IngestError::EmptyBatch => "empty_batch",
        }
    }
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        IngestError::Unavailable(e.to_string())
    }
}

/// Something that happened to a driver, for other services and the driver's own stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DriverEvent {
    /// Not heard from within the TTL: left the index.
    WentOffline {
        driver_id: String,
        last_seen_ms: i64,
    },
}

/// Body of `PUT /v1/drivers/{id}/status`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    /// `available` (online) or `offline`.
    pub status: OnlineStatus,
    /// A configured vehicle class name (for example `standard`, `xl`); required to go online.
    #[serde(default)]
    pub vehicle_class: Option<String>,
    #[serde(default)]
    pub seats: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnlineStatus {
    Available,
    Offline,
}

/// What `GET /v1/drivers/{id}` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverView {
    pub driver_id: String,
    pub lat: f64,
    pub lng: f64,
    pub h3_cell: String,
    pub status: Status,
    pub vehicle_class: String,
    pub seats: u8,
    pub seq: Option<u64>,
    pub ts_ms: Option<i64>,
    pub updated_at_ms: i64,
}

/// Server clock, ms since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where accepted state is written beyond the in-process index.
pub enum Store {
    /// The in-process index is the truth.
    Embedded,
    /// Redis is the truth; the index is this process's replica of it.
    Redis(std::sync::Arc<RedisStore>),
}

/// Location ingest: shared by every handler of the service.
pub struct Ingest {
    index: Arc<Index>,
    store: Store,
    limiter: RateLimiter<EntryId>,
    settings: IngestSettings,
    metrics: IngestMetrics,
    events: broadcast::Sender<DriverEvent>,
    /// Told of every accepted move (the ETA speed learner listens); see
    /// [`Ingest::set_move_observer`].
    move_observer: Option<MoveObserver>,
    /// Server time of the last expiry sweep.
    last_sweep_ms: std::sync::atomic::AtomicI64,
}

/// Observes accepted moves: the driver, its previous state, its new position and the
/// seconds between the two (device clocks when both reports have one, else server receive
/// times). Called after the index is updated, outside its locks; keep it cheap.
pub type MoveObserver = Arc<dyn Fn(&EntryId, &Previous, &Position, f64) + Send + Sync>;

impl Ingest {
    pub fn new(
        index: Arc<Index>,
        store: Store,
        settings: IngestSettings,
        metrics: IngestMetrics,
    ) -> Self {
        let limiter = RateLimiter::new(Limit {
            rate_per_s: settings.rate_per_s,
            burst: settings.burst,
        });
        let (events, _) = broadcast::channel(1024);
        Ingest {
            index,
            store,
            limiter,
            settings,
            metrics,
            events,
            move_observer: None,
            last_sweep_ms: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Sets the observer told of every accepted move (set once, before serving).
    pub fn set_move_observer(&mut self, observer: MoveObserver) {
        self.move_observer = Some(observer);
    }

    pub fn settings(&self) -> &IngestSettings {
        &self.settings
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    pub fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    /// Driver events (offline by expiry, …) as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<DriverEvent> {
        self.events.subscribe()
    }

    /// One location report for one driver.
    pub async fn push(&self, id: &EntryId, body: &LocationBody) -> Result<Outcome, IngestError> {
        self.push_as(Kind::Driver, id, body).await
    }

    /// One location report for one driver or people-nearby profile: the same rules
    /// (validation, rate limit, ordering, plausibility) for both kinds.
    pub async fn push_as(
        &self,
        kind: Kind,
        id: &EntryId,
        body: &LocationBody,
    ) -> Result<Outcome, IngestError> {
        // One path for one report and many: a single report is a batch of one.
        self.push_many_as(kind, &[(id.clone(), body.clone())])
            .await
            .pop()
            .unwrap_or(Err(IngestError::Unavailable("no verdict".into())))
    }

    /// Many driver reports at once (a batch request): one result per report, in order. In
    /// Redis mode the valid ones go to Redis in one pipeline.
    pub async fn push_many(
        &self,
        reports: &[(EntryId, LocationBody)],
    ) -> Vec<Result<Outcome, IngestError>> {
        self.push_many_as(Kind::Driver, reports).await
    }

    /// [`Ingest::push_many`] for entries of `kind`.
    pub async fn push_many_as(
        &self,
        kind: Kind,
        reports: &[(EntryId, LocationBody)],
    ) -> Vec<Result<Outcome, IngestError>> {
        let now = now_ms();
        let mut results: Vec<Option<Result<Outcome, IngestError>>> =
            Vec::with_capacity(reports.len());
        let mut valid = Vec::new();
        let mut slots = Vec::new();
        for (i, (id, body)) in reports.iter().enumerate() {
            match body.validate(now, self.settings.max_future_ms) {
                Ok(r) => {
                    valid.push((id.clone(), r));
                    slots.push(i);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e.into()))),
            }
        }
        match &self.store {
            Store::Embedded => {
                for ((id, r), i) in valid.iter().zip(&slots) {
                    let result = self
                        .limiter
                        .check(id, now)
                        .map_err(|retry_after_ms| IngestError::RateLimited { retry_after_ms })
                        .and_then(|()| self.apply_locally(kind, id, r, now, true));
                    results[*i] = Some(result);
                }
            }
            Store::Redis(redis) => match redis.push_many(kind, &valid, now, &self.settings).await {
                Ok(verdicts) => {
                    for (((id, r), i), v) in valid.iter().zip(&slots).zip(verdicts) {
                        results[*i] = Some(self.after_redis(kind, id, r, now, v));
                    }
                }
                Err(e) => {
                    for i in &slots {
                        results[*i] = Some(Err(e.clone().into()));
                    }
                }
            },
        }
        results
            .into_iter()
            .map(|r| {
                let r = r.unwrap_or(Err(IngestError::Unavailable("no verdict".into())));
                self.metrics.record(&r);
                r
            })
            .collect()
    }

    /// Maps Redis's verdict on a report and, when accepted, updates the local replica.
    fn after_redis(
        &self,
        kind: Kind,
        id: &EntryId,
        r: &Report,
        now: i64,
        verdict: StoreVerdict,
    ) -> Result<Outcome, IngestError> {
        match verdict {
            StoreVerdict::Accepted => {
                // Redis has ordered it; the local replica follows (its own ordering
                // check only drops what the stream already delivered).
                let _ = self.apply_locally(kind, id, r, now, false);
                Ok(Outcome::Accepted)
            }
            StoreVerdict::Stale => Ok(Outcome::Stale),
            StoreVerdict::RateLimited { retry_after_ms } => {
                Err(IngestError::RateLimited { retry_after_ms })
            }
            StoreVerdict::Implausible { speed_kmh } => Err(IngestError::ImplausibleJump {
                speed_kmh,
                max_kmh: self.settings.max_speed_kmh,
            }),
        }
    }

    /// Applies a report to the in-process index, with the plausibility check when asked.
    fn apply_locally(
        &self,
        kind: Kind,
        id: &EntryId,
        r: &Report,
        now: i64,
        check_jump: bool,
    ) -> Result<Outcome, IngestError> {
        let update = Update {
            id: id.clone(),
            kind,
            position: r.position,
            seq: r.seq,
            device_ts_ms: r.device_ts_ms,
            received_at_ms: now,
            status: None,
            attrs: None,
        };
        let max_mps = self.settings.max_speed_kmh / 3.6;
        let mut implied = 0.0;
        let result = self.index.upsert_if(&update, |prev| {
            if !check_jump {
                return true;
            }
            implied = implied_speed_mps(prev, r, now);
            implied <= max_mps
        });
        self.metrics.index_size.set(self.index.len() as i64);
        match result.map_err(index_error)? {
            Upserted::Moved { previous } => {
                // Road speeds are learned from drivers only.
                if let Some(observe) = self.move_observer.as_ref().filter(|_| kind == Kind::Driver)
                {
                    let dt_ms = match (previous.device_ts_ms, r.device_ts_ms) {
                        (Some(a), Some(b)) => b - a,
                        _ => now - previous.updated_at_ms,
                    };
                    observe(id, &previous, &r.position, dt_ms as f64 / 1000.0);
                }
                Ok(Outcome::Accepted)
            }
            Upserted::Inserted => Ok(Outcome::Accepted),
            Upserted::Stale { .. } => Ok(Outcome::Stale),
            Upserted::Refused { .. } => Err(IngestError::ImplausibleJump {
                speed_kmh: implied * 3.6,
                max_kmh: self.settings.max_speed_kmh,
            }),
        }
    }

    /// Goes online (available, with vehicle class and seats) or offline.
    pub async fn set_status(
        &self,
        id: &EntryId,
        body: &StatusBody,
    ) -> Result<DriverView, IngestError> {
        let attrs = match body.status {
            OnlineStatus::Available => {
                let class_name = body
                    .vehicle_class
                    .as_deref()
                    .unwrap_or(&self.settings.vehicle_classes[0]);
                let class = self
                    .settings
                    .vehicle_classes
                    .iter()
                    .position(|c| c == class_name)
                    .ok_or_else(|| IngestError::UnknownClass(class_name.to_owned()))?;
                let seats = body.seats.unwrap_or(4);
                if !(1..=16).contains(&seats) {
                    return Err(IngestError::Seats(seats));
                }
                Some(Attributes {
                    vehicle_class: class as u8,
                    seats,
                })
            }
            OnlineStatus::Offline => None,
        };
        let status = match body.status {
            OnlineStatus::Available => Status::Available,
            OnlineStatus::Offline => Status::Offline,
        };
        if let Store::Redis(redis) = &self.store {
            // A driver holding an offer or on a ride is dispatch's to release.
            if let Some(engaged) = redis.engagement(id).await? {
                return Err(IngestError::Engaged(engaged));
            }
            if !redis.set_status(id, status, attrs).await? {
                return Err(IngestError::LocationRequired(id.clone()));
            }
            // This replica may not hold the driver yet; the stream brings it.
            let _ = self.index.set_status(id, status, attrs);
            return self.get(id).await;
        }
        // A driver holding an offer or on a ride is dispatch's to release, not its own.
        match self.index.compare_and_set_status(
            id,
            &[Status::Offline, Status::Available],
            status,
            attrs,
        ) {
            Ok(e) => Ok(self.view(&e)),
            Err(IndexError::NotFound(_)) => Err(IngestError::LocationRequired(id.clone())),
            Err(IndexError::StatusConflict { actual, .. }) => Err(IngestError::Engaged(actual)),
            Err(e) => Err(index_error(e)),
        }
    }

    /// The driver's current state.
    pub async fn get(&self, id: &EntryId) -> Result<DriverView, IngestError> {
        if let Store::Redis(redis) = &self.store {
            let mut view = redis
                .get(id, &self.settings.vehicle_classes)
                .await?
                .ok_or_else(|| IngestError::NotFound(id.clone()))?;
            if let Some(engaged) = redis.engagement(id).await? {
                view.status = engaged;
            }
            return Ok(view);
        }
        self.index
            .get(id)
            .map(|e| self.view(&e))
            .ok_or_else(|| IngestError::NotFound(id.clone()))
    }

    fn view(&self, e: &Entry) -> DriverView {
        DriverView {
            driver_id: e.id.to_string(),
            lat: e.position.lat(),
            lng: e.position.lng(),
            h3_cell: e.cell.to_string(),
            status: e.status,
            vehicle_class: self
                .settings
                .vehicle_classes
                .get(e.attrs.vehicle_class as usize)
                .cloned()
                .unwrap_or_default(),
            seats: e.attrs.seats,
            seq: e.seq,
            ts_ms: e.device_ts_ms,
            updated_at_ms: e.updated_at_ms,
        }
    }

    /// Takes every driver not heard from within the TTL out of the index (and, in Redis
    /// mode, marks them offline there, each claimed by exactly one replica), publishes an
    /// event for each and returns how many left. Run periodically.
    pub async fn evict_expired(&self, now: i64) -> Result<usize, IngestError> {
        // The sweep walks every entry: run it every tenth of the TTL (at least every second),
        // which bounds how late a silent driver leaves to 10 % of the TTL.
        let every_ms = (self.settings.ttl_s * 100).max(1000) as i64;
        let last = self
            .last_sweep_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if now - last < every_ms {
            return Ok(0);
        }
        self.last_sweep_ms
            .store(now, std::sync::atomic::Ordering::Relaxed);
        let cutoff = now - (self.settings.ttl_s * 1000) as i64;
        // Profiles go stale on people nearby's own, much longer clock.
        let local = self
            .index
            .evict_older_than_where(cutoff, &Filter::any().kind(Kind::Driver));
        let mut gone: Vec<(String, i64)> = local
            .iter()
            .map(|e| (e.id.to_string(), e.updated_at_ms))
            .collect();
        if let Store::Redis(redis) = &self.store {
            // Only what this replica claimed in Redis is announced, so each expiry is
            // announced once across replicas.
            gone = redis.sweep_expired(cutoff).await?;
        }
        for (driver_id, last_seen_ms) in &gone {
            let _ = self.events.send(DriverEvent::WentOffline {
                driver_id: driver_id.clone(),
                last_seen_ms: *last_seen_ms,
            });
        }
        self.metrics.evictions.inc_by(gone.len() as u64);
        self.metrics.index_size.set(self.index.len() as i64);
        self.limiter.sweep(now);
        Ok(gone.len())
    }
}

/// Speed implied by moving from the stored state to this report: by device clocks when
/// both have one, else by server receive times; at least one second apart, so GPS jitter
/// between two close reports is never "fast".
pub fn implied_speed_mps(prev: &Previous, r: &Report, now: i64) -> f64 {
    let dt_ms = match (prev.device_ts_ms, r.device_ts_ms) {
        (Some(a), Some(b)) => b - a,
        _ => now - prev.updated_at_ms,
    };
    let dt_s = (dt_ms as f64 / 1000.0).max(1.0);
    prev.position.distance_m(&r.position) / dt_s
}

fn index_error(e: IndexError) -> IngestError {
    match e {
        IndexError::NotFound(id) => IngestError::NotFound(id),
        other => IngestError::Unavailable(other.to_string()),
    }
}

/// Parses a path id.
pub fn driver_id(raw: &str) -> Result<EntryId, IngestError> {
    Ok(EntryId::parse(raw)?)
}
