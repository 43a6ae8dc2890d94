//! Products and fares. Money is integer minor units (cents) everywhere; the only
//! non-integer is the surge multiplier, held as hundredths.

use geomatch_common::config::ProductSettings;
use serde::{Deserialize, Serialize};

/// A product: a vehicle class with its fare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub name: String,
    /// The vehicle class code in the index (position in `ingest.vehicle_classes`).
    pub class: u8,
    pub fare: ProductSettings,
}

/// A fare broken down. `base + distance + time + minimum_fare_adjustment + surge_amount +
/// booking_fee = total`, all in minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fare {
    pub currency: String,
    pub base: u64,
    pub distance: u64,
    pub time: u64,
    /// What lifts the metered fare to the product's minimum (0 when above it).
    pub minimum_fare_adjustment: u64,
    /// The multiplier applied to the metered fare (base, distance, time, adjustment).
    pub surge_multiplier: f64,
    /// What surge adds, in minor units.
    pub surge_amount: u64,
    /// Added after surge; never surged.
    pub booking_fee: u64,
    pub total: u64,
}

/// Rounds `num / den` to the nearest integer, halves up.
fn div_round(num: u128, den: u128) -> u64 {
    u64::try_from((num + den / 2) / den).unwrap_or(u64::MAX)
}

/// The fare of a trip of `distance_m` metres (road) and `duration_s` seconds at a surge of
/// `surge_hundredths` (100 = no surge).
pub fn fare(p: &ProductSettings, distance_m: f64, duration_s: f64, surge_hundredths: u16) -> Fare {
    let metres = distance_m.max(0.0).round() as u128;
    let seconds = duration_s.max(0.0).round() as u128;
    let distance = div_round(u128::from(p.per_km) * metres, 1_000);
    let time = div_round(u128::from(p.per_minute) * seconds, 60);
    let metered = p.base_fare.saturating_add(distance).saturating_add(time);
    let adjustment = p.minimum_fare.saturating_sub(metered);
    let before_surge = metered + adjustment;
    let surged = div_round(
        u128::from(before_surge) * u128::from(surge_hundredths.max(100)),
        100,
    );
    Fare {
        currency: p.currency.clone(),
        base: p.base_fare,
        distance,
        time,
        minimum_fare_adjustment: adjustment,
        surge_multiplier: f64::from(surge_hundredths.max(100)) / 100.0,
        surge_amount: surged - before_surge,
        booking_fee: p.booking_fee,
        total: surged.saturating_add(p.booking_fee),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standard() -> ProductSettings {
        ProductSettings {
            currency: "USD".into(),
            base_fare: 250,
            per_km: 120,
            per_minute: 30,
            minimum_fare: 700,
            booking_fee: 200,
        }
    }

    fn sums(f: &Fare) -> bool {
        f.base + f.distance + f.time + f.minimum_fare_adjustment + f.surge_amount + f.booking_fee
            == f.total
    }

    #[test]
    fn a_fare_is_base_plus_distance_plus_time_plus_booking_fee_in_minor_units() {
        // 10 km, 20 min: 250 + 1200 + 600 = 2050, + 200.
        let f = fare(&standard(), 10_000.0, 1_200.0, 100);
        assert_eq!((f.base, f.distance, f.time), (250, 1_200, 600));
        assert_eq!((f.minimum_fare_adjustment, f.surge_amount), (0, 0));
        assert_eq!(f.total, 2_250);
        assert!(sums(&f));
    }

    #[test]
    fn a_short_trip_pays_the_minimum_fare() {
        let f = fare(&standard(), 500.0, 60.0, 100);
        assert_eq!(f.minimum_fare_adjustment, 700 - (250 + 60 + 30));
        assert_eq!(f.total, 700 + 200);
        assert!(sums(&f));
    }

    #[test]
    fn surge_multiplies_the_metered_fare_but_not_the_booking_fee() {
        let f = fare(&standard(), 10_000.0, 1_200.0, 150);
        assert_eq!(f.surge_amount, 1_025);
        assert_eq!(f.total, 2_050 + 1_025 + 200);
        assert_eq!(f.surge_multiplier, 1.5);
        assert!(sums(&f));
    }

    #[test]
    fn components_round_to_the_nearest_minor_unit_and_always_add_up() {
        for (d, t, s) in [
            (1_234.5, 321.4, 113),
            (987_654.0, 45_678.0, 300),
            (0.0, 0.0, 100),
        ] {
            let f = fare(&standard(), d, t, s);
            assert!(sums(&f), "{f:?}");
        }
        let f = fare(&standard(), 1_004.0, 0.0, 100);
        assert_eq!(f.distance, 120, "120.48 rounds to 120");
        let f = fare(&standard(), 1_005.0, 0.0, 100);
        assert_eq!(f.distance, 121, "120.6 rounds to 121");
    }
}
