//! [`MemoryCheckpointStore`]: rows kept in memory, for tests and for runs that only
//! need to survive a failure, not a crash.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use cano_core::checkpoint::{CheckpointRow, CheckpointStore, RunSummary, check_next_seq};
use cano_core::{CanoError, RunId};

/// A checkpoint store in memory. Clones share the rows; nothing survives the process.
///
/// It keeps the same rules as a durable backend (rows in order, a clashing append is an
/// error), so tests written against it hold for sled too.
#[derive(Clone, Default)]
pub struct MemoryCheckpointStore {
    runs: Arc<Mutex<BTreeMap<RunId, Vec<CheckpointRow>>>>,
}

impl MemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<RunId, Vec<CheckpointRow>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every row of every run, in run and row order (for tests and inspection).
    pub fn rows(&self) -> Vec<CheckpointRow> {
        self.lock().values().flatten().cloned().collect()
    }

    /// How many rows the store holds.
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Whether the store holds no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for MemoryCheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let runs = self.lock();
        f.debug_struct("MemoryCheckpointStore")
            .field("runs", &runs.len())
            .field("rows", &runs.values().map(Vec::len).sum::<usize>())
            .finish()
    }
}

#[async_trait::async_trait]
impl CheckpointStore for MemoryCheckpointStore {
    async fn append(&self, row: CheckpointRow) -> Result<(), CanoError> {
        let mut runs = self.lock();
        let last = runs
            .get(&row.run)
            .and_then(|rows| rows.last())
            .map(|r| r.seq);
        check_next_seq(row.run, last, row.seq)?;
        runs.entry(row.run).or_default().push(row);
        Ok(())
    }

    async fn load(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError> {
        Ok(self.lock().get(&run).cloned().unwrap_or_default())
    }

    async fn truncate(&self, run: RunId, before: u64) -> Result<(), CanoError> {
        if let Some(rows) = self.lock().get_mut(&run) {
            rows.retain(|r| r.seq >= before);
        }
        Ok(())
    }

    async fn clear(&self, run: RunId) -> Result<(), CanoError> {
        self.lock().remove(&run);
        Ok(())
    }

    async fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError> {
        Ok(self
            .lock()
            .values()
            .filter_map(|rows| rows.last())
            .filter(|last| !last.kind.ends_run())
            .map(RunSummary::from_last_row)
            .collect())
    }

    async fn prune(&self, older_than: SystemTime) -> Result<usize, CanoError> {
        let mut runs = self.lock();
        let before = runs.len();
        runs.retain(|_, rows| {
            rows.last()
                .is_some_and(|last| last.written_at() >= older_than)
        });
        Ok(before - runs.len())
    }
}
