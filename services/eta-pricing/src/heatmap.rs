//! The hexagons of a bounding box, for `GET /v1/heatmap`.
//!
//! Cells are found by a breadth-first walk from the cell at the box's centre, keeping every
//! cell whose vertices' bounding box overlaps the box (the cells meeting a rectangle are
//! connected, so the walk reaches all of them). The walk stops as soon as the answer would
//! exceed its bound, and a cheap area estimate refuses hopeless boxes before walking.

use std::collections::VecDeque;
use std::str::FromStr;

use geomatch_index::{cell_of, CellIndex, Position, Resolution};
use rustc_hash::FxHashSet;

/// A validated `minLng,minLat,maxLng,maxLat` box (not crossing the antimeridian).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    pub min_lng: f64,
    pub min_lat: f64,
    pub max_lng: f64,
    pub max_lat: f64,
}

/// Why a box was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bbox must be minLng,minLat,maxLng,maxLat with longitudes in [-180, 180], latitudes in [-90, 90], min < max (boxes across the antimeridian are not supported): {0}")]
pub struct BBoxError(pub String);

impl FromStr for BBox {
    type Err = BBoxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<f64> = s
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|e| BBoxError(format!("{s:?}: {e}")))?;
        let [min_lng, min_lat, max_lng, max_lat] = parts[..] else {
            return Err(BBoxError(format!("{s:?} has {} numbers", parts.len())));
        };
        let lng_ok = |v: f64| v.is_finite() && (-180.0..=180.0).contains(&v);
        let lat_ok = |v: f64| v.is_finite() && (-90.0..=90.0).contains(&v);
        if !(lng_ok(min_lng) && lng_ok(max_lng) && lat_ok(min_lat) && lat_ok(max_lat)) {
            return Err(BBoxError(format!("{s:?} is out of range")));
        }
        if !(min_lng < max_lng && min_lat < max_lat) {
            return Err(BBoxError(format!("{s:?} is empty or inverted")));
        }
        Ok(BBox {
            min_lng,
            min_lat,
            max_lng,
            max_lat,
        })
    }
}

impl BBox {
    fn centre(&self) -> Position {
        Position::new(
            (self.min_lat + self.max_lat) / 2.0,
            (self.min_lng + self.max_lng) / 2.0,
        )
        .expect("the middle of a valid box is valid")
    }

    /// Area on the sphere, m².
    pub fn area_m2(&self) -> f64 {
        let r = geomatch_index::EARTH_RADIUS_M;
        r * r
            * (self.max_lng - self.min_lng).to_radians()
            * (self.max_lat.to_radians().sin() - self.min_lat.to_radians().sin())
    }

    /// About how many cells of `res` the box holds (at least one).
    pub fn estimate_cells(&self, res: Resolution) -> usize {
        (self.area_m2() / res.area_m2()).ceil().max(1.0) as usize
    }

    /// Whether `cell`'s vertex bounding box overlaps this box. Longitudes are taken on the
    /// box's side of the antimeridian, so a cell straddling it is not seen as world-wide.
    fn meets(&self, cell: CellIndex) -> bool {
        let centre_lng = (self.min_lng + self.max_lng) / 2.0;
        let (mut lo_lng, mut hi_lng, mut lo_lat, mut hi_lat) =
            (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for v in cell.boundary().iter() {
            let mut lng = v.lng();
            if lng - centre_lng > 180.0 {
                lng -= 360.0;
            } else if centre_lng - lng > 180.0 {
                lng += 360.0;
            }
            lo_lng = lo_lng.min(lng);
            hi_lng = hi_lng.max(lng);
            lo_lat = lo_lat.min(v.lat());
            hi_lat = hi_lat.max(v.lat());
        }
        lo_lng <= self.max_lng
            && hi_lng >= self.min_lng
            && lo_lat <= self.max_lat
            && hi_lat >= self.min_lat
    }
}

/// Why the cells of a box were not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyCells {
    /// About how many there are (at least `max + 1`).
    pub estimate: usize,
}

