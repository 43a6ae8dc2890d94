//! The index itself: one collection that owns every structure over its entries (by id,
//! spatial, by cell) and keeps them consistent in `upsert`, `remove` and `evict`.
//!
//! # Layout
//! - `Directory`: id ⇄ handle (a dense `u32`), and each handle's location (bucket, slot) in
//!   an atomic word, so a writer finds its entry without a search.
//! - `Spatial`: the buckets (grid cells of about 150 m, see `bucket.rs`), each behind its own
//!   lock, and an R-tree over the buckets' bounding boxes. A bucket stores its entries in
//!   two parallel vectors: `hot` (unit vector, packed status/kind/attributes, handle: 32
//!   bytes, all a query scans) and `cold` (everything else).
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

use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use geo::{BoundingRect, Intersects};
use h3o::{CellIndex, Resolution};
use hashbrown::HashTable;
use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{RTree, AABB};
use rustc_hash::{FxBuildHasher, FxHashMap};
use serde::{Deserialize, Serialize};

use crate::bucket::{self, BucketKey};
use crate::cell;
use crate::entry::{
    Attributes, Entry, EntryId, Filter, Kind, Neighbor, Packed, Status, MAX_VEHICLE_CLASSES,
};
use crate::sphere::{chord2, chord2_to_m, m_to_chord2, Position};

/// Location word of a handle that has no position.
const VACANT: u64 = u64::MAX;
/// Writer stripes: updates of one entry are serialised by `handle % WRITER_STRIPES`.
const WRITER_STRIPES: usize = 1024;
/// Entries removed per hold of the write lock during eviction (bounds the pause).
const EVICT_CHUNK: usize = 4096;

/// Index settings. Defaults: H3 resolution 9 (cells of about 0.1 km²), buckets of about
/// 150 m.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// Resolution of the H3 cell kept with every entry (0–15).
    pub cell_resolution: u8,
    /// Bucket grid level (8–24): each cube face is cut into 2^level × 2^level cells; 16 gives
    /// about 150 m, each level more halves it.
    pub bucket_level: u8,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            cell_resolution: 9,
            bucket_level: 16,
        }
    }
}

/// Everything an index operation can refuse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IndexError {
    #[error("H3 resolution {0} is not in 0..=15")]
    BadResolution(u8),
    #[error("bucket level {0} is not in 8..=24")]
    BadBucketLevel(u8),
    #[error("counts at resolution {requested} asked of an index that keeps resolution {kept}; only coarser or equal resolutions can be counted")]
    ResolutionTooFine { requested: u8, kept: u8 },
    #[error("vehicle class {0} is not below {MAX_VEHICLE_CLASSES}")]
    BadVehicleClass(u8),
    #[error("sequence number {0} is above the largest accepted ({MAX_SEQ})")]
    BadSeq(u64),
    #[error("id {0} appears twice in a bulk load")]
    DuplicateId(EntryId),
    #[error("no entry {0}")]
    NotFound(EntryId),
    #[error("entry {id} is {actual:?}, not one of the expected statuses")]
    StatusConflict { id: EntryId, actual: Status },
}

/// Largest device sequence number accepted (fits JSON numbers and signed 64-bit stores).
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// One position report (or a first registration) for an entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub id: EntryId,
    pub kind: Kind,
    pub position: Position,
    /// The device's sequence number; orders updates when both sides have one.
    pub seq: Option<u64>,
    /// The device's clock (ms since the Unix epoch); orders updates when no sequence does.
    pub device_ts_ms: Option<i64>,
    /// Server time the update was received; drives expiry.
    pub received_at_ms: i64,
    /// New status; `None` keeps the stored one (a new entry starts `Offline`).
    pub status: Option<Status>,
    /// New attributes; `None` keeps the stored ones (a new entry starts with defaults).
    pub attrs: Option<Attributes>,
}

impl Update {
    /// A bare move: position and server time, nothing else.
    pub fn moved(id: EntryId, kind: Kind, position: Position, received_at_ms: i64) -> Self {
        Update {
            id,
            kind,
            position,
            seq: None,
            device_ts_ms: None,
            received_at_ms,
            status: None,
            attrs: None,
        }
    }
}

/// The stored state an update is judged against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Previous {
    pub position: Position,
    pub status: Status,
    pub seq: Option<u64>,
    pub device_ts_ms: Option<i64>,
    pub updated_at_ms: i64,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Upserted {
    /// The id was not in the index.
    Inserted,
    /// The entry moved (or stayed) and its state was replaced.
    Moved { previous: Previous },
    /// The update is older than the stored one and was ignored.
    Stale { previous: Previous },
    /// The caller's acceptance check said no; nothing changed.
    Refused { previous: Previous },
}

/// Entries of one H3 cell by kind and status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CellCounts {
    counts: [[u32; 4]; 2],
}

impl CellCounts {
    pub fn get(&self, kind: Kind, status: Status) -> u32 {
        self.counts[kind as usize][status as usize]
    }
    pub fn total(&self) -> u32 {
        self.counts.iter().flatten().sum()
    }
    fn add(&mut self, kind: Kind, status: Status) {
        self.counts[kind as usize][status as usize] += 1;
    }
}

/// Whether an update is older than the stored state: by device sequence when both have one
/// (an equal sequence is a repeat, so stale too), else by device time, else never.
pub fn is_stale(
    stored_seq: Option<u64>,
    stored_ts: Option<i64>,
    seq: Option<u64>,
    ts: Option<i64>,
) -> bool {
    if let (Some(s), Some(n)) = (stored_seq, seq) {
        return n <= s;
    }
    if let (Some(s), Some(n)) = (stored_ts, ts) {
        return n < s;
    }
    false
}

