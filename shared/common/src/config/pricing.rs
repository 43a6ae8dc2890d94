//! The ETA model and pricing: products, fares, quotes and surge (sections `eta`,
//! `pricing`).

use serde::Deserialize;

use super::error::{check_open_closed, check_range, invalid, ConfigError};

/// The ETA model: great-circle distance × `circuity` ÷ speed, the speed learned online per
/// H3 resolution-7 cell and hour of the week from consecutive pings of moving drivers, or
/// `default_speed_kmh` where nothing is learned yet.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtaSettings {
    /// Road distance over great-circle distance.
    pub circuity: f64,
    /// Speed assumed where nothing is learned (km/h).
    pub default_speed_kmh: f64,
    /// A move implying more than this is a GPS jump, not a sample (km/h).
    pub max_sample_speed_kmh: f64,
    /// A move implying less than this is a standing driver, not a sample (km/h).
    pub min_moving_speed_kmh: f64,
    /// Pings closer in time than this are jitter, not a sample (s).
    pub min_sample_interval_s: f64,
    /// Pings further apart than this hide stops and detours, not a sample (s).
    pub max_sample_interval_s: f64,
    /// Weight of a new sample in the exponentially weighted speed, in (0, 1].
    pub smoothing: f64,
    /// Samples before a cell's speed is trusted.
    pub min_samples: u32,
    /// Most (cell, hour) slots learned; bounds memory (about 40 bytes a slot).
    pub max_learned_slots: usize,
    /// Most destinations in one `POST /v1/eta/batch`.
    pub max_batch: usize,
}

impl Default for EtaSettings {
    fn default() -> Self {
        Self {
            circuity: 1.3,
            default_speed_kmh: 25.0,
            max_sample_speed_kmh: 200.0,
            min_moving_speed_kmh: 3.0,
            min_sample_interval_s: 1.0,
            max_sample_interval_s: 120.0,
            smoothing: 0.05,
            min_samples: 5,
            max_learned_slots: 1_000_000,
            max_batch: 100,
        }
    }
}

impl EtaSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(self.circuity.is_finite() && (1.0..=3.0).contains(&self.circuity)) {
            return Err(invalid("eta.circuity", "must be in [1, 3]"));
        }
        check_open_closed("eta.default_speed_kmh", self.default_speed_kmh, 0.0, 200.0)?;
        check_open_closed(
            "eta.max_sample_speed_kmh",
            self.max_sample_speed_kmh,
            0.0,
            500.0,
        )?;
        if !(self.min_moving_speed_kmh.is_finite()
            && self.min_moving_speed_kmh >= 0.0
            && self.min_moving_speed_kmh < self.max_sample_speed_kmh)
        {
            return Err(invalid(
                "eta.min_moving_speed_kmh",
                "must be at least 0 and below eta.max_sample_speed_kmh",
            ));
        }
        check_open_closed(
            "eta.min_sample_interval_s",
            self.min_sample_interval_s,
            0.0,
            60.0,
        )?;
        if !(self.max_sample_interval_s.is_finite()
            && self.max_sample_interval_s >= self.min_sample_interval_s
            && self.max_sample_interval_s <= 3_600.0)
        {
            return Err(invalid(
                "eta.max_sample_interval_s",
                "must be at least eta.min_sample_interval_s and at most 3600",
            ));
        }
        check_open_closed("eta.smoothing", self.smoothing, 0.0, 1.0)?;
        check_range("eta.min_samples", self.min_samples, 1, 10_000)?;
        check_range(
            "eta.max_learned_slots",
            self.max_learned_slots,
            1,
            100_000_000,
        )?;
        check_range("eta.max_batch", self.max_batch, 1, 10_000)
    }
}

/// Largest amount of money in one fare component, in minor units.
const MAX_MONEY_MINOR: u64 = 1_000_000_000;

/// Products, fares, quotes and surge.
///
/// `products` has one entry per `ingest.vehicle_classes` name, every field required. In a
/// TOML file: `[pricing.products.xl]`, then the fields. Setting one product field by
/// environment variable replaces the whole `products` table, so the other products would
/// be missing and the process refuses to start: configure products in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PricingSettings {
    /// How long a quote is honoured.
    pub quote_ttl_s: u64,
    /// Longest trip quoted, great-circle kilometres.
    pub max_trip_km: f64,
    /// How far from the pickup an available driver is looked for (pickup ETA), metres.
    pub pickup_radius_m: f64,
    /// Most hexagons one `GET /v1/heatmap` answers; a larger box gets 400.
    pub max_heatmap_cells: usize,
    /// Redis mode: how often each replica exchanges demand, learned speeds and surge with
    /// Redis (and tries to claim a due surge round), ms.
    pub sync_interval_ms: u64,
    pub surge: SurgeSettings,
    /// Fares by product name (a vehicle class).
    pub products: std::collections::BTreeMap<String, ProductSettings>,
}

