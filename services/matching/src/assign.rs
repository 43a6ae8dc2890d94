//! Who gets which ride: ranking a ride's candidates, the batch assignment (Kuhn–Munkres),
//! and the engagement hints that keep drivers engaged elsewhere out of searches.
//! Pure decisions: no book, no I/O.

use std::collections::{HashMap, HashSet};

use geomatch_index::EntryId;
use parking_lot::RwLock;

use crate::book::Candidate;
use crate::ride::{DriverId, RideId};

/// How long a claim's "engaged" finding keeps a driver out of this replica's searches.
pub(crate) const ENGAGED_HINT_MS: i64 = 30_000;
/// How long an engagement announced by another replica does (until its release is
/// announced; bounded in case that announcement is lost).
const ANNOUNCED_HINT_MS: i64 = 15 * 60_000;

/// Drivers this replica believes engaged by another ride, each until a time (ms), ahead
/// of the index (Redis mode: other replicas' offers reach this index with a delay): a
/// claim that found them taken, or another replica's announcement. Searches skip them;
/// a hint only, the book's lock decides.
#[derive(Default)]
pub(crate) struct Hints {
    until: RwLock<HashMap<DriverId, i64>>,
}

impl Hints {
    /// Whether a driver is free of hints at `now`, as a filter for a search. Holds the
    /// read lock while it lives: the hints can run to thousands of drivers, and copying
    /// them per request was most of a request's CPU.
    pub(crate) fn free_at(&self, now: i64) -> impl Fn(&EntryId) -> bool + '_ {
        let until = self.until.read();
        move |id: &EntryId| until.get(id.as_str()).is_none_or(|u| *u <= now)
    }

    /// A claim found these drivers taken: skip them until `until`.
    pub(crate) fn taken(&self, drivers: &[DriverId], until: i64) {
        let mut h = self.until.write();
        for d in drivers {
            h.insert(d.clone(), until);
        }
    }

    /// Another replica announced that `driver` is engaged (an offer, a ride) or free.
    pub(crate) fn announced(&self, driver: &str, engaged: bool, now: i64) {
        let mut h = self.until.write();
        if engaged {
            h.insert(driver.into(), now + ANNOUNCED_HINT_MS);
        } else {
            h.remove(driver);
        }
    }

    /// Forgets every hint (announcements may have been missed while disconnected).
    pub(crate) fn forget_all(&self) {
        self.until.write().clear();
    }

    /// Forgets the hints that ran out by `now`.
    pub(crate) fn expire(&self, now: i64) {
        self.until.write().retain(|_, until| *until > now);
    }
}

/// Orders a ride's candidates best first: the rider's preferred driver, then pickup ETA.
pub(crate) fn rank(candidates: &mut [Candidate], preferred: Option<&EntryId>) {
    let preferred = preferred.map(EntryId::as_str);
    candidates.sort_by_key(|c| (Some(c.driver.as_str()) != preferred, c.eta_s));
}

/// A ride of a batch with its candidate drivers and the cost of each.
pub(crate) type Row = (RideId, Vec<(DriverId, f64)>);

/// Most rides one Kuhn–Munkres problem holds (its cost grows with the cube).
pub(crate) const KM_CHUNK: usize = 64;

/// Pairs rides (rows, each with its candidate drivers and pickup distances) with
/// `drivers` (columns) so that the total cost is least; a ride is paired only with one of
/// its candidates. Returns (row, column) pairs.
pub(crate) fn min_cost_assignment(
    rows: &[Row],
    drivers: &[DriverId],
    cost: impl Fn(f64) -> i64,
) -> Vec<(usize, usize)> {
    // Kuhn–Munkres wants at least as many columns as rows: pad with "nobody" columns,
    // and make impossible pairs cost more than any real assignment could save.
    const IMPOSSIBLE: i64 = 1_000_000_000;
    const NOBODY: i64 = IMPOSSIBLE / 2;
    let cols = drivers.len().max(rows.len());
    let mut weights = vec![NOBODY; rows.len() * cols];
    for (r, (_, candidates)) in rows.iter().enumerate() {
        for c in 0..drivers.len() {
            weights[r * cols + c] = IMPOSSIBLE;
        }
        for (d, m) in candidates {
            if let Ok(c) = drivers.binary_search(d) {
                weights[r * cols + c] = cost(*m);
            }
        }
    }
    let Ok(matrix) = pathfinding::matrix::Matrix::from_vec(rows.len(), cols, weights) else {
        return Vec::new();
    };
    let (_, assignment) = pathfinding::kuhn_munkres::kuhn_munkres_min(&matrix);
    assignment
        .into_iter()
        .enumerate()
        .filter(|&(r, c)| c < drivers.len() && matrix[(r, c)] < NOBODY)
        .collect()
}

