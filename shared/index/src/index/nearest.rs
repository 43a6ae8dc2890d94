//! Nearest queries: the `k` nearest entries passing a filter (and a caller's predicate),
//! and the same query paged in the total order (distance, id).
//!
//! The fast path scans the query's own grid cell and the rings around it, looked up
//! directly; the R-tree of buckets answers what crosses a cube-face edge or is sparser.

use std::collections::BinaryHeap;

use super::directory::Directory;
use super::model::PageKey;
use super::spatial::{entry_of, Bucket, Cold, Shape};
use super::Index;
use crate::bucket::{self, BucketKey};
use crate::entry::{EntryId, Filter, Neighbor, Packed};
use crate::sphere::{chord2, m_to_chord2, reported_m, Position};

/// A candidate kept by a nearest query: enough to build the answer after the scan.
struct Candidate {
    d2: f64,
    handle: u32,
    packed: Packed,
    cold: Cold,
    /// Paged queries only: the id, which breaks ties of distance so that the order is total.
    name: Option<EntryId>,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.d2
            .total_cmp(&other.d2)
            .then_with(|| self.name.cmp(&other.name))
    }
}

/// Rings of grid cells the fast path of a nearest query scans before handing over to the
/// R-tree (3 rings = a 7 × 7 block, about 1 km wide at the default level).
const MAX_RINGS: u32 = 3;

/// The state of one nearest query: the best `k` so far in a max-heap.
struct Knn<'f, F> {
    q: [f64; 3],
    k: usize,
    max2: f64,
    filter: &'f Filter,
    /// Asked of candidates that pass the filter and are near enough: handle, squared chord,
    /// packed word, cold data.
    keep: F,
    /// Paged queries: the directory, to order ties of distance by id.
    names: Option<&'f Directory>,
    best: BinaryHeap<Candidate>,
    /// Bit `h % 64` is set for every handle pushed: makes the duplicate check free when it
    /// cannot matter.
    seen: u64,
}

impl<F: FnMut(u32, f64, Packed, &Cold) -> bool> Knn<'_, F> {
    /// The k-th best squared chord, once there are k.
    fn kth(&self) -> Option<f64> {
        if self.best.len() == self.k {
            self.best.peek().map(|c| c.d2)
        } else {
            None
        }
    }

    /// Whether nothing at squared chord `bound` or beyond can still enter the answer. Paged
    /// queries order ties by id, so an entry exactly at the k-th distance may still beat it.
    fn settled(&self, bound: f64) -> bool {
        self.kth().is_some_and(|d2| {
            if self.names.is_some() {
                d2 < bound
            } else {
                d2 <= bound
            }
        })
    }

    /// Whether a candidate at `d2` is beaten by the current k-th best.
    fn beaten(&self, d2: f64, handle: u32) -> bool {
        let Some(kth) = self.best.peek().filter(|_| self.best.len() == self.k) else {
            return false;
        };
        match (self.names, &kth.name) {
            (Some(dir), Some(name)) if d2 == kth.d2 => dir.name(handle) >= name,
            _ => d2 >= kth.d2,
        }
    }

    fn scan(&mut self, b: &Bucket) {
        for (i, slot) in b.hot.iter().enumerate() {
            if !self.filter.accepts(slot.packed) {
                continue;
            }
            let d2 = chord2(&slot.xyz, &self.q);
            if d2 > self.max2 || self.beaten(d2, slot.handle) {
                continue;
            }
            if !(self.keep)(slot.handle, d2, slot.packed, &b.cold[i]) {
                continue;
            }
            let candidate = Candidate {
                d2,
                handle: slot.handle,
                packed: slot.packed,
                cold: b.cold[i],
                name: self.names.map(|dir| dir.name(slot.handle).clone()),
            };
            // An entry that moved into a bucket not yet scanned can be met twice; keep its
            // nearer sighting.
            let bit = 1u64 << (slot.handle % 64);
            if self.seen & bit != 0 && self.best.iter().any(|c| c.handle == slot.handle) {
                let mut v = std::mem::take(&mut self.best).into_vec();
                if let Some(c) = v.iter_mut().find(|c| c.handle == slot.handle) {
                    if candidate.d2 < c.d2 {
                        *c = candidate;
                    }
                }
                self.best = BinaryHeap::from(v);
                continue;
            }
            self.seen |= bit;
            self.best.push(candidate);
            if self.best.len() > self.k {
                self.best.pop();
            }
        }
    }
}

impl Index {
    /// The `k` nearest entries passing `filter`, nearest first, optionally no farther than
    /// `max_distance_m`.
    pub fn nearest(
        &self,
        at: &Position,
        k: usize,
        filter: &Filter,
        max_distance_m: Option<f64>,
    ) -> Vec<Neighbor> {
        let shape = self.shape.read();
        self.nearest_in(
            &shape,
            at,
            k,
            filter,
            max_distance_m,
            false,
            |_, _, _, _| true,
        )
        .into_iter()
        .map(|(n, _)| n)
        .collect()
    }

