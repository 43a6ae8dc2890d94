//! Where entries live: buckets (grid cells of about 150 m, see `bucket.rs`), each behind its
//! own lock, and an R-tree over the buckets' bounding boxes. A bucket stores its entries in
//! two parallel vectors: `hot` (unit vector, packed status/kind/attributes, handle: 32
//! bytes, all a query scans) and `cold` (everything else). [`Shape`] is the directory and
//! the buckets together, what the index's one `RwLock` guards.

use h3o::CellIndex;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::RTree;
use rustc_hash::FxHashMap;

use super::directory::{unpack_loc, Directory, VACANT};
use super::model::{Previous, Update};
use crate::bucket::{self, BucketKey};
use crate::entry::{Entry, EntryId, Packed, Status};
use crate::sphere::Position;

/// What a query scans of one entry.
#[derive(Clone, Copy)]
pub(super) struct Slot {
    pub(super) xyz: [f64; 3],
    pub(super) packed: Packed,
    pub(super) handle: u32,
}

/// The rest of one entry, beside its slot.
#[derive(Clone, Copy)]
pub(super) struct Cold {
    pub(super) position: Position,
    pub(super) cell: CellIndex,
    /// `seq + 1`, 0 when the device sent none.
    seq1: u64,
    /// `i64::MIN` when the device sent no time.
    device_ts_ms: i64,
    pub(super) updated_at_ms: i64,
}

impl Cold {
    #[inline]
    pub(super) fn seq(&self) -> Option<u64> {
        self.seq1.checked_sub(1)
    }
    #[inline]
    pub(super) fn device_ts(&self) -> Option<i64> {
        (self.device_ts_ms != i64::MIN).then_some(self.device_ts_ms)
    }
    #[inline]
    pub(super) fn previous(&self, packed: Packed) -> Previous {
        Previous {
            position: self.position,
            status: packed.status(),
            seq: self.seq(),
            device_ts_ms: self.device_ts(),
            updated_at_ms: self.updated_at_ms,
        }
    }
}

#[derive(Default)]
pub(super) struct Bucket {
    pub(super) hot: Vec<Slot>,
    pub(super) cold: Vec<Cold>,
}

impl Bucket {
    #[inline]
    pub(super) fn push(&mut self, slot: Slot, cold: Cold) -> u32 {
        self.hot.push(slot);
        self.cold.push(cold);
        (self.hot.len() - 1) as u32
    }

    /// Removes slot `i`; returns the handle that moved into `i`, if any.
    pub(super) fn swap_remove(&mut self, i: usize) -> Option<u32> {
        self.hot.swap_remove(i);
        self.cold.swap_remove(i);
        self.hot.get(i).map(|s| s.handle)
    }
}

pub(super) type BucketBox = GeomWithData<Rectangle<[f64; 3]>, u32>;

/// Wider nodes than rstar's default (6): a query walks fewer levels, and each level's
/// children sit together in memory, so a cache-cold query takes fewer misses.
pub(super) struct TreeParams;

impl rstar::RTreeParams for TreeParams {
    const MIN_SIZE: usize = MIN_NODE;
    const MAX_SIZE: usize = MAX_NODE;
    const REINSERTION_COUNT: usize = REINSERT;
    type DefaultInsertionStrategy = rstar::RStarInsertionStrategy;
}
const MIN_NODE: usize = 6;
const MAX_NODE: usize = 16;
const REINSERT: usize = 4;

#[derive(Default)]
pub(super) struct Spatial {
    pub(super) tree: RTree<BucketBox, TreeParams>,
    pub(super) keys: FxHashMap<BucketKey, u32>,
    pub(super) buckets: Vec<RwLock<Bucket>>,
}

impl Spatial {
    pub(super) fn bucket_box(key: BucketKey, level: u8, number: u32) -> BucketBox {
        let (c, r2) = bucket::cap_of(key, level);
        let r = r2.sqrt();
        GeomWithData::new(
            Rectangle::from_corners(
                [c[0] - r, c[1] - r, c[2] - r],
                [c[0] + r, c[1] + r, c[2] + r],
            ),
            number,
        )
    }

    pub(super) fn ensure(&mut self, key: BucketKey, level: u8) -> u32 {
        if let Some(&b) = self.keys.get(&key) {
            return b;
        }
        let number = self.buckets.len() as u32;
        self.buckets.push(RwLock::new(Bucket::default()));
        self.keys.insert(key, number);
        self.tree.insert(Self::bucket_box(key, level, number));
        number
    }
}

/// Which ids and which buckets exist: what the index's shape lock guards.
#[derive(Default)]
pub(super) struct Shape {
    pub(super) dir: Directory,
    pub(super) spatial: Spatial,
}

impl Shape {
    /// Locks the bucket holding `handle` for writing; `None` when it has no position.
    #[inline]
    pub(super) fn lock_entry(&self, handle: u32) -> Option<(RwLockWriteGuard<'_, Bucket>, usize)> {
        loop {
            let loc = self.dir.loc(handle);
            if loc == VACANT {
                return None;
            }
            let (b, s) = unpack_loc(loc);
            let guard = self.spatial.buckets[b as usize].write();
            if guard.hot.get(s as usize).map(|x| x.handle) == Some(handle) {
                return Some((guard, s as usize));
            }
        }
    }

    /// Locks the bucket holding `handle` for reading; `None` when it has no position.
    #[inline]
    pub(super) fn read_entry(&self, handle: u32) -> Option<(RwLockReadGuard<'_, Bucket>, usize)> {
        loop {
            let loc = self.dir.loc(handle);
            if loc == VACANT {
                return None;
            }
            let (b, s) = unpack_loc(loc);
            let guard = self.spatial.buckets[b as usize].read();
            if guard.hot.get(s as usize).map(|x| x.handle) == Some(handle) {
                return Some((guard, s as usize));
            }
        }
    }
}

#[inline]
pub(super) fn cold_of(u: &Update, cell: CellIndex) -> Cold {
    Cold {
        position: u.position,
        cell,
        seq1: u.seq.map_or(0, |s| s + 1),
        device_ts_ms: u.device_ts_ms.unwrap_or(i64::MIN),
        updated_at_ms: u.received_at_ms,
    }
}

/// The slot and cold data of a new entry (`Offline` and default attributes unless the
/// update says otherwise).
#[inline]
pub(super) fn new_slot(u: &Update, xyz: [f64; 3], handle: u32, cell: CellIndex) -> (Slot, Cold) {
    let packed = Packed::new(
        u.status.unwrap_or(Status::Offline),
        u.kind,
        u.attrs.unwrap_or_default(),
    );
    (
        Slot {
            xyz,
            packed,
            handle,
        },
        cold_of(u, cell),
    )
}

/// The public view of a stored entry.
#[inline]
pub(super) fn entry_of(id: EntryId, packed: Packed, cold: &Cold) -> Entry {
    Entry {
        id,
        position: cold.position,
        cell: cold.cell,
        status: packed.status(),
        kind: packed.kind(),
        attrs: packed.attrs(),
        updated_at_ms: cold.updated_at_ms,
        seq: cold.seq(),
        device_ts_ms: cold.device_ts(),
    }
}
