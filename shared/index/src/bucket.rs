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

/// The grid at one level, for walking blocks of cells around a point (the fast path of
/// nearest queries).
#[derive(Clone, Copy)]
pub(crate) struct Grid {
    level: u8,
    n: u32,
}

/// A block of cells `[i_lo, i_hi) × [j_lo, j_hi)` on one face.
pub(crate) struct Block {
    face: u8,
    i_lo: u32,
    i_hi: u32,
    j_lo: u32,
    j_hi: u32,
}

impl Grid {
    pub(crate) fn new(level: u8) -> Self {
        Grid {
            level,
            n: 1 << level,
        }
    }

    pub(crate) fn cell_of(&self, p: &[f64; 3]) -> (u8, u32, u32) {
        let key = key_of(p, self.level);
        (
            (key >> 48) as u8,
            ((key >> 24) & 0xff_ffff) as u32,
            (key & 0xff_ffff) as u32,
        )
    }

    pub(crate) fn key(face: u8, i: u32, j: u32) -> BucketKey {
        (u64::from(face) << 48) | (u64::from(i) << 24) | u64::from(j)
    }

    /// The block of `(2r + 1)²` cells centred on `(i0, j0)`, if it lies inside the face.
    pub(crate) fn block(&self, face: u8, i0: u32, j0: u32, r: u32) -> Option<Block> {
        let fits = |c: u32| c >= r && c + r < self.n;
        (fits(i0) && fits(j0)).then(|| Block {
            face,
            i_lo: i0 - r,
            i_hi: i0 + r + 1,
            j_lo: j0 - r,
            j_hi: j0 + r + 1,
        })
    }

    /// The keys of the cells at Chebyshev distance exactly `r` from `(i0, j0)`; the caller
    /// has checked with [`Grid::block`] that they lie on the face.
    pub(crate) fn ring(
        &self,
        face: u8,
        i0: u32,
        j0: u32,
        r: u32,
    ) -> impl Iterator<Item = BucketKey> {
        let (ilo, ihi, jlo, jhi) = (i0 - r, i0 + r, j0 - r, j0 + r);
        let edges_ij = (ilo..=ihi).flat_map(move |i| {
            let js: &[u32] = if r == 0 { &[0] } else { &[0, 1] };
            js.iter()
                .map(move |&which| (i, if which == 0 { jlo } else { jhi }))
        });
        let sides = (jlo + 1..jhi).flat_map(move |j| [(ilo, j), (ihi, j)]);
        edges_ij
            .chain(sides.filter(move |_| r > 0))
            .map(move |(i, j)| Self::key(face, i, j))
    }

    /// A lower bound on the squared chord from `q` (inside `block`) to any point outside
    /// it. The block is the intersection of four hemispheres (one per side; each grid line
    /// is a great circle), so any point outside lies beyond one of the four great circles.
    pub(crate) fn chord2_outside(&self, block: &Block, q: &[f64; 3]) -> f64 {
        self.line_chord2(block.face, 1, block.i_lo, q)
            .min(self.line_chord2(block.face, 1, block.i_hi, q))
            .min(self.line_chord2(block.face, 2, block.j_lo, q))
            .min(self.line_chord2(block.face, 2, block.j_hi, q))
    }

    /// Lower bounds on the squared chord from `q` (in cell `(i0, j0)`) to each of the eight
    /// neighbouring cells, with their keys: a neighbour lies beyond one or two of the cell's
    /// sides, so it is at least as far as the farther of those sides' great circles.
    pub(crate) fn neighbours(
        &self,
        face: u8,
        i0: u32,
        j0: u32,
        q: &[f64; 3],
    ) -> [(f64, BucketKey); 8] {
        let bound_i = [
            self.line_chord2(face, 1, i0, q),
            0.0,
            self.line_chord2(face, 1, i0 + 1, q),
        ];
        let bound_j = [
            self.line_chord2(face, 2, j0, q),
            0.0,
            self.line_chord2(face, 2, j0 + 1, q),
        ];
        let mut out = [(0.0, 0); 8];
        let mut n = 0;
        for di in 0..3u32 {
            for dj in 0..3u32 {
                if di == 1 && dj == 1 {
                    continue;
                }
                let key = Self::key(face, i0 + di - 1, j0 + dj - 1);
                out[n] = (bound_i[di as usize].max(bound_j[dj as usize]), key);
                n += 1;
            }
        }
        out.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        out
    }

