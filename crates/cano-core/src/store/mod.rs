//! [`MemoryStore`]: a typed, thread-safe key-value store that tasks use to hand data to
//! the states after them.
//!
//! ```
//! use cano_core::MemoryStore;
//!
//! let store = MemoryStore::new();
//! store.put("rows", vec![1u32, 2, 3]).unwrap();
//! store.append("rows", 4u32).unwrap();
//! let rows: Vec<u32> = store.get("rows").unwrap();
//! assert_eq!(rows, [1, 2, 3, 4]);
//! // Reading with the wrong type is an error that names both types.
//! let err = store.get::<String>("rows").unwrap_err();
//! assert!(err.to_string().contains("Vec<u32>"));
//! ```

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::hash::FastBuildHasher;
use crate::resource::Resource;
use crate::util::{short_type_name, shorten};

pub mod error;

pub use error::{StoreError, StoreResult};

/// The in-memory store at cano 0.13's path (`store::memory::MemoryStore`).
pub mod memory {
    pub use super::MemoryStore;
}

/// Independent locks of a shared store; keys hash to one of them, so unrelated keys
/// rarely contend.
const SHARDS: usize = 16;

#[derive(Clone)]
struct Value {
    data: Arc<dyn Any + Send + Sync>,
    /// The full type name: shortening it (a lock and a lookup for generic types) is
    /// left to the rare error that shows it.
    type_name: &'static str,
}

type Shard = RwLock<HashMap<String, Value, FastBuildHasher>>;

/// A typed in-memory key-value store, cheap to clone (clones share the data).
///
/// Values are kept behind `Arc`, so [`get_shared`](Self::get_shared) hands one out
/// without copying it; [`get`](Self::get) returns a clone. The store is split into
/// independently locked shards: writers of different keys rarely wait for each other.
#[derive(Clone)]
pub struct MemoryStore {
    /// [`SHARDS`] of them, or one for a run's own outputs (see [`for_run`](Self::for_run)).
    shards: Arc<[Shard]>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("len", &self.count())
            .finish()
    }
}

impl Resource for MemoryStore {}

