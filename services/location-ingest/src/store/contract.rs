//! The store's contract (see the module documentation of `store`), one case per rule, run
//! against the memory store and against the Redis store on a private redis-server. Time
//! is the `now` each call is given: no case sleeps.

use std::sync::Arc;

use geomatch_common::config::IngestSettings;
use geomatch_common::testing::RedisServer;
use geomatch_common::Metrics;
use geomatch_index::{Attributes, EntryId, Index, IndexConfig, Kind, Position, Status};

use super::Store;
use crate::metrics::IngestMetrics;
use crate::model::{IngestError, Verdict};
use crate::report::Report;

/// A server time well after any device time the cases use.
const T0: i64 = 1_800_000_000_000;

/// The store under test, the index it writes (in Redis mode, this process's replica),
/// and the redis-server it runs on, if any.
struct Harness {
    store: Store,
    index: Arc<Index>,
    _server: Option<RedisServer>,
}

/// Rate 5/s with a burst of 10, plausible up to 300 km/h (the defaults, spelled out).
fn settings() -> IngestSettings {
    IngestSettings {
        rate_per_s: 5.0,
        burst: 10.0,
        max_speed_kmh: 300.0,
        ..IngestSettings::default()
    }
}

fn store_on(redis: Option<&RedisServer>) -> (Store, Arc<Index>) {
    let index = Arc::new(Index::new(IndexConfig::default()).expect("an index"));
    let metrics = IngestMetrics::new(&Metrics::new().expect("a registry")).expect("metrics");
    let store = Store::of(
        redis.map(RedisServer::handle),
        index.clone(),
        &settings(),
        metrics,
    );
    (store, index)
}

fn memory() -> Harness {
    let (store, index) = store_on(None);
    Harness {
        store,
        index,
        _server: None,
    }
}

fn redis() -> Harness {
    let server = RedisServer::start();
    let (store, index) = store_on(Some(&server));
    Harness {
        store,
        index,
        _server: Some(server),
    }
}

fn id(s: &str) -> EntryId {
    EntryId::parse(s).expect("a valid id")
}

fn pos(lat: f64, lng: f64) -> Position {
    Position::new(lat, lng).expect("a valid position")
}

/// Seoul, and points north of it (1° of latitude ≈ 111.2 km).
const A: (f64, f64) = (37.5, 127.0);

fn north_of_a(m: f64) -> (f64, f64) {
    (A.0 + m / 111_195.0, A.1)
}

fn report(at: (f64, f64), seq: Option<u64>, ts: Option<i64>) -> Report {
    Report {
        position: pos(at.0, at.1),
        seq,
        device_ts_ms: ts,
        heading_deg: None,
        speed_mps: None,
        accuracy_m: None,
    }
}

impl Harness {
    async fn push_many(&self, kind: Kind, reports: &[(&str, Report)], now: i64) -> Vec<Verdict> {
        let reports: Vec<(EntryId, Report)> = reports.iter().map(|(i, r)| (id(i), *r)).collect();
        let verdicts = self
            .store
            .push_many(kind, &reports, now)
            .await
            .expect("the store answers");
        assert_eq!(verdicts.len(), reports.len(), "one verdict per report");
        verdicts
    }

    async fn push(&self, driver: &str, r: Report, now: i64) -> Verdict {
        self.push_many(Kind::Driver, &[(driver, r)], now).await[0]
    }

    async fn get(&self, driver: &str) -> Option<geomatch_index::Entry> {
        self.store
            .get(&id(driver))
            .await
            .expect("the store answers")
    }

    async fn sweep(&self, cutoff: i64, now: i64) -> Vec<(EntryId, i64)> {
        self.store
            .sweep_expired(cutoff, now)
            .await
            .expect("the store answers")
    }
}

fn accepted(v: Verdict) -> bool {
    matches!(v, Verdict::Accepted { .. })
}