#[derive(Clone, Copy)]
struct Slot {
    xyz: [f64; 3],
    packed: Packed,
    handle: u32,
}

#[derive(Clone, Copy)]
struct Cold {
    position: Position,
    cell: CellIndex,
    /// `seq + 1`, 0 when the device sent none.
    seq1: u64,
    /// `i64::MIN` when the device sent no time.
    device_ts_ms: i64,
    updated_at_ms: i64,
}

impl Cold {
    fn seq(&self) -> Option<u64> {
        self.seq1.checked_sub(1)
    }
    fn device_ts(&self) -> Option<i64> {
        (self.device_ts_ms != i64::MIN).then_some(self.device_ts_ms)
    }
    fn previous(&self, packed: Packed) -> Previous {
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
struct Bucket {
    hot: Vec<Slot>,
    cold: Vec<Cold>,
}

impl Bucket {
    fn push(&mut self, slot: Slot, cold: Cold) -> u32 {
        self.hot.push(slot);
        self.cold.push(cold);
        (self.hot.len() - 1) as u32
    }

    /// Removes slot `i`; returns the handle that moved into `i`, if any.
    fn swap_remove(&mut self, i: usize) -> Option<u32> {
        self.hot.swap_remove(i);
        self.cold.swap_remove(i);
        self.hot.get(i).map(|s| s.handle)
    }
}

type BucketBox = GeomWithData<Rectangle<[f64; 3]>, u32>;

/// Wider nodes than rstar's default (6): a query walks fewer levels, and each level's
/// children sit together in memory, so a cache-cold query takes fewer misses.
struct TreeParams;

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
struct Directory {
    table: HashTable<u32>,
    names: Vec<Option<EntryId>>,
    locs: Vec<AtomicU64>,
    free: Vec<u32>,
}

impl Directory {
    fn hash(id: &EntryId) -> u64 {
        use std::hash::BuildHasher;
        FxBuildHasher.hash_one(id.as_str())
    }

    fn find(&self, id: &EntryId) -> Option<u32> {
        let names = &self.names;
        self.table
            .find(Self::hash(id), |&h| names[h as usize].as_ref() == Some(id))
            .copied()
    }

    fn name(&self, handle: u32) -> &EntryId {
        self.names[handle as usize]
            .as_ref()
            .expect("a located handle has a name")
    }

    fn loc(&self, handle: u32) -> u64 {
        self.locs[handle as usize].load(Ordering::Acquire)
    }

    fn set_loc(&self, handle: u32, bucket: u32, slot: u32) {
        self.locs[handle as usize].store(pack_loc(bucket, slot), Ordering::Release);
    }

    fn insert(&mut self, id: &EntryId) -> u32 {
        if let Some(h) = self.find(id) {
            return h;
        }
        let h = match self.free.pop() {
            Some(h) => {
                self.names[h as usize] = Some(id.clone());
                h
            }
            None => {
                self.names.push(Some(id.clone()));
                self.locs.push(AtomicU64::new(VACANT));
                (self.names.len() - 1) as u32
            }
        };
        let names = &self.names;
        self.table.insert_unique(Self::hash(id), h, |&x| {
            Self::hash(
                names[x as usize]
                    .as_ref()
                    .expect("mapped handles have names"),
            )
        });
        h
    }

    /// Room for `n` more ids without rehashing.
    fn reserve(&mut self, n: usize) {
        let names = &self.names;
        self.table.reserve(n, |&x| {
            Self::hash(
                names[x as usize]
                    .as_ref()
                    .expect("mapped handles have names"),
            )
        });
        self.names.reserve(n);
        self.locs.reserve(n);
    }

    /// Adds an id known to be new; `None` if it is already present (one probe).
    fn insert_new(&mut self, id: &EntryId) -> Option<u32> {
        let hash = Self::hash(id);
        let names = &self.names;
        let entry = self.table.entry(
            hash,
            |&h| names[h as usize].as_ref() == Some(id),
            |&x| {
                Self::hash(
                    names[x as usize]
                        .as_ref()
                        .expect("mapped handles have names"),
                )
            },
        );
        let hashbrown::hash_table::Entry::Vacant(vacant) = entry else {
            return None;
        };
        let h = self.names.len() as u32;
        vacant.insert(h);
        self.names.push(Some(id.clone()));
        self.locs.push(AtomicU64::new(VACANT));
        Some(h)
    }

    fn release(&mut self, handle: u32) {
        let id = self.names[handle as usize]
            .take()
            .expect("released handle has a name");
        if let Ok(e) = self.table.find_entry(Self::hash(&id), |&h| h == handle) {
            e.remove();
        }
        self.locs[handle as usize].store(VACANT, Ordering::Release);
        self.free.push(handle);
    }
}

fn pack_loc(bucket: u32, slot: u32) -> u64 {
    (u64::from(bucket) << 32) | u64::from(slot)
}

fn unpack_loc(loc: u64) -> (u32, u32) {
    ((loc >> 32) as u32, loc as u32)
}

#[derive(Default)]
struct Spatial {
    tree: RTree<BucketBox, TreeParams>,
    keys: FxHashMap<BucketKey, u32>,
    buckets: Vec<RwLock<Bucket>>,
}

impl Spatial {
    fn bucket_box(key: BucketKey, level: u8, number: u32) -> BucketBox {
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

    fn ensure(&mut self, key: BucketKey, level: u8) -> u32 {
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

#[derive(Default)]
struct Shape {
    dir: Directory,
    spatial: Spatial,
}

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

/// Where a page of [`Index::nearest_page`] ended: the squared chord from the query point and
/// the id of its last entry. The next page starts strictly after it in (distance, id)
/// order, so pages never repeat or skip an entry while nothing moves.
#[derive(Debug, Clone, PartialEq)]
pub struct PageKey {
    /// Squared chord on the unit sphere (exact, unlike a distance in metres recomputed from
    /// it).
    pub d2: f64,
    pub id: EntryId,
}

impl PageKey {
    /// Whether (d2, id) comes strictly after this key.
    fn precedes(&self, d2: f64, id: &EntryId) -> bool {
        d2 > self.d2 || (d2 == self.d2 && *id > self.id)
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

    /// Builds an index from many entries at once, much faster than upserting them one by
    /// one. Ids must be distinct.
    pub fn bulk_load(
        config: IndexConfig,
        updates: impl IntoIterator<Item = Update>,
    ) -> Result<Self, IndexError> {
        let index = Index::new(config)?;
        let updates: Vec<Update> = updates.into_iter().collect();
        for u in &updates {
            validate(u)?;
        }
        let (level, res) = (index.level, index.cell_res);
        // Unit vectors and bucket keys, on every core.
        let geo: Vec<([f64; 3], BucketKey)> = par_map(&updates, |u| {
            let xyz = u.position.to_unit();
            (xyz, bucket::key_of(&xyz, level))
        });
        // Sorted by bucket, neighbours in the list are neighbours on the ground, so most
        // H3 cells come from the previous entry's inscribed disc, not from `to_cell`.
        let mut keyed: Vec<(BucketKey, u32)> = geo
            .iter()
            .enumerate()
            .map(|(i, g)| (g.1, i as u32))
            .collect();
        keyed.sort_unstable();
        let order: Vec<u32> = keyed.into_iter().map(|(_, i)| i).collect();
        let cells: Vec<CellIndex> = par_chunks(&order, |chunk| {
            let mut previous = None;
            chunk
                .iter()
                .map(|&i| {
                    let (u, (xyz, _)) = (&updates[i as usize], &geo[i as usize]);
                    let cell = cell::cell_after_move(&u.position, xyz, previous, res);
                    previous = Some(cell);
                    cell
                })
                .collect()
        });
        {
            let mut shape = index.shape.write();
            let shape = &mut *shape;
            let mut boxes = Vec::new();
            shape.dir.reserve(order.len());
            let mut j = 0;
            while j < order.len() {
                // One bucket: the run of equal keys, stored with exact capacity.
                let key = geo[order[j] as usize].1;
                let run = order[j..]
                    .iter()
                    .take_while(|&&i| geo[i as usize].1 == key)
                    .count();
                let number = shape.spatial.buckets.len() as u32;
                let mut bucket = Bucket {
                    hot: Vec::with_capacity(run),
                    cold: Vec::with_capacity(run),
                };
                for (&i, &cell) in order[j..j + run].iter().zip(&cells[j..j + run]) {
                    let u = &updates[i as usize];
                    let handle = shape
                        .dir
                        .insert_new(&u.id)
                        .ok_or_else(|| IndexError::DuplicateId(u.id.clone()))?;
                    let (slot, cold) = new_slot(u, geo[i as usize].0, handle, cell);
                    let s = bucket.push(slot, cold);
                    shape.dir.set_loc(handle, number, s);
                }
                shape.spatial.buckets.push(RwLock::new(bucket));
                shape.spatial.keys.insert(key, number);
                boxes.push(Spatial::bucket_box(key, level, number));
                j += run;
            }
            index.len.store(order.len(), Ordering::Relaxed);
            shape.spatial.tree = RTree::bulk_load_with_params(boxes);
        }
        Ok(index)
    }

    /// Inserts or moves an entry, unless the update is stale (see [`is_stale`]).
    pub fn upsert(&self, update: &Update) -> Result<Upserted, IndexError> {
        self.upsert_if(update, |_| true)
    }

    /// Like [`Index::upsert`], and the move happens only if `accept` approves the stored
    /// state (for example a plausibility check on the implied speed). `accept` runs under
    /// the entry's lock, so the check and the move are one atomic step.
    pub fn upsert_if(
        &self,
        update: &Update,
        accept: impl FnOnce(&Previous) -> bool,
    ) -> Result<Upserted, IndexError> {
        validate(update)?;
        let xyz = update.position.to_unit();
        let key = bucket::key_of(&xyz, self.level);
        {
            let shape = self.shape.read();
            if let (Some(h), Some(&b)) = (shape.dir.find(&update.id), shape.spatial.keys.get(&key))
            {
                return Ok(self.upsert_located(&shape, h, b, update, xyz, accept));
            }
        }
        // First sight of this id or of this bucket: create them, then continue as a reader.
        let mut shape = self.shape.write();
        let h = shape.dir.insert(&update.id);
        let b = shape.spatial.ensure(key, self.level);
        let shape = RwLockWriteGuard::downgrade(shape);
        Ok(self.upsert_located(&shape, h, b, update, xyz, accept))
    }

    fn upsert_located(
        &self,
        shape: &RwLockReadGuard<'_, Shape>,
        handle: u32,
        target: u32,
        u: &Update,
        xyz: [f64; 3],
        accept: impl FnOnce(&Previous) -> bool,
    ) -> Upserted {
        let _w = self.writers[handle as usize % WRITER_STRIPES].lock();
        let buckets = &shape.spatial.buckets;
        let mut accept = Some(accept);
        loop {
            let loc = shape.dir.loc(handle);
            if loc == VACANT {
                let cell = cell::cell_of(&u.position, self.cell_res);
                let (slot, cold) = new_slot(u, xyz, handle, cell);
                let mut b = buckets[target as usize].write();
                let s = b.push(slot, cold);
                shape.dir.set_loc(handle, target, s);
                self.len.fetch_add(1, Ordering::Relaxed);
                return Upserted::Inserted;
            }
            let (ob, os) = unpack_loc(loc);
            let os = os as usize;
            // Lock the one or two buckets in ascending order.
            let (mut first, mut second) = if ob == target {
                (buckets[ob as usize].write(), None)
            } else if ob < target {
                let a = buckets[ob as usize].write();
                (a, Some(buckets[target as usize].write()))
            } else {
                let t = buckets[target as usize].write();
                let a = buckets[ob as usize].write();
                (a, Some(t))
            };
            // `first` is always the old bucket.
            if first.hot.get(os).map(|s| s.handle) != Some(handle) {
                continue; // another entry's move shifted ours; read the location again
            }
            let old_slot = first.hot[os];
            let old_cold = first.cold[os];
            let previous = old_cold.previous(old_slot.packed);
            if is_stale(old_cold.seq(), old_cold.device_ts(), u.seq, u.device_ts_ms) {
                return Upserted::Stale { previous };
            }
            if !accept.take().is_none_or(|f| f(&previous)) {
                return Upserted::Refused { previous };
            }
            let cell = cell::cell_after_move(&u.position, &xyz, Some(old_cold.cell), self.cell_res);
            let packed = Packed::new(
                u.status.unwrap_or(old_slot.packed.status()),
                u.kind,
                u.attrs.unwrap_or(old_slot.packed.attrs()),
            );
            let slot = Slot {
                xyz,
                packed,
                handle,
            };
            let cold = cold_of(u, cell);
            match second.as_mut() {
                None => {
                    first.hot[os] = slot;
                    first.cold[os] = cold;
                }
                Some(new_bucket) => {
                    if let Some(moved) = first.swap_remove(os) {
                        shape.dir.set_loc(moved, ob, os as u32);
                    }
                    let s = new_bucket.push(slot, cold);
                    shape.dir.set_loc(handle, target, s);
                }
            }
            return Upserted::Moved { previous };
        }
    }

    /// Locks the bucket holding `handle` for writing; `None` when it has no position.
    fn lock_entry<'a>(
        &self,
        shape: &'a Shape,
        handle: u32,
    ) -> Option<(parking_lot::RwLockWriteGuard<'a, Bucket>, usize)> {
        loop {
            let loc = shape.dir.loc(handle);
            if loc == VACANT {
                return None;
            }
            let (b, s) = unpack_loc(loc);
            let guard = shape.spatial.buckets[b as usize].write();
            if guard.hot.get(s as usize).map(|x| x.handle) == Some(handle) {
                return Some((guard, s as usize));
            }
        }
    }

    /// Locks the bucket holding `handle` for reading; `None` when it has no position.
    fn read_entry<'a>(
        &self,
        shape: &'a Shape,
        handle: u32,
    ) -> Option<(parking_lot::RwLockReadGuard<'a, Bucket>, usize)> {
        loop {
            let loc = shape.dir.loc(handle);
            if loc == VACANT {
                return None;
            }
            let (b, s) = unpack_loc(loc);
            let guard = shape.spatial.buckets[b as usize].read();
            if guard.hot.get(s as usize).map(|x| x.handle) == Some(handle) {
                return Some((guard, s as usize));
            }
        }
    }

    /// The stored entry.
    pub fn get(&self, id: &EntryId) -> Option<Entry> {
        let shape = self.shape.read();
        let h = shape.dir.find(id)?;
        let (b, s) = self.read_entry(&shape, h)?;
        Some(entry_of(id.clone(), b.hot[s].packed, &b.cold[s]))
    }

    /// Sets an entry's status (and attributes, when given) without moving it.
    pub fn set_status(
        &self,
        id: &EntryId,
        status: Status,
        attrs: Option<Attributes>,
    ) -> Result<Entry, IndexError> {
        self.compare_and_set_status(id, &Status::ALL, status, attrs)
    }

    /// Sets an entry's status only if its current status is one of `expected`, as one
    /// atomic step (dispatch uses it to take an available driver for an offer).
    pub fn compare_and_set_status(
        &self,
        id: &EntryId,
        expected: &[Status],
        status: Status,
        attrs: Option<Attributes>,
    ) -> Result<Entry, IndexError> {
        if let Some(a) = attrs {
            validate_attrs(a)?;
        }
        let shape = self.shape.read();
        let not_found = || IndexError::NotFound(id.clone());
        let h = shape.dir.find(id).ok_or_else(not_found)?;
        let _w = self.writers[h as usize % WRITER_STRIPES].lock();
        let (mut b, s) = self.lock_entry(&shape, h).ok_or_else(not_found)?;
        let packed = b.hot[s].packed;
        if !expected.contains(&packed.status()) {
            return Err(IndexError::StatusConflict {
                id: id.clone(),
                actual: packed.status(),
            });
        }
        let packed = Packed::new(status, packed.kind(), attrs.unwrap_or(packed.attrs()));
        b.hot[s].packed = packed;
        Ok(entry_of(id.clone(), packed, &b.cold[s]))
    }

    /// Removes an entry; returns what was stored.
    pub fn remove(&self, id: &EntryId) -> Option<Entry> {
        let mut shape = self.shape.write();
        let h = shape.dir.find(id)?;
        let removed = remove_located(&mut shape, h);
        if removed.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Removes every entry last updated before `cutoff_ms` (server time) and returns them.
    /// The scan runs under the shared lock; removal takes the exclusive lock in chunks of a
    /// few thousand entries so that queries pause for at most a few hundred microseconds.
    pub fn evict_older_than(&self, cutoff_ms: i64) -> Vec<Entry> {
        self.evict_older_than_where(cutoff_ms, &Filter::any())
    }

    /// Like [`Index::evict_older_than`], for entries passing `filter` only (drivers and
    /// profiles go stale on different clocks).
    pub fn evict_older_than_where(&self, cutoff_ms: i64, filter: &Filter) -> Vec<Entry> {
        let mut expired: Vec<EntryId> = Vec::new();
        {
            let shape = self.shape.read();
            for b in &shape.spatial.buckets {
                let b = b.read();
                for (slot, cold) in b.hot.iter().zip(&b.cold) {
                    if cold.updated_at_ms < cutoff_ms && filter.accepts(slot.packed) {
                        expired.push(shape.dir.name(slot.handle).clone());
                    }
                }
            }
        }
        let mut evicted = Vec::with_capacity(expired.len());
        for chunk in expired.chunks(EVICT_CHUNK) {
            let mut shape = self.shape.write();
            for id in chunk {
                let Some(h) = shape.dir.find(id) else {
                    continue;
                };
                // Re-check: the entry may have been updated since the scan.
                let fresh = self
                    .read_entry(&shape, h)
                    .is_some_and(|(b, s)| b.cold[s].updated_at_ms >= cutoff_ms);
                if fresh {
                    continue;
                }
                if let Some(e) = remove_located(&mut shape, h) {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    evicted.push(e);
                }
            }
        }
        evicted
    }

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

    /// Every entry passing `filter` within `radius_m` of `at`, nearest first.
    pub fn within_radius(&self, at: &Position, radius_m: f64, filter: &Filter) -> Vec<Neighbor> {
        let q = at.to_unit();
        let max2 = m_to_chord2(radius_m.max(0.0));
        let r = max2.sqrt();
        let envelope = AABB::from_corners(
            [q[0] - r, q[1] - r, q[2] - r],
            [q[0] + r, q[1] + r, q[2] + r],
        );
        let shape = self.shape.read();
        let mut found: Vec<(f64, Neighbor)> = Vec::new();
        for bucket_box in shape
            .spatial
            .tree
            .locate_in_envelope_intersecting(&envelope)
        {
            let b = shape.spatial.buckets[bucket_box.data as usize].read();
            for (slot, cold) in b.hot.iter().zip(&b.cold) {
                if !filter.accepts(slot.packed) {
                    continue;
                }
                let d2 = chord2(&slot.xyz, &q);
                if d2 <= max2 {
                    let entry = entry_of(shape.dir.name(slot.handle).clone(), slot.packed, cold);
                    found.push((
                        d2,
                        Neighbor {
                            entry,
                            distance_m: reported_m(d2, at, &cold.position),
                        },
                    ));
                }
            }
        }
        found.sort_by(|a, b| a.0.total_cmp(&b.0));
        // An entry that moved during the scan can be met twice: keep its nearer sighting.
        let mut once = hashbrown::HashSet::with_capacity(found.len());
        found
            .into_iter()
            .filter(|(_, n)| once.insert(n.entry.id.clone()))
            .map(|(_, n)| n)
            .collect()
    }

    /// Every entry passing `filter` inside `polygon` (exterior ring minus holes, boundary
    /// included), with x = longitude and y = latitude in degrees. Polygons are planar in
    /// longitude/latitude, as in GeoJSON: one crossing the antimeridian must be split in two.
    pub fn within_polygon(&self, polygon: &geo::Polygon<f64>, filter: &Filter) -> Vec<Entry> {
        let Some(rect) = polygon.bounding_rect() else {
            return Vec::new();
        };
        let (lo, hi) = latlng_rect_box(rect.min().y, rect.max().y, rect.min().x, rect.max().x);
        let shape = self.shape.read();
        let mut found = Vec::new();
        for bucket_box in shape
            .spatial
            .tree
            .locate_in_envelope_intersecting(&AABB::from_corners(lo, hi))
        {
            let b = shape.spatial.buckets[bucket_box.data as usize].read();
            for (slot, cold) in b.hot.iter().zip(&b.cold) {
                if filter.accepts(slot.packed) && polygon_covers(polygon, &cold.position) {
                    found.push(entry_of(
                        shape.dir.name(slot.handle).clone(),
                        slot.packed,
                        cold,
                    ));
                }
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        // An entry that moved during the scan can be met twice.
        found.dedup_by(|a, b| a.id == b.id);
        found
    }

    /// Entries per H3 cell at resolution `res` (coarser than or equal to the index's), by
    /// kind and status: the supply side of surge pricing and heatmaps.
    pub fn cell_counts(
        &self,
        res: Resolution,
    ) -> Result<HashMap<CellIndex, CellCounts>, IndexError> {
        if res > self.cell_res {
            return Err(IndexError::ResolutionTooFine {
                requested: res.into(),
                kept: self.cell_res.into(),
            });
        }
        let shape = self.shape.read();
        let mut counts: HashMap<CellIndex, CellCounts> = HashMap::new();
        for b in &shape.spatial.buckets {
            let b = b.read();
            for (slot, cold) in b.hot.iter().zip(&b.cold) {
                let cell = cold.cell.parent(res).unwrap_or(cold.cell);
                counts
                    .entry(cell)
                    .or_default()
                    .add(slot.packed.kind(), slot.packed.status());
            }
        }
        Ok(counts)
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
}

/// The great-circle distance reported for a candidate at squared chord `d2`: from the
/// chord up to a quarter of the globe, where it is exact to nanometres; the haversine of
/// the two positions beyond, where `asin` of a chord near 2 loses precision.
fn reported_m(d2: f64, a: &Position, b: &Position) -> f64 {
    if d2 < 2.0 {
        chord2_to_m(d2)
    } else {
        a.distance_m(b)
    }
}

/// `f` over every item, on every core; results in input order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    par_chunks(items, |chunk| chunk.iter().map(&f).collect())
}

/// `f` over contiguous chunks of `items`, one per core; results concatenated in order.
fn par_chunks<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> Vec<R> + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 1 || items.len() < 10_000 {
        return f(items);
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = items.chunks(chunk).map(|c| s.spawn(|| f(c))).collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("bulk-load worker"))
            .collect()
    })
}

fn remove_located(shape: &mut RwLockWriteGuard<'_, Shape>, handle: u32) -> Option<Entry> {
    let shape = &mut **shape;
    let loc = shape.dir.loc(handle);
    let entry = if loc == VACANT {
        None
    } else {
        let (b, s) = unpack_loc(loc);
        let bucket = shape.spatial.buckets[b as usize].get_mut();
        let s = s as usize;
        let entry = entry_of(
            shape.dir.name(handle).clone(),
            bucket.hot[s].packed,
            &bucket.cold[s],
        );
        if let Some(moved) = bucket.swap_remove(s) {
            shape.dir.set_loc(moved, b, s as u32);
        }
        Some(entry)
    };
    shape.dir.release(handle);
    entry
}

fn validate_attrs(a: Attributes) -> Result<(), IndexError> {
    if a.vehicle_class >= MAX_VEHICLE_CLASSES {
        return Err(IndexError::BadVehicleClass(a.vehicle_class));
    }
    Ok(())
}

fn validate(u: &Update) -> Result<(), IndexError> {
    if let Some(a) = u.attrs {
        validate_attrs(a)?;
    }
    match u.seq {
        Some(s) if s > MAX_SEQ => Err(IndexError::BadSeq(s)),
        _ => Ok(()),
    }
}

fn cold_of(u: &Update, cell: CellIndex) -> Cold {
    Cold {
        position: u.position,
        cell,
        seq1: u.seq.map_or(0, |s| s + 1),
        device_ts_ms: u.device_ts_ms.unwrap_or(i64::MIN),
        updated_at_ms: u.received_at_ms,
    }
}

fn new_slot(u: &Update, xyz: [f64; 3], handle: u32, cell: CellIndex) -> (Slot, Cold) {
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

fn entry_of(id: EntryId, packed: Packed, cold: &Cold) -> Entry {
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

/// The point-in-polygon rule of [`Index::within_polygon`] (boundary included).
pub fn polygon_covers(polygon: &geo::Polygon<f64>, p: &Position) -> bool {
    polygon.intersects(&geo::Point::new(p.lng(), p.lat()))
}

/// A box in unit-vector space that holds every point of a latitude/longitude rectangle.
/// x = cos(lat)·cos(lng), y = cos(lat)·sin(lng), z = sin(lat): each is a product of
/// independent factors whose ranges are known, so the extremes are products of range ends.
fn latlng_rect_box(lat0: f64, lat1: f64, lng0: f64, lng1: f64) -> ([f64; 3], [f64; 3]) {
    let range = |f: fn(f64) -> f64, a: f64, b: f64, critical: &[f64]| {
        let mut lo = f(a).min(f(b));
        let mut hi = f(a).max(f(b));
        for &c in critical {
            if (a..=b).contains(&c) {
                lo = lo.min(f(c));
                hi = hi.max(f(c));
            }
        }
        (lo, hi)
    };
    let cos_d = |d: f64| d.to_radians().cos();
    let sin_d = |d: f64| d.to_radians().sin();
    let (clat_lo, clat_hi) = range(cos_d, lat0, lat1, &[0.0]);
    let (cl_lo, cl_hi) = range(cos_d, lng0, lng1, &[-180.0, 0.0, 180.0]);
    let (sl_lo, sl_hi) = range(sin_d, lng0, lng1, &[-90.0, 90.0]);
    let (z_lo, z_hi) = range(sin_d, lat0, lat1, &[]);
    let prod = |(a0, a1): (f64, f64), (b0, b1): (f64, f64)| {
        let p = [a0 * b0, a0 * b1, a1 * b0, a1 * b1];
        (
            p.iter().copied().fold(f64::INFINITY, f64::min),
            p.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        )
    };
    let (x_lo, x_hi) = prod((clat_lo, clat_hi), (cl_lo, cl_hi));
    let (y_lo, y_hi) = prod((clat_lo, clat_hi), (sl_lo, sl_hi));
    let m = 1e-9;
    (
        [x_lo - m, y_lo - m, z_lo - m],
        [x_hi + m, y_hi + m, z_hi + m],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> EntryId {
        EntryId::parse(s).unwrap()
    }

    fn pos(lat: f64, lng: f64) -> Position {
        Position::new(lat, lng).unwrap()
    }

    fn update(
        name: &str,
        lat: f64,
        lng: f64,
        seq: Option<u64>,
        ts: Option<i64>,
        at: i64,
    ) -> Update {
        Update {
            seq,
            device_ts_ms: ts,
            ..Update::moved(id(name), Kind::Driver, pos(lat, lng), at)
        }
    }

    fn index() -> Index {
        Index::new(IndexConfig::default()).unwrap()
    }

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

    #[test]
    fn upsert_inserts_then_moves_and_get_returns_the_latest_state() {
        let ix = index();
        assert_eq!(
            ix.upsert(&update("d1", 37.5, 127.0, Some(1), None, 10)),
            Ok(Upserted::Inserted)
        );
        let e = ix.get(&id("d1")).unwrap();
        assert_eq!(
            (e.position, e.status, e.seq, e.updated_at_ms),
            (pos(37.5, 127.0), Status::Offline, Some(1), 10)
        );
        assert_eq!(e.cell, cell::cell_of(&pos(37.5, 127.0), Resolution::Nine));
        // A move far away changes bucket and cell.
        let r = ix
            .upsert(&update("d1", 37.6, 127.1, Some(2), None, 20))
            .unwrap();
        assert!(matches!(r, Upserted::Moved { previous } if previous.position == pos(37.5, 127.0)));
        let e = ix.get(&id("d1")).unwrap();
        assert_eq!(
            (e.position, e.seq, e.updated_at_ms),
            (pos(37.6, 127.1), Some(2), 20)
        );
        assert_eq!(e.cell, cell::cell_of(&pos(37.6, 127.1), Resolution::Nine));
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn an_older_sequence_number_is_stale_and_does_not_move_the_entry() {
        let ix = index();
        ix.upsert(&update("d1", 37.5, 127.0, Some(5), Some(5_000), 1))
            .unwrap();
        // Older seq, even with a newer device time: seq wins.
        let r = ix
            .upsert(&update("d1", 37.6, 127.0, Some(4), Some(9_000), 2))
            .unwrap();
        assert!(matches!(r, Upserted::Stale { previous } if previous.seq == Some(5)));
        // The same seq again is a repeat: stale too.
        assert!(matches!(
            ix.upsert(&update("d1", 37.6, 127.0, Some(5), None, 3))
                .unwrap(),
            Upserted::Stale { .. }
        ));
        assert_eq!(ix.get(&id("d1")).unwrap().position, pos(37.5, 127.0));
        assert!(matches!(
            ix.upsert(&update("d1", 37.6, 127.0, Some(6), None, 4))
                .unwrap(),
            Upserted::Moved { .. }
        ));
        assert_eq!(ix.get(&id("d1")).unwrap().position, pos(37.6, 127.0));
    }

    #[test]
    fn without_sequence_numbers_device_time_orders_updates() {
        let ix = index();
        ix.upsert(&update("d1", 37.5, 127.0, None, Some(5_000), 1))
            .unwrap();
        let r = ix
            .upsert(&update("d1", 37.6, 127.0, None, Some(4_999), 2))
            .unwrap();
        assert!(matches!(r, Upserted::Stale { .. }));
        assert_eq!(ix.get(&id("d1")).unwrap().position, pos(37.5, 127.0));
        // Equal device time is not older: accepted.
        assert!(matches!(
            ix.upsert(&update("d1", 37.6, 127.0, None, Some(5_000), 3))
                .unwrap(),
            Upserted::Moved { .. }
        ));
        // Neither seq nor time: last writer wins.
        assert!(matches!(
            ix.upsert(&update("d1", 37.7, 127.0, None, None, 4))
                .unwrap(),
            Upserted::Moved { .. }
        ));
        assert_eq!(ix.get(&id("d1")).unwrap().position, pos(37.7, 127.0));
    }

    #[test]
    fn a_refused_update_changes_nothing() {
        let ix = index();
        ix.upsert(&update("d1", 37.5, 127.0, Some(1), None, 1))
            .unwrap();
        let r = ix
            .upsert_if(&update("d1", 38.5, 127.0, Some(2), None, 2), |p| {
                p.position.lat() > 38.0
            })
            .unwrap();
        assert!(matches!(r, Upserted::Refused { .. }));
        let e = ix.get(&id("d1")).unwrap();
        assert_eq!((e.position, e.seq), (pos(37.5, 127.0), Some(1)));
    }

    #[test]
    fn bad_attributes_and_sequences_are_typed_errors() {
        let ix = index();
        let mut u = update("d1", 37.5, 127.0, Some(MAX_SEQ + 1), None, 1);
        assert_eq!(ix.upsert(&u), Err(IndexError::BadSeq(MAX_SEQ + 1)));
        u.seq = None;
        u.attrs = Some(Attributes {
            vehicle_class: 40,
            seats: 4,
        });
        assert_eq!(ix.upsert(&u), Err(IndexError::BadVehicleClass(40)));
        assert!(ix.is_empty());
    }

    #[test]
    fn status_changes_are_compare_and_set() {
        let ix = index();
        ix.upsert(&update("d1", 37.5, 127.0, None, None, 1))
            .unwrap();
        let e = ix
            .set_status(
                &id("d1"),
                Status::Available,
                Some(Attributes {
                    vehicle_class: 2,
                    seats: 6,
                }),
            )
            .unwrap();
        assert_eq!((e.status, e.attrs.vehicle_class), (Status::Available, 2));
        ix.compare_and_set_status(&id("d1"), &[Status::Available], Status::Offered, None)
            .unwrap();
        let err = ix.compare_and_set_status(&id("d1"), &[Status::Available], Status::Offered, None);
        assert_eq!(
            err.err(),
            Some(IndexError::StatusConflict {
                id: id("d1"),
                actual: Status::Offered
            })
        );
        assert_eq!(
            ix.set_status(&id("nobody"), Status::Busy, None).err(),
            Some(IndexError::NotFound(id("nobody")))
        );
        // A later move keeps status and attributes.
        ix.upsert(&update("d1", 37.51, 127.0, None, None, 2))
            .unwrap();
        let e = ix.get(&id("d1")).unwrap();
        assert_eq!((e.status, e.attrs.seats), (Status::Offered, 6));
    }

    #[test]
    fn remove_forgets_the_entry_and_its_id_can_come_back() {
        let ix = index();
        for i in 0..10 {
            ix.upsert(&update(
                &format!("d{i}"),
                37.5,
                127.0 + f64::from(i) * 1e-5,
                None,
                None,
                1,
            ))
            .unwrap();
        }
        let gone = ix.remove(&id("d3")).unwrap();
        assert_eq!(gone.id, id("d3"));
        assert_eq!(ix.get(&id("d3")), None);
        assert_eq!(ix.remove(&id("d3")), None);
        assert_eq!(ix.len(), 9);
        // The other entries are intact (the hole was filled by a swap).
        for i in (0..10).filter(|i| *i != 3) {
            let e = ix.get(&id(&format!("d{i}"))).unwrap();
            assert_eq!(e.position.lng(), 127.0 + f64::from(i) * 1e-5);
        }
        assert_eq!(
            ix.upsert(&update("d3", 1.0, 1.0, None, None, 2)),
            Ok(Upserted::Inserted)
        );
        assert_eq!(ix.len(), 10);
    }

    #[test]
    fn eviction_removes_exactly_the_entries_not_updated_within_the_ttl() {
        let ix = index();
        for i in 0..100i64 {
            ix.upsert(&update(
                &format!("d{i}"),
                37.5 + i as f64 * 1e-3,
                127.0,
                None,
                None,
                i * 1000,
            ))
            .unwrap();
        }
        let mut evicted: Vec<String> = ix
            .evict_older_than(40_000)
            .into_iter()
            .map(|e| e.id.to_string())
            .collect();
        evicted.sort();
        let mut want: Vec<String> = (0..40).map(|i| format!("d{i}")).collect();
        want.sort();
        assert_eq!(evicted, want);
        assert_eq!(ix.len(), 60);
        assert!(ix.get(&id("d39")).is_none());
        assert!(ix.get(&id("d40")).is_some());
        assert!(ix.evict_older_than(40_000).is_empty());
    }

    #[test]
    fn cell_counts_aggregate_by_parent_cell_kind_and_status() {
        let ix = index();
        // The centre of a resolution-6 cell (about 3.7 km across), so all 30 are inside it.
        let centre = h3o::LatLng::from(cell::cell_of(&pos(37.5, 127.0), Resolution::Six));
        let here = pos(centre.lat(), centre.lng());
        for i in 0..30 {
            let status = if i < 20 {
                Status::Available
            } else {
                Status::Busy
            };
            let kind = if i % 10 == 0 {
                Kind::Profile
            } else {
                Kind::Driver
            };
            let u = Update {
                status: Some(status),
                ..Update::moved(
                    id(&format!("e{i}")),
                    kind,
                    here.destination(f64::from(i) * 12.0, 200.0),
                    1,
                )
            };
            ix.upsert(&u).unwrap();
        }
        ix.upsert(&Update::moved(
            id("far"),
            Kind::Driver,
            pos(-33.9, 151.2),
            1,
        ))
        .unwrap();
        let counts = ix.cell_counts(Resolution::Six).unwrap();
        let cell = cell::cell_of(&here, Resolution::Six);
        let c = counts[&cell];
        assert_eq!(c.get(Kind::Driver, Status::Available), 18);
        assert_eq!(c.get(Kind::Profile, Status::Available), 2);
        assert_eq!(c.get(Kind::Driver, Status::Busy), 9);
        assert_eq!(c.get(Kind::Profile, Status::Busy), 1);
        assert_eq!(c.total(), 30);
        assert_eq!(counts.values().map(CellCounts::total).sum::<u32>(), 31);
        // Finer than the kept resolution cannot be counted.
        assert_eq!(
            ix.cell_counts(Resolution::Ten).err(),
            Some(IndexError::ResolutionTooFine {
                requested: 10,
                kept: 9
            })
        );
    }

    #[test]
    fn bulk_load_refuses_duplicate_ids() {
        let u = update("d1", 37.5, 127.0, None, None, 1);
        let r = Index::bulk_load(IndexConfig::default(), vec![u.clone(), u]);
        assert_eq!(r.err(), Some(IndexError::DuplicateId(id("d1"))));
    }

    #[test]
    fn latlng_box_holds_its_rectangle() {
        let (lo, hi) = latlng_rect_box(-10.0, 80.0, 170.0, 180.0);
        for lat in [-10.0, 0.0, 45.0, 80.0] {
            for lng in [170.0, 175.0, 180.0] {
                let p = pos(lat, lng).to_unit();
                for d in 0..3 {
                    assert!(lo[d] <= p[d] && p[d] <= hi[d], "{lat},{lng}");
                }
            }
        }
    }
}