/// Assigns rides (rows: each with its candidate drivers and costs) to drivers, each driver
/// at most once, minimising the total cost within each group of rides that compete for
/// drivers: rides that share no candidate (directly or through others) are solved apart,
/// and a group larger than `chunk` rides is solved `chunk` consecutive rides at a time
/// (callers order rows so that consecutive rides are near each other), later chunks
/// without the drivers earlier ones took. Returns (row, driver) pairs.
pub(crate) fn assign_in_chunks(rows: &[Row], chunk: usize) -> Vec<(usize, DriverId)> {
    // Union-find over rows, joined through shared drivers.
    let mut parent: Vec<usize> = (0..rows.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut first_row_of: HashMap<&DriverId, usize> = HashMap::new();
    for (r, (_, candidates)) in rows.iter().enumerate() {
        for (d, _) in candidates {
            match first_row_of.get(d) {
                Some(&other) => {
                    let (a, b) = (root(&mut parent, r), root(&mut parent, other));
                    parent[a] = b;
                }
                None => {
                    first_row_of.insert(d, r);
                }
            }
        }
    }
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for r in 0..rows.len() {
        let g = root(&mut parent, r);
        groups.entry(g).or_default().push(r);
    }
    let mut groups: Vec<Vec<usize>> = groups.into_values().collect();
    groups.sort_unstable();
    let mut taken: HashSet<DriverId> = HashSet::new();
    let mut out = Vec::new();
    for group in groups {
        for part in group.chunks(chunk.max(1)) {
            let sub: Vec<Row> = part
                .iter()
                .map(|&r| {
                    let (id, c) = &rows[r];
                    let free = c.iter().filter(|(d, _)| !taken.contains(d)).cloned();
                    (id.clone(), free.collect())
                })
                .collect();
            let mut drivers: Vec<DriverId> = sub
                .iter()
                .flat_map(|(_, c)| c.iter().map(|(d, _)| d.clone()))
                .collect();
            drivers.sort_unstable();
            drivers.dedup();
            if drivers.is_empty() {
                continue;
            }
            for (row, col) in min_cost_assignment(&sub, &drivers, |cost| cost as i64) {
                taken.insert(drivers[col].clone());
                out.push((part[row], drivers[col].clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, c: &[(&str, f64)]) -> Row {
        (
            id.into(),
            c.iter().map(|(d, m)| ((*d).into(), *m)).collect(),
        )
    }

    #[test]
    fn the_assignment_minimises_the_total_where_greedy_would_not() {
        // r1 is 10 m from d1 and 100 m from d2; r2 is 10 m from d1 and 120 m from d2.
        // Greedy (r1 first) gives r1-d1, r2-d2 = 130; the optimum is r1-d2, r2-d1 = 110.
        let rows = vec![
            row("r1", &[("d1", 10.0), ("d2", 100.0)]),
            row("r2", &[("d1", 10.0), ("d2", 120.0)]),
        ];
        let drivers: Vec<DriverId> = vec!["d1".into(), "d2".into()];
        let mut a = min_cost_assignment(&rows, &drivers, |m| m as i64);
        a.sort_unstable();
        assert_eq!(a, vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn chunked_assignment_equals_the_optimum_when_groups_fit_and_never_reuses_a_driver() {
        // Two independent groups: each solved optimally (as in the test above).
        let rows = vec![
            row("r1", &[("d1", 10.0), ("d2", 100.0)]),
            row("x1", &[("e1", 5.0)]),
            row("r2", &[("d1", 10.0), ("d2", 120.0)]),
            row("x2", &[("e1", 7.0), ("e2", 50.0)]),
        ];
        let mut a = assign_in_chunks(&rows, 64);
        a.sort();
        let pairs: Vec<(usize, &str)> = a.iter().map(|(r, d)| (*r, d.as_str())).collect();
        assert_eq!(pairs, vec![(0, "d2"), (1, "e1"), (2, "d1"), (3, "e2")]);
    }

    #[test]
    fn a_large_group_is_solved_in_chunks_without_giving_a_driver_twice() {
        // 500 rides all competing for overlapping drivers: one group, many chunks.
        let rows: Vec<_> = (0..500)
            .map(|i| {
                let c: Vec<(DriverId, f64)> = (0..20)
                    .map(|k| {
                        (
                            DriverId::from(format!("d{}", (i + k * 7) % 600)),
                            ((i * 31 + k * 17) % 97) as f64,
                        )
                    })
                    .collect();
                (RideId::from(format!("r{i}")), c)
            })
            .collect();
        let a = assign_in_chunks(&rows, 64);
        let mut drivers: Vec<&str> = a.iter().map(|(_, d)| d.as_str()).collect();
        let n = drivers.len();
        drivers.sort_unstable();
        drivers.dedup();
        assert_eq!(drivers.len(), n, "a driver was assigned twice");
        let mut rides: Vec<usize> = a.iter().map(|(r, _)| *r).collect();
        rides.sort_unstable();
        rides.dedup();
        assert_eq!(rides.len(), n, "a ride got two drivers");
        for (r, d) in &a {
            assert!(
                rows[*r].1.iter().any(|(c, _)| c == d),
                "ride {r} got a stranger"
            );
        }
        assert!(n >= 450, "most rides are served: {n}");
    }

    #[test]
    fn rides_without_a_reachable_driver_stay_unassigned_and_never_get_a_stranger() {
        let rows = vec![
            row("r1", &[("d1", 10.0)]),
            row("r2", &[("d1", 20.0)]),
            row("r3", &[]),
        ];
        let drivers: Vec<DriverId> = vec!["d1".into(), "d2".into()];
        let a = min_cost_assignment(&rows, &drivers, |m| m as i64);
        assert_eq!(a, vec![(0, 0)], "d2 is nobody's candidate, r3 has none");
    }
}
