//! What the index stores about each candidate, and how queries filter on it.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::sphere::Position;

/// Longest accepted id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// A validated entry id: 1 to 64 bytes of `[A-Za-z0-9_.:-]`. Ids up to 24 bytes are stored
/// inline, without a heap allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EntryId(CompactString);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("id contains {0:?}; allowed are letters, digits and _ . : -")]
    BadChar(char),
}

impl EntryId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(IdError::TooLong);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
        {
            return Err(IdError::BadChar(c));
        }
        Ok(Self(CompactString::new(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EntryId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EntryId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where an entry is in its life cycle. Only `Available` entries are offered work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Status {
    Offline = 0,
    Available = 1,
    /// Holding an exclusive offer; not offered anything else meanwhile.
    Offered = 2,
    /// On a ride.
    Busy = 3,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Offline,
        Status::Available,
        Status::Offered,
        Status::Busy,
    ];

    fn from_u8(v: u8) -> Status {
        match v {
            1 => Status::Available,
            2 => Status::Offered,
            3 => Status::Busy,
            _ => Status::Offline,
        }
    }
}

/// Which product an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Kind {
    Driver = 0,
    Profile = 1,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Driver, Kind::Profile];

    fn from_u8(v: u8) -> Kind {
        if v == 1 {
            Kind::Profile
        } else {
            Kind::Driver
        }
    }
}

/// Filterable attributes. `vehicle_class` is a small code (0..32) whose names come from
/// configuration (standard, xl, …); profiles leave both at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Attributes {
    pub vehicle_class: u8,
    pub seats: u8,
}

/// Number of distinct vehicle classes a filter can name.
pub const MAX_VEHICLE_CLASSES: u8 = 32;

/// Status, kind and attributes packed into one word, kept beside each position so that
/// filters run without touching anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Packed(pub(crate) u32);

impl Packed {
    pub(crate) fn new(status: Status, kind: Kind, attrs: Attributes) -> Self {
        Packed(
            u32::from(status as u8)
                | (u32::from(kind as u8) << 8)
                | (u32::from(attrs.vehicle_class % MAX_VEHICLE_CLASSES) << 16)
                | (u32::from(attrs.seats) << 24),
        )
    }
    pub(crate) fn status(self) -> Status {
        Status::from_u8(self.0 as u8)
    }
    pub(crate) fn kind(self) -> Kind {
        Kind::from_u8((self.0 >> 8) as u8)
    }
    pub(crate) fn attrs(self) -> Attributes {
        Attributes {
            vehicle_class: (self.0 >> 16) as u8,
            seats: (self.0 >> 24) as u8,
        }
    }
}

/// Which entries a query may return. The filter is applied *before* the limit: a nearest-k
/// query returns the k nearest entries that pass it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter {
    statuses: u8,
    kinds: u8,
    classes: u32,
    min_seats: u8,
}

impl Default for Filter {
    fn default() -> Self {
        Self::any()
    }
}

impl Filter {
    /// Everything.
    pub fn any() -> Self {
        Filter {
            statuses: 0xff,
            kinds: 0xff,
            classes: u32::MAX,
            min_seats: 0,
        }
    }

    /// Available drivers: what dispatch and the "cars around you" map ask for.
    pub fn available_drivers() -> Self {
        Self::any().kind(Kind::Driver).status(Status::Available)
    }

    pub fn kind(mut self, kind: Kind) -> Self {
        self.kinds = 1 << kind as u8;
        self
    }

    pub fn status(mut self, status: Status) -> Self {
        self.statuses = 1 << status as u8;
        self
    }

    pub fn statuses(mut self, statuses: &[Status]) -> Self {
        self.statuses = statuses.iter().fold(0, |m, s| m | 1 << *s as u8);
        self
    }

    pub fn vehicle_class(mut self, class: u8) -> Self {
        self.classes = 1 << (class % MAX_VEHICLE_CLASSES);
        self
    }

    pub fn min_seats(mut self, seats: u8) -> Self {
        self.min_seats = seats;
        self
    }

    #[inline]
    pub(crate) fn accepts(&self, p: Packed) -> bool {
        let v = p.0;
        (self.statuses >> (v & 0xff)) & 1 == 1
            && (self.kinds >> ((v >> 8) & 0xff)) & 1 == 1
            && (self.classes >> ((v >> 16) & 0xff)) & 1 == 1
            && (v >> 24) as u8 >= self.min_seats
    }

    /// The same test on unpacked values (used by oracles and callers outside the index).
    pub fn matches(&self, status: Status, kind: Kind, attrs: Attributes) -> bool {
        self.accepts(Packed::new(status, kind, attrs))
    }
}

/// A copy of one entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub id: EntryId,
    pub position: Position,
    /// The H3 cell of `position` at the index's resolution.
    #[serde(serialize_with = "ser_cell")]
    pub cell: h3o::CellIndex,
    pub status: Status,
    pub kind: Kind,
    pub attrs: Attributes,
    /// Server time of the last accepted update (ms since the Unix epoch); drives expiry.
    pub updated_at_ms: i64,
    /// The device's sequence number of the last accepted update, if it sent one.
    pub seq: Option<u64>,
    /// The device's clock at the last accepted update, if it sent one.
    pub device_ts_ms: Option<i64>,
}

fn ser_cell<S: serde::Serializer>(c: &h3o::CellIndex, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(c)
}

/// One answer of a nearest or radius query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Neighbor {
    pub entry: Entry,
    /// Great-circle distance from the query point in metres.
    pub distance_m: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert_eq!(EntryId::parse(""), Err(IdError::Empty));
        assert_eq!(EntryId::parse(&"a".repeat(65)), Err(IdError::TooLong));
        assert_eq!(EntryId::parse("drv 1"), Err(IdError::BadChar(' ')));
        assert_eq!(EntryId::parse("drv/1"), Err(IdError::BadChar('/')));
        assert_eq!(
            EntryId::parse("drv-1.a:b_C").unwrap().as_str(),
            "drv-1.a:b_C"
        );
    }

    #[test]
    fn packing_round_trips_and_filters_match() {
        let attrs = Attributes {
            vehicle_class: 3,
            seats: 6,
        };
        let p = Packed::new(Status::Offered, Kind::Profile, attrs);
        assert_eq!(
            (p.status(), p.kind(), p.attrs()),
            (Status::Offered, Kind::Profile, attrs)
        );

        let f = Filter::available_drivers().vehicle_class(3).min_seats(5);
        assert!(f.matches(Status::Available, Kind::Driver, attrs));
        assert!(!f.matches(Status::Offered, Kind::Driver, attrs));
        assert!(!f.matches(Status::Available, Kind::Profile, attrs));
        assert!(!f.matches(
            Status::Available,
            Kind::Driver,
            Attributes {
                vehicle_class: 2,
                seats: 6
            }
        ));
        assert!(!f.matches(
            Status::Available,
            Kind::Driver,
            Attributes {
                vehicle_class: 3,
                seats: 4
            }
        ));
        assert!(Filter::any().matches(Status::Busy, Kind::Profile, Attributes::default()));
        let two = Filter::any().statuses(&[Status::Available, Status::Offered]);
        assert!(two.matches(Status::Offered, Kind::Driver, attrs));
        assert!(!two.matches(Status::Busy, Kind::Driver, attrs));
    }
}
