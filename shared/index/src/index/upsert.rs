//! Writes that keep an entry: a move (or first sighting) with ordering and the caller's
//! acceptance check, and status changes as compare-and-set. Both run under the entry's
//! writer stripe, so each is one atomic step.

use std::sync::atomic::Ordering;

use parking_lot::{RwLockReadGuard, RwLockWriteGuard};

use super::directory::{unpack_loc, VACANT};
use super::model::{is_stale, validate, validate_attrs, IndexError, Previous, Update, Upserted};
use super::spatial::{cold_of, entry_of, new_slot, Shape, Slot};
use super::Index;
use crate::bucket;
use crate::cell;
use crate::entry::{Attributes, Entry, EntryId, Packed, Status};

impl Index {
    /// Inserts or moves an entry, unless the update is stale (see [`is_stale`]).
    pub fn upsert(&self, update: &Update) -> Result<Upserted, IndexError> {
        self.upsert_if(update, |_| true)
    }

    /// Like [`Index::upsert`], and the move happens only if `accept` approves the stored
    /// state (for example a plausibility check on the implied speed). `accept` runs under
    /// the entry's lock, so the check and the move are one atomic step.
    pub fn upsert_if(
        &self,
        update: &Update,
        accept: impl FnOnce(&Previous) -> bool,
    ) -> Result<Upserted, IndexError> {
        validate(update)?;
        let xyz = update.position.to_unit();
        let key = bucket::key_of(&xyz, self.level);
        {
            let shape = self.shape.read();
            if let (Some(h), Some(&b)) = (shape.dir.find(&update.id), shape.spatial.keys.get(&key))
            {
                return Ok(self.upsert_located(&shape, h, b, update, xyz, accept));
            }
        }
        // First sight of this id or of this bucket: create them, then continue as a reader.
        let mut shape = self.shape.write();
        let h = shape.dir.insert(&update.id);
        let b = shape.spatial.ensure(key, self.level);
        let shape = RwLockWriteGuard::downgrade(shape);
        Ok(self.upsert_located(&shape, h, b, update, xyz, accept))
    }

    fn upsert_located(
        &self,
        shape: &RwLockReadGuard<'_, Shape>,
        handle: u32,
        target: u32,
        u: &Update,
        xyz: [f64; 3],
        accept: impl FnOnce(&Previous) -> bool,
    ) -> Upserted {
        let _w = self.writer(handle);
        let buckets = &shape.spatial.buckets;
        let mut accept = Some(accept);
        loop {
            let loc = shape.dir.loc(handle);
            if loc == VACANT {
                let cell = cell::cell_of(&u.position, self.cell_res);
                let (slot, cold) = new_slot(u, xyz, handle, cell);
                let mut b = buckets[target as usize].write();
                let s = b.push(slot, cold);
                shape.dir.set_loc(handle, target, s);
                self.len.fetch_add(1, Ordering::Relaxed);
                return Upserted::Inserted;
            }
            let (ob, os) = unpack_loc(loc);
            let os = os as usize;
            // Lock the one or two buckets in ascending order.
            let (mut first, mut second) = if ob == target {
                (buckets[ob as usize].write(), None)
            } else if ob < target {
                let a = buckets[ob as usize].write();
                (a, Some(buckets[target as usize].write()))
            } else {
                let t = buckets[target as usize].write();
                let a = buckets[ob as usize].write();
                (a, Some(t))
            };
            // `first` is always the old bucket.
            if first.hot.get(os).map(|s| s.handle) != Some(handle) {
                continue; // another entry's move shifted ours; read the location again
            }
            let old_slot = first.hot[os];
            let old_cold = first.cold[os];
            let previous = old_cold.previous(old_slot.packed);
            if is_stale(old_cold.seq(), old_cold.device_ts(), u.seq, u.device_ts_ms) {
                return Upserted::Stale { previous };
            }
            if !accept.take().is_none_or(|f| f(&previous)) {
                return Upserted::Refused { previous };
            }
            let cell = cell::cell_after_move(&u.position, &xyz, Some(old_cold.cell), self.cell_res);
            let packed = Packed::new(
                u.status.unwrap_or(old_slot.packed.status()),
                u.kind,
                u.attrs.unwrap_or(old_slot.packed.attrs()),
            );
            let slot = Slot {
                xyz,
                packed,
                handle,
            };
            let cold = cold_of(u, cell);
            match second.as_mut() {
                None => {
                    first.hot[os] = slot;
                    first.cold[os] = cold;
                }
                Some(new_bucket) => {
                    if let Some(moved) = first.swap_remove(os) {
                        shape.dir.set_loc(moved, ob, os as u32);
                    }
                    let s = new_bucket.push(slot, cold);
                    shape.dir.set_loc(handle, target, s);
                }
            }
            return Upserted::Moved { previous };
        }
    }

