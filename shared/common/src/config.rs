//! The one configuration model of every geomatch process.
//!
//! Values come from, in increasing precedence:
//! 1. the built-in defaults (the `Default` impls below),
//! 2. an optional TOML file (`--config FILE` or `GEOMATCH_CONFIG`),
//! 3. environment variables `GEOMATCH__SECTION__KEY`, e.g. `GEOMATCH__SERVER__PORT=9000`.
//!
//! Unknown keys are refused, so a misspelt variable fails at start-up instead of being
//! silently ignored, and every error names the key and where its value came from.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    providers::{Env, Format, Toml},
    Figment, Source,
};
use geomatch_index::{Index, IndexConfig, IndexError};
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// Prefix of the environment variables read; `__` also separates section from key.
pub const ENV_PREFIX: &str = "GEOMATCH__";

/// JWT signing secret used when none is configured. Refused in Redis mode, which is how
/// geomatch is deployed; fine for a laptop.
pub const DEV_JWT_SECRET: &str = "INSECURE-DEV-ONLY-geomatch-jwt-secret-do-not-deploy";

/// Largest accepted `server.max_body_bytes` (64 MiB): larger bodies belong in a bulk
/// import job, not in a request.
pub const MAX_BODY_BYTES_LIMIT: usize = 64 * 1024 * 1024;
const MAX_WORKERS: usize = 1024;
const MAX_SHUTDOWN_TIMEOUT_S: u64 = 3600;
const MAX_POOL_SIZE: usize = 1024;
const MAX_TIMEOUT_MS: u64 = 60_000;
/// HS256 wants a key at least as long as its 256-bit output.
const MIN_JWT_SECRET_BYTES: usize = 32;

/// Everything a geomatch process can be configured with.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    /// Where shared state lives: in this process, or in Redis so replicas share it.
    pub mode: Mode,
    /// Used in [`Mode::Redis`] only.
    pub redis: RedisSettings,
    /// The in-memory index of drivers and profiles.
    pub index: IndexConfig,
    pub log: LogSettings,
    pub auth: AuthSettings,
    /// Location ingest rules.
    pub ingest: IngestSettings,
    /// Ride dispatch rules.
    pub matching: MatchingSettings,
    /// The ETA model and its online speed learner.
    pub eta: EtaSettings,
    /// Products, fares, quotes and surge.
    pub pricing: PricingSettings,
    /// People nearby: recommendations, swipes, matches and their limits.
    pub people: PeopleSettings,
}

/// Most a profile's own `not_seen_for_s` may be: a profile's location outlives its last
/// report in Redis for this long (location-ingest keeps profile state 30 days).
pub const MAX_PEOPLE_NOT_SEEN_FOR_S: u64 = 30 * 86_400;

/// Rules of people nearby (recommendations, swipes, matches).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeopleSettings {
    /// Likes a profile may give per UTC day; above it 429 until the next UTC midnight.
    pub daily_likes: u32,
    /// Superlikes per UTC day (their own, smaller budget; they do not use likes).
    pub daily_superlikes: u32,
    /// Recommendations per page when the request names no `limit`.
    pub page_size: usize,
    /// Most recommendations one page may ask for.
    pub page_size_max: usize,
    /// A profile whose location was not reported for this long is not recommended (and
    /// leaves the index).
    pub not_seen_for_s: u64,
    /// Most candidates one recommendations request examines before it answers with what it
    /// has and a cursor to continue (bounds the work for very picky profiles).
    pub max_examined: usize,
    /// Most entries `GET …/matches` and `GET …/likes` list.
    pub max_list: usize,
}

impl Default for PeopleSettings {
    fn default() -> Self {
        Self {
            daily_likes: 100,
            daily_superlikes: 5,
            page_size: 20,
            page_size_max: 50,
            not_seen_for_s: 7 * 86_400,
            max_examined: 5_000,
            max_list: 200,
        }
    }
}

impl PeopleSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        check_range("people.daily_likes", self.daily_likes, 1, 100_000)?;
        check_range("people.daily_superlikes", self.daily_superlikes, 0, 1_000)?;
        if self.daily_superlikes > self.daily_likes {
            return Err(invalid(
                "people.daily_superlikes",
                "must not be above people.daily_likes",
            ));
        }
        check_range("people.page_size_max", self.page_size_max, 1, 200)?;
        check_range("people.page_size", self.page_size, 1, self.page_size_max)?;
        check_range(
            "people.not_seen_for_s",
            self.not_seen_for_s,
            1,
            MAX_PEOPLE_NOT_SEEN_FOR_S,
        )?;
        check_range("people.max_examined", self.max_examined, 100, 1_000_000)?;
        check_range("people.max_list", self.max_list, 1, 10_000)?;
        Ok(())
    }
}

