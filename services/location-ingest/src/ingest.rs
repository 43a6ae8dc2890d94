//! The rules of location ingest, independent of HTTP and of the mode: validate, let the
//! store judge and write (rate limit, ordering, plausibility: see [`crate::store`]), count,
//! tell the move observer, answer views. HTTP handlers and the WebSocket both call
//! [`Ingest`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use geomatch_common::config::IngestSettings;
use geomatch_common::ports::{Engagement, MoveObserver};
use geomatch_common::Clock;
use geomatch_index::{Attributes, Entry, EntryId, Index, Kind, Status};

use crate::metrics::IngestMetrics;
use crate::model::{DriverView, IngestError, OnlineStatus, Outcome, StatusBody, Verdict};
use crate::report::{LocationBody, Report};
use crate::store::Store;

/// How often the profiles' live set in Redis is trimmed (people nearby's clock is minutes).
const PROFILE_TRIM_EVERY_MS: i64 = 60_000;

/// Location ingest: shared by every handler of the service.
pub(crate) struct Ingest {
    store: Store,
    /// This process's index, for its size gauge (the store writes it).
    index: Arc<Index>,
    settings: IngestSettings,
    /// Profiles not seen for this long leave the shared live set (`people.not_seen_for_s`).
    profile_ttl_ms: i64,
    metrics: IngestMetrics,
    clock: Clock,
    /// Told of every accepted move of a driver (the ETA speed learner).
    moves: Option<Arc<dyn MoveObserver>>,
    /// Dispatch's hold on drivers: refuses status changes, shows in the driver's state.
    engagement: Arc<dyn Engagement>,
    /// Clock time of the last driver expiry sweep.
    last_sweep_ms: AtomicI64,
    /// Clock time of the last profile trim.
    last_profile_trim_ms: AtomicI64,
}

/// What [`Ingest`] is built from besides its store.
pub(crate) struct Parts {
    pub index: Arc<Index>,
    pub settings: IngestSettings,
    pub profile_ttl_ms: i64,
    pub metrics: IngestMetrics,
    pub clock: Clock,
    pub moves: Option<Arc<dyn MoveObserver>>,
    pub engagement: Arc<dyn Engagement>,
}

impl Ingest {
    pub(crate) fn new(store: Store, parts: Parts) -> Self {
        Ingest {
            store,
            index: parts.index,
            settings: parts.settings,
            profile_ttl_ms: parts.profile_ttl_ms,
            metrics: parts.metrics,
            clock: parts.clock,
            moves: parts.moves,
            engagement: parts.engagement,
            last_sweep_ms: AtomicI64::new(i64::MIN),
            last_profile_trim_ms: AtomicI64::new(i64::MIN),
        }
    }

    pub(crate) fn settings(&self) -> &IngestSettings {
        &self.settings
    }

    pub(crate) fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    /// One location report for one driver.
    pub(crate) async fn push(
        &self,
        id: &EntryId,
        body: &LocationBody,
    ) -> Result<Outcome, IngestError> {
        self.push_as(Kind::Driver, id, body).await
    }

