//! Upsert (move) throughput: geomatch's index against a plain R-tree (remove + insert).
//! `cargo bench -p geomatch-index --bench upsert`

// Test and benchmark code may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn upsert(c: &mut Criterion) {
    let city = common::city(common::ENTRIES);
    let moves = common::moves(&city, 4_000_000);
    let mut group = c.benchmark_group("move_1M_metro");
    group.throughput(Throughput::Elements(1));

    let ix = common::geomatch_index(&city);
    let mut next = 0usize;
    group.bench_function("geomatch_upsert", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                common::apply_move(&ix, &city, &moves[next % moves.len()], next as i64);
                next += 1;
            }
            start.elapsed()
        })
    });
    drop(ix);

    let mut plain = common::PlainRTree::build(&city);
    let mut next = 0usize;
    group.bench_function("plain_rstar_remove_insert", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                plain.apply_move(&moves[next % moves.len()]);
                next += 1;
            }
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, upsert);
criterion_main!(benches);