/// Rules of ride dispatch.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchingSettings {
    /// Search radii tried in turn, metres; the last is the cap.
    pub radii_m: Vec<f64>,
    /// Offers made before a ride ends as no_driver_found.
    pub max_attempts: u32,
    /// How long a driver has to accept an offer.
    pub offer_timeout_s: u64,
    /// Candidates ranked per radius (nearest by the index, then by pickup ETA).
    pub candidates: usize,
    /// How long before `scheduled_at` dispatch starts.
    pub schedule_lead_s: u64,
    /// How far ahead a ride may be booked.
    pub max_schedule_days: u64,
    /// How long an Idempotency-Key is remembered.
    pub idempotency_ttl_s: u64,
    /// Most drivers `GET /v1/drivers/nearby` returns.
    pub max_nearby: usize,
    /// Batched matching: 0 offers each request greedily at once; above 0, open requests
    /// are collected for this many ms and assigned together to minimise total pickup ETA.
    pub batch_window_ms: u64,
    /// The largest tip a rider may add to a ride, minor units of the fare's currency.
    pub max_tip_minor: u64,
    /// How often each replica sweeps dispatch (offer timeouts, scheduled rides, rides
    /// left without an offer), ms.
    pub sweep_interval_ms: u64,
}

impl Default for MatchingSettings {
    fn default() -> Self {
        Self {
            radii_m: vec![1_000.0, 3_000.0, 6_000.0],
            max_attempts: 5,
            offer_timeout_s: 15,
            candidates: 20,
            schedule_lead_s: 600,
            max_schedule_days: 7,
            idempotency_ttl_s: 86_400,
            max_nearby: 50,
            batch_window_ms: 0,
            max_tip_minor: 50_000,
            sweep_interval_ms: 200,
        }
    }
}

impl MatchingSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.radii_m.is_empty()
            || self.radii_m.len() > 10
            || self
                .radii_m
                .iter()
                .any(|r| !r.is_finite() || *r <= 0.0 || *r > 100_000.0)
            || self.radii_m.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(invalid(
                "matching.radii_m",
                "must be 1 to 10 increasing radii in (0, 100000] m",
            ));
        }
        check_range("matching.max_attempts", self.max_attempts, 1, 100)?;
        check_range("matching.offer_timeout_s", self.offer_timeout_s, 1, 600)?;
        check_range("matching.candidates", self.candidates, 1, 500)?;
        check_range("matching.max_nearby", self.max_nearby, 1, 500)?;
        check_range("matching.batch_window_ms", self.batch_window_ms, 0, 60_000)?;
        check_range("matching.max_tip_minor", self.max_tip_minor, 0, 10_000_000)?;
        check_range(
            "matching.sweep_interval_ms",
            self.sweep_interval_ms,
            10,
            10_000,
        )?;
        check_range("matching.max_schedule_days", self.max_schedule_days, 0, 30)?;
        check_range(
            "matching.idempotency_ttl_s",
            self.idempotency_ttl_s,
            60,
            7 * 86_400,
        )?;
        Ok(())
    }
}

/// The ETA model: great-circle distance × `circuity` ÷ speed, the speed learned online per
/// H3 resolution-7 cell and hour of the week from consecutive pings of moving drivers, or
/// `default_speed_kmh` where nothing is learned yet.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtaSettings {
    /// Road distance over great-circle distance.
    pub circuity: f64,
    /// Speed assumed where nothing is learned (km/h).
    pub default_speed_kmh: f64,
    /// A move implying more than this is a GPS jump, not a sample (km/h).
    pub max_sample_speed_kmh: f64,
    /// A move implying less than this is a standing driver, not a sample (km/h).
    pub min_moving_speed_kmh: f64,
    /// Pings closer in time than this are jitter, not a sample (s).
    pub min_sample_interval_s: f64,
    /// Pings further apart than this hide stops and detours, not a sample (s).
    pub max_sample_interval_s: f64,
    /// Weight of a new sample in the exponentially weighted speed, in (0, 1].
    pub smoothing: f64,
    /// Samples before a cell's speed is trusted.
    pub min_samples: u32,
    /// Most (cell, hour) slots learned; bounds memory (about 40 bytes a slot).
    pub max_learned_slots: usize,
    /// Most destinations in one `POST /v1/eta/batch`.
    pub max_batch: usize,
}

impl Default for EtaSettings {
    fn default() -> Self {
        Self {
            circuity: 1.3,
            default_speed_kmh: 25.0,
            max_sample_speed_kmh: 200.0,
            min_moving_speed_kmh: 3.0,
            min_sample_interval_s: 1.0,
            max_sample_interval_s: 120.0,
            smoothing: 0.05,
            min_samples: 5,
            max_learned_slots: 1_000_000,
            max_batch: 100,
        }
    }
}

impl EtaSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.circuity.is_finite() && (1.0..=3.0).contains(&self.circuity)) {
            return Err(invalid("eta.circuity", "must be in [1, 3]"));
        }
        check_open_closed("eta.default_speed_kmh", self.default_speed_kmh, 0.0, 200.0)?;
        check_open_closed(
            "eta.max_sample_speed_kmh",
            self.max_sample_speed_kmh,
            0.0,
            500.0,
        )?;
        if !(self.min_moving_speed_kmh.is_finite()
            && self.min_moving_speed_kmh >= 0.0
            && self.min_moving_speed_kmh < self.max_sample_speed_kmh)
        {
            return Err(invalid(
                "eta.min_moving_speed_kmh",
                "must be at least 0 and below eta.max_sample_speed_kmh",
            ));
        }
        check_open_closed(
            "eta.min_sample_interval_s",
            self.min_sample_interval_s,
            0.0,
            60.0,
        )?;
        if !(self.max_sample_interval_s.is_finite()
            && self.max_sample_interval_s >= self.min_sample_interval_s
            && self.max_sample_interval_s <= 3_600.0)
        {
            return Err(invalid(
                "eta.max_sample_interval_s",
                "must be at least eta.min_sample_interval_s and at most 3600",
            ));
        }
        check_open_closed("eta.smoothing", self.smoothing, 0.0, 1.0)?;
        check_range("eta.min_samples", self.min_samples, 1, 10_000)?;
        check_range(
            "eta.max_learned_slots",
            self.max_learned_slots,
            1,
            100_000_000,
        )?;
        check_range("eta.max_batch", self.max_batch, 1, 10_000)
    }
}

