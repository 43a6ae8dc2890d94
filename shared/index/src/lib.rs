//! geomatch's shared index of moving candidates: drivers for ride hailing, profiles for
//! people-nearby matching.
//!
//! # Layout
//! - [`sphere`]: validated positions, unit vectors, great-circle distances.
//! - [`entry`]: ids, status, kind, attributes, filters, and the stored entry.
//! - `cell`: the H3 cell of each entry, with the inscribed-disc shortcut for small moves.
//! - `bucket`: the fine grid whose cells are the R-tree's leaves.
//! - [`index`]: the index (upsert with ordering, remove, get, nearest, radius, polygon,
//!   per-cell counts, expiry).
//! - [`oracle`] (feature `testing`): brute force, the reference every query is checked
//!   against, and the benchmark scenario.
//!
//! The crate is synchronous and deterministic: no async runtime, no I/O, no clock (callers
//! pass times in).

mod bucket;
mod cell;
pub mod entry;
pub mod index;
#[cfg(feature = "testing")]
pub mod oracle;
pub mod sphere;

pub use cell::cell_of;
pub use entry::{Attributes, Entry, EntryId, Filter, IdError, Kind, Neighbor, Status};
pub use h3o::{CellIndex, Resolution};
pub use index::{
    is_stale, polygon_covers, CellCounts, Index, IndexConfig, IndexError, PageKey, Previous,
    Update, Upserted, MAX_SEQ,
};
pub use sphere::{haversine_m, CoordError, Position, EARTH_RADIUS_M};
