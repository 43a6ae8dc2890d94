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
            samples: OUTCOMES.map(|o| samples_vec.with_label_values(&[o.name()])),
        };
        metrics.register(m.quotes.clone())?;
        metrics.register(m.verifications.clone())?;
        metrics.register(m.demand.clone())?;
        metrics.register(m.surge_multiplier.clone())?;
        metrics.register(m.surge_cells.clone())?;
        metrics.register(m.surge_max.clone())?;
        metrics.register(m.learned_cells.clone())?;
        metrics.register(samples_vec)?;
        Ok(m)
    }

    pub fn sample(&self, outcome: SampleOutcome) {
        let i = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0);
        self.samples[i].inc();
    }
}
