//! Polygons in longitude/latitude degrees (planar, as in GeoJSON): the covering rule of
//! a polygon query, and a unit-vector box around a latitude/longitude rectangle, which is
//! what the R-tree is asked for.

use geo::Intersects;

use crate::sphere::Position;

/// The point-in-polygon rule of [`Index::within_polygon`](crate::Index::within_polygon)
/// (boundary included).
pub fn polygon_covers(polygon: &geo::Polygon<f64>, p: &Position) -> bool {
    polygon.intersects(&geo::Point::new(p.lng(), p.lat()))
}

/// A box in unit-vector space that holds every point of a latitude/longitude rectangle.
/// x = cos(lat)·cos(lng), y = cos(lat)·sin(lng), z = sin(lat): each is a product of
/// independent factors whose ranges are known, so the extremes are products of range ends.
pub(super) fn latlng_rect_box(lat0: f64, lat1: f64, lng0: f64, lng1: f64) -> ([f64; 3], [f64; 3]) {
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
    use crate::index::fixtures::pos;

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