impl Default for PricingSettings {
    fn default() -> Self {
        let product = |base_fare, per_km, per_minute, minimum_fare, booking_fee| ProductSettings {
            currency: "USD".to_owned(),
            base_fare,
            per_km,
            per_minute,
            minimum_fare,
            booking_fee,
        };
        Self {
            quote_ttl_s: 120,
            max_trip_km: 300.0,
            pickup_radius_m: 10_000.0,
            max_heatmap_cells: 2_000,
            sync_interval_ms: 1_000,
            surge: SurgeSettings::default(),
            products: [
                ("standard", product(250, 120, 30, 700, 200)),
                ("xl", product(400, 180, 45, 1_000, 250)),
                ("premium", product(600, 250, 60, 1_500, 300)),
            ]
            .into_iter()
            .map(|(name, p)| (name.to_owned(), p))
            .collect(),
        }
    }
}

impl PricingSettings {
    pub(super) fn validate(
        &self,
        classes: &[String],
        cell_resolution: u8,
    ) -> Result<(), ConfigError> {
        if cell_resolution < 7 {
            return Err(invalid(
                "index.cell_resolution",
                "must be at least 7: surge counts drivers per resolution-7 cell",
            ));
        }
        check_range("pricing.quote_ttl_s", self.quote_ttl_s, 1, 3_600)?;
        check_open_closed("pricing.max_trip_km", self.max_trip_km, 0.0, 2_000.0)?;
        check_open_closed(
            "pricing.pickup_radius_m",
            self.pickup_radius_m,
            0.0,
            100_000.0,
        )?;
        check_range(
            "pricing.max_heatmap_cells",
            self.max_heatmap_cells,
            1,
            100_000,
        )?;
        check_range(
            "pricing.sync_interval_ms",
            self.sync_interval_ms,
            50,
            60_000,
        )?;
        self.surge.validate()?;
        let missing: Vec<&str> = classes
            .iter()
            .filter(|c| !self.products.contains_key(*c))
            .map(String::as_str)
            .collect();
        let extra: Vec<&str> = self
            .products
            .keys()
            .filter(|p| !classes.contains(p))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            return Err(invalid(
                "pricing.products",
                format!(
                    "must price exactly the vehicle classes (ingest.vehicle_classes); \
                     missing {missing:?}, not a class {extra:?}"
                ),
            ));
        }
        for (name, p) in &self.products {
            p.validate()
                .map_err(|reason| invalid("pricing.products", format!("{name}: {reason}")))?;
        }
        Ok(())
    }
}

/// One product's fare: `max(base + per_km·km + per_minute·min, minimum_fare) × surge +
/// booking_fee`. Money in integer minor units of `currency` (cents for USD).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductSettings {
    /// ISO 4217 code, e.g. `USD`.
    pub currency: String,
    pub base_fare: u64,
    pub per_km: u64,
    pub per_minute: u64,
    pub minimum_fare: u64,
    /// Added after surge; never surged.
    pub booking_fee: u64,
}

impl ProductSettings {
    fn validate(&self) -> Result<(), String> {
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "currency must be a 3-letter upper-case ISO 4217 code, got {:?}",
                self.currency
            ));
        }
        for (field, v) in [
            ("base_fare", self.base_fare),
            ("per_km", self.per_km),
            ("per_minute", self.per_minute),
            ("minimum_fare", self.minimum_fare),
            ("booking_fee", self.booking_fee),
        ] {
            if v > MAX_MONEY_MINOR {
                return Err(format!(
                    "{field} must be at most {MAX_MONEY_MINOR}, got {v}"
                ));
            }
        }
        Ok(())
    }
}

/// Surge per H3 resolution-7 cell: demand (ride requests and quotes in the last
/// `demand_window_s`) over supply (available drivers), both summed over the cell's k-ring
/// (ring d weighted 1/(1+d)); the multiplier `1 + sensitivity × max(0, demand/(supply+1) −
/// threshold)` is smoothed over time, capped at `cap` and published in steps of `step`,
/// moving only when the smoothed value is a whole step away (hysteresis).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SurgeSettings {
    /// Seconds between recomputations.
    pub interval_s: u64,
    /// How far back demand counts.
    pub demand_window_s: u64,
    /// Highest multiplier.
    pub cap: f64,
    /// Granularity of published multipliers and width of the hysteresis band.
    pub step: f64,
    /// Demand per available driver below which there is no surge.
    pub threshold: f64,
    /// Multiplier added per unit of demand per driver above the threshold.
    pub sensitivity: f64,
    /// Weight of the newest computation in the time-smoothed multiplier, in (0, 1].
    pub smoothing: f64,
    /// Rings of neighbouring cells demand and supply are summed over (0 = the cell alone).
    pub k_ring: u32,
}

impl Default for SurgeSettings {
    fn default() -> Self {
        Self {
            interval_s: 30,
            demand_window_s: 300,
            cap: 3.0,
            step: 0.1,
            threshold: 1.0,
            sensitivity: 0.5,
            smoothing: 0.5,
            k_ring: 1,
        }
    }
}

