//! Positions on the Earth and the distances between them.
//!
//! Everything spatial inside the index works on points of the unit sphere (`[x, y, z]`):
//! the straight-line (chord) distance between two unit vectors grows monotonically with
//! their great-circle distance, so an R-tree with Euclidean pruning orders candidates
//! exactly as the haversine formula would, with no special case at the antimeridian or
//! the poles.

use serde::{Deserialize, Serialize};

/// Mean Earth radius (IUGG), metres. Every distance geomatch reports uses it.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Why a coordinate pair was refused.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum CoordError {
    #[error("latitude {0} is not a finite number in [-90, 90]")]
    Latitude(f64),
    #[error("longitude {0} is not a finite number in [-180, 180]")]
    Longitude(f64),
}

/// A validated WGS84 position in degrees. The only way to build one is [`Position::new`],
/// so every position inside the index is finite and in range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Position {
    lat: f64,
    lng: f64,
}

impl Position {
    pub fn new(lat: f64, lng: f64) -> Result<Self, CoordError> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(CoordError::Latitude(lat));
        }
        if !lng.is_finite() || !(-180.0..=180.0).contains(&lng) {
            return Err(CoordError::Longitude(lng));
        }
        Ok(Self { lat, lng })
    }

    pub fn lat(&self) -> f64 {
        self.lat
    }

    pub fn lng(&self) -> f64 {
        self.lng
    }

    /// The point on the unit sphere.
    pub fn to_unit(&self) -> [f64; 3] {
        let (slat, clat) = self.lat.to_radians().sin_cos();
        let (slng, clng) = self.lng.to_radians().sin_cos();
        [clat * clng, clat * slng, slat]
    }

    /// Great-circle distance in metres (haversine).
    pub fn distance_m(&self, other: &Position) -> f64 {
        haversine_m(self.lat, self.lng, other.lat, other.lng)
    }

    /// The position `distance_m` metres away along the initial `bearing_deg` (0 = north).
    /// Used by simulators and tests; longitude is wrapped into [-180, 180].
    pub fn destination(&self, bearing_deg: f64, distance_m: f64) -> Position {
        let delta = distance_m / EARTH_RADIUS_M;
        let theta = bearing_deg.to_radians();
        let (phi1, lambda1) = (self.lat.to_radians(), self.lng.to_radians());
        let sin_phi2 = phi1.sin() * delta.cos() + phi1.cos() * delta.sin() * theta.cos();
        let phi2 = sin_phi2.clamp(-1.0, 1.0).asin();
        let lambda2 = lambda1
            + (theta.sin() * delta.sin() * phi1.cos()).atan2(delta.cos() - phi1.sin() * sin_phi2);
        let mut lng = lambda2.to_degrees();
        while lng > 180.0 {
            lng -= 360.0;
        }
        while lng < -180.0 {
            lng += 360.0;
        }
        Position {
            lat: phi2.to_degrees().clamp(-90.0, 90.0),
            lng,
        }
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            lat: f64,
            lng: f64,
        }
        let raw = Raw::deserialize(d)?;
        Position::new(raw.lat, raw.lng).map_err(serde::de::Error::custom)
    }
}