    /// Like [`Index::nearest`], with an extra predicate on the id, asked only of entries
    /// that pass `filter` and are close enough to make the answer (so it is called rarely).
    /// Used where eligibility lives outside the index (declined drivers, swiped profiles).
    pub fn nearest_where(
        &self,
        at: &Position,
        k: usize,
        filter: &Filter,
        max_distance_m: Option<f64>,
        mut keep: impl FnMut(&EntryId) -> bool,
    ) -> Vec<Neighbor> {
        let shape = self.shape.read();
        self.nearest_in(
            &shape,
            at,
            k,
            filter,
            max_distance_m,
            false,
            |h, _, _, _| keep(shape.dir.name(h)),
        )
        .into_iter()
        .map(|(n, _)| n)
        .collect()
    }

    /// One page of a nearest query in the total order (distance, id): the `k` nearest
    /// entries passing `filter` and `keep` that come strictly after `after` (the key of the
    /// previous page's last entry), each with its own key. `keep` sees each candidate that
    /// passes the filter and could make the page, with its distance, and decides on
    /// anything the index does not hold (preferences, exclusions, freshness).
    pub fn nearest_page(
        &self,
        at: &Position,
        k: usize,
        filter: &Filter,
        max_distance_m: Option<f64>,
        after: Option<&PageKey>,
        mut keep: impl FnMut(&Neighbor) -> bool,
    ) -> Vec<(Neighbor, PageKey)> {
        let shape = self.shape.read();
        let keep = |h: u32, d2: f64, packed: Packed, cold: &Cold| {
            let name = shape.dir.name(h);
            if after.is_some_and(|a| !a.precedes(d2, name)) {
                return false;
            }
            keep(&Neighbor {
                entry: entry_of(name.clone(), packed, cold),
                distance_m: reported_m(d2, at, &cold.position),
            })
        };
        self.nearest_in(&shape, at, k, filter, max_distance_m, true, keep)
            .into_iter()
            .map(|(n, d2)| {
                let key = PageKey {
                    d2,
                    id: n.entry.id.clone(),
                };
                (n, key)
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn nearest_in(
        &self,
        shape: &Shape,
        at: &Position,
        k: usize,
        filter: &Filter,
        max_distance_m: Option<f64>,
        paged: bool,
        keep: impl FnMut(u32, f64, Packed, &Cold) -> bool,
    ) -> Vec<(Neighbor, f64)> {
        if k == 0 {
            return Vec::new();
        }
        let q = at.to_unit();
        let max2 = max_distance_m.map_or(f64::INFINITY, m_to_chord2);
        let mut knn = Knn {
            q,
            k,
            max2,
            filter,
            keep,
            names: paged.then_some(&shape.dir),
            best: BinaryHeap::with_capacity(k.min(1024) + 1),
            seen: 0,
        };
        if !self.nearest_by_rings(shape, &mut knn) {
            knn.best.clear();
            knn.seen = 0;
            for (bucket_box, lower2) in shape.spatial.tree.nearest_neighbor_iter_with_distance_2(&q)
            {
                if lower2 > max2 || knn.kth().is_some_and(|d2| lower2 > d2) {
                    break;
                }
                knn.scan(&shape.spatial.buckets[bucket_box.data as usize].read());
            }
        }
        knn.best
            .into_sorted_vec()
            .into_iter()
            .map(|c| {
                let n = Neighbor {
                    entry: entry_of(shape.dir.name(c.handle).clone(), c.packed, &c.cold),
                    distance_m: reported_m(c.d2, at, &c.cold.position),
                };
                (n, c.d2)
            })
            .collect()
    }

    /// The fast path of a nearest query: scan the query's grid cell, then the rings of
    /// cells around it, until the k-th best distance is below the distance to the edge of
    /// the scanned block (so nothing outside can beat it). The cells are looked up
    /// directly, with no tree walk, which is what keeps a cache-cold query cheap. Returns
    /// false, having decided nothing, when the block would cross a cube-face edge or grow
    /// past a few rings (sparse areas); the R-tree answers those.
    fn nearest_by_rings<F: FnMut(u32, f64, Packed, &Cold) -> bool>(
        &self,
        shape: &Shape,
        knn: &mut Knn<'_, F>,
    ) -> bool {
        let grid = bucket::Grid::new(self.level);
        let (face, i0, j0) = grid.cell_of(&knn.q);
        let scan = |knn: &mut Knn<'_, F>, key: BucketKey| {
            if let Some(&b) = shape.spatial.keys.get(&key) {
                knn.scan(&shape.spatial.buckets[b as usize].read());
            }
        };
        // The query's own cell, then only those neighbours that could still hold a better
        // candidate, nearest side first: in dense areas most of the ring is skipped.
        let Some(block) = grid.block(face, i0, j0, 1) else {
            return false;
        };
        scan(knn, bucket::Grid::key(face, i0, j0));
        for (bound, key) in grid.neighbours(face, i0, j0, &knn.q) {
            if bound > knn.max2 || knn.settled(bound) {
                break;
            }
            scan(knn, key);
        }
        let outside2 = grid.chord2_outside(&block, &knn.q);
        if outside2 > knn.max2 || knn.settled(outside2) {
            return true;
        }
        for r in 2..=MAX_RINGS {
            let Some(block) = grid.block(face, i0, j0, r) else {
                return false;
            };
            for key in grid.ring(face, i0, j0, r) {
                scan(knn, key);
            }
            let outside2 = grid.chord2_outside(&block, &knn.q);
            if outside2 > knn.max2 || knn.settled(outside2) {
                return true;
            }
        }
        false
    }
}
