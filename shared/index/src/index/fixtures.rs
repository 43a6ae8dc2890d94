//! What the index's unit tests build their cases from.

use super::{Index, IndexConfig, Update};
use crate::entry::{EntryId, Kind};
use crate::sphere::Position;

pub(super) fn id(s: &str) -> EntryId {
    EntryId::parse(s).unwrap()
}

pub(super) fn pos(lat: f64, lng: f64) -> Position {
    Position::new(lat, lng).unwrap()
}

/// A driver's move with the given ordering fields, received at `at`.
pub(super) fn update(
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

/// An empty index with the default settings.
pub(super) fn index() -> Index {
    Index::new(IndexConfig::default()).unwrap()
}
