//! The whole scenario of issue #2 in one run, with per-operation latency percentiles that
//! criterion does not give: build time, nearest-query latency (p50/p99) against a plain
//! R-tree, exactness against brute force, single-thread move throughput against the plain
//! R-tree, and the mixed load (one writer and one reader thread at once).
//! `cargo bench -p geomatch-index --bench scenario`

// Test and benchmark code may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use geomatch_index::oracle::{check_nearest, BruteForce};
use geomatch_index::{Filter, Index};
use hdrhistogram::Histogram;

const PHASE: Duration = Duration::from_secs(4);

fn percentiles(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs",
        h.value_at_quantile(0.50) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0
    )
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1_000_000_000, 3).expect("valid bounds")
}

/// Runs queries for `for_how_long` (or until `stop`), one latency sample each.
fn query_loop(
    ix: &Index,
    queries: &[geomatch_index::Position],
    for_how_long: Duration,
    stop: Option<&AtomicBool>,
) -> Histogram<u64> {
    let filter = Filter::available_drivers();
    let mut h = histogram();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < for_how_long && !stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
        let q = &queries[i % queries.len()];
        let t = Instant::now();
        let r = ix.nearest(q, 10, &filter, Some(3_000.0));
        h.record(t.elapsed().as_nanos() as u64).expect("in range");
        std::hint::black_box(r);
        i += 1;
    }
    h
}

/// Moves entries for `for_how_long`; returns moves per second.
fn move_loop(
    ix: &Index,
    city: &common::City,
    moves: &[(u32, geomatch_index::Position)],
    from: &AtomicU64,
    for_how_long: Duration,
) -> f64 {
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < for_how_long {
        for _ in 0..1024 {
            let k = from.fetch_add(1, Ordering::Relaxed) as usize;
            common::apply_move(ix, city, &moves[k % moves.len()], k as i64);
        }
        done += 1024;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let n = common::ENTRIES;
    println!(
        "scenario: {n} entries, 60 × 60 km metro, 70 % in 5 hotspots, moves ≤ {} m",
        common::MAX_MOVE_M
    );
    let city = common::city(n);
    let moves = common::moves(&city, 4_000_000);
    let queries = common::queries(200_000);

    // Build.
    let mut builds = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let ix = common::geomatch_index(&city);
        builds.push(t.elapsed().as_secs_f64());
        drop(ix);
    }
    builds.sort_by(f64::total_cmp);
    let t = Instant::now();
    let plain = common::PlainRTree::build(&city);
    let plain_build = t.elapsed().as_secs_f64();
    println!(
        "build 1M: geomatch {:.3} s (median of 3), plain rstar bulk load {:.3} s",
        builds[1], plain_build
    );

    // Exactness against brute force.
    let ix = common::geomatch_index(&city);
    let brute = BruteForce::new(ix.entries());
    let filter = Filter::available_drivers();
    let identical = queries[..1000]
        .iter()
        .filter(|q| {
            check_nearest(
                &ix.nearest(q, 10, &filter, Some(3_000.0)),
                &brute.nearest(q, 10, &filter, Some(3_000.0)),
                Some(3_000.0),
            )
            .is_ok()
        })
        .count();
    println!("nearest 10 available within 3 km: {identical}/1000 answers identical to brute force");
    drop(brute);

    // Nearest latency, one thread, idle.
    let idle = query_loop(&ix, &queries, PHASE, None);
    println!(
        "nearest, geomatch, idle:   {} ({} queries)",
        percentiles(&idle),
        idle.len()
    );
    let mut h = histogram();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < PHASE {
        let t = Instant::now();
        std::hint::black_box(plain.nearest_available(&queries[i % queries.len()], 10, 3_000.0));
        h.record(t.elapsed().as_nanos() as u64).expect("in range");
        i += 1;
    }
    println!("nearest, plain rstar:      {}", percentiles(&h));

    // Moves, one thread: geomatch then the plain R-tree on the same chain.
    let from = AtomicU64::new(0);
    let solo = move_loop(&ix, &city, &moves, &from, PHASE);
    let mut plain = plain;
    let start = Instant::now();
    let mut k = 0usize;
    while start.elapsed() < PHASE {
        for _ in 0..1024 {
            plain.apply_move(&moves[k % moves.len()]);
            k += 1;
        }
    }
    let plain_rate = k as f64 / start.elapsed().as_secs_f64();
    drop(plain);
    println!(
        "moves, one thread: geomatch {:.0}/s, plain rstar {:.0}/s, ratio {:.1}×",
        solo,
        plain_rate,
        solo / plain_rate
    );

    // Mixed: one writer at full speed and one reader, at once.
    let stop = AtomicBool::new(false);
    let (mixed_rate, mixed) = std::thread::scope(|s| {
        let reader = s.spawn(|| query_loop(&ix, &queries, PHASE * 2, Some(&stop)));
        let rate = move_loop(&ix, &city, &moves, &from, PHASE);
        stop.store(true, Ordering::Relaxed);
        (rate, reader.join().expect("reader"))
    });
    println!(
        "mixed, reader:             {} ({} queries)",
        percentiles(&mixed),
        mixed.len()
    );
    println!(
        "mixed: reader p99 {:.2}× idle p99; writer {:.0}/s = {:.0} % of solo",
        mixed.value_at_quantile(0.99) as f64 / idle.value_at_quantile(0.99) as f64,
        mixed_rate,
        100.0 * mixed_rate / solo
    );
}