    /// Squared chord from `q` to the great circle of grid line `index` (`offset` 1: a line
    /// of constant u, i.e. between i-cells; 2: constant v), a hair less for rounding.
    fn line_chord2(&self, face: u8, offset: usize, index: u32, q: &[f64; 3]) -> f64 {
        let axis = (face % 3) as usize;
        let sign = if face < 3 { 1.0 } else { -1.0 };
        let t = index_to_uv(f64::from(index), self.n);
        let mut normal = [0.0; 3];
        normal[(axis + offset) % 3] = 1.0;
        normal[axis] = -t * sign;
        // sin of the angle from q to the great circle, then chord² = 2(1 − cos).
        let x =
            (q[0] * normal[0] + q[1] * normal[1] + q[2] * normal[2]).abs() / (1.0 + t * t).sqrt();
        2.0 * x * x / (1.0 + (1.0 - x * x).max(0.0).sqrt()) * (1.0 - 1e-9)
    }
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
    fn neighbour_bounds_hold_for_points_in_each_neighbour() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        let g = Grid::new(16);
        for _ in 0..5_000 {
            let q = Position::new(
                rng.random_range(-80.0..80.0),
                rng.random_range(-180.0..180.0),
            )
            .unwrap();
            let (face, i0, j0) = g.cell_of(&q.to_unit());
            if g.block(face, i0, j0, 1).is_none() {
                continue;
            }
            let bounds = g.neighbours(face, i0, j0, &q.to_unit());
            for _ in 0..20 {
                let p = q
                    .destination(rng.random_range(0.0..360.0), rng.random_range(0.0..400.0))
                    .to_unit();
                if let Some((bound, _)) = bounds.iter().find(|(_, key)| *key == key_of(&p, 16)) {
                    assert!(chord2(&q.to_unit(), &p) >= *bound);
                }
            }
        }
    }

    #[test]
    fn rings_tile_the_block_exactly_once() {
        let g = Grid::new(16);
        let (face, i0, j0) = g.cell_of(&Position::new(37.5, 127.0).unwrap().to_unit());
        let mut all: Vec<BucketKey> = (0..=3)
            .flat_map(|r| g.ring(face, i0, j0, r).collect::<Vec<_>>())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!((n, all.len()), (49, 49));
        for key in all {
            let (i, j) = (((key >> 24) & 0xff_ffff) as u32, (key & 0xff_ffff) as u32);
            assert!(i.abs_diff(i0) <= 3 && j.abs_diff(j0) <= 3);
        }
    }

    #[test]
    fn nothing_outside_a_block_is_closer_than_its_bound() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let g = Grid::new(16);
        for _ in 0..2_000 {
            let z: f64 = rng.random_range(-1.0..=1.0);
            let q = Position::new(z.asin().to_degrees(), rng.random_range(-180.0..=180.0)).unwrap();
            let (face, i0, j0) = g.cell_of(&q.to_unit());
            let r = rng.random_range(0..4);
            let Some(block) = g.block(face, i0, j0, r) else {
                continue;
            };
            let bound = g.chord2_outside(&block, &q.to_unit());
            // Points just outside the block, in every direction.
            for bearing in (0..360).step_by(5) {
                let mut d = 1.0;
                let p = loop {
                    let p = q.destination(f64::from(bearing), d).to_unit();
                    let (f, i, j) = g.cell_of(&p);
                    if f != face
                        || i < block.i_lo
                        || i >= block.i_hi
                        || j < block.j_lo
                        || j >= block.j_hi
                    {
                        break p;
                    }
                    d += 1.0;
                };
                assert!(
                    chord2(&q.to_unit(), &p) >= bound,
                    "bound too high at bearing {bearing}"
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