async fn a_first_report_is_stored_and_a_move_says_where_it_came_from(h: Harness) {
    assert_eq!(
        h.push("d1", report(A, None, None), T0).await,
        Verdict::Accepted { previous: None }
    );
    let b = north_of_a(100.0);
    let Verdict::Accepted {
        previous: Some(previous),
    } = h.push("d1", report(b, None, None), T0 + 10_000).await
    else {
        panic!("a plausible move is accepted with the state it moved from");
    };
    assert_eq!(
        (previous.position.lat(), previous.position.lng()),
        A,
        "moved from A"
    );
    assert_eq!(previous.updated_at_ms, T0);
    let e = h.get("d1").await.expect("stored");
    assert_eq!((e.position.lat(), e.position.lng()), b);
    assert_eq!(e.updated_at_ms, T0 + 10_000);
    assert_eq!((e.kind, e.status), (Kind::Driver, Status::Offline));
    let local = h.index.get(&id("d1")).expect("in this process's index");
    assert_eq!((local.position.lat(), local.position.lng()), b);
}

async fn a_report_not_newer_by_seq_is_stale(h: Harness) {
    let r = |seq| report(A, Some(seq), None);
    assert!(accepted(h.push("d1", r(5), T0).await));
    assert_eq!(h.push("d1", r(4), T0 + 1_000).await, Verdict::Stale);
    assert_eq!(
        h.push("d1", r(5), T0 + 2_000).await,
        Verdict::Stale,
        "a repeat"
    );
    assert!(accepted(h.push("d1", r(6), T0 + 3_000).await));
    let e = h.get("d1").await.expect("stored");
    assert_eq!((e.seq, e.updated_at_ms), (Some(6), T0 + 3_000));
    // Beyond 2^53 sequences still compare exactly.
    let big = (1u64 << 53) + 2;
    assert!(accepted(h.push("d1", r(big), T0 + 4_000).await));
    assert_eq!(h.push("d1", r(big - 1), T0 + 5_000).await, Verdict::Stale);
    assert_eq!(h.get("d1").await.expect("stored").seq, Some(big));
    // Reports of one driver in one batch are judged in turn, as if sent apart.
    let verdicts = h
        .push_many(
            Kind::Driver,
            &[("d2", r(2)), ("d2", r(1)), ("d2", r(3))],
            T0,
        )
        .await;
    assert!(
        accepted(verdicts[0]) && accepted(verdicts[2]),
        "{verdicts:?}"
    );
    assert_eq!(verdicts[1], Verdict::Stale);
    assert_eq!(h.get("d2").await.expect("stored").seq, Some(3));
}

async fn without_seqs_device_time_orders(h: Harness) {
    let r = |ts| report(A, None, Some(ts));
    assert!(accepted(h.push("d1", r(T0 - 5_000), T0).await));
    assert_eq!(
        h.push("d1", r(T0 - 6_000), T0 + 1_000).await,
        Verdict::Stale
    );
    assert!(
        accepted(h.push("d1", r(T0 - 5_000), T0 + 2_000).await),
        "an equal device time is not older"
    );
    // A seq on one side only: device time still orders.
    assert_eq!(
        h.push("d1", report(A, Some(1), Some(T0 - 7_000)), T0 + 3_000)
            .await,
        Verdict::Stale
    );
    let e = h.get("d1").await.expect("stored");
    assert_eq!(
        (e.seq, e.device_ts_ms, e.updated_at_ms),
        (None, Some(T0 - 5_000), T0 + 2_000)
    );
}

async fn each_report_takes_a_token_and_past_the_burst_waits_for_the_next(h: Harness) {
    let here = report(A, None, None);
    let burst: Vec<(&str, Report)> = (0..12).map(|_| ("d1", here)).collect();
    let verdicts = h.push_many(Kind::Driver, &burst, T0).await;
    assert!(verdicts[..10].iter().all(|v| accepted(*v)), "{verdicts:?}");
    // 5 tokens a second: the next one in 200 ms.
    assert_eq!(
        verdicts[10..],
        [Verdict::RateLimited {
            retry_after_ms: 200
        }; 2]
    );
    assert!(
        accepted(h.push("d2", here, T0).await),
        "another driver has its own bucket"
    );
    assert!(accepted(h.push("d1", here, T0 + 200).await));
    assert!(matches!(
        h.push("d1", here, T0 + 200).await,
        Verdict::RateLimited { .. }
    ));
    // Stale reports take tokens too.
    assert!(accepted(h.push("d3", report(A, Some(10), None), T0).await));
    let stale: Vec<(&str, Report)> = (0..9).map(|_| ("d3", report(A, Some(1), None))).collect();
    let verdicts = h.push_many(Kind::Driver, &stale, T0).await;
    assert!(
        verdicts.iter().all(|v| *v == Verdict::Stale),
        "{verdicts:?}"
    );
    assert!(matches!(
        h.push("d3", report(A, Some(11), None), T0).await,
        Verdict::RateLimited { .. }
    ));
}