/// The cells of `res` meeting `bbox`, at most `max` of them.
pub fn cells_in(bbox: &BBox, res: Resolution, max: usize) -> Result<Vec<CellIndex>, TooManyCells> {
    let estimate = bbox.estimate_cells(res);
    // The estimate counts cells inside; the walk also keeps those on the edges. Refuse
    // early only what is clearly too big.
    if estimate > max.saturating_mul(2) {
        return Err(TooManyCells { estimate });
    }
    let start = cell_of(&bbox.centre(), res);
    let mut seen = FxHashSet::default();
    let mut queue = VecDeque::from([start]);
    let mut found = Vec::new();
    seen.insert(start);
    while let Some(cell) = queue.pop_front() {
        if !bbox.meets(cell) {
            continue;
        }
        found.push(cell);
        if found.len() > max {
            return Err(TooManyCells {
                estimate: estimate.max(found.len()),
            });
        }
        for n in cell.grid_disk::<Vec<_>>(1) {
            if seen.insert(n) {
                queue.push_back(n);
            }
        }
    }
    Ok(found)
}

/// The GeoJSON ring of `cell`: `[lng, lat]` pairs, closed, counter-clockwise.
pub fn ring(cell: CellIndex) -> Vec<[f64; 2]> {
    let boundary = cell.boundary();
    let mut ring: Vec<[f64; 2]> = boundary.iter().map(|v| [v.lng(), v.lat()]).collect();
    if let Some(first) = ring.first().copied() {
        ring.push(first);
    }
    ring
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bbox_parses_and_bad_ones_are_refused() {
        let b: BBox = "126.9,37.4,127.1,37.6".parse().unwrap();
        assert_eq!(
            (b.min_lng, b.min_lat, b.max_lng, b.max_lat),
            (126.9, 37.4, 127.1, 37.6)
        );
        for bad in [
            "",
            "1,2,3",
            "1,2,3,4,5",
            "a,b,c,d",
            "127.1,37.4,126.9,37.6",
            "126.9,37.6,127.1,37.6",
            "-181,0,0,1",
            "0,-91,1,0",
            "NaN,0,1,1",
            "170,0,-170,1",
        ] {
            assert!(bad.parse::<BBox>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_cell_meeting_the_box_is_listed_once() {
        let b: BBox = "126.95,37.50,127.05,37.56".parse().unwrap();
        let cells = cells_in(&b, Resolution::Seven, 2_000).unwrap();
        let unique: FxHashSet<_> = cells.iter().collect();
        assert_eq!(unique.len(), cells.len());
        // A grid of points inside the box: each one's cell is listed.
        for i in 0..=10 {
            for j in 0..=10 {
                let p = Position::new(37.50 + 0.006 * f64::from(i), 126.95 + 0.01 * f64::from(j))
                    .unwrap();
                assert!(cells.contains(&cell_of(&p, Resolution::Seven)), "{p:?}");
            }
        }
        let estimate = b.estimate_cells(Resolution::Seven);
        assert!(
            cells.len() >= estimate && cells.len() < estimate * 3,
            "{} vs {estimate}",
            cells.len()
        );
    }

    #[test]
    fn a_box_with_too_many_cells_is_refused_early_or_at_the_bound() {
        let country: BBox = "124,33,132,39".parse().unwrap();
        assert!(cells_in(&country, Resolution::Seven, 2_000).is_err());
        let city: BBox = "126.7,37.3,127.3,37.8".parse().unwrap();
        let n = cells_in(&city, Resolution::Seven, 2_000).unwrap().len();
        assert!(matches!(
            cells_in(&city, Resolution::Seven, n - 1),
            Err(TooManyCells { estimate }) if estimate >= n
        ));
    }

    #[test]
    fn a_box_at_the_antimeridian_does_not_spread_over_the_world() {
        let b: BBox = "179.9,-17.0,180,-16.9".parse().unwrap();
        let cells = cells_in(&b, Resolution::Seven, 500).unwrap();
        assert!(!cells.is_empty() && cells.len() < 100, "{}", cells.len());
    }

    #[test]
    fn a_ring_is_closed() {
        let c = cell_of(&Position::new(37.5, 127.0).unwrap(), Resolution::Seven);
        let r = ring(c);
        assert_eq!(r.len(), 7);
        assert_eq!(r.first(), r.last());
    }
}