/// Largest amount of money in one fare component, in minor units.
const MAX_MONEY_MINOR: u64 = 1_000_000_000;

/// Products, fares, quotes and surge.
///
/// `products` has one entry per `ingest.vehicle_classes` name, every field required. In a
/// TOML file: `[pricing.products.xl]`, then the fields. Setting one product field by
/// environment variable replaces the whole `products` table, so the other products would
/// be missing and the process refuses to start: configure products in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PricingSettings {
    /// How long a quote is honoured.
    pub quote_ttl_s: u64,
    /// Longest trip quoted, great-circle kilometres.
    pub max_trip_km: f64,
    /// How far from the pickup an available driver is looked for (pickup ETA), metres.
    pub pickup_radius_m: f64,
    /// Most hexagons one `GET /v1/heatmap` answers; a larger box gets 400.
    pub max_heatmap_cells: usize,
    /// Redis mode: how often each replica exchanges demand, learned speeds and surge with
    /// Redis (and tries to claim a due surge round), ms.
    pub sync_interval_ms: u64,
    pub surge: SurgeSettings,
    /// Fares by product name (a vehicle class).
    pub products: std::collections::BTreeMap<String, ProductSettings>,
}

impl Default for PricingSettings {
    fn default() -> Self {
        let product = |base_fare, per_km, per_minute, minimum_fare, booking_fee| ProductSettings {
            currency: "USD".to_owned(),
            base_fare,
            per_km,
            per_minute,
            minimum_fare,
            booking_fee,
        };
        Self {
            quote_ttl_s: 120,
            max_trip_km: 300.0,
            pickup_radius_m: 10_000.0,
            max_heatmap_cells: 2_000,
            sync_interval_ms: 1_000,
            surge: SurgeSettings::default(),
            products: [
                ("standard", product(250, 120, 30, 700, 200)),
                ("xl", product(400, 180, 45, 1_000, 250)),
                ("premium", product(600, 250, 60, 1_500, 300)),
            ]
            .into_iter()
            .map(|(name, p)| (name.to_owned(), p))
            .collect(),
        }
    }
}

impl PricingSettings {
    fn validate(&self, classes: &[String], cell_resolution: u8) -> Result<(), ConfigError> {
        if cell_resolution < 7 {
            return Err(invalid(
                "index.cell_resolution",
                "must be at least 7: surge counts drivers per resolution-7 cell",
            ));
        }
        check_range("pricing.quote_ttl_s", self.quote_ttl_s, 1, 3_600)?;
        check_open_closed("pricing.max_trip_km", self.max_trip_km, 0.0, 2_000.0)?;
        check_open_closed(
            "pricing.pickup_radius_m",
            self.pickup_radius_m,
            0.0,
            100_000.0,
        )?;
        check_range(
            "pricing.max_heatmap_cells",
            self.max_heatmap_cells,
            1,
            100_000,
        )?;
        check_range(
            "pricing.sync_interval_ms",
            self.sync_interval_ms,
            50,
            60_000,
        )?;
        self.surge.validate()?;
        let missing: Vec<&str> = classes
            .iter()
            .filter(|c| !self.products.contains_key(*c))
            .map(String::as_str)
            .collect();
        let extra: Vec<&str> = self
            .products
            .keys()
            .filter(|p| !classes.contains(p))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            return Err(invalid(
                "pricing.products",
                format!(
                    "must price exactly the vehicle classes (ingest.vehicle_classes); \
                     missing {missing:?}, not a class {extra:?}"
                ),
            ));
        }
        for (name, p) in &self.products {
            p.validate()
                .map_err(|reason| invalid("pricing.products", format!("{name}: {reason}")))?;
        }
        Ok(())
    }
}

/// One product's fare: `max(base + per_km·km + per_minute·min, minimum_fare) × surge +
/// booking_fee`. Money in integer minor units of `currency` (cents for USD).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductSettings {
    /// ISO 4217 code, e.g. `USD`.
    pub currency: String,
    pub base_fare: u64,
    pub per_km: u64,
    pub per_minute: u64,
    pub minimum_fare: u64,
    /// Added after surge; never surged.
    pub booking_fee: u64,
}

