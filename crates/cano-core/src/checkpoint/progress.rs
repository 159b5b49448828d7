//! [`TaskProgress`]: what a long task saves of its own progress inside one state (the
//! items a batch finished, a timer's deadline, a stream's cursor), so that a resumed
//! run picks up where the crashed one stopped instead of starting the state over.

use std::sync::Arc;

use super::Journal;
use super::durable::ENGINE_PREFIX;
use crate::error::CanoError;

/// Separates the parts of a progress key; state labels and task names never hold it.
const SEP: char = '\u{1}';

/// One task's saved progress in the state its run is in.
///
/// Entries live in the run's durable data under keys of the engine's own, invisible to
/// [`DurableStore`](super::DurableStore)'s public methods, scoped by the current state
/// and the task's name. [`put`](Self::put) changes them in memory;
/// [`save`](Self::save) writes them with a `Step` row, so what was saved is exactly
/// what a resumed run finds. A task clears its progress when it is done with the state
/// ([`clear`](Self::clear)); the removal is written with the run's next row.
///
/// Only runs of a workflow with a checkpoint store have progress to save:
/// [`TaskProgress::current`] is `None` elsewhere, and tasks then simply keep their
/// progress in memory.
#[derive(Debug, Clone)]
pub struct TaskProgress {
    journal: Arc<Journal>,
    prefix: String,
}

impl TaskProgress {
    /// The progress of the task named `task` in the state `journal`'s run is in (see
    /// `TaskProgress::current`, with the current run, in the `run` module).
    pub(crate) fn in_journal(journal: Arc<Journal>, task: &str) -> Self {
        let prefix = format!(
            "{ENGINE_PREFIX}progress/{}{SEP}{task}{SEP}",
            journal.current_label()
        );
        Self { journal, prefix }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The saved value of `key`, if any.
    pub fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        let key = self.key(key);
        self.journal
            .durable()
            .engine_entries(&key)
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, value)| value)
    }

    /// Every saved entry, as `(key, value)` in key order.
    pub fn entries(&self) -> Vec<(String, Arc<[u8]>)> {
        self.journal
            .durable()
            .engine_entries(&self.prefix)
            .into_iter()
            .map(|(k, v)| (k[self.prefix.len()..].to_owned(), v))
            .collect()
    }

    /// Sets `key` to `value`; written by the next [`save`](Self::save) (or the run's
    /// next row).
    pub fn put(&self, key: &str, value: Vec<u8>) {
        self.journal.durable().put_engine(self.key(key), value);
    }

    /// Removes `key`.
    pub fn remove(&self, key: &str) {
        self.journal.durable().remove_engine(&self.key(key));
    }

    /// Removes every entry: the task is done with this state.
    pub fn clear(&self) {
        let durable = self.journal.durable();
        for (key, _) in durable.engine_entries(&self.prefix) {
            durable.remove_engine(&key);
        }
    }

    /// Writes what changed since the last row with a `Step` row of the current state,
    /// and returns the row's number. Concurrent savers are written one after another.
    pub async fn save(&self) -> Result<u64, CanoError> {
        self.journal.record_progress().await
    }
}
