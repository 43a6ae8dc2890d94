//! What other services rely on eta-pricing for, through [`geomatch_common::ports`]:
//! dispatch verifies and prices trips ([`TripPricing`]); location ingest reports moves
//! ([`MoveObserver`]).

use actix_web::http::StatusCode;
use geomatch_common::error::ErrorCode;
use geomatch_common::ports::{Fare, MoveObserver, QuoteRefusal, Trip, TripPricing};
use geomatch_index::{cell_of, Position};

use crate::fare::fare;
use crate::service::EtaPricing;
use crate::surge::SURGE_RESOLUTION;

/// How far a ride's pickup or dropoff may be from its quote's, metres: a quote prices one
/// trip.
pub(crate) const MAX_TRIP_MISMATCH_M: f64 = 100.0;

impl TripPricing for EtaPricing {
    /// The quote must be genuine, unexpired, the rider's and the product's (a refusal
    /// carries the quote error's code; another rider's quote is `forbidden`), and made for
    /// this trip: pickup and dropoff each within 100 m (`MAX_TRIP_MISMATCH_M`), else
    /// `quote_trip_mismatch`.
    fn verify_quote_for_trip(
        &self,
        quote_id: &str,
        rider: &str,
        trip: &Trip<'_>,
    ) -> Result<Fare, QuoteRefusal> {
        let quote = self
            .verify_quote(quote_id, rider, trip.product, self.now())
            .map_err(|e| QuoteRefusal {
                forbidden: e.status() == StatusCode::FORBIDDEN,
                code: e.code(),
                detail: e.to_string(),
            })?;
        if quote.pickup.distance_m(trip.pickup) > MAX_TRIP_MISMATCH_M
            || quote.dropoff.distance_m(trip.dropoff) > MAX_TRIP_MISMATCH_M
        {
            return Err(QuoteRefusal {
                forbidden: false,
                code: "quote_trip_mismatch",
                detail: "the quote was made for another pickup or dropoff".into(),
            });
        }
        Ok(Fare {
            total_minor: quote.fare.total,
            currency: quote.fare.currency,
        })
    }

    /// The product's fare for the road ETA of the trip at `now_ms`, with the pickup's
    /// published surge; `None` for a product not in `pricing.products`.
    fn price_trip(&self, trip: &Trip<'_>, now_ms: i64) -> Option<Fare> {
        let product = self.settings().products.get(trip.product)?;
        let eta = self.eta(trip.pickup, trip.dropoff, now_ms);
        let surge = self.surge_hundredths(cell_of(trip.pickup, SURGE_RESOLUTION));
        let fare = fare(product, eta.distance_m, eta.duration_s, surge);
        Some(Fare {
            total_minor: fare.total,
            currency: fare.currency,
        })
    }

    fn record_demand(&self, at: &Position, now_ms: i64) {
        self.record_demand_at(at, now_ms);
    }
}

