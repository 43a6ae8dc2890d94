//! Every query of the index agrees with brute force, everywhere on Earth.

// Test and benchmark code may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use geomatch_index::oracle::{awkward_position, check_nearest, BruteForce, Metro};
use geomatch_index::{
    Attributes, Entry, EntryId, Filter, Index, IndexConfig, Kind, Neighbor, Position, Status,
    Update,
};
use proptest::prelude::*;

/// The query that found the antipode rounding error: distances near half the globe must
/// still agree with brute force to a micrometre.
#[test]
fn near_antipodal_distances_agree_with_brute_force() {
    let ix = Index::new(IndexConfig::default()).unwrap();
    let q = Position::new(-86.33260831882276, -74.34315795356731).unwrap();
    let far = Position::new(86.33, 105.66).unwrap();
    ix.upsert(&Update::moved(
        EntryId::parse("e0").unwrap(),
        Kind::Driver,
        far,
        0,
    ))
    .unwrap();
    let oracle = BruteForce::new(ix.entries());
    check_nearest(
        &ix.nearest(&q, 1, &Filter::any(), None),
        &oracle.nearest(&q, 1, &Filter::any(), None),
        None,
    )
    .unwrap();
}
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A position from the places where spatial code usually breaks, or anywhere.
fn any_position() -> impl Strategy<Value = Position> {
    let lng_near_180 = prop_oneof![179.95..=180.0f64, -180.0..-179.95f64];
    prop_oneof![
        // near the north and south poles
        (85.0..=90.0f64, -180.0..=180.0f64),
        (-90.0..=-85.0f64, -180.0..=180.0f64),
        // across the antimeridian
        (-60.0..60.0f64, lng_near_180),
        // along the equator
        (-0.02..0.02f64, -180.0..=180.0f64),
        // anywhere
        (-90.0..=90.0f64, -180.0..=180.0f64),
    ]
    .prop_map(|(lat, lng)| Position::new(lat, lng).unwrap())
}

/// Entries spread around a few seeds, so that neighbours are close (a clustered world).
fn entries() -> impl Strategy<Value = Vec<(Position, u8, u8)>> {
    (
        prop::collection::vec(any_position(), 1..6),
        prop::collection::vec(
            (0usize..6, 0.0..360.0f64, 0.0..20_000.0f64, 0u8..4, 0u8..3),
            1..250,
        ),
    )
        .prop_map(|(seeds, rows)| {
            rows.into_iter()
                .map(|(s, bearing, dist, status, class)| {
                    (
                        seeds[s % seeds.len()].destination(bearing, dist),
                        status,
                        class,
                    )
                })
                .collect()
        })
}

fn status_of(n: u8) -> Status {
    Status::ALL[n as usize % 4]
}

fn build(rows: &[(Position, u8, u8)]) -> Index {
    let ix = Index::new(IndexConfig::default()).unwrap();
    for (i, (p, status, class)) in rows.iter().enumerate() {
        let u = Update {
            status: Some(status_of(*status)),
            attrs: Some(Attributes {
                vehicle_class: *class,
                seats: 4 + class,
            }),
            ..Update::moved(
                EntryId::parse(&format!("e{i}")).unwrap(),
                Kind::Driver,
                *p,
                0,
            )
        };
        ix.upsert(&u).unwrap();
    }
    ix
}

fn filters() -> Vec<Filter> {
    vec![
        Filter::any(),
        Filter::available_drivers(),
        Filter::any().vehicle_class(1).min_seats(5),
        Filter::any().statuses(&[Status::Offered, Status::Busy]),
    ]
}