    /// One location report for one driver or people-nearby profile: the same rules
    /// (validation, rate limit, ordering, plausibility) for both kinds.
    pub(crate) async fn push_as(
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

    /// Many driver reports at once (a batch request): one result per report, in order. The
    /// valid ones go to the store together (in Redis mode, one pipeline).
    pub(crate) async fn push_many(
        &self,
        reports: &[(EntryId, LocationBody)],
    ) -> Vec<Result<Outcome, IngestError>> {
        self.push_many_as(Kind::Driver, reports).await
    }

    /// [`Ingest::push_many`] for entries of `kind`.
    async fn push_many_as(
        &self,
        kind: Kind,
        reports: &[(EntryId, LocationBody)],
    ) -> Vec<Result<Outcome, IngestError>> {
        let now = self.clock.now();
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
        match self.store.push_many(kind, &valid, now).await {
            Ok(verdicts) => {
                for (((_, r), i), v) in valid.iter().zip(&slots).zip(verdicts) {
                    results[*i] = Some(self.outcome(kind, r, now, v));
                }
            }
            Err(e) => {
                for i in &slots {
                    results[*i] = Some(Err(e.clone()));
                }
            }
        }
        self.metrics.index_size.set(self.index.len() as i64);
        results
            .into_iter()
            .map(|r| {
                let r = r.unwrap_or(Err(IngestError::Unavailable("no verdict".into())));
                self.metrics.record(&r);
                r
            })
            .collect()
    }

    /// Maps the store's verdict on a report; tells the move observer of a driver's move.
    fn outcome(
        &self,
        kind: Kind,
        r: &Report,
        now: i64,
        verdict: Verdict,
    ) -> Result<Outcome, IngestError> {
        match verdict {
            Verdict::Accepted { previous } => {
                // Road speeds are learned from drivers only.
                if let (Some(moves), Some(previous), Kind::Driver) = (&self.moves, previous, kind) {
                    let dt_s = r.elapsed_ms(&previous, now) as f64 / 1000.0;
                    moves.moved(&previous.position, &r.position, dt_s, now);
                }
                Ok(Outcome::Accepted)
            }
            Verdict::Stale => Ok(Outcome::Stale),
            Verdict::RateLimited { retry_after_ms } => {
                Err(IngestError::RateLimited { retry_after_ms })
            }
            Verdict::Implausible { speed_kmh } => Err(IngestError::ImplausibleJump {
                speed_kmh,
                max_kmh: self.settings.max_speed_kmh,
            }),
        }
    }

    /// Goes online (available, with vehicle class and seats) or offline.
    pub(crate) async fn set_status(
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
        // A driver holding an offer or on a ride is dispatch's to release, not its own.
        if let Some(engaged) = self.engagement.engagement(id.as_str()).await? {
            return Err(IngestError::Engaged(engaged));
        }
        let entry = self
            .store
            .set_status(id, status, attrs, self.clock.now())
            .await?;
        self.view(entry).await
    }

    /// The driver's current state.
    pub(crate) async fn get(&self, id: &EntryId) -> Result<DriverView, IngestError> {
        let entry = self
            .store
            .get(id)
            .await?
            .ok_or_else(|| IngestError::NotFound(id.clone()))?;
        self.view(entry).await
    }

    /// The view of a stored state, showing dispatch's hold on the driver if it has one.
    async fn view(&self, e: Entry) -> Result<DriverView, IngestError> {
        let status = match self.engagement.engagement(e.id.as_str()).await? {
            Some(engaged) => engaged,
            None => e.status,
        };
        Ok(DriverView {
            driver_id: e.id.to_string(),
            lat: e.position.lat(),
            lng: e.position.lng(),
            h3_cell: e.cell.to_string(),
            status,
            vehicle_class: self
                .settings
                .vehicle_classes
                .get(usize::from(e.attrs.vehicle_class))
                .cloned()
                .unwrap_or_default(),
            seats: e.attrs.seats,
            seq: e.seq,
            ts_ms: e.device_ts_ms,
            updated_at_ms: e.updated_at_ms,
        })
    }

    /// Periodic upkeep at `now` (run every second): silent drivers go offline
    /// ([`Ingest::evict_expired`]) and, in Redis mode, silent profiles leave the shared
    /// live set ([`Ingest::trim_profiles`]). Failures are logged and retried next time.
    pub(crate) async fn housekeep(&self, now: i64) {
        match self.evict_expired(now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(drivers = n, "took silent drivers offline"),
            Err(e) => tracing::warn!(error = %e, "expiry sweep failed; retrying next second"),
        }
        if let Err(e) = self.trim_profiles(now).await {
            tracing::warn!(error = %e, "trimming the profiles' seen sets failed");
        }
    }

    /// Once a minute: profiles not seen for `people.not_seen_for_s` leave the shared live
    /// set (Redis mode; each replica's index lets them go on people nearby's own sweep).
    /// How many left.
    pub(crate) async fn trim_profiles(&self, now: i64) -> Result<usize, IngestError> {
        let last = self.last_profile_trim_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < PROFILE_TRIM_EVERY_MS {
            return Ok(0);
        }
        self.last_profile_trim_ms.store(now, Ordering::Relaxed);
        self.store
            .trim_profiles_seen(now - self.profile_ttl_ms, now)
            .await
    }

    /// Takes every driver not heard from within the TTL offline (at most every tenth of
    /// the TTL); how many this replica claimed.
    pub(crate) async fn evict_expired(&self, now: i64) -> Result<usize, IngestError> {
        // The sweep walks every entry: run it every tenth of the TTL (at least every second),
        // which bounds how late a silent driver leaves to 10 % of the TTL.
        let every_ms = (self.settings.ttl_s * 100).max(1000) as i64;
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < every_ms {
            return Ok(0);
        }
        self.last_sweep_ms.store(now, Ordering::Relaxed);
        let cutoff = now - (self.settings.ttl_s * 1000) as i64;
        let gone = self.store.sweep_expired(cutoff, now).await?;
        self.metrics.evictions.inc_by(gone.len() as u64);
        self.metrics.index_size.set(self.index.len() as i64);
        Ok(gone.len())
    }
}

#[cfg(test)]
mod tests {
    use geomatch_common::ports::PortFuture;
    use geomatch_common::redis::RedisError;
    use geomatch_common::Metrics;
    use geomatch_index::{IndexConfig, Position};
    use parking_lot::Mutex;

    use super::*;

