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
    /// Appends that write their row, then report a failure (a lost reply).
    lose_reply: BTreeSet<usize>,
    /// Every append from this number on fails, until healed.
    fail_from: Option<usize>,
    fail_loads: bool,
    /// Clears that fail, before (`false`) or after (`true`) clearing.
    fail_clears: Vec<bool>,
    fail_truncates: bool,
    /// Graph recordings that still fail.
    fail_graphs: usize,
}

/// A [`CheckpointStore`] (in memory, or wrapping another) with fault injection: fail
/// the Nth append, every append from the Nth on (a full disk), or every load; write
/// the Nth append and then report a failure all the same (an ambiguous write: the
/// flush or the reply was lost); fail clears and truncations. It keeps a copy of every
/// row it took, in order, which a test can read or await.
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

    /// The next `n` recordings of a workflow's graph fail.
    pub fn fail_graphs(&self, n: usize) {
        self.lock().fail_graphs = n;
    }

    /// Append number `n` (from 0, counting every append through this store) fails,
    /// once.
    pub fn fail_append(&self, n: usize) {
        self.lock().fail_once.insert(n);
    }

    /// Append number `n` writes its row, then fails all the same, once: the caller
    /// cannot tell whether the row is in the log (sled inserted it and the flush
    /// failed; a database committed it and the reply was lost).
    pub fn lose_reply_of_append(&self, n: usize) {
        self.lock().lose_reply.insert(n);
    }

    /// The next clear fails; if `after_clearing`, it clears the run first (its reply
    /// was lost). Each call queues one failing clear.
    pub fn fail_next_clear(&self, after_clearing: bool) {
        self.lock().fail_clears.push(after_clearing);
    }

    /// Whether truncations (compaction) fail.
    pub fn fail_truncates(&self, fail: bool) {
        self.lock().fail_truncates = fail;
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
        faults.lose_reply.clear();
        faults.fail_from = None;
        faults.fail_loads = false;
        faults.fail_clears.clear();
        faults.fail_truncates = false;
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
        let (fail, lose_reply) = {
            let mut faults = self.lock();
            let n = faults.appends;
            faults.appends += 1;
            (
                faults.fail_once.remove(&n) || faults.fail_from.is_some_and(|from| n >= from),
                faults.lose_reply.remove(&n),
            )
        };
        let what = format!("append of row {} of run {}", row.seq, row.run);
        if fail {
            return Err(Self::injected(&what));
        }
        self.inner.append(row.clone()).await?;
        self.rows.send_modify(|rows| rows.push(row));
        if lose_reply {
            return Err(Self::injected(&format!(
                "{what} was written, then its flush failed"
            )));
        }
        Ok(())
    }

    async fn load(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError> {
        if self.lock().fail_loads {
            return Err(Self::injected(&format!("load of run {run}")));
        }
        self.inner.load(run).await
    }

    async fn truncate(&self, run: RunId, before: u64) -> Result<(), CanoError> {
        if self.lock().fail_truncates {
            return Err(Self::injected(&format!("truncation of run {run}")));
        }
        self.inner.truncate(run, before).await
    }

    async fn clear(&self, run: RunId) -> Result<(), CanoError> {
        let fault = {
            let mut faults = self.lock();
            (!faults.fail_clears.is_empty()).then(|| faults.fail_clears.remove(0))
        };
        match fault {
            None => self.inner.clear(run).await,
            Some(after_clearing) => {
                if after_clearing {
                    self.inner.clear(run).await?;
                }
                Err(Self::injected(&format!("clear of run {run}")))
            }
        }
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

    async fn record_graph(
        &self,
        workflow: &str,
        version: u32,
        drawing: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<(), CanoError> {
        let fail = {
            let mut faults = self.lock();
            let fail = faults.fail_graphs > 0;
            faults.fail_graphs = faults.fail_graphs.saturating_sub(1);
            fail
        };
        if fail {
            return Err(Self::injected(&format!(
                "recording the graph of {workflow}"
            )));
        }
        self.inner.record_graph(workflow, version, drawing).await
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