impl ProductSettings {
    fn validate(&self) -> Result<(), String> {
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "currency must be a 3-letter upper-case ISO 4217 code, got {:?}",
                self.currency
            ));
        }
        for (field, v) in [
            ("base_fare", self.base_fare),
            ("per_km", self.per_km),
            ("per_minute", self.per_minute),
            ("minimum_fare", self.minimum_fare),
            ("booking_fee", self.booking_fee),
        ] {
            if v > MAX_MONEY_MINOR {
                return Err(format!(
                    "{field} must be at most {MAX_MONEY_MINOR}, got {v}"
                ));
            }
        }
        Ok(())
    }
}

/// Surge per H3 resolution-7 cell: demand (ride requests and quotes in the last
/// `demand_window_s`) over supply (available drivers), both summed over the cell's k-ring
/// (ring d weighted 1/(1+d)); the multiplier `1 + sensitivity × max(0, demand/(supply+1) −
/// threshold)` is smoothed over time, capped at `cap` and published in steps of `step`,
/// moving only when the smoothed value is a whole step away (hysteresis).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SurgeSettings {
    /// Seconds between recomputations.
    pub interval_s: u64,
    /// How far back demand counts.
    pub demand_window_s: u64,
    /// Highest multiplier.
    pub cap: f64,
    /// Granularity of published multipliers and width of the hysteresis band.
    pub step: f64,
    /// Demand per available driver below which there is no surge.
    pub threshold: f64,
    /// Multiplier added per unit of demand per driver above the threshold.
    pub sensitivity: f64,
    /// Weight of the newest computation in the time-smoothed multiplier, in (0, 1].
    pub smoothing: f64,
    /// Rings of neighbouring cells demand and supply are summed over (0 = the cell alone).
    pub k_ring: u32,
}

impl Default for SurgeSettings {
    fn default() -> Self {
        Self {
            interval_s: 30,
            demand_window_s: 300,
            cap: 3.0,
            step: 0.1,
            threshold: 1.0,
            sensitivity: 0.5,
            smoothing: 0.5,
            k_ring: 1,
        }
    }
}

impl SurgeSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        check_range("pricing.surge.interval_s", self.interval_s, 1, 3_600)?;
        check_range(
            "pricing.surge.demand_window_s",
            self.demand_window_s,
            30,
            3_600,
        )?;
        if !(self.cap.is_finite() && (1.0..=10.0).contains(&self.cap)) {
            return Err(invalid("pricing.surge.cap", "must be in [1, 10]"));
        }
        let hundredths = self.step * 100.0;
        if !(self.step.is_finite()
            && (0.01..=1.0).contains(&self.step)
            && (hundredths - hundredths.round()).abs() < 1e-9)
        {
            return Err(invalid(
                "pricing.surge.step",
                "must be a whole number of hundredths in [0.01, 1]",
            ));
        }
        if !(self.threshold.is_finite() && (0.0..=100.0).contains(&self.threshold)) {
            return Err(invalid("pricing.surge.threshold", "must be in [0, 100]"));
        }
        check_open_closed("pricing.surge.sensitivity", self.sensitivity, 0.0, 100.0)?;
        check_open_closed("pricing.surge.smoothing", self.smoothing, 0.0, 1.0)?;
        check_range("pricing.surge.k_ring", self.k_ring, 0, 5)
    }
}

/// `value` must be finite and in `(min, max]`.
fn check_open_closed(key: &'static str, value: f64, min: f64, max: f64) -> Result<(), ConfigError> {
    if !(value.is_finite() && value > min && value <= max) {
        return Err(invalid(
            key,
            format!("must be in ({min}, {max}], got {value}"),
        ));
    }
    Ok(())
}

/// Rules of location ingest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// A driver not heard from within this many seconds goes offline and leaves the index.
    pub ttl_s: u64,
    /// Most updates in one `POST /v1/locations/batch`.
    pub max_batch: usize,
    /// Sustained updates per second allowed per driver id.
    pub rate_per_s: f64,
    /// Updates a driver may send at once above the sustained rate.
    pub burst: f64,
    /// A jump implying more than this speed is refused as implausible.
    pub max_speed_kmh: f64,
    /// How far ahead of the server clock a device time may be.
    pub max_future_ms: i64,
    /// Vehicle class names, in the order of their codes (at most 32).
    pub vehicle_classes: Vec<String>,
    /// Seconds between WebSocket pings; a connection silent for three intervals is closed.
    pub ws_heartbeat_s: u64,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            ttl_s: 30,
            max_batch: 1_000,
            rate_per_s: 5.0,
            burst: 10.0,
            max_speed_kmh: 300.0,
            max_future_ms: 30_000,
            vehicle_classes: vec!["standard".into(), "xl".into(), "premium".into()],
            ws_heartbeat_s: 10,
        }
    }
}

impl IngestSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        check_range("ingest.ttl_s", self.ttl_s, 1, 86_400)?;
        check_range("ingest.max_batch", self.max_batch, 1, 100_000)?;
        if !(self.rate_per_s.is_finite() && self.rate_per_s > 0.0 && self.rate_per_s <= 1_000.0) {
            return Err(invalid("ingest.rate_per_s", "must be in (0, 1000]"));
        }
        if !(self.burst.is_finite() && self.burst >= 1.0 && self.burst <= 10_000.0) {
            return Err(invalid("ingest.burst", "must be in [1, 10000]"));
        }
        if !(self.max_speed_kmh.is_finite() && self.max_speed_kmh > 0.0) {
            return Err(invalid("ingest.max_speed_kmh", "must be a positive number"));
        }
        check_range("ingest.max_future_ms", self.max_future_ms, 0, 3_600_000)?;
        check_range("ingest.ws_heartbeat_s", self.ws_heartbeat_s, 1, 300)?;
        if self.vehicle_classes.is_empty() || self.vehicle_classes.len() > 32 {
            return Err(invalid(
                "ingest.vehicle_classes",
                "must name 1 to 32 classes",
            ));
        }
        Ok(())
    }
}