/// Haversine great-circle distance in metres between two (lat, lng) pairs in degrees.
pub fn haversine_m(lat1: f64, lng1: f64, lat2: f64, lng2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lng2 - lng1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// Squared chord between two unit vectors.
#[inline]
pub(crate) fn chord2(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    let (dx, dy, dz) = (a[0] - b[0], a[1] - b[1], a[2] - b[2]);
    dx * dx + dy * dy + dz * dz
}

/// Great-circle metres for a squared chord.
#[inline]
pub(crate) fn chord2_to_m(c2: f64) -> f64 {
    2.0 * EARTH_RADIUS_M * (c2.sqrt() / 2.0).min(1.0).asin()
}

/// The great-circle distance reported for a candidate at squared chord `d2`: from the
/// chord up to a quarter of the globe, where it is exact to nanometres; the haversine of
/// the two positions beyond, where `asin` of a chord near 2 loses precision.
#[inline]
pub(crate) fn reported_m(d2: f64, a: &Position, b: &Position) -> f64 {
    if d2 < 2.0 {
        chord2_to_m(d2)
    } else {
        a.distance_m(b)
    }
}

/// Squared chord for a great-circle distance in metres (saturating at the antipode).
#[inline]
pub(crate) fn m_to_chord2(m: f64) -> f64 {
    let half_angle = (m / EARTH_RADIUS_M / 2.0).min(std::f64::consts::FRAC_PI_2);
    let c = 2.0 * half_angle.sin();
    c * c
}

#[inline]
pub(crate) fn dot(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

#[inline]
pub(crate) fn cross(a: &[f64; 3], b: &[f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

#[inline]
pub(crate) fn normalize(a: [f64; 3]) -> [f64; 3] {
    let n = dot(&a, &a).sqrt();
    [a[0] / n, a[1] / n, a[2] / n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_out_of_range_and_non_finite_coordinates() {
        assert_eq!(Position::new(90.1, 0.0), Err(CoordError::Latitude(90.1)));
        assert_eq!(Position::new(-90.1, 0.0), Err(CoordError::Latitude(-90.1)));
        assert_eq!(Position::new(0.0, 180.5), Err(CoordError::Longitude(180.5)));
        assert_eq!(
            Position::new(0.0, -181.0),
            Err(CoordError::Longitude(-181.0))
        );
        assert!(matches!(
            Position::new(f64::NAN, 0.0),
            Err(CoordError::Latitude(_))
        ));
        assert!(matches!(
            Position::new(0.0, f64::INFINITY),
            Err(CoordError::Longitude(_))
        ));
        assert!(Position::new(90.0, 180.0).is_ok());
        assert!(Position::new(-90.0, -180.0).is_ok());
    }

    #[test]
    fn deserialising_validates() {
        let bad: Result<Position, _> = serde_json::from_str(r#"{"lat": 91, "lng": 0}"#);
        assert!(bad.is_err());
        let ok: Position = serde_json::from_str(r#"{"lat": 37.5, "lng": 127}"#).unwrap();
        assert_eq!((ok.lat(), ok.lng()), (37.5, 127.0));
    }

    #[test]
    fn one_degree_of_latitude_is_about_111_km() {
        let d = haversine_m(0.0, 0.0, 1.0, 0.0);
        assert!((d - 111_195.08).abs() < 1.0, "{d}");
    }

    #[test]
    fn chord_distance_matches_haversine_across_the_antimeridian_and_poles() {
        let pairs = [
            ((0.0, 179.9995), (0.0, -179.9995)),
            ((89.9999, 0.0), (89.9999, 180.0)),
            ((-89.99, 45.0), (-89.99, -135.0)),
            ((37.5, 127.0), (37.51, 127.01)),
            ((10.0, 20.0), (-10.0, -160.0)),
        ];
        for ((a1, o1), (a2, o2)) in pairs {
            let (p, q) = (
                Position::new(a1, o1).unwrap(),
                Position::new(a2, o2).unwrap(),
            );
            let via_chord = chord2_to_m(chord2(&p.to_unit(), &q.to_unit()));
            let hav = p.distance_m(&q);
            assert!(
                (via_chord - hav).abs() < 1e-6 * hav.max(1.0),
                "{via_chord} vs {hav}"
            );
        }
    }

    #[test]
    fn destination_travels_the_requested_distance() {
        let p = Position::new(37.5, 179.9999).unwrap();
        let q = p.destination(90.0, 100.0);
        assert!(q.lng() < 0.0, "crossed the antimeridian: {q:?}");
        assert!((p.distance_m(&q) - 100.0).abs() < 1e-6);
    }
}
