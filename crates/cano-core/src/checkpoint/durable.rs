//! [`DurableStore`]: run data that survives a crash with the run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::DataChange;
use super::codec::{Bincode, Codec};
use crate::error::CanoError;

/// Keys the engine keeps for itself in a run's durable data (the compensation stack of
/// a saga); they start with a NUL, are invisible to the public methods and cannot be
/// written through them.
pub(crate) const ENGINE_PREFIX: &str = "\u{0}cano/";

fn is_engine_key(key: &str) -> bool {
    key.starts_with('\u{0}')
}

fn reserved(key: &str) -> CanoError {
    CanoError::configuration(format!(
        "durable key {key:?} starts with a NUL character, which is reserved for the engine"
    ))
    .with_hint("choose a key that does not start with '\\0'")
}

#[derive(Default)]
struct Data {
    values: BTreeMap<String, Arc<[u8]>>,
    /// Keys written or removed since the last checkpoint row.
    dirty: BTreeSet<String>,
}

/// Serde values private to one run that are saved with its checkpoints: what a task
/// puts here is written with the run's next row, and a resumed run finds exactly what
/// the crashed run had written up to its last row.
///
/// Present in runs of a workflow with a checkpoint store; a task reaches it with
/// [`DurableStore::current`]. Clones share the data. Values are encoded when put, so a
/// value that cannot be encoded is an error at once, not at the next checkpoint.
///
/// ```
/// use cano_core::checkpoint::DurableStore;
///
/// let data = DurableStore::default();
/// data.put("rows_loaded", &1_200u64)?;
/// data.update("pages", |pages: Option<Vec<u32>>| {
///     let mut pages = pages.unwrap_or_default();
///     pages.push(7);
///     pages
/// })?;
/// assert_eq!(data.get::<u64>("rows_loaded")?, 1_200);
/// assert_eq!(data.get::<Vec<u32>>("pages")?, [7]);
/// assert_eq!(data.get_opt::<u64>("missing")?, None);
/// # Ok::<(), cano_core::CanoError>(())
/// ```
#[derive(Clone, Default)]
pub struct DurableStore {
    data: Arc<Mutex<Data>>,
}

impl DurableStore {
    fn lock(&self) -> MutexGuard<'_, Data> {
        // Every write replaces whole entries, so a panic under the lock leaves it sound.
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `value` under `key`, replacing what was there.
    pub fn put<T: Serialize + ?Sized>(
        &self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<(), CanoError> {
        let key = key.into();
        if is_engine_key(&key) {
            return Err(reserved(&key));
        }
        let bytes = Bincode::encode(value).map_err(|e| at_key(e, &key))?;
        let mut data = self.lock();
        data.values.insert(key.clone(), bytes.into());
        data.dirty.insert(key);
        Ok(())
    }

    /// The value under `key`; [`CanoError::Store`] if there is none or it is not a `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T, CanoError> {
        self.get_opt(key)?.ok_or_else(|| {
            CanoError::store(format!("no durable value under key {key:?}"))
                .with_hint("put it in an earlier state, or check the key's spelling")
        })
    }

    /// The value under `key`, or `None` if there is none; an error if it is not a `T`.
    pub fn get_opt<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CanoError> {
        if is_engine_key(key) {
            return Ok(None);
        }
        let bytes = self.lock().values.get(key).cloned();
        bytes
            .map(|bytes| Bincode::decode(&bytes).map_err(|e| at_key(e, key)))
            .transpose()
    }

    /// Replaces the value under `key` with `f(old value)`, atomically with respect to
    /// other writers of this run (concurrent split branches, say).
    pub fn update<T, F>(&self, key: impl Into<String>, f: F) -> Result<T, CanoError>
    where
        T: Serialize + DeserializeOwned + Clone,
        F: FnOnce(Option<T>) -> T,
    {
        let key = key.into();
        if is_engine_key(&key) {
            return Err(reserved(&key));
        }
        let mut data = self.lock();
        let old = data
            .values
            .get(&key)
            .map(|bytes| Bincode::decode::<T>(bytes).map_err(|e| at_key(e, &key)))
            .transpose()?;
        let new = f(old);
        let bytes = Bincode::encode(&new).map_err(|e| at_key(e, &key))?;
        data.values.insert(key.clone(), bytes.into());
        data.dirty.insert(key);
        Ok(new)
    }

    /// Removes the value under `key`; returns whether there was one.
    pub fn remove(&self, key: &str) -> bool {
        if is_engine_key(key) {
            return false;
        }
        let mut data = self.lock();
        let had = data.values.remove(key).is_some();
        if had {
            data.dirty.insert(key.to_owned());
        }
        had
    }

