//! `nearest_page`: paging through a nearest query in (distance, id) order never repeats
//! or skips an entry, ties of distance included, and `keep` decides before the limit.

// Test and benchmark code may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use geomatch_index::{EntryId, Filter, Index, IndexConfig, Kind, PageKey, Position, Update};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn index_with(points: &[(String, Position, Kind)]) -> Index {
    let ix = Index::new(IndexConfig::default()).unwrap();
    for (id, p, kind) in points {
        ix.upsert(&Update::moved(EntryId::parse(id).unwrap(), *kind, *p, 0))
            .unwrap();
    }
    ix
}

/// Every page of `k` after the last, until an empty page.
fn all_pages(
    ix: &Index,
    at: &Position,
    k: usize,
    filter: &Filter,
    max_m: Option<f64>,
    keep: impl Fn(&EntryId) -> bool,
) -> Vec<PageKey> {
    let mut after: Option<PageKey> = None;
    let mut keys = Vec::new();
    loop {
        let page = ix.nearest_page(at, k, filter, max_m, after.as_ref(), |n| keep(&n.entry.id));
        assert!(page.len() <= k);
        let Some((_, last)) = page.last() else { break };
        after = Some(last.clone());
        keys.extend(page.into_iter().map(|(_, key)| key));
    }
    keys
}

#[test]
fn pages_cover_every_match_once_in_distance_then_id_order() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let centre = Position::new(37.55, 127.0).unwrap();
    let mut points = Vec::new();
    for i in 0..3000 {
        // A third of the entries share one of a few exact spots: ties of distance.
        let p = if i % 3 == 0 {
            centre.destination(f64::from(i % 4) * 90.0, 250.0 * f64::from(i % 5))
        } else {
            centre.destination(rng.random_range(0.0..360.0), rng.random_range(0.0..4_000.0))
        };
        let kind = if i % 7 == 0 {
            Kind::Driver
        } else {
            Kind::Profile
        };
        points.push((format!("e{i}"), p, kind));
    }
    let ix = index_with(&points);
    let filter = Filter::any().kind(Kind::Profile);
    let keep = |id: &EntryId| !id.as_str().ends_with('3');
    for (k, max_m) in [
        (1, Some(1_500.0)),
        (7, None),
        (20, Some(3_000.0)),
        (64, None),
    ] {
        let keys = all_pages(&ix, &centre, k, &filter, max_m, keep);
        for w in keys.windows(2) {
            assert!(
                w[0].d2 < w[1].d2 || (w[0].d2 == w[1].d2 && w[0].id < w[1].id),
                "strict order: {w:?}"
            );
        }
        let got: HashSet<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(got.len(), keys.len(), "no repeats");
        let want: HashSet<&str> = points
            .iter()
            .filter(|(id, p, kind)| {
                *kind == Kind::Profile
                    && keep(&EntryId::parse(id).unwrap())
                    && max_m.is_none_or(|m| centre.distance_m(p) <= m)
            })
            .map(|(id, _, _)| id.as_str())
            .collect();
        assert_eq!(got, want, "k = {k}: no skips");
    }
}

#[test]
fn many_entries_at_one_spot_page_by_id() {
    let spot = Position::new(48.85, 2.35).unwrap();
    let points: Vec<_> = (0..50)
        .map(|i| (format!("p{i:02}"), spot, Kind::Profile))
        .collect();
    let ix = index_with(&points);
    let keys = all_pages(&ix, &spot, 6, &Filter::any(), None, |_| true);
    let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
    let want: Vec<String> = (0..50).map(|i| format!("p{i:02}")).collect();
    assert_eq!(ids, want);
}
