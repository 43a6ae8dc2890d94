//! Prometheus metrics of dispatch.

use geomatch_common::metrics::Metrics;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};

#[derive(Clone)]
pub(crate) struct MatchingMetrics {
    pub(crate) to_first_offer: Histogram,
    pub(crate) to_accept: Histogram,
    /// Offers by outcome: accepted, declined, timed_out, withdrawn.
    pub(crate) offers: IntCounterVec,
    /// Rides by terminal state.
    pub(crate) rides: IntCounterVec,
    pub(crate) candidates: Histogram,
    pub(crate) open_rides: IntGauge,
    /// Latency of the dispatch book's Redis calls (Redis mode), by step.
    pub(crate) redis_seconds: HistogramVec,
}

impl MatchingMetrics {
    pub(crate) fn new(metrics: &Metrics) -> Result<Self, prometheus::Error> {
        let m = MatchingMetrics {
            to_first_offer: Histogram::with_opts(
                HistogramOpts::new(
                    "dispatch_request_to_first_offer_seconds",
                    "From ride request (or scheduled dispatch start) to the first offer",
                )
                // 0.1 ms to 13 s: greedy offers within a request, batched ones a window later.
                .buckets(prometheus::exponential_buckets(0.0001, 2.0, 18)?),
            )?,
            to_accept: Histogram::with_opts(
                HistogramOpts::new(
                    "dispatch_request_to_accept_seconds",
                    "From ride request to a driver's accept",
                )
                .buckets(prometheus::exponential_buckets(0.01, 2.0, 14)?),
            )?,
            offers: IntCounterVec::new(
                Opts::new("dispatch_offers_total", "Offers by outcome"),
                &["outcome"],
            )?,
            rides: IntCounterVec::new(
                Opts::new("dispatch_rides_total", "Rides by terminal state"),
                &["state"],
            )?,
            candidates: Histogram::with_opts(
                HistogramOpts::new(
                    "dispatch_candidates_examined",
                    "Candidates found per search radius",
                )
                .buckets(vec![0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]),
            )?,
            open_rides: IntGauge::new("dispatch_open_rides", "Rides not yet in a terminal state")?,
            redis_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "dispatch_redis_seconds",
                    "Latency of the dispatch book's Redis calls, by step",
                )
                .buckets(prometheus::exponential_buckets(0.0001, 2.0, 14)?),
                &["step"],
            )?,
        };
        metrics.register(m.to_first_offer.clone())?;
        metrics.register(m.to_accept.clone())?;
        metrics.register(m.offers.clone())?;
        metrics.register(m.rides.clone())?;
        metrics.register(m.candidates.clone())?;
        metrics.register(m.open_rides.clone())?;
        metrics.register(m.redis_seconds.clone())?;
        Ok(m)
    }
}