proptest! {
    // A fixed seed keeps CI deterministic; to explore further, run with another seed
    // (each new one has found nothing since the antipode rounding fix).
    #![proptest_config(ProptestConfig {
        cases: 300,
        rng_seed: proptest::test_runner::RngSeed::Fixed(20261121),
        ..ProptestConfig::default()
    })]

    #[test]
    fn nearest_k_agrees_with_brute_force_worldwide(
        rows in entries(),
        queries in prop::collection::vec(any_position(), 1..8),
        k in 1usize..20,
        max in prop::option::of(1.0..50_000.0f64),
    ) {
        let ix = build(&rows);
        let oracle = BruteForce::new(ix.entries());
        for q in &queries {
            for f in filters() {
                let got = ix.nearest(q, k, &f, max);
                let want = oracle.nearest(q, k, &f, max);
                if let Err(e) = check_nearest(&got, &want, max) {
                    return Err(TestCaseError::fail(format!("query {q:?} k {k} max {max:?}: {e}")));
                }
            }
        }
    }

    #[test]
    fn radius_agrees_with_brute_force_worldwide(
        rows in entries(),
        queries in prop::collection::vec(any_position(), 1..8),
        radius in 0.0..40_000.0f64,
    ) {
        let ix = build(&rows);
        let oracle = BruteForce::new(ix.entries());
        for q in &queries {
            for f in filters() {
                let got = ix.within_radius(q, radius, &f);
                let want = oracle.within_radius(q, radius, &f);
                if let Err(e) = check_nearest(&got, &want, Some(radius)) {
                    return Err(TestCaseError::fail(format!("query {q:?} radius {radius}: {e}")));
                }
            }
        }
    }

    #[test]
    fn polygon_agrees_with_brute_force(
        rows in entries(),
        centre in any_position(),
        radii in prop::collection::vec(0.01..3.0f64, 3..12),
    ) {
        let ix = build(&rows);
        let oracle = BruteForce::new(ix.entries());
        // A star-shaped polygon around the centre, clamped into the valid range (GeoJSON
        // rings do not cross the antimeridian).
        let n = radii.len();
        let mut ring: Vec<(f64, f64)> = radii.iter().enumerate().map(|(i, r)| {
            let a = i as f64 / n as f64 * std::f64::consts::TAU;
            ((centre.lng() + r * a.cos()).clamp(-180.0, 180.0), (centre.lat() + r * a.sin()).clamp(-90.0, 90.0))
        }).collect();
        ring.push(ring[0]);
        let polygon = geo::Polygon::new(geo::LineString::from(ring), vec![]);
        for f in filters() {
            let got: Vec<EntryId> = ix.within_polygon(&polygon, &f).into_iter().map(|e| e.id).collect();
            prop_assert_eq!(got, oracle.within_polygon(&polygon, &f));
        }
    }
}

/// The same checks after a long random history of inserts, moves, status changes and
/// removals, against a model kept independently of the index.
#[test]
fn queries_stay_exact_after_moves_and_removals() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let ix = Index::new(IndexConfig::default()).unwrap();
    let mut model: HashMap<String, (Position, Status)> = HashMap::new();
    let centres: Vec<Position> = (0..6).map(|_| awkward_position(&mut rng)).collect();
    for step in 0..40_000 {
        let name = format!("e{}", rng.random_range(0..3_000));
        let id = EntryId::parse(&name).unwrap();
        match rng.random_range(0..10) {
            0 => {
                assert_eq!(ix.remove(&id).is_some(), model.remove(&name).is_some());
            }
            1 => {
                let s = status_of(rng.random_range(0..4));
                let r = ix.set_status(&id, s, None);
                assert_eq!(r.is_ok(), model.contains_key(&name));
                if let Some(m) = model.get_mut(&name) {
                    m.1 = s;
                }
            }
            _ => {
                let p = match model.get(&name) {
                    Some((p, _)) if rng.random_bool(0.8) => {
                        p.destination(rng.random_range(0.0..360.0), rng.random_range(0.0..300.0))
                    }
                    _ => centres[rng.random_range(0..6)].destination(
                        rng.random_range(0.0..360.0),
                        rng.random_range(0.0..30_000.0),
                    ),
                };
                ix.upsert(&Update {
                    seq: Some(step),
                    ..Update::moved(id, Kind::Driver, p, step as i64)
                })
                .unwrap();
                let status = model.get(&name).map_or(Status::Offline, |m| m.1);
                model.insert(name, (p, status));
            }
        }
    }
    let entries = ix.entries();
    assert_eq!(entries.len(), model.len());
    assert_eq!(ix.len(), model.len());
    for e in &entries {
        let (p, s) = model[e.id.as_str()];
        assert_eq!((e.position, e.status), (p, s), "{}", e.id);
        assert_eq!(
            e.cell,
            geomatch_index::cell_of(&p, ix.cell_resolution()),
            "{}",
            e.id
        );
    }
    let oracle = BruteForce::new(entries);
    for _ in 0..500 {
        let q = centres[rng.random_range(0..6)].destination(
            rng.random_range(0.0..360.0),
            rng.random_range(0.0..30_000.0),
        );
        for f in filters() {
            let got = ix.nearest(&q, 10, &f, None);
            check_nearest(&got, &oracle.nearest(&q, 10, &f, None), None).unwrap();
            let got = ix.within_radius(&q, 2_000.0, &f);
            check_nearest(&got, &oracle.within_radius(&q, 2_000.0, &f), Some(2_000.0)).unwrap();
        }
    }
}

