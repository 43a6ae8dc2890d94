//! Queries that return everything in a region (a radius, a polygon) and the per-cell
//! counts of the whole index.

use std::collections::HashMap;

use geo::BoundingRect;
use h3o::{CellIndex, Resolution};
use rstar::AABB;

use super::model::{CellCounts, IndexError};
use super::polygon::{latlng_rect_box, polygon_covers};
use super::spatial::entry_of;
use super::Index;
use crate::entry::{Entry, Filter, Neighbor};
use crate::sphere::{chord2, m_to_chord2, reported_m, Position};

impl Index {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell;
    use crate::entry::{Kind, Status};
    use crate::index::fixtures::{id, index, pos};
    use crate::index::Update;

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
}
