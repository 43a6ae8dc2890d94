//! Buckets: the leaves the R-tree points at.
//!
//! The sphere is cut into a fine grid of near-square cells by projecting it onto the six
//! faces of a cube, with a tangent warp so that cells are of similar size everywhere
//! (about 150 m at the default level 16). A bucket key costs two `atan`s, against 0.6 µs for
//! an H3 cell, which is what lets a move cost well under a microsecond. Each bucket is
//! bounded by a cap (centre, chord radius) whose box goes into the R-tree; only buckets
//! that hold or held entries exist.
//!
//! The cell on the sphere is the radial image of a square on the cube face, whose edges are
//! great-circle arcs, so the farthest point of a cell from its centre is one of its four
//! corners: the cap through the corners covers the cell exactly (plus a tiny margin for
//! rounding).

use std::f64::consts::FRAC_PI_4;

use crate::sphere::{chord2, normalize};

/// Grid level: each cube face is cut into `2^level × 2^level` cells.
pub(crate) const MIN_LEVEL: u8 = 8;
pub(crate) const MAX_LEVEL: u8 = 24;

/// Identifies a grid cell: face (3 bits), then i and j (up to 24 bits each).
pub(crate) type BucketKey = u64;

#[inline]
fn face_and_uv(p: &[f64; 3]) -> (u8, f64, f64) {
    let (ax, ay, az) = (p[0].abs(), p[1].abs(), p[2].abs());
    let axis = if ax >= ay && ax >= az {
        0
    } else if ay >= az {
        1
    } else {
        2
    };
    let m = p[axis];
    let face = if m >= 0.0 { axis } else { axis + 3 };
    let inv = 1.0 / m.abs();
    (face as u8, p[(axis + 1) % 3] * inv, p[(axis + 2) % 3] * inv)
}

#[inline]
fn uv_to_index(u: f64, n: u32) -> u32 {
    // The tangent warp: equal steps of the angle, not of the face coordinate.
    let s = u.atan() / FRAC_PI_4; // in [-1, 1]
    let i = ((s + 1.0) * 0.5 * n as f64) as i64;
    i.clamp(0, n as i64 - 1) as u32
}

#[inline]
fn index_to_uv(i: f64, n: u32) -> f64 {
    (FRAC_PI_4 * (2.0 * i / n as f64 - 1.0)).tan()
}

fn face_point(face: u8, u: f64, v: f64) -> [f64; 3] {
    let axis = (face % 3) as usize;
    let sign = if face < 3 { 1.0 } else { -1.0 };
    let mut p = [0.0; 3];
    p[axis] = sign;
    p[(axis + 1) % 3] = u;
    p[(axis + 2) % 3] = v;
    normalize(p)
}

/// The key of the grid cell holding unit vector `p`.
#[inline]
pub(crate) fn key_of(p: &[f64; 3], level: u8) -> BucketKey {
    let n = 1u32 << level;
    let (face, u, v) = face_and_uv(p);
    let (i, j) = (uv_to_index(u, n), uv_to_index(v, n));
    (u64::from(face) << 48) | (u64::from(i) << 24) | u64::from(j)
}

/// Centre and squared chord radius of the cap that covers a grid cell.
pub(crate) fn cap_of(key: BucketKey, level: u8) -> ([f64; 3], f64) {
    let n = 1u32 << level;
    let face = (key >> 48) as u8;
    let i = ((key >> 24) & 0xff_ffff) as f64;
    let j = (key & 0xff_ffff) as f64;
    let centre = face_point(face, index_to_uv(i + 0.5, n), index_to_uv(j + 0.5, n));
    let mut r2: f64 = 0.0;
    for (di, dj) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)] {
        let corner = face_point(face, index_to_uv(i + di, n), index_to_uv(j + dj, n));
        r2 = r2.max(chord2(&centre, &corner));
    }
    // Margin for rounding in atan/tan and in the clamp at face edges.
    let r = r2.sqrt() * (1.0 + 1e-6) + 1e-12;
    (centre, r * r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sphere::Position;
    use rand::{Rng, SeedableRng};

    #[test]
    fn every_point_lies_in_the_cap_of_its_bucket() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for level in [MIN_LEVEL, 12, 16, 20, MAX_LEVEL] {
            for k in 0..50_000 {
                let p = match k % 4 {
                    // uniform on the sphere
                    0 => {
                        let z: f64 = rng.random_range(-1.0..=1.0);
                        Position::new(z.asin().to_degrees(), rng.random_range(-180.0..=180.0))
                    }
                    // near the poles
                    1 => Position::new(
                        rng.random_range(89.0..=90.0) * if k % 8 == 1 { 1.0 } else { -1.0 },
                        rng.random_range(-180.0..=180.0),
                    ),
                    // near the antimeridian
                    2 => Position::new(
                        rng.random_range(-60.0..60.0),
                        rng.random_range(179.0..=180.0),
                    ),
                    // near cube face edges (|lng| = 45°, 135°)
                    _ => Position::new(
                        rng.random_range(-40.0..40.0),
                        45.0 + 90.0 * rng.random_range(0..4) as f64 - 180.0
                            + rng.random_range(-1e-6..1e-6),
                    ),
                }
                .unwrap()
                .to_unit();
                let key = key_of(&p, level);
                let (c, r2) = cap_of(key, level);
                assert!(
                    chord2(&c, &p) <= r2,
                    "level {level}: {p:?} outside its bucket {key:x}"
                );
            }
        }
    }

    #[test]
    fn default_level_buckets_are_about_150_m_across() {
        for (lat, lng) in [
            (37.5, 127.0),
            (0.0, 0.0),
            (0.0, 45.0),
            (60.0, 10.0),
            (-33.9, 151.2),
        ] {
            let p = Position::new(lat, lng).unwrap().to_unit();
            let (_, r2) = cap_of(key_of(&p, 16), 16);
            let diameter_m = 2.0 * crate::sphere::chord2_to_m(r2);
            assert!(
                (120.0..300.0).contains(&diameter_m),
                "({lat}, {lng}): {diameter_m} m"
            );
        }
    }
}
