//! Store-wide sharing of the parts' series-id arrays.
//!
//! A part's directory is the sorted array of its series ids (4 B per series, see
//! `part::Directory`). Consecutive parts and partitions almost always hold the very same
//! series set (every series reports in every 2-h partition), so 360 parts of 30 days at
//! 200k series would hold 360 identical 0.8 MB arrays. The interner gives identical arrays
//! one allocation: parts hold an `Arc<SharedIds>`, and the interner finds an existing array
//! by a hash of its contents (verified by comparison, so a collision only costs a compare).
//!
//! The table holds only weak references, so it never keeps an array alive: the array is
//! freed with the last part that uses it, and that part's drop also removes the table slot.
//! The weak references point at the small `SharedIds` header, not at the ids themselves
//! (a `Weak<[u32]>` would keep the whole array's allocation alive until the slot goes).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

/// Arrays by content hash; several per hash only on a collision.
type Table = HashMap<u64, Vec<Weak<SharedIds>>>;

/// A sorted array of series ids, shared by every part holding exactly that series set.
#[derive(Debug)]
pub struct SharedIds {
    ids: Box<[u32]>,
    key: u64,
    /// The table to remove this array's slot from when it is dropped; dangling if the
    /// store (and its interner) is gone while a reader still holds the part.
    table: Weak<Mutex<Table>>,
}

impl SharedIds {
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Heap bytes of the array (counted once however many parts share it).
    pub fn heap_bytes(&self) -> usize {
        self.ids.len() * std::mem::size_of::<u32>()
    }
}

impl Drop for SharedIds {
    fn drop(&mut self) {
        // The strong count is already zero, so this array's own slot no longer upgrades:
        // dropping dead slots of this key leaves only arrays some part still uses.
        let Some(table) = self.table.upgrade() else {
            return;
        };
        let mut table = table.lock();
        if let Some(slots) = table.get_mut(&self.key) {
            slots.retain(|w| w.strong_count() > 0);
            if slots.is_empty() {
                table.remove(&self.key);
            }
        }
    }
}

/// Hands out one shared allocation per distinct id array. Cheap to clone (one table).
#[derive(Debug, Clone, Default)]
pub struct IdInterner {
    table: Arc<Mutex<Table>>,
}

impl IdInterner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared array equal to `ids`, allocating it if no live part holds one.
    pub fn intern(&self, ids: Vec<u32>) -> Arc<SharedIds> {
        let key = content_key(&ids);
        // Arrays upgraded for the comparison that did not match. Declared before the lock
        // guard so they are dropped after it: if one of them turns out to be the last
        // reference, its `Drop` locks the table, which must not be held by this thread.
        let mut compared: Vec<Arc<SharedIds>> = Vec::new();
        let mut table = self.table.lock();
        let slots = table.entry(key).or_default();
        for slot in slots.iter() {
            let Some(shared) = slot.upgrade() else {
                continue;
            };
            if shared.ids() == ids.as_slice() {
                return shared;
            }
            compared.push(shared);
        }
        slots.retain(|w| w.strong_count() > 0);
        let shared = Arc::new(SharedIds { ids: ids.into_boxed_slice(), key, table: Arc::downgrade(&self.table) });
        slots.push(Arc::downgrade(&shared));
        shared
    }

    /// Distinct arrays in the table (all of them used by some part).
    #[cfg(test)]
    pub fn arrays(&self) -> usize {
        self.table.lock().values().map(|slots| slots.iter().filter(|w| w.strong_count() > 0).count()).sum()
    }

    /// Table slots, live or not yet removed; equals `arrays()` whenever no drop is in flight.
    #[cfg(test)]
    pub fn slots(&self) -> usize {
        self.table.lock().values().map(Vec::len).sum()
    }
}

/// Hash of the contents and the length (`[u32]`'s `Hash` includes the length).
fn content_key(ids: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    ids.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_arrays_share_one_allocation_and_dropped_ones_leave_the_table() {
        let interner = IdInterner::new();
        let a = interner.intern(vec![1, 2, 3]);
        let b = interner.intern(vec![1, 2, 3]);
        let c = interner.intern(vec![1, 2, 4]);
        let empty = interner.intern(Vec::new());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.ids(), &[1, 2, 4]);
        assert_eq!((interner.arrays(), interner.slots()), (3, 3));
        drop(a);
        assert_eq!(interner.arrays(), 3, "still used by b");
        drop(b);
        drop(empty);
        assert_eq!((interner.arrays(), interner.slots()), (1, 1), "slots of dropped arrays are removed");
        let again = interner.intern(vec![1, 2, 3]);
        assert_eq!(again.ids(), &[1, 2, 3]);
        drop((c, again));
        assert_eq!(interner.slots(), 0);
    }

    /// Two different arrays under one key (a forced collision): both stay distinct and
    /// findable, and dropping one keeps the other's slot.
    #[test]
    fn colliding_keys_are_told_apart_by_comparison() {
        let interner = IdInterner::new();
        let a = interner.intern(vec![7, 8]);
        let forged =
            Arc::new(SharedIds { ids: vec![9].into_boxed_slice(), key: a.key, table: Arc::downgrade(&interner.table) });
        interner.table.lock().get_mut(&a.key).unwrap().push(Arc::downgrade(&forged));
        assert!(Arc::ptr_eq(&interner.intern(vec![7, 8]), &a));
        assert_eq!(interner.slots(), 2);
        drop(forged);
        assert_eq!(interner.slots(), 1);
        assert!(Arc::ptr_eq(&interner.intern(vec![7, 8]), &a));
    }

    /// Parts dropped on other threads while arrays are interned: no deadlock (a compared
    /// array may become the last reference inside `intern`), and nothing is left behind.
    #[test]
    fn concurrent_drops_and_interns_leave_nothing_behind() {
        let interner = IdInterner::new();
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let interner = interner.clone();
                s.spawn(move || {
                    for i in 0..2000u32 {
                        let a = interner.intern(vec![i % 5, t]);
                        let b = interner.intern(vec![i % 5, (t + 1) % 4]);
                        drop((a, b));
                    }
                });
            }
        });
        assert_eq!(interner.slots(), 0);
    }
}