impl MoveObserver for EtaPricing {
    /// Every accepted move is a speed sample for the ETA model.
    fn moved(&self, from: &Position, to: &Position, dt_s: f64, now_ms: i64) {
        self.observe_move(from, to, dt_s, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{engine, pos, request, T0};

    #[tokio::test]
    async fn a_quote_pays_for_its_own_trip_within_100_m_at_each_end() {
        let (s, clock) = engine(|_| {});
        let req = request("standard");
        let q = s.quote("u1", &req, T0).await.unwrap();
        clock.set(T0 + 1_000);
        for (bearing, pickup_m, dropoff_m) in [(0.0, 0.0, 0.0), (90.0, 99.0, 0.0), (0.0, 0.0, 99.0)]
        {
            let pickup = req.pickup.destination(bearing, pickup_m);
            let dropoff = req.dropoff.destination(bearing, dropoff_m);
            let trip = Trip {
                product: "standard",
                pickup: &pickup,
                dropoff: &dropoff,
            };
            let fare = s.verify_quote_for_trip(&q.quote_id, "u1", &trip).unwrap();
            assert_eq!(
                fare,
                Fare {
                    total_minor: q.fare.total,
                    currency: q.fare.currency.clone()
                }
            );
        }
    }

    #[tokio::test]
    async fn a_quote_for_another_trip_or_rider_is_refused() {
        let (s, _clock) = engine(|_| {});
        let req = request("standard");
        let q = s.quote("u1", &req, T0).await.unwrap();
        let mismatch = QuoteRefusal {
            forbidden: false,
            code: "quote_trip_mismatch",
            detail: "the quote was made for another pickup or dropoff".into(),
        };
        let moved_pickup = req.pickup.destination(90.0, 101.0);
        let moved_dropoff = req.dropoff.destination(180.0, 101.0);
        for (pickup, dropoff) in [(&moved_pickup, &req.dropoff), (&req.pickup, &moved_dropoff)] {
            let trip = Trip {
                product: "standard",
                pickup,
                dropoff,
            };
            assert_eq!(
                s.verify_quote_for_trip(&q.quote_id, "u1", &trip),
                Err(mismatch.clone())
            );
        }
        let trip = Trip {
            product: "standard",
            pickup: &req.pickup,
            dropoff: &req.dropoff,
        };
        let other = s
            .verify_quote_for_trip(&q.quote_id, "u2", &trip)
            .unwrap_err();
        assert!(other.forbidden, "{other:?}");
        assert_eq!(other.code, "quote_not_yours");
        let xl = Trip {
            product: "xl",
            ..trip
        };
        let wrong = s.verify_quote_for_trip(&q.quote_id, "u1", &xl).unwrap_err();
        assert!(!wrong.forbidden, "{wrong:?}");
        assert_eq!(wrong.code, "quote_product_mismatch");
    }

    #[tokio::test]
    async fn an_expired_quote_is_refused_by_the_clock() {
        let (s, clock) = engine(|_| {});
        let req = request("standard");
        let q = s.quote("u1", &req, T0).await.unwrap();
        let trip = Trip {
            product: "standard",
            pickup: &req.pickup,
            dropoff: &req.dropoff,
        };
        clock.set(T0 + 120_000);
        let refusal = s
            .verify_quote_for_trip(&q.quote_id, "u1", &trip)
            .unwrap_err();
        assert_eq!(refusal.code, "quote_expired");
    }

    #[tokio::test]
    async fn a_ride_without_a_quote_is_priced_like_a_quote_of_its_product() {
        let (s, _clock) = engine(|p| p.surge.smoothing = 1.0);
        let req = request("standard");
        let trip = Trip {
            product: "standard",
            pickup: &req.pickup,
            dropoff: &req.dropoff,
        };
        let calm = s.price_trip(&trip, T0).unwrap();
        let q = s.quote("u0", &req, T0).await.unwrap();
        assert_eq!(calm.total_minor, q.fare.total);
        assert_eq!(calm.currency, "USD");
        // Demand at the pickup with no driver: the next round surges, and so does the price.
        for _ in 0..20 {
            TripPricing::record_demand(&*s, &req.pickup, T0);
        }
        assert!(s.tick(T0));
        let surged = s.price_trip(&trip, T0).unwrap();
        let q = s.quote("u1", &req, T0).await.unwrap();
        assert!(q.fare.surge_multiplier > 1.0);
        assert_eq!(surged.total_minor, q.fare.total);
        assert!(surged.total_minor > calm.total_minor);
        let moto = Trip {
            product: "moto",
            ..trip
        };
        assert_eq!(s.price_trip(&moto, T0), None, "an unknown product");
    }

    #[test]
    fn observed_moves_reach_the_speed_learner() {
        let (s, _clock) = engine(|_| {});
        let a = pos(37.5, 127.0);
        let mut at = a;
        for i in 0..50 {
            let bearing = if (i / 5) % 2 == 0 { 0.0 } else { 180.0 };
            let next = at.destination(bearing, 75.0);
            MoveObserver::moved(&*s, &at, &next, 5.0, T0 + i * 5_000);
            at = next;
        }
        let learned = s.eta(&a, &a.destination(0.0, 500.0), T0);
        assert_eq!(learned.method, geomatch_eta::Method::LearnedSpeed);
    }
}
