//! Ride dispatch and people nearby (sections `matching`, `people`).

use serde::Deserialize;

use super::error::{check_range, invalid, ConfigError};

/// Rules of ride dispatch.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchingSettings {
    /// Search radii tried in turn, metres; the last is the cap.
    pub radii_m: Vec<f64>,
    /// Offers made before a ride ends as no_driver_found.
    pub max_attempts: u32,
    /// How long a driver has to accept an offer.
    pub offer_timeout_s: u64,
    /// Candidates ranked per radius (nearest by the index, then by pickup ETA).
    pub candidates: usize,
    /// How long before `scheduled_at` dispatch starts.
    pub schedule_lead_s: u64,
    /// How far ahead a ride may be booked.
    pub max_schedule_days: u64,
    /// How long an Idempotency-Key is remembered.
    pub idempotency_ttl_s: u64,
    /// Most drivers `GET /v1/drivers/nearby` returns.
    pub max_nearby: usize,
    /// Batched matching: 0 offers each request greedily at once; above 0, open requests
    /// are collected for this many ms and assigned together to minimise total pickup ETA.
    pub batch_window_ms: u64,
    /// The largest tip a rider may add to a ride, minor units of the fare's currency.
    pub max_tip_minor: u64,
    /// How often each replica sweeps dispatch (offer timeouts, scheduled rides, rides
    /// left without an offer), ms.
    pub sweep_interval_ms: u64,
}

impl Default for MatchingSettings {
    fn default() -> Self {
        Self {
            radii_m: vec![1_000.0, 3_000.0, 6_000.0],
            max_attempts: 5,
            offer_timeout_s: 15,
            candidates: 20,
            schedule_lead_s: 600,
            max_schedule_days: 7,
            idempotency_ttl_s: 86_400,
            max_nearby: 50,
            batch_window_ms: 0,
            max_tip_minor: 50_000,
            sweep_interval_ms: 200,
        }
    }
}

impl MatchingSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.radii_m.is_empty()
            || self.radii_m.len() > 10
            || self
                .radii_m
                .iter()
                .any(|r| !r.is_finite() || *r <= 0.0 || *r > 100_000.0)
            || self.radii_m.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(invalid(
                "matching.radii_m",
                "must be 1 to 10 increasing radii in (0, 100000] m",
            ));
        }
        check_range("matching.max_attempts", self.max_attempts, 1, 100)?;
        check_range("matching.offer_timeout_s", self.offer_timeout_s, 1, 600)?;
        check_range("matching.candidates", self.candidates, 1, 500)?;
        check_range("matching.max_nearby", self.max_nearby, 1, 500)?;
        check_range("matching.batch_window_ms", self.batch_window_ms, 0, 60_000)?;
        check_range("matching.max_tip_minor", self.max_tip_minor, 0, 10_000_000)?;
        check_range(
            "matching.sweep_interval_ms",
            self.sweep_interval_ms,
            10,
            10_000,
        )?;
        check_range("matching.max_schedule_days", self.max_schedule_days, 0, 30)?;
        check_range(
            "matching.idempotency_ttl_s",
            self.idempotency_ttl_s,
            60,
            7 * 86_400,
        )?;
        Ok(())
    }
}

/// Most a profile's own `not_seen_for_s` may be: a profile's location outlives its last
/// report in Redis for this long (location-ingest keeps profile state 30 days).
pub const MAX_PEOPLE_NOT_SEEN_FOR_S: u64 = 30 * 86_400;

/// Rules of people nearby (recommendations, swipes, matches).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeopleSettings {
    /// Likes a profile may give per UTC day; above it 429 until the next UTC midnight.
    pub daily_likes: u32,
    /// Superlikes per UTC day (their own, smaller budget; they do not use likes).
    pub daily_superlikes: u32,
    /// Recommendations per page when the request names no `limit`.
    pub page_size: usize,
    /// Most recommendations one page may ask for.
    pub page_size_max: usize,
    /// A profile whose location was not reported for this long is not recommended (and
    /// leaves the index).
    pub not_seen_for_s: u64,
    /// Most candidates one recommendations request examines before it answers with what it
    /// has and a cursor to continue (bounds the work for very picky profiles).
    pub max_examined: usize,
    /// Most entries `GET …/matches` and `GET …/likes` list.
    pub max_list: usize,
}

impl Default for PeopleSettings {
    fn default() -> Self {
        Self {
            daily_likes: 100,
            daily_superlikes: 5,
            page_size: 20,
            page_size_max: 50,
            not_seen_for_s: 7 * 86_400,
            max_examined: 5_000,
            max_list: 200,
        }
    }
}

impl PeopleSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_range("people.daily_likes", self.daily_likes, 1, 100_000)?;
        check_range("people.daily_superlikes", self.daily_superlikes, 0, 1_000)?;
        if self.daily_superlikes > self.daily_likes {
            return Err(invalid(
                "people.daily_superlikes",
                "must not be above people.daily_likes",
            ));
        }
        check_range("people.page_size_max", self.page_size_max, 1, 200)?;
        check_range("people.page_size", self.page_size, 1, self.page_size_max)?;
        check_range(
            "people.not_seen_for_s",
            self.not_seen_for_s,
            1,
            MAX_PEOPLE_NOT_SEEN_FOR_S,
        )?;
        check_range("people.max_examined", self.max_examined, 100, 1_000_000)?;
        check_range("people.max_list", self.max_list, 1, 10_000)?;
        Ok(())
    }
}

#[cfg(test)]
// `figment::Jail` closures return `figment::Error`, a large type; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use crate::config::tests::load_in;
    use figment::Jail;

    #[test]
    fn people_limits_are_validated_and_named() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("GEOMATCH__PEOPLE__DAILY_LIKES", "30");
            jail.set_env("GEOMATCH__PEOPLE__DAILY_SUPERLIKES", "2");
            let settings = load_in(jail, None).expect("valid");
            assert_eq!(settings.people.daily_likes, 30);
            assert_eq!(settings.people.daily_superlikes, 2);
            assert_eq!(settings.people.page_size_max, 50);

            for (key, value, named) in [
                ("DAILY_LIKES", "0", "people.daily_likes"),
                ("DAILY_SUPERLIKES", "31", "people.daily_superlikes"),
                ("PAGE_SIZE_MAX", "0", "people.page_size_max"),
                ("NOT_SEEN_FOR_S", "0", "people.not_seen_for_s"),
                ("NOT_SEEN_FOR_S", "9999999999", "people.not_seen_for_s"),
            ] {
                jail.set_env(format!("GEOMATCH__PEOPLE__{key}"), value);
                let e = load_in(jail, None).expect_err(key).to_string();
                assert!(e.contains(named), "{key}={value}: {e}");
                jail.set_env("GEOMATCH__PEOPLE__DAILY_SUPERLIKES", "2");
                jail.set_env("GEOMATCH__PEOPLE__PAGE_SIZE_MAX", "50");
                jail.set_env("GEOMATCH__PEOPLE__NOT_SEEN_FOR_S", "3600");
                jail.set_env("GEOMATCH__PEOPLE__DAILY_LIKES", "30");
            }
            Ok(())
        });
    }
}