impl SurgeSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        check_range("pricing.surge.interval_s", self.interval_s, 1, 3_600)?;
        check_range(
            "pricing.surge.demand_window_s",
            self.demand_window_s,
            30,
            3_600,
        )?;
        if !(self.cap.is_finite() && (1.0..=10.0).contains(&self.cap)) {
            return Err(invalid("pricing.surge.cap", "must be in [1, 10]"));
        }
        let hundredths = self.step * 100.0;
        if !(self.step.is_finite()
            && (0.01..=1.0).contains(&self.step)
            && (hundredths - hundredths.round()).abs() < 1e-9)
        {
            return Err(invalid(
                "pricing.surge.step",
                "must be a whole number of hundredths in [0.01, 1]",
            ));
        }
        if !(self.threshold.is_finite() && (0.0..=100.0).contains(&self.threshold)) {
            return Err(invalid("pricing.surge.threshold", "must be in [0, 100]"));
        }
        check_open_closed("pricing.surge.sensitivity", self.sensitivity, 0.0, 100.0)?;
        check_open_closed("pricing.surge.smoothing", self.smoothing, 0.0, 1.0)?;
        check_range("pricing.surge.k_ring", self.k_ring, 0, 5)
    }
}

#[cfg(test)]
// `figment::Jail` closures return `figment::Error`, a large type; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use crate::config::tests::load_in;
    use crate::config::Settings;
    use figment::Jail;

    #[test]
    fn eta_and_pricing_defaults_price_every_vehicle_class() {
        let settings = Settings::default();
        settings.validate().expect("defaults are valid");

        assert_eq!(settings.eta.circuity, 1.3);
        assert_eq!(settings.eta.max_batch, 100);
        assert_eq!(settings.pricing.surge.cap, 3.0);
        assert_eq!(settings.pricing.surge.interval_s, 30);
        let products: Vec<&String> = settings.pricing.products.keys().collect();
        assert_eq!(products, ["premium", "standard", "xl"]);
        assert_eq!(settings.pricing.products["standard"].currency, "USD");
    }

    #[test]
    fn products_are_read_from_the_file_and_must_match_the_vehicle_classes() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "geomatch.toml",
                r#"
                [ingest]
                vehicle_classes = ["moto"]
                [pricing.products.moto]
                currency = "KRW"
                base_fare = 3000
                per_km = 800
                per_minute = 100
                minimum_fare = 4000
                booking_fee = 0
                [pricing.surge]
                cap = 2.0
                "#,
            )?;
            let settings = load_in(jail, Some("geomatch.toml")).expect("valid");
            assert_eq!(settings.pricing.products["moto"].per_km, 800);
            assert_eq!(settings.pricing.surge.cap, 2.0);
            assert_eq!(settings.pricing.surge.step, 0.1, "unset keys keep defaults");

            jail.create_file(
                "classes.toml",
                "[ingest]\nvehicle_classes = [\"standard\", \"bike\"]\n",
            )?;
            let message = load_in(jail, Some("classes.toml")).unwrap_err().to_string();
            assert!(message.contains("`pricing.products`"), "{message}");
            assert!(message.contains("bike"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn a_product_missing_a_field_is_refused_with_its_key() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("GEOMATCH__PRICING__PRODUCTS__XL__BASE_FARE", "500");
            let message = load_in(jail, None).unwrap_err().to_string();

            assert!(message.contains("pricing.products"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn eta_and_pricing_values_out_of_range_are_refused_with_their_key() {
        let cases = [
            ("GEOMATCH__ETA__CIRCUITY", "0.5", "eta.circuity"),
            (
                "GEOMATCH__ETA__DEFAULT_SPEED_KMH",
                "0",
                "eta.default_speed_kmh",
            ),
            ("GEOMATCH__ETA__SMOOTHING", "1.5", "eta.smoothing"),
            (
                "GEOMATCH__ETA__MAX_SAMPLE_INTERVAL_S",
                "0.5",
                "eta.max_sample_interval_s",
            ),
            ("GEOMATCH__ETA__MAX_BATCH", "0", "eta.max_batch"),
            ("GEOMATCH__PRICING__QUOTE_TTL_S", "0", "pricing.quote_ttl_s"),
            ("GEOMATCH__PRICING__SURGE__CAP", "0.9", "pricing.surge.cap"),
            (
                "GEOMATCH__PRICING__SURGE__STEP",
                "0.125",
                "pricing.surge.step",
            ),
            (
                "GEOMATCH__PRICING__SURGE__K_RING",
                "9",
                "pricing.surge.k_ring",
            ),
            (
                "GEOMATCH__PRICING__MAX_HEATMAP_CELLS",
                "0",
                "pricing.max_heatmap_cells",
            ),
            (
                "GEOMATCH__INDEX__CELL_RESOLUTION",
                "6",
                "index.cell_resolution",
            ),
        ];
        for (var, value, key) in cases {
            Jail::expect_with(|jail| {
                jail.clear_env();
                jail.set_env(var, value);
                let message = load_in(jail, None).unwrap_err().to_string();

                assert!(message.contains(&format!("`{key}`")), "{var}: {message}");
                Ok(())
            });
        }
    }
}
