//! The store's contract ([`Store`]), the same cases against the local store and against
//! the Redis store on a private redis-server. A case gets a [`Fixture`] that makes peers:
//! processes of one deployment (independent stores when local, one Redis when shared).
//! Time is passed in; nothing sleeps.

use std::collections::HashMap;
use std::sync::Arc;

use geomatch_common::config::SurgeSettings;
use geomatch_common::testing::RedisServer;
use geomatch_common::Metrics;
use geomatch_eta::{LearnerConfig, Slot, SpeedLearner};
use geomatch_index::{cell_of, CellIndex, Index, IndexConfig, Position, Resolution};

use super::Store;
use crate::metrics::PricingMetrics;
use crate::rounds::Rounds;
use crate::surge::{SurgeParams, Window, NO_SURGE, SURGE_RESOLUTION};

/// A round start (2024-01-01 00:00 UTC).
const T0: i64 = 1_704_067_200_000;
const INTERVAL_MS: i64 = 30_000;

enum Fixture {
    Local,
    Redis(RedisServer),
}

/// One process: its store, the round it answers from, its own metrics.
struct Peer {
    store: Store,
    rounds: Rounds,
    metrics: PricingMetrics,
}

impl Fixture {
    fn redis() -> Self {
        Fixture::Redis(RedisServer::start())
    }

    fn peer(&self) -> Peer {
        let metrics = PricingMetrics::new(&Metrics::new().expect("a registry")).expect("metrics");
        let index = Arc::new(Index::new(IndexConfig::default()).expect("an index"));
        let redis = match self {
            Fixture::Local => None,
            Fixture::Redis(server) => Some(server.handle()),
        };
        let surge = SurgeSettings {
            smoothing: 1.0,
            ..SurgeSettings::default()
        };
        Peer {
            store: Store::new(
                redis,
                Window::new(300),
                INTERVAL_MS,
                Arc::new(SpeedLearner::new(LearnerConfig::default())),
                metrics.clone(),
            ),
            rounds: Rounds::new(index, SurgeParams::from(&surge), metrics.clone()),
            metrics,
        }
    }
}

impl Peer {
    /// What the process's background tasks do at `now`: the tick, then the sync.
    async fn step(&self, now: i64) {
        self.store.tick(now, &self.rounds);
        self.store.sync(now, &self.rounds).await.expect("a sync");
    }

    async fn count(&self, rider: &str, cell: CellIndex, now: i64) -> bool {
        self.store
            .count_quote(rider, cell, now)
            .await
            .expect("the store answers")
    }

    fn demand(&self, cell: CellIndex) -> u32 {
        self.rounds
            .current()
            .demand
            .get(&cell)
            .copied()
            .unwrap_or(0)
    }

    /// Every slot of the model's learner (empties it).
    fn learned(&self) -> HashMap<(CellIndex, u8), Slot> {
        self.store
            .learner()
            .drain()
            .into_iter()
            .map(|(cell, hour, slot)| ((cell, hour), slot))
            .collect()
    }
}

fn seoul() -> CellIndex {
    cell_of(
        &Position::new(37.5665, 126.978).expect("a position"),
        SURGE_RESOLUTION,
    )
}

/// Runs each case against the local store and the Redis store.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test]
            async fn $case() {
                super::$case(&super::Fixture::Local).await;
            })*
        }
        mod redis {
            $(#[tokio::test]
            async fn $case() {
                super::$case(&super::Fixture::redis()).await;
            })*
        }
    };
}

contract!(
    a_quote_counts_once_per_rider_cell_and_window,
    ride_requests_count_as_demand_in_their_resolution_7_cell,
    a_round_is_computed_by_one_sharing_peer_and_installed_by_every_one,
    moves_observed_at_one_peer_teach_every_sharing_peer,
    thousands_of_learned_slots_are_read_back_whole,
);

async fn a_quote_counts_once_per_rider_cell_and_window(fx: &Fixture) {
    let (a, b) = (fx.peer(), fx.peer());
    let here = seoul();
    let there = here.grid_disk::<Vec<_>>(3)[30];
    let finer = here.center_child(Resolution::Nine).expect("a child");
    assert!(a.count("u1", here, T0).await);
    assert!(
        !a.count("u1", here, T0 + 1_000).await,
        "the same rider again"
    );
    assert!(
        !a.count("u1", finer, T0 + 1_000).await,
        "inside the same cell"
    );
    assert!(a.count("u2", here, T0 + 1_000).await, "another rider");
    assert!(a.count("u1", there, T0 + 1_000).await, "another cell");
    assert_eq!(
        b.count("u1", here, T0 + 2_000).await,
        !b.store.is_shared(),
        "a sharing peer knows the rider was counted"
    );
    a.step(T0 + 5_000).await;
    assert_eq!((a.demand(here), a.demand(there)), (2, 1));
    // The window's end is checked in `surge` (locally) and left to Redis's own expiry
    // (wall time) in Redis mode.
}

