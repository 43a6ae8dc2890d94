//! Prometheus metrics of location ingest, registered on the process-wide registry.

use geomatch_common::error::ErrorCode;
use geomatch_common::metrics::Metrics;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

use crate::model::{IngestError, Outcome};

#[derive(Clone)]
pub(crate) struct IngestMetrics {
    /// Updates by outcome: accepted, stale, rejected (with the rejection code).
    pub updates: IntCounterVec,
    pub batch_size: Histogram,
    pub ws_connected: IntGauge,
    pub index_size: IntGauge,
    pub evictions: IntCounter,
    pub redis_seconds: Histogram,
    pub redis_errors: IntCounter,
}

impl IngestMetrics {
    pub(crate) fn new(metrics: &Metrics) -> Result<Self, prometheus::Error> {
        let m = IngestMetrics {
            updates: IntCounterVec::new(
                Opts::new(
                    "ingest_updates_total",
                    "Location updates by outcome and rejection code",
                ),
                &["outcome", "code"],
            )?,
            batch_size: Histogram::with_opts(
                HistogramOpts::new("ingest_batch_size", "Updates per batch request")
                    .buckets(vec![1.0, 5.0, 10.0, 50.0, 100.0, 200.0, 500.0, 1000.0]),
            )?,
            ws_connected: IntGauge::new(
                "ingest_websocket_drivers",
                "Drivers connected by WebSocket",
            )?,
            index_size: IntGauge::new("index_entries", "Entries in this process's index")?,
            evictions: IntCounter::new(
                "ingest_evictions_total",
                "Drivers taken offline for silence (TTL)",
            )?,
            redis_seconds: Histogram::with_opts(
                HistogramOpts::new("ingest_redis_write_seconds", "Latency of Redis writes")
                    .buckets(prometheus::exponential_buckets(0.0001, 2.0, 14)?),
            )?,
            redis_errors: IntCounter::new("ingest_redis_errors_total", "Failed Redis writes")?,
        };
        metrics.register(m.updates.clone())?;
        metrics.register(m.batch_size.clone())?;
        metrics.register(m.ws_connected.clone())?;
        metrics.register(m.index_size.clone())?;
        metrics.register(m.evictions.clone())?;
        metrics.register(m.redis_seconds.clone())?;
        metrics.register(m.redis_errors.clone())?;
        Ok(m)
    }

    pub(crate) fn record(&self, result: &Result<Outcome, IngestError>) {
        let (outcome, code) = match result {
            Ok(Outcome::Accepted) => ("accepted", ""),
            Ok(Outcome::Stale) => ("stale", ""),
            Err(e) => ("rejected", e.code()),
        };
        self.updates.with_label_values(&[outcome, code]).inc();
    }
}