async fn a_jump_faster_than_the_limit_is_refused_and_changes_nothing(h: Harness) {
    assert!(accepted(h.push("d1", report(A, None, None), T0).await));
    // 10 km in 10 s (server times) = 3,600 km/h.
    let far = north_of_a(10_000.0);
    let Verdict::Implausible { speed_kmh } =
        h.push("d1", report(far, None, None), T0 + 10_000).await
    else {
        panic!("a 3,600 km/h jump is implausible");
    };
    assert!((speed_kmh - 3_600.0).abs() < 10.0, "{speed_kmh}");
    let e = h.get("d1").await.expect("stored");
    assert_eq!(
        ((e.position.lat(), e.position.lng()), e.updated_at_ms),
        (A, T0)
    );
    // 500 m in 10 s = 180 km/h: plausible.
    assert!(accepted(
        h.push("d1", report(north_of_a(500.0), None, None), T0 + 10_000)
            .await
    ));
    // Device clocks decide when both reports have one: 2 km in 1 s of device time is
    // implausible, whatever the server saw (60 s).
    assert!(accepted(
        h.push("d2", report(A, None, Some(T0 - 60_000)), T0).await
    ));
    let Verdict::Implausible { speed_kmh } = h
        .push(
            "d2",
            report(north_of_a(2_000.0), None, Some(T0 - 59_000)),
            T0 + 60_000,
        )
        .await
    else {
        panic!("7,200 km/h by the device's clock is implausible");
    };
    assert!((speed_kmh - 7_200.0).abs() < 20.0, "{speed_kmh}");
}

async fn a_status_needs_a_position_and_is_stored_with_its_attributes(h: Harness) {
    let xl = Attributes {
        vehicle_class: 1,
        seats: 6,
    };
    assert_eq!(
        h.store
            .set_status(&id("d1"), Status::Available, Some(xl), T0)
            .await,
        Err(IngestError::LocationRequired(id("d1")))
    );
    h.push("d1", report(A, None, None), T0).await;
    let e = h
        .store
        .set_status(&id("d1"), Status::Available, Some(xl), T0 + 1_000)
        .await
        .expect("a driver with a position may go online");
    assert_eq!((e.status, e.attrs), (Status::Available, xl));
    let got = h.get("d1").await.expect("stored");
    assert_eq!((got.status, got.attrs), (Status::Available, xl));
    let local = h.index.get(&id("d1")).expect("in this process's index");
    assert_eq!(
        (local.status, local.attrs),
        (Status::Available, xl),
        "searches see it"
    );
    let e = h
        .store
        .set_status(&id("d1"), Status::Offline, None, T0 + 2_000)
        .await
        .expect("and offline again");
    assert_eq!(e.status, Status::Offline);
    assert_eq!(h.get("d1").await.expect("stored").status, Status::Offline);
}

async fn an_unknown_driver_is_none(h: Harness) {
    assert_eq!(h.get("nobody").await, None);
}

async fn the_sweep_claims_each_silent_driver_once(h: Harness) {
    h.push("d1", report(A, None, None), T0).await;
    h.push("d2", report(A, None, None), T0 + 20_000).await;
    // Heard from again after the cutoff (in Redis, within the slack of its seen score).
    h.push("d3", report(A, None, None), T0).await;
    h.push("d3", report(A, None, None), T0 + 3_000).await;
    let cutoff = T0 + 2_000;
    assert_eq!(h.sweep(cutoff, T0 + 30_000).await, [(id("d1"), T0)]);
    assert_eq!(h.sweep(cutoff, T0 + 31_000).await, [], "claimed once");
    assert_eq!(h.get("d1").await, None);
    assert_eq!(h.index.get(&id("d1")), None, "left this process's index");
    assert!(h.get("d2").await.is_some() && h.get("d3").await.is_some());
    // A report brings it back.
    assert_eq!(
        h.push("d1", report(A, None, None), T0 + 40_000).await,
        Verdict::Accepted { previous: None }
    );
    assert_eq!(h.get("d1").await.expect("back").updated_at_ms, T0 + 40_000);
}

