//! [`MemoryCheckpointStore`]: rows kept in memory, for tests and for runs that only
//! need to survive a failure, not a crash.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use cano_core::checkpoint::{
    ActionRecord, CheckpointRow, CheckpointStore, INBOX_LIMIT, ListedRun, NewestFirst, PageCursor,
    RunCatalog, RunFilter, RunPage, RunSummary, Sent, Signal, SignalStore, StatusCounts, StoredRow,
    check_next_seq, check_signal, signal_limit_error, signal_taken_error,
};
use cano_core::{CanoError, RunId};

/// A checkpoint store in memory. Clones share the rows; nothing survives the process.
///
/// It keeps the same rules as a durable backend (rows in order, a clashing append is an
/// error), so tests written against it hold for sled too.
#[derive(Clone, Default)]
pub struct MemoryCheckpointStore {
    state: Arc<Mutex<State>>,
}

/// Rows and inboxes under one lock, so taking a signal and appending a row are one step.
#[derive(Default)]
struct State {
    runs: BTreeMap<RunId, Vec<CheckpointRow>>,
    inboxes: HashMap<RunId, Inbox>,
    /// The id of the next signal sent.
    next_signal: u64,
    /// Each workflow version's drawing.
    graphs: HashMap<(String, u32), String>,
    /// Operators' actions, oldest first.
    actions: Vec<ActionRecord>,
}

/// One run's signals not yet taken, and every idempotency key it was sent.
#[derive(Default)]
struct Inbox {
    signals: BTreeMap<u64, Signal>,
    keys: HashMap<String, u64>,
}

