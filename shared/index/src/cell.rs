//! The H3 cell of a position, computed cheaply for moving entries.
//!
//! `h3o::LatLng::to_cell` costs about 0.6 µs here, more than half of the per-update budget.
//! A driver moving a few tens of metres usually stays in its cell, so each cell's
//! *inscribed disc* (the largest circle around the cell centre that lies inside the cell)
//! is memoised: when the new position is inside the disc of the entry's current cell the
//! cell is unchanged and `to_cell` is skipped. The disc is a pure function of the cell, so
//! the memo is per thread and needs no lock.
//!
//! Why the disc test is exact: an H3 cell is a hexagon in the gnomonic projection of its
//! icosahedron face, and the gnomonic projection maps straight lines to great circles, so a
//! hexagonal cell is a convex spherical polygon, the intersection of the hemispheres on the
//! inner side of its six edges. A disc around the centre whose radius is below the distance
//! to every edge's great circle lies in all six hemispheres, so inside the cell. Pentagons and
//! cells with distortion vertices (those crossing a face edge) get no disc and always take
//! the slow path. A 2 % margin absorbs floating-point error in h3o and here; the property
//! test `disc_shortcut_agrees_with_h3o` checks the claim on random points.

use std::cell::RefCell;

use h3o::{CellIndex, LatLng, Resolution};
use rustc_hash::FxHashMap;

use crate::sphere::{cross, dot, normalize, Position};

/// Memo entries beyond this are dropped wholesale (about 40 MB per thread at most).
const MEMO_LIMIT: usize = 1 << 20;
const DISC_MARGIN: f64 = 0.98;

#[derive(Clone, Copy)]
struct Disc {
    centre: [f64; 3],
    /// Cosine of the inscribed radius (after the margin); `2.0` means "no disc".
    cos_radius: f64,
}

thread_local! {
    static MEMO: RefCell<FxHashMap<u64, Disc>> = RefCell::new(FxHashMap::default());
}

fn disc(cell: CellIndex) -> Disc {
    let centre_ll = LatLng::from(cell);
    let centre = unit(centre_ll);
    let boundary = cell.boundary();
    if cell.is_pentagon() || boundary.len() != 6 {
        return Disc {
            centre,
            cos_radius: 2.0,
        };
    }
    let verts: Vec<[f64; 3]> = boundary.iter().map(|v| unit(*v)).collect();
    let mut min_sin = f64::INFINITY;
    for i in 0..verts.len() {
        let n = normalize(cross(&verts[i], &verts[(i + 1) % verts.len()]));
        min_sin = min_sin.min(dot(&centre, &n).abs());
    }
    let radius = min_sin.clamp(0.0, 1.0).asin() * DISC_MARGIN;
    Disc {
        centre,
        cos_radius: radius.cos(),
    }
}

fn unit(ll: LatLng) -> [f64; 3] {
    let (slat, clat) = ll.lat_radians().sin_cos();
    let (slng, clng) = ll.lng_radians().sin_cos();
    [clat * clng, clat * slng, slat]
}

/// The cell of `position` at `res`, where `xyz` is `position.to_unit()` and `previous` is
/// the entry's cell before the move (if any, at the same resolution).
#[inline]
pub(crate) fn cell_after_move(
    position: &Position,
    xyz: &[f64; 3],
    previous: Option<CellIndex>,
    res: Resolution,
) -> CellIndex {
    match previous {
        Some(prev) if in_inscribed_disc(prev, xyz) => prev,
        _ => cell_of(position, res),
    }
}

/// Whether the unit vector `xyz` lies inside `cell`'s memoised inscribed disc.
fn in_inscribed_disc(cell: CellIndex, xyz: &[f64; 3]) -> bool {
    MEMO.with(|memo| {
        let mut memo = memo.borrow_mut();
        if memo.len() >= MEMO_LIMIT {
            memo.clear();
        }
        let d = *memo.entry(u64::from(cell)).or_insert_with(|| disc(cell));
        dot(&d.centre, xyz) > d.cos_radius
    })
}

/// The cell of a position, the slow exact way.
pub fn cell_of(position: &Position, res: Resolution) -> CellIndex {
    // h3o only refuses non-finite numbers, which a validated Position never holds.
    LatLng::new(position.lat(), position.lng())
        .expect("a Position is always finite")
        .to_cell(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn disc_shortcut_agrees_with_h3o() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut shortcut_hits = 0;
        for i in 0..200_000 {
            // Half the samples worldwide (poles, antimeridian included), half in a metro.
            let p = if i % 2 == 0 {
                let z: f64 = rng.random_range(-1.0..=1.0);
                Position::new(z.asin().to_degrees(), rng.random_range(-180.0..=180.0)).unwrap()
            } else {
                Position::new(
                    rng.random_range(37.3..37.85),
                    rng.random_range(126.7..127.4),
                )
                .unwrap()
            };
            let res = if i % 3 == 0 {
                Resolution::Nine
            } else {
                Resolution::Eight
            };
            let before = cell_of(&p, res);
            let q = p.destination(rng.random_range(0.0..360.0), rng.random_range(0.0..150.0));
            let exact = cell_of(&q, res);
            if in_inscribed_disc(before, &q.to_unit()) {
                shortcut_hits += 1;
                assert_eq!(before, exact, "disc of {before} wrongly holds {q:?}");
            }
            assert_eq!(cell_after_move(&q, &q.to_unit(), Some(before), res), exact);
        }
        assert!(
            shortcut_hits > 20_000,
            "the shortcut was exercised: {shortcut_hits}"
        );
    }
}
