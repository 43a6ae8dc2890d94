//! Prometheus metrics of ETA and pricing, registered on the process-wide registry.

use geomatch_common::metrics::Metrics;
use geomatch_eta::SampleOutcome;
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

const OUTCOMES: [SampleOutcome; 6] = [
    SampleOutcome::Learned,
    SampleOutcome::IntervalTooShort,
    SampleOutcome::IntervalTooLong,
    SampleOutcome::TooFast,
    SampleOutcome::Stationary,
    SampleOutcome::Full,
];

#[derive(Clone)]
pub struct PricingMetrics {
    /// Quotes issued, by product.
    pub quotes: IntCounterVec,
    /// Quote verifications by result: `ok` or the refusal (forged, expired, …).
    pub verifications: IntCounterVec,
    /// Demand events by source: `ride_request`, `quote`, `repeat_quote` (not counted).
    pub demand: IntCounterVec,
    /// Published multipliers of surging cells, observed at every recomputation.
    pub surge_multiplier: Histogram,
    /// Cells with a multiplier above 1.0 after the last recomputation.
    pub surge_cells: IntGauge,
    pub surge_max: Gauge,
    /// Resolution-7 cells with a learned speed.
    pub learned_cells: IntGauge,
    /// (cell, hour) slots held by this process's model (Redis mode: its cache of the
    /// shared slots).
    pub learned_slots: IntGauge,
    /// Surge rounds this process computed (Redis mode: rounds it claimed).
    pub surge_rounds: IntCounter,
    /// Version of the surge round this process quotes with (Redis mode).
    pub surge_version: IntGauge,
    /// Redis calls of eta-pricing, seconds; failed calls (unreachable, timed out).
    pub redis_seconds: Histogram,
    pub redis_errors: IntCounter,
    /// Speed samples by outcome, resolved once: counted on every accepted driver move.
    samples: [IntCounter; 6],
}

impl PricingMetrics {
    pub fn new(metrics: &Metrics) -> Result<Self, prometheus::Error> {
        let samples_vec = IntCounterVec::new(
            Opts::new(
                "eta_speed_samples_total",
                "Driver moves offered to the speed learner, by outcome",
            ),
            &["outcome"],
        )?;
        let m = PricingMetrics {
            quotes: IntCounterVec::new(
                Opts::new("pricing_quotes_total", "Quotes issued, by product"),
                &["product"],
            )?,
            verifications: IntCounterVec::new(
                Opts::new(
                    "pricing_quote_verifications_total",
                    "Quote verifications by result",
                ),
                &["result"],
            )?,
            demand: IntCounterVec::new(
                Opts::new("pricing_demand_events_total", "Demand events by source"),
                &["source"],
            )?,
            surge_multiplier: Histogram::with_opts(
                HistogramOpts::new(
                    "pricing_surge_multiplier",
                    "Multipliers of surging cells, observed at every recomputation",
                )
                .buckets(vec![
                    1.1, 1.2, 1.3, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 10.0,
                ]),
            )?,
            surge_cells: IntGauge::new(
                "pricing_surge_cells",
                "Resolution-7 cells with a multiplier above 1.0",
            )?,
            surge_max: Gauge::new(
                "pricing_surge_max_multiplier",
                "Highest multiplier of any cell",
            )?,
            learned_cells: IntGauge::new(
                "eta_learned_cells",
                "Resolution-7 cells with a learned speed",
            )?,
            learned_slots: IntGauge::new(
                "eta_learned_slots",
                "(cell, hour) slots held by this process's ETA model",
            )?,
            surge_rounds: IntCounter::new(
                "pricing_surge_rounds_total",
                "Surge recomputations this process ran (Redis mode: rounds it claimed)",
            )?,
            surge_version: IntGauge::new(
                "pricing_surge_version",
                "Version of the shared surge round in use (Redis mode)",
            )?,
            redis_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "pricing_redis_seconds",
                    "Redis calls of eta-pricing (demand, surge rounds, speeds)",
                )
                .buckets(vec![
                    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.8,
                ]),
            )?,
            redis_errors: IntCounter::new(
                "pricing_redis_errors_total",
                "Failed Redis calls of eta-pricing",
            )?,
            samples: OUTCOMES.map(|o| samples_vec.with_label_values(&[o.name()])),
        };
        metrics.register(m.quotes.clone())?;
        metrics.register(m.verifications.clone())?;
        metrics.register(m.demand.clone())?;
        metrics.register(m.surge_multiplier.clone())?;
        metrics.register(m.surge_cells.clone())?;
        metrics.register(m.surge_max.clone())?;
        metrics.register(m.learned_cells.clone())?;
        metrics.register(m.learned_slots.clone())?;
        metrics.register(m.surge_rounds.clone())?;
        metrics.register(m.surge_version.clone())?;
        metrics.register(m.redis_seconds.clone())?;
        metrics.register(m.redis_errors.clone())?;
        metrics.register(samples_vec)?;
        Ok(m)
    }

    pub fn sample(&self, outcome: SampleOutcome) {
        let i = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0);
        self.samples[i].inc();
    }
}