impl MemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every row of every run, in run and row order (for tests and inspection).
    pub fn rows(&self) -> Vec<CheckpointRow> {
        self.lock().runs.values().flatten().cloned().collect()
    }

    /// How many rows the store holds.
    pub fn len(&self) -> usize {
        self.lock().runs.values().map(Vec::len).sum()
    }

    /// Whether the store holds no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl MemoryCheckpointStore {
    fn listed(&self) -> Vec<ListedRun> {
        self.lock()
            .runs
            .values()
            .filter_map(|rows| {
                Some(ListedRun::from_rows(
                    rows.first()?.written_at_ms,
                    rows.last()?,
                ))
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl RunCatalog for MemoryCheckpointStore {
    async fn list_runs(
        &self,
        filter: &RunFilter,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<RunPage, CanoError> {
        let mut page = NewestFirst::new(after, limit);
        for run in self.listed().into_iter().filter(|r| filter.matches(r)) {
            page.offer(run);
        }
        Ok(page.finish())
    }

    async fn count_runs(&self, filter: &RunFilter) -> Result<StatusCounts, CanoError> {
        let mut counts = StatusCounts::default();
        for run in self.listed() {
            if filter.matches_ignoring_status(&run) {
                counts.add(run.status, 1);
            }
        }
        Ok(counts)
    }

    async fn rows(&self, run: RunId) -> Result<Vec<StoredRow>, CanoError> {
        Ok(self
            .load(run)
            .await?
            .into_iter()
            .map(StoredRow::Read)
            .collect())
    }

    async fn graph(&self, workflow: &str, version: u32) -> Result<Option<String>, CanoError> {
        let state = self.lock();
        Ok(state
            .graphs
            .iter()
            .filter(|((w, v), _)| w == workflow && (version == 0 || *v == version))
            .max_by_key(|((_, v), _)| *v)
            .map(|(_, drawing)| drawing.clone()))
    }

    async fn record_action(&self, action: &ActionRecord) -> Result<(), CanoError> {
        self.lock().actions.push(action.clone());
        Ok(())
    }

    async fn actions(&self, run: RunId) -> Result<Vec<ActionRecord>, CanoError> {
        Ok(self
            .lock()
            .actions
            .iter()
            .filter(|a| a.run == run)
            .cloned()
            .collect())
    }
}

impl std::fmt::Debug for MemoryCheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        let runs = &state.runs;
        f.debug_struct("MemoryCheckpointStore")
            .field("runs", &runs.len())
            .field("rows", &runs.values().map(Vec::len).sum::<usize>())
            .finish()
    }
}

#[async_trait::async_trait]
impl CheckpointStore for MemoryCheckpointStore {
    async fn append(&self, row: CheckpointRow) -> Result<(), CanoError> {
        let mut state = self.lock();
        let runs = &mut state.runs;
        let last = runs
            .get(&row.run)
            .and_then(|rows| rows.last())
            .map(|r| r.seq);
        check_next_seq(row.run, last, row.seq)?;
        runs.entry(row.run).or_default().push(row);
        Ok(())
    }

    async fn load(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError> {
        Ok(self.lock().runs.get(&run).cloned().unwrap_or_default())
    }

    async fn truncate(&self, run: RunId, before: u64) -> Result<(), CanoError> {
        if let Some(rows) = self.lock().runs.get_mut(&run) {
            rows.retain(|r| r.seq >= before);
        }
        Ok(())
    }

    async fn clear(&self, run: RunId) -> Result<(), CanoError> {
        let mut state = self.lock();
        state.runs.remove(&run);
        state.inboxes.remove(&run);
        Ok(())
    }

    async fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError> {
        Ok(self
            .lock()
            .runs
            .values()
            .filter_map(|rows| rows.last())
            .filter(|last| !last.kind.ends_run())
            .map(RunSummary::from_last_row)
            .collect())
    }

    async fn record_graph(
        &self,
        workflow: &str,
        version: u32,
        drawing: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<(), CanoError> {
        self.lock()
            .graphs
            .insert((workflow.to_owned(), version), drawing());
        Ok(())
    }

    async fn prune(&self, older_than: SystemTime) -> Result<usize, CanoError> {
        let mut state = self.lock();
        let before = state.runs.len();
        state.runs.retain(|_, rows| {
            rows.last()
                .is_some_and(|last| last.written_at() >= older_than)
        });
        let State { runs, inboxes, .. } = &mut *state;
        inboxes.retain(|run, _| runs.contains_key(run));
        Ok(before - runs.len())
    }

    fn signals(&self) -> Option<&dyn SignalStore> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl SignalStore for MemoryCheckpointStore {
    async fn send(
        &self,
        run: RunId,
        name: &str,
        payload: Vec<u8>,
        key: Option<&str>,
    ) -> Result<Sent, CanoError> {
        let mut state = self.lock();
        let waiting = check_signal(run, state.runs.get(&run).and_then(|r| r.last()), name)?;
        let id = state.next_signal;
        let inbox = state.inboxes.entry(run).or_default();
        if let Some(&first) = key.and_then(|k| inbox.keys.get(k)) {
            return Ok(Sent::Duplicate { id: first });
        }
        if inbox.signals.len() >= INBOX_LIMIT {
            return Err(signal_limit_error(run, name));
        }
        if let Some(key) = key {
            inbox.keys.insert(key.to_owned(), id);
        }
        inbox.signals.insert(
            id,
            Signal {
                run,
                id,
                name: name.to_owned(),
                payload,
                key: key.map(str::to_owned),
                sent_at_ms: now_ms(),
            },
        );
        state.next_signal += 1;
        Ok(if waiting {
            Sent::Waiting { id }
        } else {
            Sent::Buffered { id }
        })
    }

    async fn first_for(&self, run: RunId, names: &[String]) -> Result<Option<Signal>, CanoError> {
        let state = self.lock();
        Ok(state.inboxes.get(&run).and_then(|inbox| {
            inbox
                .signals
                .values()
                .find(|s| names.contains(&s.name))
                .cloned()
        }))
    }

    async fn inbox(&self, run: RunId, limit: usize) -> Result<Vec<Signal>, CanoError> {
        let state = self.lock();
        Ok(state
            .inboxes
            .get(&run)
            .map(|inbox| inbox.signals.values().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn append_taking(&self, row: CheckpointRow, signal: u64) -> Result<(), CanoError> {
        let mut state = self.lock();
        let run = row.run;
        let last = state
            .runs
            .get(&run)
            .and_then(|rows| rows.last())
            .map(|r| r.seq);
        check_next_seq(run, last, row.seq)?;
        let taken = state
            .inboxes
            .get_mut(&run)
            .and_then(|inbox| inbox.signals.remove(&signal));
        if taken.is_none() {
            return Err(signal_taken_error(run, signal));
        }
        state.runs.entry(run).or_default().push(row);
        Ok(())
    }

    async fn discard(&self, run: RunId, signal: u64) -> Result<bool, CanoError> {
        let mut state = self.lock();
        Ok(state
            .inboxes
            .get_mut(&run)
            .is_some_and(|inbox| inbox.signals.remove(&signal).is_some()))
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
