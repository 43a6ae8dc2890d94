//! The values the index takes and gives back: its settings and errors, an update and what
//! an upsert made of it, per-cell counts and the key of a page.

use serde::{Deserialize, Serialize};

use crate::entry::{Attributes, EntryId, Kind, Status, MAX_VEHICLE_CLASSES};
use crate::sphere::Position;

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
    pub(super) fn add(&mut self, kind: Kind, status: Status) {
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

/// Where a page of [`Index::nearest_page`](crate::Index::nearest_page) ended: the squared chord from the query point and
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
    pub(super) fn precedes(&self, d2: f64, id: &EntryId) -> bool {
        d2 > self.d2 || (d2 == self.d2 && *id > self.id)
    }
}

/// Refuses a vehicle class the packed word cannot hold.
pub(super) fn validate_attrs(a: Attributes) -> Result<(), IndexError> {
    if a.vehicle_class >= MAX_VEHICLE_CLASSES {
        return Err(IndexError::BadVehicleClass(a.vehicle_class));
    }
    Ok(())
}

/// Refuses what an update may not carry: a bad vehicle class or a sequence above
/// [`MAX_SEQ`].
pub(super) fn validate(u: &Update) -> Result<(), IndexError> {
    if let Some(a) = u.attrs {
        validate_attrs(a)?;
    }
    match u.seq {
        Some(s) if s > MAX_SEQ => Err(IndexError::BadSeq(s)),
        _ => Ok(()),
    }
}
