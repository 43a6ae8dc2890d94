//! Nearest 10 available drivers within 3 km, 1M entries: geomatch's index against a plain
//! R-tree with the filter applied while iterating, and brute force.
//! `cargo bench -p geomatch-index --bench nearest`

// Test and benchmark code may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use geomatch_index::oracle::BruteForce;
use geomatch_index::Filter;

fn nearest(c: &mut Criterion) {
    let city = common::city(common::ENTRIES);
    let queries = common::queries(100_000);
    let filter = Filter::available_drivers();
    let mut group = c.benchmark_group("nearest10_available_3km_1M_metro");

    let ix = common::geomatch_index(&city);
    let mut q = queries.iter().cycle();
    group.bench_function("geomatch", |b| {
        b.iter(|| ix.nearest(q.next().expect("cycle"), 10, &filter, Some(3_000.0)))
    });

    let plain = common::PlainRTree::build(&city);
    let mut q = queries.iter().cycle();
    group.bench_function("plain_rstar", |b| {
        b.iter(|| plain.nearest_available(q.next().expect("cycle"), 10, 3_000.0))
    });

    let brute = BruteForce::new(ix.entries());
    drop(ix);
    let mut q = queries.iter().cycle();
    group.sample_size(10);
    group.bench_function("brute_force", |b| {
        b.iter(|| brute.nearest(q.next().expect("cycle"), 10, &filter, Some(3_000.0)))
    });
    group.finish();
}

criterion_group!(benches, nearest);
criterion_main!(benches);
