//! The benchmark city and the baselines, shared by every bench file.
//!
//! Scenario (issue #2): 1M entries in a 60 × 60 km metro, 70 % in five hotspots and 30 %
//! uniform, fixed seed; each update moves an entry by at most 100 m.

#![allow(dead_code)]

use geomatch_index::oracle::Metro;
use geomatch_index::{EntryId, Index, IndexConfig, Kind, Position, Status, Update};
use rstar::primitives::GeomWithData;
use rstar::RTree;

pub const ENTRIES: usize = 1_000_000;
pub const SEED: u64 = 2026;
pub const MAX_MOVE_M: f64 = 100.0;

pub struct City {
    pub updates: Vec<Update>,
    /// One id per entry, so that moves need not format strings.
    pub ids: Vec<EntryId>,
}

pub fn city(n: usize) -> City {
    let updates = Metro::new(SEED).drivers(n, 0);
    let ids = updates.iter().map(|u| u.id.clone()).collect();
    City { updates, ids }
}

pub fn geomatch_index(city: &City) -> Index {
    Index::bulk_load(IndexConfig::default(), city.updates.iter().cloned()).expect("valid city")
}

/// A chain of moves: each picks a random entry and moves it at most 100 m from where the
/// previous move of the chain left it.
pub fn moves(city: &City, n: usize) -> Vec<(u32, Position)> {
    let mut metro = Metro::new(SEED + 1);
    let mut at: Vec<Position> = city.updates.iter().map(|u| u.position).collect();
    (0..n)
        .map(|_| {
            let i = rand::Rng::random_range(metro.rng(), 0..at.len());
            let p = metro.step(&at[i], MAX_MOVE_M);
            at[i] = p;
            (i as u32, p)
        })
        .collect()
}

/// Query points with the city's distribution.
pub fn queries(n: usize) -> Vec<Position> {
    let mut metro = Metro::new(SEED + 2);
    (0..n).map(|_| metro.position()).collect()
}

pub fn apply_move(ix: &Index, city: &City, m: &(u32, Position), t: i64) {
    let u = Update::moved(city.ids[m.0 as usize].clone(), Kind::Driver, m.1, t);
    ix.upsert(&u).expect("valid move");
}

/// The naive baseline: a plain rstar R-tree of unit vectors, a move being remove + insert,
/// with the status kept beside it so that it can answer the same filtered query.
pub struct PlainRTree {
    pub tree: RTree<GeomWithData<[f64; 3], u32>>,
    pub at: Vec<[f64; 3]>,
    pub available: Vec<bool>,
}

impl PlainRTree {
    pub fn build(city: &City) -> Self {
        let at: Vec<[f64; 3]> = city.updates.iter().map(|u| u.position.to_unit()).collect();
        let available = city
            .updates
            .iter()
            .map(|u| u.status == Some(Status::Available))
            .collect();
        let tree = RTree::bulk_load(
            at.iter()
                .enumerate()
                .map(|(i, p)| GeomWithData::new(*p, i as u32))
                .collect(),
        );
        PlainRTree {
            tree,
            at,
            available,
        }
    }

    pub fn apply_move(&mut self, m: &(u32, Position)) {
        let i = m.0 as usize;
        self.tree.remove(&GeomWithData::new(self.at[i], m.0));
        let p = m.1.to_unit();
        self.at[i] = p;
        self.tree.insert(GeomWithData::new(p, m.0));
    }

    /// Nearest `k` available within `max_m`: ids and great-circle metres.
    pub fn nearest_available(&self, q: &Position, k: usize, max_m: f64) -> Vec<(u32, f64)> {
        let max_chord = 2.0 * (max_m / geomatch_index::EARTH_RADIUS_M / 2.0).sin();
        let max2 = max_chord * max_chord;
        self.tree
            .nearest_neighbor_iter_with_distance_2(&q.to_unit())
            .take_while(|(_, d2)| *d2 <= max2)
            .filter(|(p, _)| self.available[p.data as usize])
            .take(k)
            .map(|(p, d2)| {
                (
                    p.data,
                    2.0 * geomatch_index::EARTH_RADIUS_M * (d2.sqrt() / 2.0).asin(),
                )
            })
            .collect()
    }
}