#[test]
fn metro_scenario_answers_match_brute_force() {
    let mut metro = Metro::new(42);
    let ix = Index::bulk_load(IndexConfig::default(), metro.drivers(50_000, 0)).unwrap();
    let oracle = BruteForce::new(ix.entries());
    for _ in 0..300 {
        let q = metro.position();
        let f = Filter::available_drivers();
        check_nearest(
            &ix.nearest(&q, 10, &f, Some(3_000.0)),
            &oracle.nearest(&q, 10, &f, Some(3_000.0)),
            Some(3_000.0),
        )
        .unwrap();
    }
}

/// A deliberately broken index: it answers from the query's own H3 cell only, as an index
/// that forgot to look at neighbouring cells would.
fn broken_nearest(ix: &Index, q: &Position, k: usize, f: &Filter) -> Vec<Neighbor> {
    let own = geomatch_index::cell_of(q, ix.cell_resolution());
    let mut v: Vec<Neighbor> = ix
        .nearest(q, usize::MAX >> 1, f, None)
        .into_iter()
        .filter(|n| n.entry.cell == own)
        .collect();
    v.truncate(k);
    v
}

#[test]
fn the_oracle_check_catches_an_index_that_skips_neighbouring_cells() {
    let mut metro = Metro::new(5);
    let ix = Index::bulk_load(IndexConfig::default(), metro.drivers(20_000, 0)).unwrap();
    let oracle = BruteForce::new(ix.entries());
    let mut caught = 0;
    for _ in 0..200 {
        let q = metro.uniform();
        let want = oracle.nearest(&q, 10, &Filter::any(), None);
        if check_nearest(&broken_nearest(&ix, &q, 10, &Filter::any()), &want, None).is_err() {
            caught += 1;
        }
        // The real index passes the very same check.
        check_nearest(&ix.nearest(&q, 10, &Filter::any(), None), &want, None).unwrap();
    }
    assert!(
        caught > 150,
        "the broken index slipped through {} of 200 checks",
        200 - caught
    );
}

#[test]
fn the_oracle_check_rejects_wrong_order_missing_and_extra_results() {
    let mk = |id: &str, d: f64| Neighbor {
        entry: Entry {
            id: EntryId::parse(id).unwrap(),
            position: Position::new(0.0, 0.0).unwrap(),
            cell: geomatch_index::cell_of(
                &Position::new(0.0, 0.0).unwrap(),
                geomatch_index::Resolution::Nine,
            ),
            status: Status::Available,
            kind: Kind::Driver,
            attrs: Attributes::default(),
            updated_at_ms: 0,
            seq: None,
            device_ts_ms: None,
        },
        distance_m: d,
    };
    let want = vec![
        (EntryId::parse("a").unwrap(), 1.0),
        (EntryId::parse("b").unwrap(), 2.0),
    ];
    assert!(check_nearest(&[mk("a", 1.0), mk("b", 2.0)], &want, None).is_ok());
    assert!(check_nearest(&[mk("b", 2.0), mk("a", 1.0)], &want, None).is_err());
    assert!(check_nearest(&[mk("a", 1.0)], &want, None).is_err());
    assert!(
        check_nearest(&[mk("a", 1.0), mk("c", 2.0)], &want, None).is_ok(),
        "a tie at the cut-off may differ"
    );
    assert!(check_nearest(&[mk("c", 1.0), mk("b", 2.0)], &want, None).is_err());
    assert!(check_nearest(&[mk("a", 1.0), mk("b", 2.5)], &want, None).is_err());
}