/// The HTTP listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind; `0.0.0.0` so the port is reachable inside a container.
    pub host: String,
    /// Port to bind; 0 asks the OS for a free one (tests use it).
    pub port: u16,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// HTTP worker threads; 0 means one per available core.
    pub workers: usize,
    /// How long in-flight requests may run after a stop signal before they are dropped.
    /// Keep it below the orchestrator's grace period (Kubernetes: 30 s).
    pub shutdown_timeout_s: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".to_owned(),
            port: 8080,
            max_body_bytes: 64 * 1024,
            workers: 0,
            shutdown_timeout_s: 25,
        }
    }
}

impl ServerSettings {
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_s)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.host.trim().is_empty() {
            return Err(invalid("server.host", "must not be empty"));
        }
        check_range(
            "server.max_body_bytes",
            self.max_body_bytes,
            1,
            MAX_BODY_BYTES_LIMIT,
        )?;
        check_range("server.workers", self.workers, 0, MAX_WORKERS)?;
        check_range(
            "server.shutdown_timeout_s",
            self.shutdown_timeout_s,
            0,
            MAX_SHUTDOWN_TIMEOUT_S,
        )
    }
}

/// Where shared state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One process holds everything in memory: the simplest deployment and the fastest.
    #[default]
    Embedded,
    /// Services run as separate processes and share state through Redis.
    Redis,
}

/// The Redis connection pool (Redis mode).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://`, `rediss://` (TLS) or `redis+unix://` URL; may carry a password, so
    /// `Debug` redacts it.
    pub url: String,
    /// Connections kept per process.
    pub pool_size: usize,
    /// Time allowed to open a new connection.
    pub connect_timeout_ms: u64,
    /// Time a request may wait for a free pooled connection before failing fast.
    pub wait_timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            pool_size: 64,
            connect_timeout_ms: 500,
            wait_timeout_ms: 500,
        }
    }
}

impl RedisSettings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn wait_timeout(&self) -> Duration {
        Duration::from_millis(self.wait_timeout_ms)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        const SCHEMES: [&str; 4] = ["redis://", "rediss://", "redis+unix://", "unix://"];
        if !SCHEMES.iter().any(|scheme| self.url.starts_with(scheme)) {
            return Err(invalid(
                "redis.url",
                format!(
                    "must start with one of {}, got {:?}",
                    SCHEMES.join(", "),
                    redact_url(&self.url)
                ),
            ));
        }
        check_range("redis.pool_size", self.pool_size, 1, MAX_POOL_SIZE)?;
        check_range(
            "redis.connect_timeout_ms",
            self.connect_timeout_ms,
            1,
            MAX_TIMEOUT_MS,
        )?;
        check_range(
            "redis.wait_timeout_ms",
            self.wait_timeout_ms,
            1,
            MAX_TIMEOUT_MS,
        )
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("wait_timeout_ms", &self.wait_timeout_ms)
            .finish()
    }
}

/// Replaces the user-info part of a URL (`user:password@`) so it can be logged.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!(
            "{}[redacted]{}",
            &url[..scheme_end],
            &url[scheme_end + at..]
        ),
        None => url.to_owned(),
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter: a level (`info`) or directives (`info,geomatch=debug`).
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Plain,
            level: "info".to_owned(),
        }
    }
}

impl LogSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        EnvFilter::try_new(&self.level).map(drop).map_err(|e| {
            invalid(
                "log.level",
                format!("{:?} is not a filter: {e}", self.level),
            )
        })
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Plain,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Tokens clients present (riders, drivers, profiles).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 signing secret, at least 32 bytes.
    pub jwt_secret: Secret,
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim.
    pub audience: String,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: Secret::new(DEV_JWT_SECRET),
            issuer: "geomatch".to_owned(),
            audience: "geomatch".to_owned(),
        }
    }
}

impl AuthSettings {
    /// Whether the built-in development secret is in use (worth a warning at start-up).
    pub fn uses_dev_secret(&self) -> bool {
        self.jwt_secret.expose() == DEV_JWT_SECRET
    }

    fn validate(&self, mode: Mode) -> Result<(), ConfigError> {
        let secret_len = self.jwt_secret.expose().len();
        if secret_len < MIN_JWT_SECRET_BYTES {
            return Err(invalid(
                "auth.jwt_secret",
                format!("must be at least {MIN_JWT_SECRET_BYTES} bytes, got {secret_len}"),
            ));
        }
        if mode == Mode::Redis && self.uses_dev_secret() {
            return Err(invalid(
                "auth.jwt_secret",
                "the built-in development secret is refused in redis mode; \
                 set GEOMATCH__AUTH__JWT_SECRET",
            ));
        }
        if self.issuer.is_empty() {
            return Err(invalid("auth.issuer", "must not be empty"));
        }
        if self.audience.is_empty() {
            return Err(invalid("auth.audience", "must not be empty"));
        }
        Ok(())
    }
}

