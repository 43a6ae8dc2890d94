//! Memory per entry, measured: a counting global allocator records the live heap bytes
//! before and after building each structure over the 1M-entry city.
//! `cargo bench -p geomatch-index --bench memory`
//!
//! Bytes are those requested from the allocator (malloc's own overhead is not included);
//! the RSS growth is printed beside them.

// Test and benchmark code may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicIsize, Ordering};

#[allow(unsafe_code)]
mod counting {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};

    pub static LIVE: AtomicIsize = AtomicIsize::new(0);

    pub struct Counting;

    // SAFETY: every method forwards to the system allocator unchanged and only adds
    // bookkeeping on the side.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) };
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                LIVE.fetch_add(
                    new_size as isize - layout.size() as isize,
                    Ordering::Relaxed,
                );
            }
            p
        }
    }
}

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

fn live() -> isize {
    counting::LIVE.load(Ordering::Relaxed)
}

fn rss_bytes() -> isize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<isize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn main() {
    let n = common::ENTRIES;
    let city = common::city(n);
    let moves = common::moves(&city, 1_000_000);

    let (before, rss0) = (live(), rss_bytes());
    let ix = common::geomatch_index(&city);
    let bulk = live() - before;
    let rss_bulk = rss_bytes() - rss0;
    for (t, m) in moves.iter().enumerate() {
        common::apply_move(&ix, &city, m, t as i64);
    }
    let after_moves = live() - before;
    drop(ix);

    let before = live();
    let ix =
        geomatch_index::Index::new(geomatch_index::IndexConfig::default()).expect("default config");
    for u in &city.updates {
        ix.upsert(u).expect("valid");
    }
    let incremental = live() - before;
    drop(ix);

    let before = live();
    let plain = common::PlainRTree::build(&city);
    let plain_bytes = live() - before;
    drop(plain);

    let per = |b: isize| b as f64 / n as f64;
    println!("memory for {n} entries (bytes per entry, live heap)");
    println!("  geomatch, bulk loaded:               {:.1}", per(bulk));
    println!(
        "  geomatch, after 1M moves:            {:.1}",
        per(after_moves)
    );
    println!(
        "  geomatch, built by 1M upserts:       {:.1}",
        per(incremental)
    );
    println!(
        "  plain rstar (unit vector + u32 id):  {:.1}",
        per(plain_bytes)
    );
    println!(
        "  geomatch RSS growth, bulk loaded:    {:.1}",
        per(rss_bulk)
    );
}
