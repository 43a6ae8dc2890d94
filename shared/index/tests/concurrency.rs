//! Many writers and readers on one index at once, checked against the recorded history.

// Test and benchmark code may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use geomatch_index::oracle::Metro;
use geomatch_index::{EntryId, Filter, Index, IndexConfig, Kind, Position, Update, Upserted};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const IDS: usize = 400;
const WRITERS: u64 = 4;
const STEPS: u64 = 20_000;

#[test]
fn concurrent_writers_never_move_an_entry_backwards_and_readers_see_consistent_answers() {
    let ix = Index::new(IndexConfig::default()).unwrap();
    let done = AtomicBool::new(false);
    let mut start = Metro::new(1);
    let origins: Vec<Position> = (0..IDS).map(|_| start.position()).collect();

    let (histories, reads) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (ix, origins) = (&ix, &origins);
                s.spawn(move || {
                    let mut rng = ChaCha8Rng::seed_from_u64(100 + w);
                    let mut history = Vec::new();
                    for step in 0..STEPS {
                        let i = rng.random_range(0..IDS);
                        // Writers share ids; sequence numbers interleave across writers.
                        let seq = step * WRITERS + w;
                        let p = origins[i].destination(
                            rng.random_range(0.0..360.0),
                            rng.random_range(0.0..2_000.0),
                        );
                        let id = EntryId::parse(&format!("d{i}")).unwrap();
                        let u = Update {
                            seq: Some(seq),
                            ..Update::moved(id, Kind::Driver, p, seq as i64)
                        };
                        let r = ix.upsert(&u).unwrap();
                        history.push((i, seq, p, r));
                    }
                    history
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (ix, done, origins) = (&ix, &done, &origins);
                s.spawn(move || {
                    let mut rng = ChaCha8Rng::seed_from_u64(900 + r);
                    let mut seen = Vec::new();
                    while !done.load(Ordering::Relaxed) {
                        let q = origins[rng.random_range(0..IDS)];
                        let got = ix.nearest(&q, 20, &Filter::any(), Some(5_000.0));
                        let ids: HashSet<&str> = got.iter().map(|n| n.entry.id.as_str()).collect();
                        assert_eq!(
                            ids.len(),
                            got.len(),
                            "an entry appeared twice in one answer"
                        );
                        assert!(got.windows(2).all(|w| w[0].distance_m <= w[1].distance_m));
                        for n in got {
                            assert!((q.distance_m(&n.entry.position) - n.distance_m).abs() < 1e-6);
                            seen.push((n.entry.id.to_string(), n.entry.seq, n.entry.position));
                        }
                    }
                    seen
                })
            })
            .collect();
        let histories: Vec<_> = writers.into_iter().map(|h| h.join().unwrap()).collect();
        done.store(true, Ordering::Relaxed);
        let reads: Vec<_> = readers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        (histories, reads)
    });

    // The update with the highest sequence number of each id was accepted and is what
    // the index holds; every other update either was accepted or is stale, and a stale
    // answer always names a stored sequence at least as high.
    let mut best: HashMap<usize, (u64, Position)> = HashMap::new();
    let mut attempted: HashMap<(String, u64), Position> = HashMap::new();
    for (i, seq, p, r) in histories.iter().flatten() {
        attempted.insert((format!("d{i}"), *seq), *p);
        match r {
            Upserted::Stale { previous } => assert!(previous.seq.unwrap() >= *seq),
            Upserted::Moved { previous } => assert!(previous.seq.unwrap() < *seq),
            Upserted::Inserted => {}
            Upserted::Refused { .. } => panic!("nothing refuses here"),
        }
        let e = best.entry(*i).or_insert((*seq, *p));
        if *seq > e.0 {
            *e = (*seq, *p);
        }
    }
    assert_eq!(ix.len(), best.len());
    for (i, (seq, p)) in &best {
        let e = ix.get(&EntryId::parse(&format!("d{i}")).unwrap()).unwrap();
        assert_eq!((e.seq, e.position), (Some(*seq), *p), "d{i}");
    }
    // Every answer a reader saw was a state some writer really wrote.
    assert!(!reads.is_empty());
    for (id, seq, p) in reads {
        assert_eq!(
            attempted.get(&(id.clone(), seq.unwrap())),
            Some(&p),
            "{id} seq {seq:?}"
        );
    }
}