/// A string that must not end up in logs: `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call it only where the value is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Settings {
    /// Loads the settings: defaults, then `file` if given, then `GEOMATCH__…` environment
    /// variables; then checks every range. Call once at start-up.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        if let Some(path) = file {
            // Checked here so a wrong path gets its own message rather than a parse error.
            std::fs::metadata(path).map_err(|source| ConfigError::File {
                path: path.to_owned(),
                source,
            })?;
        }
        Self::from_figment(&Self::figment(file))
    }

    /// The layered sources, without extracting them; [`Settings::load`] is the usual entry.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::new();
        if let Some(path) = file {
            // `file_exact`: `Toml::file` would also search parent directories.
            figment = figment.merge(Toml::file_exact(path));
        }
        figment.merge(Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// Extracts and validates settings from any figment (tests build their own).
    pub fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let settings: Settings = figment.extract().map_err(ConfigError::from_figment)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot: ranges, URL schemes, filter syntax.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.redis.validate()?;
        validate_index(&self.index)?;
        self.log.validate()?;
        self.ingest.validate()?;
        self.matching.validate()?;
        self.eta.validate()?;
        self.people.validate()?;
        self.pricing
            .validate(&self.ingest.vehicle_classes, self.index.cell_resolution)?;
        self.auth.validate(self.mode)
    }
}

/// The index crate owns its ranges; building an (empty, cheap) index checks them without
/// copying its limits here.
fn validate_index(config: &IndexConfig) -> Result<(), ConfigError> {
    match Index::new(*config) {
        Ok(_) => Ok(()),
        Err(e @ IndexError::BadResolution(_)) => Err(invalid("index.cell_resolution", e)),
        Err(e @ IndexError::BadBucketLevel(_)) => Err(invalid("index.bucket_level", e)),
        Err(e) => Err(invalid("index", e)),
    }
}

fn check_range<T>(key: &'static str, value: T, min: T, max: T) -> Result<(), ConfigError>
where
    T: PartialOrd + fmt::Display,
{
    if value < min || value > max {
        return Err(invalid(
            key,
            format!("must be in {min}..={max}, got {value}"),
        ));
    }
    Ok(())
}

fn invalid(key: &'static str, reason: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.to_string(),
    }
}

/// Why settings could not be loaded. The message always names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A value that does not parse, has the wrong type, or a key that does not exist.
    #[error("{}", problems.join("; "))]
    Load { problems: Vec<String> },
    /// A value that parses but is out of range.
    #[error("invalid configuration value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl ConfigError {
    fn from_figment(error: figment::Error) -> Self {
        let problems = error.into_iter().map(|e| describe(&e)).collect();
        ConfigError::Load { problems }
    }
}

/// One figment error as "invalid configuration value for `server.port` (environment
/// variable GEOMATCH__SERVER__PORT): invalid type: …".
fn describe(error: &figment::Error) -> String {
    let origin = error.metadata.as_ref().map(|md| match &md.source {
        Some(Source::File(path)) => format!("TOML file {}", path.display()),
        _ if md.name.contains("environment") && !error.path.is_empty() => format!(
            "environment variable {ENV_PREFIX}{}",
            error.path.join("__").to_uppercase()
        ),
        _ => md.name.to_string(),
    });
    let mut out = if error.path.is_empty() {
        "invalid configuration".to_owned()
    } else {
        format!("invalid configuration value for `{}`", error.path.join("."))
    };
    if let Some(origin) = origin {
        out.push_str(&format!(" ({origin})"));
    }
    out.push_str(&format!(": {}", error.kind));
    out
}