    const T0: i64 = 1_800_000_000_000;

    /// Dispatch holding (or not) every driver.
    struct Held(Option<Status>);

    impl Engagement for Held {
        fn engagement<'a>(
            &'a self,
            _driver: &'a str,
        ) -> PortFuture<'a, Result<Option<Status>, RedisError>> {
            Box::pin(std::future::ready(Ok(self.0)))
        }
    }

    /// Records the moves it is told of: from, to, seconds, now.
    #[derive(Default)]
    struct Moves(Mutex<Vec<(Position, Position, f64, i64)>>);

    impl MoveObserver for Moves {
        fn moved(&self, from: &Position, to: &Position, dt_s: f64, now_ms: i64) {
            self.0.lock().push((*from, *to, dt_s, now_ms));
        }
    }

    fn ingest(held: Option<Status>, moves: Option<Arc<Moves>>, clock: &Clock) -> Ingest {
        let index = Arc::new(Index::new(IndexConfig::default()).expect("an index"));
        let metrics = IngestMetrics::new(&Metrics::new().expect("a registry")).expect("metrics");
        let settings = IngestSettings::default();
        Ingest::new(
            Store::of(None, index.clone(), &settings, metrics.clone()),
            Parts {
                index,
                settings,
                profile_ttl_ms: 600_000,
                metrics,
                clock: clock.clone(),
                moves: moves.map(|m| m as Arc<dyn MoveObserver>),
                engagement: Arc::new(Held(held)),
            },
        )
    }

    fn at(lat: f64, lng: f64, ts_ms: Option<i64>) -> LocationBody {
        LocationBody {
            lat,
            lng,
            seq: None,
            ts_ms,
            heading_deg: None,
            speed_mps: None,
            accuracy_m: None,
        }
    }

    fn id(s: &str) -> EntryId {
        EntryId::parse(s).expect("a valid id")
    }

    #[tokio::test]
    async fn drivers_moves_are_observed_timed_by_device_clocks_and_profiles_are_not() {
        let clock = Clock::manual(T0);
        let moves = Arc::new(Moves::default());
        let ingest = ingest(None, Some(moves.clone()), &clock);
        let d1 = id("d1");
        ingest
            .push(&d1, &at(37.5, 127.0, Some(T0 - 9_000)))
            .await
            .expect("accepted");
        clock.advance(10_000);
        ingest
            .push(&d1, &at(37.501, 127.0, Some(T0 - 5_000)))
            .await
            .expect("accepted");
        // Without device times, server times.
        let p1 = id("p1");
        ingest
            .push_as(Kind::Profile, &p1, &at(1.0, 1.0, None))
            .await
            .expect("accepted");
        clock.advance(10_000);
        ingest
            .push_as(Kind::Profile, &p1, &at(1.001, 1.0, None))
            .await
            .expect("accepted");
        let seen = moves.0.lock().clone();
        assert_eq!(seen.len(), 1, "one driver move, no profile move: {seen:?}");
        let (from, to, dt_s, now) = seen[0];
        assert_eq!((from.lat(), to.lat()), (37.5, 37.501));
        assert_eq!((dt_s, now), (4.0, T0 + 10_000));
    }

    #[tokio::test]
    async fn a_driver_dispatch_holds_cannot_change_its_status_and_shows_the_hold() {
        let clock = Clock::manual(T0);
        let ingest = ingest(Some(Status::Busy), None, &clock);
        let d1 = id("d1");
        ingest
            .push(&d1, &at(37.5, 127.0, None))
            .await
            .expect("accepted");
        let online = StatusBody {
            status: OnlineStatus::Available,
            vehicle_class: None,
            seats: None,
        };
        assert_eq!(
            ingest.set_status(&d1, &online).await,
            Err(IngestError::Engaged(Status::Busy))
        );
        assert_eq!(ingest.get(&d1).await.expect("stored").status, Status::Busy);
    }

    #[tokio::test]
    async fn silent_drivers_are_swept_at_most_every_tenth_of_the_ttl() {
        let clock = Clock::manual(T0);
        let ingest = ingest(None, None, &clock);
        ingest
            .push(&id("d1"), &at(37.5, 127.0, None))
            .await
            .expect("accepted");
        assert_eq!(
            ingest.evict_expired(T0 + 29_000).await,
            Ok(0),
            "not silent yet"
        );
        // TTL 30 s: the next sweep is due 3 s after the last one.
        assert_eq!(
            ingest.evict_expired(T0 + 31_000).await,
            Ok(0),
            "not due yet"
        );
        assert_eq!(ingest.evict_expired(T0 + 32_000).await, Ok(1));
        assert_eq!(
            ingest.get(&id("d1")).await,
            Err(IngestError::NotFound(id("d1")))
        );
    }
}