// A poisoned lock only means a panic happened while it was held; every write below
// replaces whole values, so the map is consistent and can be used on.
fn read(shard: &Shard) -> RwLockReadGuard<'_, HashMap<String, Value, FastBuildHasher>> {
    shard.read().unwrap_or_else(|p| p.into_inner())
}
fn write(shard: &Shard) -> RwLockWriteGuard<'_, HashMap<String, Value, FastBuildHasher>> {
    shard.write().unwrap_or_else(|p| p.into_inner())
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let shards: [Shard; SHARDS] = std::array::from_fn(|_| RwLock::default());
        Self {
            shards: Arc::new(shards),
        }
    }

    /// The store of one run's outputs: a handful of keys, written by the run's own
    /// states one after another, so one lock does; sixteen would be made and dropped
    /// on every run for nothing.
    pub(crate) fn for_run() -> Self {
        let shards: [Shard; 1] = [RwLock::default()];
        Self {
            shards: Arc::new(shards),
        }
    }

    fn shard(&self, key: &str) -> &Shard {
        if let [only] = &*self.shards {
            return only;
        }
        let h = FastBuildHasher::default().hash_one(key);
        &self.shards[(h as usize) % self.shards.len()]
    }

    /// Stores `value` under `key`, replacing whatever was there.
    pub fn put<T: Send + Sync + 'static>(
        &self,
        key: impl Into<String>,
        value: T,
    ) -> StoreResult<()> {
        let key = key.into();
        let value = Value {
            data: Arc::new(value),
            type_name: std::any::type_name::<T>(),
        };
        write(self.shard(&key)).insert(key, value);
        Ok(())
    }

    /// A clone of the value under `key`.
    ///
    /// Fails with [`StoreError::KeyNotFound`] naming the key if it is missing, or
    /// [`StoreError::TypeMismatch`] naming both types if the value has another type.
    pub fn get<T: Clone + Send + Sync + 'static>(&self, key: &str) -> StoreResult<T> {
        self.get_shared::<T>(key).map(|v| T::clone(&v))
    }

    /// The value under `key`, shared rather than cloned.
    pub fn get_shared<T: Send + Sync + 'static>(&self, key: &str) -> StoreResult<Arc<T>> {
        let value = read(self.shard(key)).get(key).cloned();
        let Some(value) = value else {
            return Err(StoreError::KeyNotFound(format!(
                "Key '{key}' not found in store (wanted a `{}`)",
                short_type_name::<T>()
            )));
        };
        value
            .data
            .downcast::<T>()
            .map_err(|_| mismatch::<T>(key, value.type_name))
    }

    /// Removes the value under `key`; removing a missing key does nothing.
    pub fn remove(&self, key: &str) -> StoreResult<()> {
        self.take(key);
        Ok(())
    }

    /// Removes the value under `key`; returns whether there was one.
    pub fn take(&self, key: &str) -> bool {
        write(self.shard(key)).remove(key).is_some()
    }

    /// Appends `item` to the `Vec<T>` under `key`, creating it if missing.
    ///
    /// Fails with [`StoreError::AppendTypeMismatch`] (the value is kept) if the key
    /// holds something other than a `Vec<T>`.
    pub fn append<T: Clone + Send + Sync + 'static>(
        &self,
        key: impl Into<String>,
        item: T,
    ) -> StoreResult<()> {
        let key = key.into();
        let mut shard = write(self.shard(&key));
        match shard.get_mut(&key) {
            None => {
                let value = Value {
                    data: Arc::new(vec![item]),
                    type_name: std::any::type_name::<Vec<T>>(),
                };
                shard.insert(key, value);
                Ok(())
            }
            Some(value) => {
                let Some(items) = value.data.downcast_ref::<Vec<T>>() else {
                    return Err(StoreError::AppendTypeMismatch(format!(
                        "Cannot append to key '{key}': it holds a `{}`, not a `{}`",
                        shorten(value.type_name),
                        short_type_name::<Vec<T>>()
                    )));
                };
                // Copy-on-write: readers holding the old Arc keep their snapshot.
                let mut items = items.clone();
                items.push(item);
                value.data = Arc::new(items);
                Ok(())
            }
        }
    }

    /// Whether a value is stored under `key`.
    pub fn contains_key(&self, key: &str) -> StoreResult<bool> {
        Ok(self.has(key))
    }

    /// Whether a value is stored under `key` (the infallible form of
    /// [`contains_key`](Self::contains_key)).
    pub fn has(&self, key: &str) -> bool {
        read(self.shard(key)).contains_key(key)
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> StoreResult<Vec<Arc<str>>> {
        let mut keys = Vec::with_capacity(self.count());
        for shard in self.shards.iter() {
            keys.extend(read(shard).keys().map(|k| Arc::from(k.as_str())));
        }
        Ok(keys)
    }

    /// How many values are stored.
    pub fn len(&self) -> StoreResult<usize> {
        Ok(self.count())
    }

    /// How many values are stored (the infallible form of [`len`](Self::len)).
    pub fn count(&self) -> usize {
        self.shards.iter().map(|s| read(s).len()).sum()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> StoreResult<bool> {
        Ok(self.shards.iter().all(|s| read(s).is_empty()))
    }

    /// Removes every value.
    pub fn clear(&self) -> StoreResult<()> {
        for shard in self.shards.iter() {
            write(shard).clear();
        }
        Ok(())
    }
}

fn mismatch<T>(key: &str, stored: &'static str) -> StoreError {
    StoreError::TypeMismatch(format!(
        "key '{key}' holds a `{}`, not the requested `{}`",
        shorten(stored),
        short_type_name::<T>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_round_trip_and_sharing() {
        let store = MemoryStore::new();
        store.put("n", 7u64).unwrap();
        assert_eq!(store.get::<u64>("n").unwrap(), 7);
        let a = store.get_shared::<u64>("n").unwrap();
        let b = store.get_shared::<u64>("n").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let clone = store.clone();
        clone.put("m", "x".to_string()).unwrap();
        assert!(store.contains_key("m").unwrap());
    }

    #[test]
    fn missing_and_mismatched_keys_are_clear_errors() {
        let store = MemoryStore::new();
        let err = store.get::<u32>("nope").unwrap_err();
        assert_eq!(
            err,
            StoreError::KeyNotFound("Key 'nope' not found in store (wanted a `u32`)".into())
        );
        // Inside a task, `?` makes it a CanoError::Store with the same text and a hint.
        let task_error = crate::error::CanoError::from(err);
        assert!(
            matches!(task_error, crate::error::CanoError::Store(ref m) if m.contains("Key 'nope' not found"))
        );
        assert!(!task_error.is_permanent());
        store.put("s", "text".to_string()).unwrap();
        let err = store.append("s", 1u8).unwrap_err();
        assert!(
            matches!(err, StoreError::AppendTypeMismatch(ref m)
            if m.contains("`String`, not a `Vec<u8>`")),
            "{err}"
        );
        assert_eq!(
            store.get::<String>("s").unwrap(),
            "text",
            "a failed append keeps the value"
        );
        assert!(crate::error::CanoError::from(err).is_permanent());
    }

    #[test]
    fn remove_keys_len_clear() {
        // A shared store and a run's single-lock store behave the same.
        for store in [MemoryStore::new(), MemoryStore::for_run()] {
            for i in 0..40 {
                store.put(format!("k{i}"), i).unwrap();
            }
            assert_eq!(store.len().unwrap(), 40);
            assert_eq!(store.keys().unwrap().len(), 40);
            assert_eq!(store.get::<i32>("k7").unwrap(), 7);
            assert!(store.take("k3"));
            assert!(!store.take("k3"));
            store.remove("k4").unwrap();
            store.remove("k4").unwrap();
            assert_eq!(store.count(), 38);
            store.clear().unwrap();
            assert!(store.is_empty().unwrap());
        }
    }

    #[test]
    fn a_mismatch_names_the_stored_type_shortened() {
        store_mismatch(MemoryStore::for_run());
        store_mismatch(MemoryStore::new());
    }

    fn store_mismatch(store: MemoryStore) {
        store.put("v", vec![Some(1u8)]).unwrap();
        let err = store.get::<String>("v").unwrap_err().to_string();
        assert!(
            err.contains(
                "Type mismatch: key 'v' holds a `Vec<Option<u8>>`, not the requested `String`"
            ),
            "{err}"
        );
    }

    #[test]
    fn append_keeps_earlier_snapshots_and_is_safe_across_threads() {
        let store = MemoryStore::new();
        store.append("log", 0u32).unwrap();
        let snapshot = store.get_shared::<Vec<u32>>("log").unwrap();
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let store = store.clone();
                s.spawn(move || {
                    for i in 0..250 {
                        store.append("log", t * 1000 + i).unwrap();
                    }
                });
            }
        });
        assert_eq!(snapshot.len(), 1);
        assert_eq!(store.get::<Vec<u32>>("log").unwrap().len(), 1001);
    }
}