#[cfg(test)]
// `figment::Jail` closures return `figment::Error`, a large type; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in(jail: &Jail, file: Option<&str>) -> Result<Settings, ConfigError> {
        let path = file.map(|f| jail.directory().join(f));
        Settings::load(path.as_deref())
    }

    #[test]
    fn defaults_apply_when_nothing_is_configured() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let settings = load_in(jail, None).expect("defaults are valid");

            assert_eq!(settings, Settings::default());
            assert_eq!(settings.server.host, "0.0.0.0");
            assert_eq!(settings.server.port, 8080);
            assert_eq!(settings.server.max_body_bytes, 64 * 1024);
            assert_eq!(settings.server.workers, 0);
            assert_eq!(settings.mode, Mode::Embedded);
            assert_eq!(settings.redis.url, "redis://127.0.0.1:6379");
            assert_eq!(settings.redis.connect_timeout_ms, 500);
            assert_eq!(settings.redis.wait_timeout_ms, 500);
            assert_eq!(settings.index, IndexConfig::default());
            assert_eq!(settings.log.format, LogFormat::Plain);
            assert_eq!(settings.log.level, "info");
            assert!(settings.auth.uses_dev_secret());
            assert_eq!(settings.auth.issuer, "geomatch");
            assert_eq!(settings.auth.audience, "geomatch");
            Ok(())
        });
    }

    #[test]
    fn a_file_overrides_defaults_and_leaves_the_rest() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "geomatch.toml",
                r#"
                mode = "redis"
                [server]
                port = 9001
                [redis]
                url = "redis://cache:6380"
                pool_size = 4
                [index]
                cell_resolution = 8
                [log]
                format = "json"
                [auth]
                jwt_secret = "a-production-secret-of-at-least-32-bytes"
                "#,
            )?;
            let settings = load_in(jail, Some("geomatch.toml")).expect("file is valid");

            assert_eq!(settings.mode, Mode::Redis);
            assert_eq!(settings.server.port, 9001);
            assert_eq!(settings.server.host, "0.0.0.0", "unset keys keep defaults");
            assert_eq!(settings.redis.url, "redis://cache:6380");
            assert_eq!(settings.redis.pool_size, 4);
            assert_eq!(settings.redis.wait_timeout_ms, 500);
            assert_eq!(settings.index.cell_resolution, 8);
            assert_eq!(settings.index.bucket_level, 16);
            assert_eq!(settings.log.format, LogFormat::Json);
            assert!(!settings.auth.uses_dev_secret());
            Ok(())
        });
    }

    #[test]
    fn people_limits_are_validated_and_named() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("GEOMATCH__PEOPLE__DAILY_LIKES", "30");
            jail.set_env("GEOMATCH__PEOPLE__DAILY_SUPERLIKES", "2");
            let settings = load_in(jail, None).expect("valid");
            assert_eq!(settings.people.daily_likes, 30);
            assert_eq!(settings.people.daily_superlikes, 2);
            assert_eq!(settings.people.page_size_max, 50);

            for (key, value, named) in [
                ("DAILY_LIKES", "0", "people.daily_likes"),
                ("DAILY_SUPERLIKES", "31", "people.daily_superlikes"),
                ("PAGE_SIZE_MAX", "0", "people.page_size_max"),
                ("NOT_SEEN_FOR_S", "0", "people.not_seen_for_s"),
                ("NOT_SEEN_FOR_S", "9999999999", "people.not_seen_for_s"),
            ] {
                jail.set_env(format!("GEOMATCH__PEOPLE__{key}"), value);
                let e = load_in(jail, None).expect_err(key).to_string();
                assert!(e.contains(named), "{key}={value}: {e}");
                jail.set_env("GEOMATCH__PEOPLE__DAILY_SUPERLIKES", "2");
                jail.set_env("GEOMATCH__PEOPLE__PAGE_SIZE_MAX", "50");
                jail.set_env("GEOMATCH__PEOPLE__NOT_SEEN_FOR_S", "3600");
                jail.set_env("GEOMATCH__PEOPLE__DAILY_LIKES", "30");
            }
            Ok(())
        });
    }

    #[test]
    fn environment_variables_override_the_file() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("geomatch.toml", "[server]\nport = 9001\nworkers = 2\n")?;
            jail.set_env("GEOMATCH__SERVER__PORT", "9000");
            jail.set_env("GEOMATCH__LOG__LEVEL", "debug,h3o=warn");
            jail.set_env("GEOMATCH__INDEX__BUCKET_LEVEL", "18");
            let settings = load_in(jail, Some("geomatch.toml")).expect("valid");

            assert_eq!(settings.server.port, 9000);
            assert_eq!(
                settings.server.workers, 2,
                "file value kept when env is silent"
            );
            assert_eq!(settings.log.level, "debug,h3o=warn");
            assert_eq!(settings.index.bucket_level, 18);
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_is_reported_with_its_key_and_source() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("GEOMATCH__SERVER__PORT", "eighty");
            let message = load_in(jail, None).unwrap_err().to_string();

            assert!(message.contains("`server.port`"), "{message}");
            assert!(message.contains("GEOMATCH__SERVER__PORT"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn a_port_above_65535_is_refused() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("GEOMATCH__SERVER__PORT", "70000");
            let message = load_in(jail, None).unwrap_err().to_string();

            assert!(message.contains("`server.port`"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_is_refused_rather_than_ignored() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("GEOMATCH__SERVER__PROT", "9000");
            let message = load_in(jail, None).unwrap_err().to_string();

            assert!(message.contains("prot"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_in_the_file_names_the_file() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("geomatch.toml", "mode = \"cluster\"\n")?;
            let message = load_in(jail, Some("geomatch.toml"))
                .unwrap_err()
                .to_string();

            assert!(message.contains("`mode`"), "{message}");
            assert!(message.contains("geomatch.toml"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let message = load_in(jail, Some("absent.toml")).unwrap_err().to_string();

            assert!(message.contains("absent.toml"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn out_of_range_values_are_refused_with_their_key() {
        let cases = [
            ("GEOMATCH__REDIS__POOL_SIZE", "0", "redis.pool_size"),
            (
                "GEOMATCH__SERVER__MAX_BODY_BYTES",
                "0",
                "server.max_body_bytes",
            ),
            (
                "GEOMATCH__REDIS__CONNECT_TIMEOUT_MS",
                "0",
                "redis.connect_timeout_ms",
            ),
            ("GEOMATCH__REDIS__URL", "http://cache", "redis.url"),
            (
                "GEOMATCH__INDEX__CELL_RESOLUTION",
                "16",
                "index.cell_resolution",
            ),
            ("GEOMATCH__INDEX__BUCKET_LEVEL", "30", "index.bucket_level"),
            ("GEOMATCH__LOG__LEVEL", "info,=nonsense[", "log.level"),
            ("GEOMATCH__AUTH__JWT_SECRET", "short", "auth.jwt_secret"),
        ];
        for (var, value, key) in cases {
            Jail::expect_with(|jail| {
                jail.clear_env();
                jail.set_env(var, value);
                let message = load_in(jail, None).unwrap_err().to_string();

                assert!(message.contains(&format!("`{key}`")), "{var}: {message}");
                Ok(())
            });
        }
    }

    #[test]
    fn redis_mode_refuses_the_development_secret() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("GEOMATCH__MODE", "redis");
            let message = load_in(jail, None).unwrap_err().to_string();

            assert!(message.contains("`auth.jwt_secret`"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut settings = Settings::default();
        settings.redis.url = "redis://user:hunter2@cache:6379/0".to_owned();
        let printed = format!("{settings:?}");

        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(
            printed.contains("redis://[redacted]@cache:6379/0"),
            "{printed}"
        );
        assert!(!printed.contains(DEV_JWT_SECRET), "{printed}");
    }

    #[test]
    fn urls_without_credentials_are_logged_unchanged() {
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redact_url("rediss://:pw@h/1"), "rediss://[redacted]@h/1");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn eta_and_pricing_defaults_price_every_vehicle_class() {
        let settings = Settings::default();
        settings.validate().expect("defaults are valid");

        assert_eq!(settings.eta.circuity, 1.3);
        assert_eq!(settings.eta.max_batch, 100);
        assert_eq!(settings.pricing.surge.cap, 3.0);
        assert_eq!(settings.pricing.surge.interval_s, 30);
        let products: Vec<&String> = settings.pricing.products.keys().collect();
        assert_eq!(products, ["premium", "standard", "xl"]);
        assert_eq!(settings.pricing.products["standard"].currency, "USD");
    }

    #[test]
    fn products_are_read_from_the_file_and_must_match_the_vehicle_classes() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "geomatch.toml",
                r#"
                [ingest]
                vehicle_classes = ["moto"]
                [pricing.products.moto]
                currency = "KRW"
                base_fare = 3000
                per_km = 800
                per_minute = 100
                minimum_fare = 4000
                booking_fee = 0
                [pricing.surge]
                cap = 2.0
                "#,
            )?;
            let settings = load_in(jail, Some("geomatch.toml")).expect("valid");
            assert_eq!(settings.pricing.products["moto"].per_km, 800);
            assert_eq!(settings.pricing.surge.cap, 2.0);
            assert_eq!(settings.pricing.surge.step, 0.1, "unset keys keep defaults");

            jail.create_file(
                "classes.toml",
                "[ingest]\nvehicle_classes = [\"standard\", \"bike\"]\n",
            )?;
            let message = load_in(jail, Some("classes.toml")).unwrap_err().to_string();
            assert!(message.contains("`pricing.products`"), "{message}");
            assert!(message.contains("bike"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn a_product_missing_a_field_is_refused_with_its_key() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("GEOMATCH__PRICING__PRODUCTS__XL__BASE_FARE", "500");
            let message = load_in(jail, None).unwrap_err().to_string();

            assert!(message.contains("pricing.products"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn eta_and_pricing_values_out_of_range_are_refused_with_their_key() {
        let cases = [
            ("GEOMATCH__ETA__CIRCUITY", "0.5", "eta.circuity"),
            (
                "GEOMATCH__ETA__DEFAULT_SPEED_KMH",
                "0",
                "eta.default_speed_kmh",
            ),
            ("GEOMATCH__ETA__SMOOTHING", "1.5", "eta.smoothing"),
            (
                "GEOMATCH__ETA__MAX_SAMPLE_INTERVAL_S",
                "0.5",
                "eta.max_sample_interval_s",
            ),
            ("GEOMATCH__ETA__MAX_BATCH", "0", "eta.max_batch"),
            ("GEOMATCH__PRICING__QUOTE_TTL_S", "0", "pricing.quote_ttl_s"),
            ("GEOMATCH__PRICING__SURGE__CAP", "0.9", "pricing.surge.cap"),
            (
                "GEOMATCH__PRICING__SURGE__STEP",
                "0.125",
                "pricing.surge.step",
            ),
            (
                "GEOMATCH__PRICING__SURGE__K_RING",
                "9",
                "pricing.surge.k_ring",
            ),
            (
                "GEOMATCH__PRICING__MAX_HEATMAP_CELLS",
                "0",
                "pricing.max_heatmap_cells",
            ),
            (
                "GEOMATCH__INDEX__CELL_RESOLUTION",
                "6",
                "index.cell_resolution",
            ),
        ];
        for (var, value, key) in cases {
            Jail::expect_with(|jail| {
                jail.clear_env();
                jail.set_env(var, value);
                let message = load_in(jail, None).unwrap_err().to_string();

                assert!(message.contains(&format!("`{key}`")), "{var}: {message}");
                Ok(())
            });
        }
    }
}
