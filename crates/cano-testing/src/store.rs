//! [`FaultyStore`]: a checkpoint store that fails when told to, and lets a test await
//! the rows it has taken.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use cano_core::{CanoError, CheckpointRow, CheckpointStore, RowKind, RunId, RunSummary};
use cano_recovery::MemoryCheckpointStore;
use tokio::sync::watch;

#[derive(Debug, Default)]
struct Faults {
    appends: usize,
    /// Appends (numbered from 0 through this store) that fail once.
    fail_once: BTreeSet<usize>,
    /// Every append from this number on fails, until healed.
    fail_from: Option<usize>,
    fail_loads: bool,
}

/// A [`CheckpointStore`] (in memory, or wrapping another) with fault injection: fail
/// the Nth append, every append from the Nth on (a full disk), or every load. It keeps
/// a copy of every row it took, in order, which a test can read or await.
///
/// ```
/// use cano_testing::FaultyStore;
///
/// let store = FaultyStore::new();
/// store.fail_append(2); // the third row written fails, once
/// store.fail_loads(true);
/// assert_eq!(store.appended().len(), 0);
/// ```
pub struct FaultyStore {
    inner: Arc<dyn CheckpointStore>,
    faults: Mutex<Faults>,
    rows: watch::Sender<Vec<CheckpointRow>>,
}

impl FaultyStore {
    /// An in-memory store with no faults yet.
    pub fn new() -> Arc<Self> {
        Self::wrapping(Arc::new(MemoryCheckpointStore::new()))
    }

    /// `inner`, with fault injection in front of it.
    pub fn wrapping(inner: Arc<dyn CheckpointStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            faults: Mutex::default(),
            rows: watch::channel(Vec::new()).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append number `n` (from 0, counting every append through this store) fails,
    /// once.
    pub fn fail_append(&self, n: usize) {
        self.lock().fail_once.insert(n);
    }

    /// Every append from number `n` on fails, until [`heal`](Self::heal).
    pub fn fail_appends_from(&self, n: usize) {
        self.lock().fail_from = Some(n);
    }

    /// Whether loads fail.
    pub fn fail_loads(&self, fail: bool) {
        self.lock().fail_loads = fail;
    }

    /// Ends every injected fault.
    pub fn heal(&self) {
        let mut faults = self.lock();
        faults.fail_once.clear();
        faults.fail_from = None;
        faults.fail_loads = false;
    }

    /// How many appends were attempted through this store, failed ones included.
    pub fn append_attempts(&self) -> usize {
        self.lock().appends
    }

    /// Every row taken so far, in order (rows the inner store later truncated or
    /// cleared included).
    pub fn appended(&self) -> Vec<CheckpointRow> {
        self.rows.borrow().clone()
    }

    /// Waits until the rows taken so far satisfy `done`.
    pub async fn wait_for(&self, done: impl Fn(&[CheckpointRow]) -> bool) {
        let mut rows = self.rows.subscribe();
        // The sender lives as long as `self`, which this borrow keeps alive.
        let _ = rows.wait_for(|rows| done(rows)).await;
    }

    /// Waits until at least `n` `Step` rows were taken.
    pub async fn wait_for_steps(&self, n: usize) {
        self.wait_for(|rows| rows.iter().filter(|r| r.kind == RowKind::Step).count() >= n)
            .await;
    }

    fn injected(what: &str) -> CanoError {
        CanoError::store(format!(
            "injected fault: {what} (No space left on device, os error 28)"
        ))
    }
}

#[async_trait::async_trait]
impl CheckpointStore for FaultyStore {
    async fn append(&self, row: CheckpointRow) -> Result<(), CanoError> {
        let fail = {
            let mut faults = self.lock();
            let n = faults.appends;
            faults.appends += 1;
            faults.fail_once.remove(&n) || faults.fail_from.is_some_and(|from| n >= from)
        };
        if fail {
            return Err(Self::injected(&format!(
                "append of row {} of run {}",
                row.seq, row.run
            )));
        }
        self.inner.append(row.clone()).await?;
        self.rows.send_modify(|rows| rows.push(row));
        Ok(())
    }

    async fn load(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError> {
        if self.lock().fail_loads {
            return Err(Self::injected(&format!("load of run {run}")));
        }
        self.inner.load(run).await
    }

    async fn truncate(&self, run: RunId, before: u64) -> Result<(), CanoError> {
        self.inner.truncate(run, before).await
    }

    async fn clear(&self, run: RunId) -> Result<(), CanoError> {
        self.inner.clear(run).await
    }

    async fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError> {
        if self.lock().fail_loads {
            return Err(Self::injected("listing of unfinished runs"));
        }
        self.inner.unfinished().await
    }

    async fn prune(&self, older_than: SystemTime) -> Result<usize, CanoError> {
        self.inner.prune(older_than).await
    }
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore")
            .field("faults", &*self.lock())
            .field("rows", &self.rows.borrow().len())
            .finish()
    }
}
