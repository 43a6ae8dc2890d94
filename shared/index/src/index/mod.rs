//! The index itself: one collection that owns every structure over its entries (by id,
//! spatial, by cell) and keeps them consistent in `upsert`, `remove` and `evict`.
//!
//! # Layout
//! - `mod.rs` (here): [`Index`], its construction, size and plain reads (`get`, `entries`).
//! - `model.rs`: what goes in and out ([`IndexConfig`], [`IndexError`], [`Update`],
//!   [`Upserted`], [`is_stale`], [`CellCounts`], [`PageKey`]).
//! - `directory.rs`: id ⇄ handle (a dense `u32`), and each handle's location (bucket,
//!   slot) in an atomic word, so a writer finds its entry without a search.
//! - `spatial.rs`: the buckets (grid cells of about 150 m, see `bucket.rs`), each behind
//!   its own lock, and an R-tree over the buckets' bounding boxes. A bucket stores its
//!   entries in two parallel vectors: `hot` (unit vector, packed status/kind/attributes,
//!   handle: 32 bytes, all a query scans) and `cold` (everything else).
//! - `upsert.rs`: moves with ordering and an acceptance check; status compare-and-set.
//! - `bulk.rs`: building an index from many entries at once.
//! - `remove.rs`: removal of one id, and eviction of the entries gone silent.
//! - `nearest.rs`: the k nearest, and pages of them in (distance, id) order.
//! - `region.rs`: every entry within a radius or a polygon; counts per H3 cell.
//! - `polygon.rs`: the point-in-polygon rule ([`polygon_covers`]) and the unit-vector box
//!   around a latitude/longitude rectangle.
//!
//! Imports run one way: the operation files (`upsert`, `bulk`, `remove`, `nearest`,
//! `region`) only add `impl Index` blocks and use `model`, `directory`, `spatial` and
//! `polygon`, never each other; this file uses only those leaves (`spatial` uses
//! `directory` and `model`).
//!
//! # Concurrency
//! One `RwLock` guards the shape of the index (which ids and which buckets exist). Almost
//! every operation takes it for *reading*: moves, status changes and queries then lock only
//! the one or two buckets they touch, so a query waits at most for one bucket's move, never
//! behind a stream of writes. The write lock is taken only to add an id or a bucket (rare
//! once a city is warm) and to remove entries. Lock order: shape, then a writer stripe
//! (serialises updates of one entry), then buckets in ascending number.
//!
//! Queries are not snapshots: each bucket is read under its own lock, so an entry moving
//! during a query is seen at most once, at a position it really held (or, if it jumps from
//! an unscanned bucket into a scanned one, not at all). Dispatch re-checks a candidate's
//! status atomically before offering anyway.
//!
//! A move out of a bucket fills the hole with the bucket's last entry (`swap_remove`), which
//! changes that entry's slot; its location word is updated under the bucket lock, and every
//! reader of a location re-checks it under the bucket lock and retries if it moved.

mod bulk;
mod directory;
#[cfg(test)]
mod fixtures;
mod model;
mod nearest;
mod polygon;
mod region;
mod remove;
mod spatial;
mod upsert;

use std::sync::atomic::{AtomicUsize, Ordering};

use h3o::Resolution;
use parking_lot::{Mutex, MutexGuard, RwLock};

pub use model::{
    is_stale, CellCounts, IndexConfig, IndexError, PageKey, Previous, Update, Upserted, MAX_SEQ,
};
pub use polygon::polygon_covers;

use crate::bucket;
use crate::entry::{Entry, EntryId};
use spatial::{entry_of, Shape};

/// Writer stripes: updates of one entry are serialised by `handle % WRITER_STRIPES`.
const WRITER_STRIPES: usize = 1024;

/// The shared index of moving candidates. Cheap to share behind an `Arc`; every method
/// takes `&self`.
pub struct Index {
    cell_res: Resolution,
    level: u8,
    shape: RwLock<Shape>,
    writers: Box<[Mutex<()>]>,
    /// Number of located entries (inserts happen under a read guard, hence an atomic).
    len: AtomicUsize,
}

impl Index {
    pub fn new(config: IndexConfig) -> Result<Self, IndexError> {
        let cell_res = Resolution::try_from(config.cell_resolution)
            .map_err(|_| IndexError::BadResolution(config.cell_resolution))?;
        if !(bucket::MIN_LEVEL..=bucket::MAX_LEVEL).contains(&config.bucket_level) {
            return Err(IndexError::BadBucketLevel(config.bucket_level));
        }
        Ok(Index {
            cell_res,
            level: config.bucket_level,
            shape: RwLock::new(Shape::default()),
            writers: (0..WRITER_STRIPES).map(|_| Mutex::new(())).collect(),
            len: AtomicUsize::new(0),
        })
    }

    /// The resolution of the H3 cell kept with each entry.
    pub fn cell_resolution(&self) -> Resolution {
        self.cell_res
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored entry.
    pub fn get(&self, id: &EntryId) -> Option<Entry> {
        let shape = self.shape.read();
        let h = shape.dir.find(id)?;
        let (b, s) = shape.read_entry(h)?;
        Some(entry_of(id.clone(), b.hot[s].packed, &b.cold[s]))
    }

    /// Every entry (unordered); for snapshots and tests.
    pub fn entries(&self) -> Vec<Entry> {
        let shape = self.shape.read();
        let mut all = Vec::with_capacity(self.len());
        for b in &shape.spatial.buckets {
            let b = b.read();
            for (slot, cold) in b.hot.iter().zip(&b.cold) {
                all.push(entry_of(
                    shape.dir.name(slot.handle).clone(),
                    slot.packed,
                    cold,
                ));
            }
        }
        all
    }

    /// The writer stripe of `handle`: held while one entry's update runs.
    fn writer(&self, handle: u32) -> MutexGuard<'_, ()> {
        self.writers[handle as usize % WRITER_STRIPES].lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated() {
        let bad_res = IndexConfig {
            cell_resolution: 16,
            ..Default::default()
        };
        assert_eq!(
            Index::new(bad_res).err(),
            Some(IndexError::BadResolution(16))
        );
        let bad_level = IndexConfig {
            bucket_level: 30,
            ..Default::default()
        };
        assert_eq!(
            Index::new(bad_level).err(),
            Some(IndexError::BadBucketLevel(30))
        );
    }
}
