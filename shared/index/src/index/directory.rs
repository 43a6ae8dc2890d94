//! The directory: id ⇄ handle (a dense `u32`), and each handle's location (bucket, slot)
//! in an atomic word, so a writer finds its entry without a search.

use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::entry::EntryId;

/// Location word of a handle that has no position.
pub(super) const VACANT: u64 = u64::MAX;

#[derive(Default)]
pub(super) struct Directory {
    table: HashTable<u32>,
    names: Vec<Option<EntryId>>,
    locs: Vec<AtomicU64>,
    free: Vec<u32>,
}

impl Directory {
    #[inline]
    fn hash(id: &EntryId) -> u64 {
        use std::hash::BuildHasher;
        FxBuildHasher.hash_one(id.as_str())
    }

    #[inline]
    pub(super) fn find(&self, id: &EntryId) -> Option<u32> {
        let names = &self.names;
        self.table
            .find(Self::hash(id), |&h| names[h as usize].as_ref() == Some(id))
            .copied()
    }

    #[inline]
    pub(super) fn name(&self, handle: u32) -> &EntryId {
        self.names[handle as usize]
            .as_ref()
            .expect("a located handle has a name")
    }

    #[inline]
    pub(super) fn loc(&self, handle: u32) -> u64 {
        self.locs[handle as usize].load(Ordering::Acquire)
    }

    #[inline]
    pub(super) fn set_loc(&self, handle: u32, bucket: u32, slot: u32) {
        self.locs[handle as usize].store(pack_loc(bucket, slot), Ordering::Release);
    }

    pub(super) fn insert(&mut self, id: &EntryId) -> u32 {
        if let Some(h) = self.find(id) {
            return h;
        }
        let h = match self.free.pop() {
            Some(h) => {
                self.names[h as usize] = Some(id.clone());
                h
            }
            None => {
                self.names.push(Some(id.clone()));
                self.locs.push(AtomicU64::new(VACANT));
                (self.names.len() - 1) as u32
            }
        };
        let names = &self.names;
        self.table.insert_unique(Self::hash(id), h, |&x| {
            Self::hash(
                names[x as usize]
                    .as_ref()
                    .expect("mapped handles have names"),
            )
        });
        h
    }

    /// Room for `n` more ids without rehashing.
    pub(super) fn reserve(&mut self, n: usize) {
        let names = &self.names;
        self.table.reserve(n, |&x| {
            Self::hash(
                names[x as usize]
                    .as_ref()
                    .expect("mapped handles have names"),
            )
        });
        self.names.reserve(n);
        self.locs.reserve(n);
    }

    /// Adds an id known to be new; `None` if it is already present (one probe).
    pub(super) fn insert_new(&mut self, id: &EntryId) -> Option<u32> {
        let hash = Self::hash(id);
        let names = &self.names;
        let entry = self.table.entry(
            hash,
            |&h| names[h as usize].as_ref() == Some(id),
            |&x| {
                Self::hash(
                    names[x as usize]
                        .as_ref()
                        .expect("mapped handles have names"),
                )
            },
        );
        let hashbrown::hash_table::Entry::Vacant(vacant) = entry else {
            return None;
        };
        let h = self.names.len() as u32;
        vacant.insert(h);
        self.names.push(Some(id.clone()));
        self.locs.push(AtomicU64::new(VACANT));
        Some(h)
    }

    pub(super) fn release(&mut self, handle: u32) {
        let id = self.names[handle as usize]
            .take()
            .expect("released handle has a name");
        if let Ok(e) = self.table.find_entry(Self::hash(&id), |&h| h == handle) {
            e.remove();
        }
        self.locs[handle as usize].store(VACANT, Ordering::Release);
        self.free.push(handle);
    }
}

#[inline]
fn pack_loc(bucket: u32, slot: u32) -> u64 {
    (u64::from(bucket) << 32) | u64::from(slot)
}

#[inline]
pub(super) fn unpack_loc(loc: u64) -> (u32, u32) {
    ((loc >> 32) as u32, loc as u32)
}