async fn ride_requests_count_as_demand_in_their_resolution_7_cell(fx: &Fixture) {
    let a = fx.peer();
    let here = seoul();
    for i in 0..3 {
        a.store.record_demand(here, T0 + i);
    }
    let finer = here.center_child(Resolution::Nine).expect("a child");
    a.store.record_demand(finer, T0 + 10);
    a.step(T0 + 1_000).await;
    let round = a.rounds.current();
    assert_eq!(round.computed_at_ms, T0 + 1_000);
    assert_eq!(a.demand(here), 4);
    assert_eq!(round.demand.len(), 1, "{:?}", round.demand);
    // Outside the window it is gone.
    a.step(T0 + 301_000).await;
    assert_eq!(a.rounds.current().computed_at_ms, T0 + 301_000);
    assert_eq!(a.demand(here), 0);
}

async fn a_round_is_computed_by_one_sharing_peer_and_installed_by_every_one(fx: &Fixture) {
    let (a, b) = (fx.peer(), fx.peer());
    let shared = a.store.is_shared();
    let here = seoul();
    for _ in 0..20 {
        a.store.record_demand(here, T0);
    }
    for _ in 0..10 {
        b.store.record_demand(here, T0);
    }
    a.step(T0 + 1_000).await;
    b.step(T0 + 2_000).await;
    let rounds = |p: &Peer| p.metrics.surge_rounds.get();
    let (ra, rb) = (a.rounds.current(), b.rounds.current());
    assert!(ra.surge.get(&here).copied().unwrap_or(NO_SURGE) > NO_SURGE);
    assert_eq!(ra.computed_at_ms, T0 + 1_000);
    assert_eq!(a.demand(here), 20);
    if shared {
        assert_eq!((rounds(&a), rounds(&b)), (1, 0), "a claimed the round");
        assert_eq!(
            rb.computed_at_ms, ra.computed_at_ms,
            "b installed a's round"
        );
        assert_eq!(rb.surge, ra.surge);
        assert_eq!(b.demand(here), 20);
    } else {
        assert_eq!((rounds(&a), rounds(&b)), (1, 1), "each its own");
        assert_eq!(rb.computed_at_ms, T0 + 2_000);
        assert_eq!(b.demand(here), 10);
    }
    // Not due again within the interval, at either peer.
    a.step(T0 + 20_000).await;
    b.step(T0 + 25_000).await;
    assert_eq!(rounds(&a) + rounds(&b), if shared { 1 } else { 2 });
    // The next round goes to whoever is first; it sees every sharing peer's demand.
    let next = T0 + INTERVAL_MS + 2_000;
    b.step(next).await;
    a.step(next + 500).await;
    assert_eq!(b.rounds.current().computed_at_ms, next);
    if shared {
        assert_eq!((rounds(&a), rounds(&b)), (1, 1), "b claimed this one");
        assert_eq!(a.rounds.current().computed_at_ms, next);
        assert_eq!((a.demand(here), b.demand(here)), (30, 30));
        assert_eq!(a.rounds.current().surge, b.rounds.current().surge);
    } else {
        assert_eq!((rounds(&a), rounds(&b)), (2, 2));
        assert_eq!(a.rounds.current().computed_at_ms, next + 500);
        assert_eq!((a.demand(here), b.demand(here)), (20, 10));
    }
}

async fn moves_observed_at_one_peer_teach_every_sharing_peer(fx: &Fixture) {
    let (a, b) = (fx.peer(), fx.peer());
    let start = Position::new(37.5, 127.0).expect("a position");
    let mut at = start;
    for i in 0..50 {
        // 15 m/s north and back, 5 s apart.
        let bearing = if (i / 5) % 2 == 0 { 0.0 } else { 180.0 };
        let next = at.destination(bearing, 75.0);
        a.store.samples().observe(&at, &next, 5.0, T0 + i * 5_000);
        at = next;
    }
    a.step(T0).await;
    b.step(T0 + 1).await;
    let speed = |p: &Peer| p.store.learner().speed_at(&start, T0).map(|s| s.speed_mps);
    let learned = speed(&a).expect("a learned the speed");
    assert!((learned - 15.0).abs() < 0.5, "{learned}");
    assert_eq!(speed(&b), b.store.is_shared().then_some(learned));
}