    /// Whether a value is stored under `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        !is_engine_key(key) && self.lock().values.contains_key(key)
    }

    /// Every key, in order.
    pub fn keys(&self) -> Vec<String> {
        self.lock()
            .values
            .keys()
            .filter(|k| !is_engine_key(k))
            .cloned()
            .collect()
    }

    /// How many values are stored.
    pub fn len(&self) -> usize {
        self.lock()
            .values
            .keys()
            .filter(|k| !is_engine_key(k))
            .count()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoded values, in key order.
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        self.lock()
            .values
            .iter()
            .filter(|(k, _)| !is_engine_key(k))
            .map(|(k, v)| (k.clone(), v.to_vec()))
            .collect()
    }

    /// Stores the engine's own entry `key` (under [`ENGINE_PREFIX`]).
    pub(crate) fn put_engine(&self, key: String, bytes: Vec<u8>) {
        debug_assert!(key.starts_with(ENGINE_PREFIX));
        let mut data = self.lock();
        data.values.insert(key.clone(), bytes.into());
        data.dirty.insert(key);
    }

    /// The engine's own entry `key`, if set.
    pub(crate) fn get_engine(&self, key: &str) -> Option<Arc<[u8]>> {
        self.lock().values.get(key).cloned()
    }

    /// Removes the engine's own entry `key`.
    pub(crate) fn remove_engine(&self, key: &str) {
        let mut data = self.lock();
        if data.values.remove(key).is_some() {
            data.dirty.insert(key.to_owned());
        }
    }

    /// The engine's own entries whose keys start with `prefix`, in key order.
    pub(crate) fn engine_entries(&self, prefix: &str) -> Vec<(String, Arc<[u8]>)> {
        self.lock()
            .values
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// What changed since the last call (or everything, for a snapshot), marking it
    /// saved.
    pub(crate) fn take_change(&self, full: bool) -> DataChange {
        let mut data = self.lock();
        let dirty = std::mem::take(&mut data.dirty);
        let entries = if full {
            data.values
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.to_vec())))
                .collect()
        } else {
            dirty
                .into_iter()
                .map(|k| {
                    let value = data.values.get(&k).map(|v| v.to_vec());
                    (k, value)
                })
                .collect()
        };
        DataChange { full, entries }
    }

    /// Applies a row's change (replaying a log); marks nothing dirty.
    pub(crate) fn apply(&self, change: &DataChange) {
        let mut data = self.lock();
        if change.full {
            data.values.clear();
        }
        for (key, value) in &change.entries {
            match value {
                Some(bytes) => {
                    data.values.insert(key.clone(), bytes.as_slice().into());
                }
                None => {
                    data.values.remove(key);
                }
            }
        }
    }
}

fn at_key(error: CanoError, key: &str) -> CanoError {
    let message = format!("durable value {key:?}: {}", error.message());
    match error {
        CanoError::Store(_) => CanoError::store(message).with_source(error).permanent(),
        other => other,
    }
}

impl fmt::Debug for DurableStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableStore")
            .field("keys", &self.keys())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_taken_once_and_replay_to_the_same_data() {
        let data = DurableStore::default();
        data.put("a", &1u32).unwrap();
        data.put("b", "two").unwrap();
        let first = data.take_change(false);
        assert_eq!(first.entries.len(), 2);
        assert!(data.take_change(false).is_empty());
        data.put("a", &3u32).unwrap();
        assert!(data.remove("b"));
        let second = data.take_change(false);
        assert_eq!(second.entries[1], ("b".to_owned(), None));

        let replayed = DurableStore::default();
        replayed.apply(&first);
        replayed.apply(&second);
        assert_eq!(replayed.snapshot(), data.snapshot());
        assert!(replayed.take_change(false).is_empty());

        let full = data.take_change(true);
        assert!(full.full);
        let from_snapshot = DurableStore::default();
        from_snapshot.put("stale", &0u8).unwrap();
        from_snapshot.apply(&full);
        assert_eq!(from_snapshot.keys(), ["a"]);
    }

    #[test]
    fn wrong_type_and_missing_key_name_the_key() {
        let data = DurableStore::default();
        data.put("n", &"text").unwrap();
        let err = data.get::<u64>("n").unwrap_err();
        assert!(err.to_string().contains("\"n\""), "{err}");
        let err = data.get::<u64>("absent").unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn engine_entries_are_saved_but_hidden_from_users() {
        let data = DurableStore::default();
        data.put("mine", &1u8).unwrap();
        let key = format!("{ENGINE_PREFIX}saga/1");
        data.put_engine(key.clone(), vec![9]);
        assert_eq!(data.keys(), ["mine"]);
        assert_eq!(data.len(), 1);
        assert!(!data.contains_key(&key));
        assert_eq!(data.get_opt::<u8>(&key).unwrap(), None);
        assert!(!data.remove(&key));
        assert!(matches!(
            data.put(&key, &0u8),
            Err(CanoError::Configuration(_))
        ));
        let change = data.take_change(false);
        assert!(
            change
                .entries
                .iter()
                .any(|(k, v)| *k == key && v.as_deref() == Some(&[9u8][..]))
        );
        let replayed = DurableStore::default();
        replayed.apply(&change);
        assert_eq!(replayed.engine_entries(ENGINE_PREFIX).len(), 1);
        data.remove_engine(&key);
        assert!(data.engine_entries(ENGINE_PREFIX).is_empty());
        assert_eq!(data.take_change(false).entries, [(key, None)]);
    }

    #[test]
    fn current_outside_a_run_is_a_clear_error() {
        let err = DurableStore::current().unwrap_err();
        assert!(matches!(err, CanoError::Configuration(_)));
    }
}
