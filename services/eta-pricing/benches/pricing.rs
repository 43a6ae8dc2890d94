//! The in-process cost of a quote and of an ETA batch, without HTTP: what the server adds
//! on top is measured by `loadtest` (`quote`, `eta-batch`; docs/benchmarks.md).
//! `cargo bench -p eta-pricing --bench pricing`
//!
//! Setup: 100,000 drivers of the index benchmarks' Seoul metro (60 % available, four
//! vehicle classes), speeds learned in the metro's cells, surge computed once. A quote is
//! a rider's trip between two metro points: nearest available driver of the product within
//! `pricing.pickup_radius_m`, two ETAs, fare, demand, HMAC signature. An ETA batch is one
//! origin and 50 metro destinations.

// Test and benchmark code may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use eta_pricing::{EtaPricing, QuoteRequest};
use geomatch_common::{Clock, Deps, Metrics, Settings};
use geomatch_index::oracle::Metro;
use geomatch_index::{Index, IndexConfig, Position};

const DRIVERS: usize = 100_000;
const T0: i64 = 1_704_099_600_000; // a Monday, 09:00 UTC

fn service(metro: &mut Metro) -> Arc<EtaPricing> {
    let index =
        Index::bulk_load(IndexConfig::default(), metro.drivers(DRIVERS, T0)).expect("distinct ids");
    let mut settings = Settings::default();
    settings.ingest.vehicle_classes = ["standard", "xl", "premium", "moto"]
        .map(String::from)
        .to_vec();
    let standard = settings.pricing.products["standard"].clone();
    settings.pricing.products.insert("moto".into(), standard);
    let deps = Deps {
        settings: Arc::new(settings),
        index: Arc::new(index),
        metrics: Metrics::new().expect("registry"),
        redis: None,
        clock: Clock::manual(T0),
    };
    let (s, _tasks) = eta_pricing::engine(&deps).expect("the engine");
    // Speeds learned all over the metro: 20 samples of a 10 s, ~100 m move at 20k points.
    for _ in 0..20_000 {
        let from = metro.position();
        let to = metro.step(&from, 120.0);
        for k in 0..20 {
            s.observe_move(&from, &to, 10.0, T0 + k * 1_000);
        }
    }
    s.tick(T0);
    s
}

fn trips(metro: &mut Metro, n: usize) -> Vec<(Position, Position)> {
    (0..n)
        .map(|_| (metro.position(), metro.position()))
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut metro = Metro::new(2026);
    let s = service(&mut metro);
    let trips = trips(&mut metro, 10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("pricing_100k_drivers_metro");

    let mut i = 0usize;
    group.bench_function("quote", |b| {
        b.iter_batched(
            || {
                i += 1;
                let (pickup, dropoff) = trips[i % trips.len()];
                let req = QuoteRequest {
                    pickup,
                    dropoff,
                    product: "standard".into(),
                    rider_id: None,
                };
                (format!("r{}", i % 5_000), req)
            },
            |(rider, req)| rt.block_on(s.quote(&rider, &req, T0)).expect("a quote"),
            BatchSize::SmallInput,
        )
    });

    let dests: Vec<Position> = trips.iter().map(|t| t.1).collect();
    let mut j = 0usize;
    group.bench_function("eta_batch_50", |b| {
        b.iter(|| {
            j = (j + 50) % (dests.len() - 50);
            s.eta_batch(&trips[j].0, &dests[j..j + 50], T0)
                .expect("a batch")
        })
    });

    group.bench_function("eta_one", |b| {
        b.iter(|| {
            j = (j + 1) % dests.len();
            s.eta(&trips[j].0, &dests[j], T0)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