async fn profiles_are_kept_apart_from_drivers(h: Harness) {
    let here = report(A, None, None);
    assert!(accepted(
        h.push_many(Kind::Profile, &[("p1", here)], T0).await[0]
    ));
    h.push("d1", here, T0).await;
    assert_eq!(
        h.sweep(T0 + 1, T0 + 60_000).await,
        [(id("d1"), T0)],
        "the driver sweep takes drivers only"
    );
    let p1 = h.index.get(&id("p1")).expect("the profile stays");
    assert_eq!(p1.kind, Kind::Profile);
    // Profiles follow the same rules.
    let far = north_of_a(10_000.0);
    assert!(matches!(
        h.push_many(
            Kind::Profile,
            &[("p1", report(far, None, None))],
            T0 + 10_000
        )
        .await[0],
        Verdict::Implausible { .. }
    ));
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::memory()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::redis()).await;
                }
            )*
        }
    };
}

contract!(
    a_first_report_is_stored_and_a_move_says_where_it_came_from,
    a_report_not_newer_by_seq_is_stale,
    without_seqs_device_time_orders,
    each_report_takes_a_token_and_past_the_burst_waits_for_the_next,
    a_jump_faster_than_the_limit_is_refused_and_changes_nothing,
    a_status_needs_a_position_and_is_stored_with_its_attributes,
    an_unknown_driver_is_none,
    the_sweep_claims_each_silent_driver_once,
    profiles_are_kept_apart_from_drivers,
);

/// Where the stores differ by design: Redis replicas share one state and the profiles'
/// live set; in memory the index status is dispatch's lock.
mod per_mode {
    use super::*;

    async fn push_seq(store: &Store, seq: u64, now: i64) -> Vec<Verdict> {
        let reports = [(id("d1"), report(A, Some(seq), None))];
        store
            .push_many(Kind::Driver, &reports, now)
            .await
            .expect("the store answers")
    }

    #[tokio::test]
    async fn replicas_share_the_rules_and_each_expiry_is_claimed_by_one() {
        let server = RedisServer::start();
        let (one, one_index) = store_on(Some(&server));
        let (two, two_index) = store_on(Some(&server));
        assert!(accepted(push_seq(&one, 2, T0).await[0]));
        assert_eq!(
            push_seq(&two, 1, T0 + 1_000).await,
            [Verdict::Stale],
            "ordered against what the other replica stored"
        );
        assert!(one_index.get(&id("d1")).is_some());
        assert!(
            two_index.get(&id("d1")).is_none(),
            "a stale report is not applied"
        );
        let cutoff = T0 + 10_000;
        let (a, b) = tokio::join!(
            one.sweep_expired(cutoff, T0 + 40_000),
            two.sweep_expired(cutoff, T0 + 40_000)
        );
        let claims = a.expect("answers").len() + b.expect("answers").len();
        assert_eq!(claims, 1);
        assert!(one_index.get(&id("d1")).is_none());
    }

    #[tokio::test]
    async fn silent_profiles_leave_the_live_set_once() {
        let h = redis();
        h.push_many(Kind::Profile, &[("p1", report(A, None, None))], T0)
            .await;
        h.push_many(Kind::Profile, &[("p2", report(A, None, None))], T0 + 60_000)
            .await;
        let trim = |cutoff| h.store.trim_profiles_seen(cutoff, T0 + 120_000);
        assert_eq!(trim(T0 + 30_000).await, Ok(1));
        assert_eq!(trim(T0 + 30_000).await, Ok(0));
        assert_eq!(
            h.sweep(T0 + 100_000, T0 + 120_000).await,
            [],
            "the driver sweep never sees profiles"
        );
    }

    #[tokio::test]
    async fn in_memory_a_driver_dispatch_holds_cannot_change_its_status() {
        let h = memory();
        h.push("d1", report(A, None, None), T0).await;
        h.index
            .set_status(&id("d1"), Status::Offered, None)
            .expect("stored");
        assert_eq!(
            h.store
                .set_status(&id("d1"), Status::Offline, None, T0)
                .await,
            Err(IngestError::Engaged(Status::Offered))
        );
    }

    #[tokio::test]
    async fn a_memory_store_has_no_profile_set_to_trim() {
        let h = memory();
        h.push_many(Kind::Profile, &[("p1", report(A, None, None))], T0)
            .await;
        assert_eq!(h.store.trim_profiles_seen(T0 + 1, T0 + 1).await, Ok(0));
        assert!(
            h.index.get(&id("p1")).is_some(),
            "people nearby evicts its own"
        );
    }
}