    /// Sets an entry's status (and attributes, when given) without moving it.
    pub fn set_status(
        &self,
        id: &EntryId,
        status: Status,
        attrs: Option<Attributes>,
    ) -> Result<Entry, IndexError> {
        self.compare_and_set_status(id, &Status::ALL, status, attrs)
    }

    /// Sets an entry's status only if its current status is one of `expected`, as one
    /// atomic step (dispatch uses it to take an available driver for an offer).
    pub fn compare_and_set_status(
        &self,
        id: &EntryId,
        expected: &[Status],
        status: Status,
        attrs: Option<Attributes>,
    ) -> Result<Entry, IndexError> {
        if let Some(a) = attrs {
            validate_attrs(a)?;
        }
        let shape = self.shape.read();
        let not_found = || IndexError::NotFound(id.clone());
        let h = shape.dir.find(id).ok_or_else(not_found)?;
        let _w = self.writer(h);
        let (mut b, s) = shape.lock_entry(h).ok_or_else(not_found)?;
        let packed = b.hot[s].packed;
        if !expected.contains(&packed.status()) {
            return Err(IndexError::StatusConflict {
                id: id.clone(),
                actual: packed.status(),
            });
        }
        let packed = Packed::new(status, packed.kind(), attrs.unwrap_or(packed.attrs()));
        b.hot[s].packed = packed;
        Ok(entry_of(id.clone(), packed, &b.cold[s]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::fixtures::{id, index, pos, update};
    use crate::index::MAX_SEQ;
    use h3o::Resolution;

    #[test]
    fn upsert_inserts_then_moves_and_get_returns_the_latest_state() {
        let ix = index();
        assert_eq!(
            ix.upsert(&update("d1", 37.5, 127.0, Some(1), None, 10)),
            Ok(Upserted::Inserted)
        );
        let e = ix.get(&id("d1")).unwrap();
        assert_eq!(
            (e.position, e.status, e.seq, e.updated_at_ms),
            (pos(37.5, 127.0), Status::Offline, Some(1), 10)
        );
        assert_eq!(e.cell, cell::cell_of(&pos(37.5, 127.0), Resolution::Nine));
        // A move far away changes bucket and cell.
        let r = ix
            .upsert(&update("d1", 37.6, 127.1, Some(2), None, 20))
            .unwrap();
        assert!(matches!(r, Upserted::Moved { previous } if previous.position == pos(37.5, 127.0)));
        let e = ix.get(&id("d1")).unwrap();
        assert_eq!(
            (e.position, e.seq, e.updated_at_ms),
            (pos(37.6, 127.1), Some(2), 20)
        );
        assert_eq!(e.cell, cell::cell_of(&pos(37.6, 127.1), Resolution::Nine));
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn an_older_sequence_number_is_stale_and_does_not_move_the_entry() {
        let ix = index();
        ix.upsert(&update("d1", 37.5, 127.0, Some(5), Some(5_000), 1))
            .unwrap();
        // Older seq, even with a newer device time: seq wins.
        let r = ix
            .upsert(&update("d1", 37.6, 127.0, Some(4), Some(9_000), 2))
            .unwrap();
        assert!(matches!(r, Upserted::Stale { previous } if previous.seq == Some(5)));
        // The same seq again is a repeat: stale too.
        assert!(matches!(
            ix.upsert(&update("d1", 37.6, 127.0, Some(5), None, 3))
                .unwrap(),
            Upserted::Stale { .. }
        ));
        assert_eq!(ix.get(&id("d1")).unwrap().position, pos(37.5, 127.0));
        assert!(matches!(
            ix.upsert(&update("d1", 37.6, 127.0, Some(6), None, 4))
                .unwrap(),
            Upserted::Moved { .. }
        ));
        assert_eq!(ix.get(&id("d1")).unwrap().position, pos(37.6, 127.0));
    }

    #[test]
    fn without_sequence_numbers_device_time_orders_updates() {
        let ix = index();
        ix.upsert(&update("d1", 37.5, 127.0, None, Some(5_000), 1))
            .unwrap();
        let r = ix
            .upsert(&update("d1", 37.6, 127.0, None, Some(4_999), 2))
            .unwrap();
        assert!(matches!(r, Upserted::Stale { .. }));
        assert_eq!(ix.get(&id("d1")).unwrap().position, pos(37.5, 127.0));
        // Equal device time is not older: accepted.
        assert!(matches!(
            ix.upsert(&update("d1", 37.6, 127.0, None, Some(5_000), 3))
                .unwrap(),
            Upserted::Moved { .. }
        ));
        // Neither seq nor time: last writer wins.
        assert!(matches!(
            ix.upsert(&update("d1", 37.7, 127.0, None, None, 4))
                .unwrap(),
            Upserted::Moved { .. }
        ));
        assert_eq!(ix.get(&id("d1")).unwrap().position, pos(37.7, 127.0));
    }

    #[test]
    fn a_refused_update_changes_nothing() {
        let ix = index();
        ix.upsert(&update("d1", 37.5, 127.0, Some(1), None, 1))
            .unwrap();
        let r = ix
            .upsert_if(&update("d1", 38.5, 127.0, Some(2), None, 2), |p| {
                p.position.lat() > 38.0
            })
            .unwrap();
        assert!(matches!(r, Upserted::Refused { .. }));
        let e = ix.get(&id("d1")).unwrap();
        assert_eq!((e.position, e.seq), (pos(37.5, 127.0), Some(1)));
    }

    #[test]
    fn bad_attributes_and_sequences_are_typed_errors() {
        let ix = index();
        let mut u = update("d1", 37.5, 127.0, Some(MAX_SEQ + 1), None, 1);
        assert_eq!(ix.upsert(&u), Err(IndexError::BadSeq(MAX_SEQ + 1)));
        u.seq = None;
        u.attrs = Some(Attributes {
            vehicle_class: 40,
            seats: 4,
        });
        assert_eq!(ix.upsert(&u), Err(IndexError::BadVehicleClass(40)));
        assert!(ix.is_empty());
    }

    #[test]
    fn status_changes_are_compare_and_set() {
        let ix = index();
        ix.upsert(&update("d1", 37.5, 127.0, None, None, 1))
            .unwrap();
        let e = ix
            .set_status(
                &id("d1"),
                Status::Available,
                Some(Attributes {
                    vehicle_class: 2,
                    seats: 6,
                }),
            )
            .unwrap();
        assert_eq!((e.status, e.attrs.vehicle_class), (Status::Available, 2));
        ix.compare_and_set_status(&id("d1"), &[Status::Available], Status::Offered, None)
            .unwrap();
        let err = ix.compare_and_set_status(&id("d1"), &[Status::Available], Status::Offered, None);
        assert_eq!(
            err.err(),
            Some(IndexError::StatusConflict {
                id: id("d1"),
                actual: Status::Offered
            })
        );
        assert_eq!(
            ix.set_status(&id("nobody"), Status::Busy, None).err(),
            Some(IndexError::NotFound(id("nobody")))
        );
        // A later move keeps status and attributes.
        ix.upsert(&update("d1", 37.51, 127.0, None, None, 2))
            .unwrap();
        let e = ix.get(&id("d1")).unwrap();
        assert_eq!((e.status, e.attrs.seats), (Status::Offered, 6));
    }
}