/// Many small script calls one way, page by page the other: every slot arrives, with its
/// values (moved from the e2e suite's Redis paging test).
async fn thousands_of_learned_slots_are_read_back_whole(fx: &Fixture) {
    let (a, b) = (fx.peer(), fx.peer());
    // 271 cells × 24 hours: hundreds of slots per Redis shard, several pages each.
    let mut sent = HashMap::new();
    for (i, cell) in seoul().grid_disk::<Vec<_>>(9).into_iter().enumerate() {
        for hour in 0..24u8 {
            let n = (i * 24 + usize::from(hour)) as u32;
            let slot = Slot {
                distance: 100.0 + f64::from(n),
                time: 10.0 + f64::from(n % 7),
                samples: 1 + n % 5,
            };
            assert!(a.store.samples().set(cell, hour, slot));
            sent.insert((cell, hour), slot);
        }
    }
    assert!(sent.len() > 6_000);
    a.step(T0).await;
    b.step(T0).await;
    let same = |got: HashMap<(CellIndex, u8), Slot>| {
        assert_eq!(got.len(), sent.len(), "every slot read back");
        for (k, slot) in &sent {
            let r = got[k];
            assert!(
                (r.distance - slot.distance).abs() < 1e-9,
                "{k:?}: {r:?} vs {slot:?}"
            );
            assert!(
                (r.time - slot.time).abs() < 1e-9,
                "{k:?}: {r:?} vs {slot:?}"
            );
            assert_eq!(r.samples, slot.samples, "{k:?}");
        }
    };
    same(a.learned());
    if b.store.is_shared() {
        same(b.learned());
    } else {
        assert!(b.learned().is_empty());
    }
}

/// Redis only: the paging of the shared speed slots itself. Thousands of slots flushed in
/// uneven calls are read back page by page, every slot exactly once with the values
/// flushed (a page may end inside one flush call: its slots are read again, unchanged),
/// and a second read finds nothing new.
#[tokio::test]
async fn speed_slots_flushed_in_small_calls_are_read_back_whole_page_by_page() {
    use super::redis::scripts::{Scripts, SHARDS};

    let server = RedisServer::start();
    let metrics = PricingMetrics::new(&Metrics::new().expect("a registry")).expect("metrics");
    let store = Scripts::new(server.handle(), metrics);
    // 6,000 slots over distinct resolution-9 cells: hundreds per shard, several pages each.
    let mut sent = HashMap::new();
    let mut batch = Vec::new();
    for i in 0..6_000u32 {
        let at = Position::new(
            37.3 + f64::from(i / 80) * 0.004,
            126.8 + f64::from(i % 80) * 0.004,
        )
        .expect("a position");
        let cell = cell_of(&at, Resolution::Nine);
        let hour = (i % 24) as u8;
        let slot = Slot {
            distance: 100.0 + f64::from(i),
            time: 10.0 + f64::from(i % 7),
            samples: 1 + i % 5,
        };
        if sent.insert((cell, hour), slot).is_none() {
            batch.push((cell, hour, slot));
        }
    }
    // In uneven flushes, so that calls hold odd numbers of slots and pages end inside them.
    for part in batch.chunks(700) {
        store
            .flush_speeds(part.to_vec(), 0.05, 1_000_000)
            .await
            .expect("flushed");
    }

    let mut seen = [0i64; SHARDS];
    let mut got = Vec::new();
    let mut pages = 0;
    while store
        .changed_speeds(&mut seen, &mut got)
        .await
        .expect("a page")
    {
        pages += 1;
        assert!(pages < 100, "paging does not progress");
    }
    assert!(
        pages >= 1,
        "hundreds of slots per shard take more than one page"
    );
    let mut read = HashMap::new();
    for (cell, hour, slot) in got {
        if let Some(before) = read.insert((cell, hour), slot) {
            assert_eq!(before, slot);
        }
    }
    assert_eq!(read.len(), sent.len(), "every slot read back");
    for (k, slot) in &sent {
        let r = read[k];
        assert!(
            (r.distance - slot.distance).abs() < 1e-9,
            "{k:?}: {r:?} vs {slot:?}"
        );
        assert!(
            (r.time - slot.time).abs() < 1e-9,
            "{k:?}: {r:?} vs {slot:?}"
        );
        assert_eq!(r.samples, slot.samples, "{k:?}");
    }
    let mut again = Vec::new();
    assert!(!store
        .changed_speeds(&mut seen, &mut again)
        .await
        .expect("a page"));
    assert!(
        again.is_empty(),
        "nothing changed since: {} slots",
        again.len()
    );
}
