//! Removal: one id on request, or every entry not updated since a cutoff (expiry). Both
//! take the shape's write lock, since an id and its handle go away.

use std::sync::atomic::Ordering;

use parking_lot::RwLockWriteGuard;

use super::directory::{unpack_loc, VACANT};
use super::spatial::{entry_of, Shape};
use super::Index;
use crate::entry::{Entry, EntryId, Filter};

/// Entries removed per hold of the write lock during eviction (bounds the pause).
const EVICT_CHUNK: usize = 4096;

impl Index {
    /// Removes an entry; returns what was stored.
    pub fn remove(&self, id: &EntryId) -> Option<Entry> {
        let mut shape = self.shape.write();
        let h = shape.dir.find(id)?;
        let removed = remove_located(&mut shape, h);
        if removed.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Removes every entry last updated before `cutoff_ms` (server time) and returns them.
    /// The scan runs under the shared lock; removal takes the exclusive lock in chunks of a
    /// few thousand entries so that queries pause for at most a few hundred microseconds.
    pub fn evict_older_than(&self, cutoff_ms: i64) -> Vec<Entry> {
        self.evict_older_than_where(cutoff_ms, &Filter::any())
    }

    /// Like [`Index::evict_older_than`], for entries passing `filter` only (drivers and
    /// profiles go stale on different clocks).
    pub fn evict_older_than_where(&self, cutoff_ms: i64, filter: &Filter) -> Vec<Entry> {
        let mut expired: Vec<EntryId> = Vec::new();
        {
            let shape = self.shape.read();
            for b in &shape.spatial.buckets {
                let b = b.read();
                for (slot, cold) in b.hot.iter().zip(&b.cold) {
                    if cold.updated_at_ms < cutoff_ms && filter.accepts(slot.packed) {
                        expired.push(shape.dir.name(slot.handle).clone());
                    }
                }
            }
        }
        let mut evicted = Vec::with_capacity(expired.len());
        for chunk in expired.chunks(EVICT_CHUNK) {
            let mut shape = self.shape.write();
            for id in chunk {
                let Some(h) = shape.dir.find(id) else {
                    continue;
                };
                // Re-check: the entry may have been updated since the scan.
                let fresh = shape
                    .read_entry(h)
                    .is_some_and(|(b, s)| b.cold[s].updated_at_ms >= cutoff_ms);
                if fresh {
                    continue;
                }
                if let Some(e) = remove_located(&mut shape, h) {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    evicted.push(e);
                }
            }
        }
        evicted
    }
}

fn remove_located(shape: &mut RwLockWriteGuard<'_, Shape>, handle: u32) -> Option<Entry> {
    let shape = &mut **shape;
    let loc = shape.dir.loc(handle);
    let entry = if loc == VACANT {
        None
    } else {
        let (b, s) = unpack_loc(loc);
        let bucket = shape.spatial.buckets[b as usize].get_mut();
        let s = s as usize;
        let entry = entry_of(
            shape.dir.name(handle).clone(),
            bucket.hot[s].packed,
            &bucket.cold[s],
        );
        if let Some(moved) = bucket.swap_remove(s) {
            shape.dir.set_loc(moved, b, s as u32);
        }
        Some(entry)
    };
    shape.dir.release(handle);
    entry
}

#[cfg(test)]
mod tests {
    use crate::index::fixtures::{id, index, update};
    use crate::index::Upserted;

    #[test]
    fn remove_forgets_the_entry_and_its_id_can_come_back() {
        let ix = index();
        for i in 0..10 {
            ix.upsert(&update(
                &format!("d{i}"),
                37.5,
                127.0 + f64::from(i) * 1e-5,
                None,
                None,
                1,
            ))
            .unwrap();
        }
        let gone = ix.remove(&id("d3")).unwrap();
        assert_eq!(gone.id, id("d3"));
        assert_eq!(ix.get(&id("d3")), None);
        assert_eq!(ix.remove(&id("d3")), None);
        assert_eq!(ix.len(), 9);
        // The other entries are intact (the hole was filled by a swap).
        for i in (0..10).filter(|i| *i != 3) {
            let e = ix.get(&id(&format!("d{i}"))).unwrap();
            assert_eq!(e.position.lng(), 127.0 + f64::from(i) * 1e-5);
        }
        assert_eq!(
            ix.upsert(&update("d3", 1.0, 1.0, None, None, 2)),
            Ok(Upserted::Inserted)
        );
        assert_eq!(ix.len(), 10);
    }

    #[test]
    fn eviction_removes_exactly_the_entries_not_updated_within_the_ttl() {
        let ix = index();
        for i in 0..100i64 {
            ix.upsert(&update(
                &format!("d{i}"),
                37.5 + i as f64 * 1e-3,
                127.0,
                None,
                None,
                i * 1000,
            ))
            .unwrap();
        }
        let mut evicted: Vec<String> = ix
            .evict_older_than(40_000)
            .into_iter()
            .map(|e| e.id.to_string())
            .collect();
        evicted.sort();
        let mut want: Vec<String> = (0..40).map(|i| format!("d{i}")).collect();
        want.sort();
        assert_eq!(evicted, want);
        assert_eq!(ix.len(), 60);
        assert!(ix.get(&id("d39")).is_none());
        assert!(ix.get(&id("d40")).is_some());
        assert!(ix.evict_older_than(40_000).is_empty());
    }
}
