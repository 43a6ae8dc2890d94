//! Building an index from many entries at once: the positions are converted on every core,
//! sorted by bucket, and each bucket is filled with exact capacity before one R-tree bulk
//! load.

use std::sync::atomic::Ordering;

use h3o::CellIndex;
use parking_lot::RwLock;
use rstar::RTree;

use super::model::{validate, IndexConfig, IndexError, Update};
use super::spatial::{new_slot, Bucket, Spatial};
use super::Index;
use crate::bucket::{self, BucketKey};
use crate::cell;

impl Index {
    /// Builds an index from many entries at once, much faster than upserting them one by
    /// one. Ids must be distinct.
    pub fn bulk_load(
        config: IndexConfig,
        updates: impl IntoIterator<Item = Update>,
    ) -> Result<Self, IndexError> {
        let index = Index::new(config)?;
        let updates: Vec<Update> = updates.into_iter().collect();
        for u in &updates {
            validate(u)?;
        }
        let (level, res) = (index.level, index.cell_res);
        // Unit vectors and bucket keys, on every core.
        let geo: Vec<([f64; 3], BucketKey)> = par_map(&updates, |u| {
            let xyz = u.position.to_unit();
            (xyz, bucket::key_of(&xyz, level))
        });
        // Sorted by bucket, neighbours in the list are neighbours on the ground, so most
        // H3 cells come from the previous entry's inscribed disc, not from `to_cell`.
        let mut keyed: Vec<(BucketKey, u32)> = geo
            .iter()
            .enumerate()
            .map(|(i, g)| (g.1, i as u32))
            .collect();
        keyed.sort_unstable();
        let order: Vec<u32> = keyed.into_iter().map(|(_, i)| i).collect();
        let cells: Vec<CellIndex> = par_chunks(&order, |chunk| {
            let mut previous = None;
            chunk
                .iter()
                .map(|&i| {
                    let (u, (xyz, _)) = (&updates[i as usize], &geo[i as usize]);
                    let cell = cell::cell_after_move(&u.position, xyz, previous, res);
                    previous = Some(cell);
                    cell
                })
                .collect()
        });
        {
            let mut shape = index.shape.write();
            let shape = &mut *shape;
            let mut boxes = Vec::new();
            shape.dir.reserve(order.len());
            let mut j = 0;
            while j < order.len() {
                // One bucket: the run of equal keys, stored with exact capacity.
                let key = geo[order[j] as usize].1;
                let run = order[j..]
                    .iter()
                    .take_while(|&&i| geo[i as usize].1 == key)
                    .count();
                let number = shape.spatial.buckets.len() as u32;
                let mut bucket = Bucket {
                    hot: Vec::with_capacity(run),
                    cold: Vec::with_capacity(run),
                };
                for (&i, &cell) in order[j..j + run].iter().zip(&cells[j..j + run]) {
                    let u = &updates[i as usize];
                    let handle = shape
                        .dir
                        .insert_new(&u.id)
                        .ok_or_else(|| IndexError::DuplicateId(u.id.clone()))?;
                    let (slot, cold) = new_slot(u, geo[i as usize].0, handle, cell);
                    let s = bucket.push(slot, cold);
                    shape.dir.set_loc(handle, number, s);
                }
                shape.spatial.buckets.push(RwLock::new(bucket));
                shape.spatial.keys.insert(key, number);
                boxes.push(Spatial::bucket_box(key, level, number));
                j += run;
            }
            index.len.store(order.len(), Ordering::Relaxed);
            shape.spatial.tree = RTree::bulk_load_with_params(boxes);
        }
        Ok(index)
    }
}

/// `f` over every item, on every core; results in input order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    par_chunks(items, |chunk| chunk.iter().map(&f).collect())
}

/// `f` over contiguous chunks of `items`, one per core; results concatenated in order.
fn par_chunks<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> Vec<R> + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 1 || items.len() < 10_000 {
        return f(items);
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = items.chunks(chunk).map(|c| s.spawn(|| f(c))).collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("bulk-load worker"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::fixtures::{id, update};

    #[test]
    fn bulk_load_refuses_duplicate_ids() {
        let u = update("d1", 37.5, 127.0, None, None, 1);
        let r = Index::bulk_load(IndexConfig::default(), vec![u.clone(), u]);
        assert_eq!(r.err(), Some(IndexError::DuplicateId(id("d1"))));
    }
}
