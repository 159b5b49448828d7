//! [`Journal`]: one run's side of checkpointing. The engine writes its rows through it;
//! handlers that persist progress of their own (stepped tasks) do too.

#![allow(clippy::manual_async_fn)]

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use super::{CheckpointRow, CheckpointStore, DataChange, DurableStore, Retention, RowKind, now_ms};
use crate::error::CanoError;
use crate::run_id::RunId;

/// The durable key of a run's start time (ms since the Unix epoch).
const STARTED_KEY: &str = "\u{0}cano/run/started_ms";

/// What a journal knows of the run's position.
struct Progress {
    next_seq: u64,
    /// Rows written since the last full snapshot of the durable data.
    since_snapshot: u32,
    /// The current state, encoded, and its `Debug` text (for `Step` rows).
    state: Vec<u8>,
    label: String,
    /// A stepped state's cursor read back on resume, until its handler takes it.
    resumed_cursor: Option<Vec<u8>>,
    /// A `Resume` or `Completed` row already names the state entered next (`state`),
    /// so that state's `Enter` row is not written.
    skip_enter: bool,
    /// A write failed after its change was taken: the next row carries everything.
    force_full: bool,
    /// The `Enter` row of the current state could not be written, and nothing since
    /// stood in for it: the log still ends in the state before, with that state's
    /// writes unsaved. A `Fail` row then carries them (see [`Journal::fail`]).
    entry_unrecorded: bool,
    /// An append that failed: its row may have reached the store all the same (a
    /// flush or a reply lost after the write). Settled before the next row.
    unsure: Option<Attempt>,
}

/// A row whose append failed, as much of it as is needed to recognise it.
#[derive(Clone, Copy)]
struct Attempt {
    seq: u64,
    fingerprint: u64,
}

/// What a row's write must know of the journal as the row was built.
#[derive(Clone, Copy)]
struct Built {
    /// The current state's entry was unrecorded when the row was built: the row
    /// stands in for it if written, and leaves it unrecorded if not.
    entry_unrecorded: bool,
}

/// The checkpoint log of one run: the store, where the run stands, and its durable data.
///
/// Handlers reach it through `RunJournal::journal` on their `RunContext`; plain tasks
/// never need it.
///
/// # When an append fails
///
/// A failed append may still have written its row (sled inserted it and the flush
/// failed; PostgreSQL committed and the reply was lost). So the journal does not guess:
/// before its next row it reads the run's log back. If the log ends with the very row
/// it tried, that row counts as written; if it ends just before it, the row is written
/// again; anything else means another process wrote to the run, and every later append
/// of this journal fails with a [`CanoError::Store`] saying so. Until then, every row
/// carries the whole durable data (a snapshot), so no change is lost either way.
pub struct Journal {
    store: Arc<dyn CheckpointStore>,
    run: RunId,
    workflow: Arc<str>,
    version: u32,
    compact_after: u32,
    retention: Retention,
    timeout: Option<std::time::Duration>,
    durable: DurableStore,
    progress: Mutex<Progress>,
    /// Taken from numbering a row until it is appended, so rows reach the store in
    /// order even when several tasks of a run (split branches) save progress at once.
    turn: tokio::sync::Mutex<()>,
}

/// Where a journal starts: at a new run's first row, or after a log read back.
pub(crate) struct Start {
    pub(crate) next_seq: u64,
    pub(crate) durable: DurableStore,
    pub(crate) resumed_cursor: Option<Vec<u8>>,
}

impl Start {
    /// A run's first row, with empty durable data.
    pub(crate) fn fresh() -> Self {
        Self {
            next_seq: 0,
            durable: DurableStore::default(),
            resumed_cursor: None,
        }
    }
}

/// The settings a journal takes from its workflow.
pub(crate) struct JournalConfig {
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) workflow: Arc<str>,
    pub(crate) version: u32,
    pub(crate) compact_after: u32,
    pub(crate) retention: Retention,
    /// The workflow's timeout (`Workflow::with_timeout`), for waits to bound a park.
    pub(crate) timeout: Option<std::time::Duration>,
}

impl Built {
    fn of(progress: &Progress) -> Self {
        Self {
            entry_unrecorded: progress.entry_unrecorded,
        }
    }
}

impl Journal {
    pub(crate) fn new(config: &JournalConfig, run: RunId, start: Start) -> Self {
        Self {
            store: config.store.clone(),
            run,
            workflow: config.workflow.clone(),
            version: config.version,
            compact_after: config.compact_after.max(1),
            retention: config.retention,
            timeout: config.timeout,
            durable: start.durable,
            progress: Mutex::new(Progress {
                next_seq: start.next_seq,
                since_snapshot: 0,
                state: Vec::new(),
                label: String::new(),
                resumed_cursor: start.resumed_cursor,
                skip_enter: false,
                force_full: false,
                entry_unrecorded: false,
                unsure: None,
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The run this journal belongs to.
    pub fn run_id(&self) -> RunId {
        self.run
    }

    /// The workflow id its rows carry.
    pub fn workflow_id(&self) -> &str {
        &self.workflow
    }

    /// The run's durable data.
    pub fn durable(&self) -> &DurableStore {
        &self.durable
    }

    /// Takes the cursor a resumed stepped state had saved last, if this run was resumed
    /// in the middle of one. Only the first caller gets it.
    pub fn take_resumed_cursor(&self) -> Option<Vec<u8>> {
        self.lock().resumed_cursor.take()
    }

    /// Writes a `Step` row for the current state with `cursor` (encoded), and the
    /// durable data written since the previous row. Returns the row's number.
    pub async fn record_step(&self, cursor: Vec<u8>) -> Result<u64, CanoError> {
        self.append_with(|progress| {
            Some(self.row_here(progress, RowKind::Step, Some(cursor), String::new()))
        })
        .await
        .map(|seq| seq.unwrap_or_default())
    }

    /// Writes a `Step` row for the current state without a cursor: it carries the
    /// durable data written since the previous row (a task's saved progress, see
    /// [`TaskProgress`](super::TaskProgress)). Returns the row's number.
    pub async fn record_progress(&self) -> Result<u64, CanoError> {
        self.append_with(|progress| {
            Some(self.row_here(progress, RowKind::Step, None, String::new()))
        })
        .await
        .map(|seq| seq.unwrap_or_default())
    }

    /// Records when the run started (a fresh run, before its first row), so that the
    /// workflow's timeout still counts while the run is parked in a wait.
    pub(crate) fn mark_started(&self) {
        if self.timeout.is_some() {
            self.durable.put_engine(
                STARTED_KEY.to_owned(),
                super::now_ms().to_be_bytes().to_vec(),
            );
        }
    }

    /// When the workflow's timeout ends for this run, in milliseconds since the Unix
    /// epoch: its recorded start plus the timeout. `None` without a timeout (or
    /// `Duration::MAX`), or for a run started before starts were recorded.
    pub(crate) fn run_deadline_ms(&self) -> Option<u64> {
        let timeout = self.timeout.filter(|t| *t != std::time::Duration::MAX)?;
        let started = self.durable.get_engine(STARTED_KEY)?;
        let started = u64::from_be_bytes(<[u8; 8]>::try_from(&*started).ok()?);
        started.checked_add(u64::try_from(timeout.as_millis()).ok()?)
    }

    /// The workflow's timeout.
    pub(crate) fn timeout(&self) -> Option<std::time::Duration> {
        self.timeout
    }

    /// The store's signal inbox, when it keeps one.
    pub(crate) fn signals(&self) -> Option<&dyn super::SignalStore> {
        self.store.signals()
    }

    /// The run parked in the wait state `state`: write its `Wait` row with the wait's
    /// `record` ([`WaitRecord::Parked`](super::WaitRecord::Parked)). The row stands in
    /// for the state's `Enter` row, and is written again each time the run parks anew.
    pub(crate) async fn park(
        &self,
        state: Vec<u8>,
        label: String,
        record: Vec<u8>,
    ) -> Result<u64, CanoError> {
        self.append_with(move |progress| {
            progress.skip_enter = false;
            progress.state.clone_from(&state);
            progress.label.clone_from(&label);
            progress.resumed_cursor = None;
            Some(self.row(
                progress,
                RowKind::Wait,
                state,
                label,
                Some(record),
                String::new(),
            ))
        })
        .await
        .map(|seq| seq.unwrap_or_default())
    }

    /// The current wait state received what it waited for: write its `Received` row
    /// with `record`, taking signal `take` from the inbox in the same atomic step when
    /// a signal woke it.
    pub(crate) async fn received(
        &self,
        record: Vec<u8>,
        take: Option<u64>,
    ) -> Result<u64, CanoError> {
        let _turn = self.turn.lock().await;
        if self.lock().unsure.is_some() {
            Box::pin(self.settle()).await?;
        }
        let (built, row) = {
            let mut progress = self.lock();
            progress.resumed_cursor = None;
            let row = self.row_here(
                &mut progress,
                RowKind::Received,
                Some(record),
                String::new(),
            );
            (Built::of(&progress), row)
        };
        self.write_taking(row, built, take).await
    }

    /// The run failed (or was cancelled) in `state`, with its `Fail` row's result: for
    /// callers that must know whether it was written.
    pub(crate) async fn fail_recorded(
        &self,
        state: Vec<u8>,
        label: String,
        error: &CanoError,
    ) -> Result<u64, CanoError> {
        self.append_with(|progress| {
            // A snapshot exactly when this row stands in for the state's entry.
            progress.force_full = progress.entry_unrecorded && progress.state == state;
            Some(self.row(
                progress,
                RowKind::Fail,
                state,
                label,
                None,
                error.to_string(),
            ))
        })
        .await
        .map(|seq| seq.unwrap_or_default())
    }

    /// The `Debug` text of the state the run is in, as its rows name it.
    pub fn current_label(&self) -> String {
        self.lock().label.clone()
    }

    /// The run entered a state: write its `Enter` row, unless the resume already did.
    /// Returns the row's number, or `None` when no row was needed.
    pub(crate) fn enter(
        &self,
        state: Vec<u8>,
        label: String,
    ) -> impl Future<Output = Result<Option<u64>, CanoError>> + Send + '_ {
        // Not an `async fn`: its arguments would be kept twice (see `append_with`).
        self.append_with(move |progress| {
            // Only the very state the previous row named is skipped: a state that writes
            // no row (a router) may come in between.
            if std::mem::take(&mut progress.skip_enter) && progress.state == state {
                return None;
            }
            progress.state.clone_from(&state);
            progress.label.clone_from(&label);
            // A state entered anew has no saved cursor.
            progress.resumed_cursor = None;
            Some(self.row(progress, RowKind::Enter, state, label, None, String::new()))
        })
    }

    /// The run is resumed in `state`: write the `Resume` row that claims it. The
    /// state's own `Enter` is then skipped (its row exists).
    pub(crate) async fn resume(&self, state: Vec<u8>, label: String) -> Result<u64, CanoError> {
        self.append_with(|progress| {
            progress.state.clone_from(&state);
            progress.label.clone_from(&label);
            progress.skip_enter = true;
            let cursor = progress.resumed_cursor.clone();
            Some(self.row(
                progress,
                RowKind::Resume,
                state,
                label,
                cursor,
                String::new(),
            ))
        })
        .await
        .map(|seq| seq.unwrap_or_default())
    }

    /// A compensatable step finished and the run moves to `next` (encoded, with its
    /// `Debug` text): write the `Completed` row, which carries the step's saved output in
    /// its data and stands in for `next`'s `Enter` row. (If it cannot be written, the
    /// run fails in the step's state, and its `Fail` row sends a resume back to the
    /// step, whose output and writes were not saved.)
    pub(crate) async fn completed(&self, next: Vec<u8>, label: String) -> Result<u64, CanoError> {
        self.append_with(|progress| {
            progress.state.clone_from(&next);
            progress.label.clone_from(&label);
            progress.skip_enter = true;
            progress.resumed_cursor = None;
            Some(self.row(
                progress,
                RowKind::Completed,
                next,
                label,
                None,
                String::new(),
            ))
        })
        .await
        .map(|seq| seq.unwrap_or_default())
    }

    /// The run is rolling back after failing with `message`: write a `Rollback` row for
    /// the state it failed in, with the compensation stack's changes in its data.
    pub(crate) async fn rollback(&self, message: &str) -> Result<u64, CanoError> {
        self.append_with(|progress| {
            Some(self.row_here(progress, RowKind::Rollback, None, message.to_owned()))
        })
        .await
        .map(|seq| seq.unwrap_or_default())
    }

    /// Every completed step of the failed run was compensated: clear its rows, or close
    /// them with `RolledBack`. `Ok(Some(error))`: the clear failed with `error`, and
    /// the log was closed instead.
    pub(crate) async fn rolled_back(&self, message: &str) -> Result<Option<CanoError>, CanoError> {
        self.close("was rolled back", |progress| {
            self.row_here(progress, RowKind::RolledBack, None, message.to_owned())
        })
        .await
    }

    /// The run reached the exit state: clear its rows, or close them with `Finish`.
    /// `Ok(Some(error))`: the clear failed with `error`, and the log was closed instead.
    pub(crate) async fn finish(
        &self,
        state: Vec<u8>,
        label: String,
    ) -> Result<Option<CanoError>, CanoError> {
        let ended = format!("finished in {label}");
        self.close(&ended, |progress| {
            self.row(progress, RowKind::Finish, state, label, None, String::new())
        })
        .await
    }

    /// Ends a run's log as its workflow's retention says: cleared, or closed with the
    /// row `last` builds. A log that cannot be cleared is closed with that row instead,
    /// so that a resume knows the run is over; only when neither works is the run's
    /// last state left to run again, and the error says so.
    async fn close(
        &self,
        ended: &str,
        last: impl FnOnce(&mut Progress) -> CheckpointRow,
    ) -> Result<Option<CanoError>, CanoError> {
        let _turn = self.turn.lock().await;
        let cleared = match self.retention {
            Retention::ClearFinished => match self.store.clear(self.run).await {
                Ok(()) => return Ok(None),
                Err(e) => Some(e),
            },
            Retention::KeepFinished => None,
        };
        let closed = match self.settle().await {
            Ok(_) => {
                let (built, row) = {
                    let mut progress = self.lock();
                    (Built::of(&progress), last(&mut progress))
                };
                self.write(row, built).await.map(drop)
            }
            Err(e) => Err(e),
        };
        let Err(not_closed) = closed else {
            return Ok(cleared);
        };
        // The closing row may have been written all the same.
        if let Ok(true) = self.settle().await {
            return Ok(cleared);
        }
        // A clear that failed may have gone through all the same.
        if cleared.is_some()
            && matches!(self.store.load(self.run).await, Ok(rows) if rows.is_empty())
        {
            return Ok(None);
        }
        let again = self.lock().label.clone();
        let mut error = CanoError::store(format!(
            "run {} {ended}, but its checkpoint log could not be {}: {}",
            self.run,
            if cleared.is_some() { "cleared or closed" } else { "closed" },
            not_closed.message()
        ))
        .with_hint(format!(
            "the log still ends in state {again}, so a resume would run that state again; once the store works, clear the run (CheckpointStore::clear) instead of resuming it"
        ));
        error = match cleared {
            Some(e) => error.with_source(e),
            None => error.with_source(not_closed),
        };
        Err(error)
    }

    /// The run failed in `state`: record why, so it can be resumed there later. A store
    /// that fails again here is ignored; the run's own error is what matters.
    ///
    /// The state's partial writes are not saved: a resume re-runs it from the data it
    /// started with, as after a crash. If the state's own `Enter` row could not be
    /// written (its task never ran), this row stands in for it and carries the writes
    /// of the states before, which no row holds yet.
    pub(crate) async fn fail(&self, state: Vec<u8>, label: String, error: &CanoError) {
        let _ = self.fail_recorded(state, label, error).await;
    }

    /// Numbers, builds and appends one row, in turn with the run's other rows; `build`
    /// may decide no row is needed. Returns the row's number.
    // (`fn -> impl Future` over an `async move` block: an `async fn` would keep its
    // arguments twice in its state, rust-lang/rust#62958, and every row's future
    // carries this one.)
    fn append_with<'a>(
        &'a self,
        build: impl FnOnce(&mut Progress) -> Option<CheckpointRow> + Send + 'a,
    ) -> impl Future<Output = Result<Option<u64>, CanoError>> + Send + 'a {
        async move {
            let _turn = self.turn.lock().await;
            if self.lock().unsure.is_some() {
                // Boxed: only after a failed append, and every row's future would
                // otherwise carry its room.
                Box::pin(self.settle()).await?;
            }
            let (built, row) = {
                let mut progress = self.lock();
                (Built::of(&progress), build(&mut progress))
            };
            match row {
                Some(row) => self.write(row, built).await.map(Some),
                None => Ok(None),
            }
        }
    }

    /// After a failed append: finds out from the log whether its row was written (see
    /// the type's docs), and says so. Called with the turn held.
    async fn settle(&self) -> Result<bool, CanoError> {
        let Some(attempt) = self.lock().unsure else {
            return Ok(false);
        };
        let rows = self.store.load(self.run).await.map_err(|e| {
            CanoError::store(format!(
                "row {} of run {} failed to append, and the log could not be read back to see whether it was written: {}",
                attempt.seq,
                self.run,
                e.message()
            ))
            .with_source(e)
            .with_hint(format!(
                "fix the store, then continue with Workflow::resume_from({:?})",
                self.run
            ))
        })?;
        let landed = match rows.last() {
            Some(last) if last.seq == attempt.seq && fingerprint(last) == attempt.fingerprint => {
                true
            }
            Some(last) if last.seq.checked_add(1) == Some(attempt.seq) => false,
            None if attempt.seq == 0 => false,
            found => {
                let found = match found {
                    Some(last) => format!(
                        "ends with row {} ({:?} {})",
                        last.seq, last.kind, last.label
                    ),
                    None => "is empty".to_owned(),
                };
                return Err(CanoError::store(format!(
                    "row {} of run {} failed to append, and the log now {found}: another process wrote to this run",
                    attempt.seq, self.run
                ))
                .with_hint("drive a run from one place only; this one stops and the other goes on")
                .permanent());
            }
        };
        let mut progress = self.lock();
        progress.unsure = None;
        if landed {
            progress.next_seq = attempt.seq + 1;
            progress.entry_unrecorded = false;
        }
        Ok(landed)
    }

    /// A row for the state the run is in (as its last `Enter`, `Resume` or `Completed`
    /// row named it).
    fn row_here(
        &self,
        progress: &mut Progress,
        kind: RowKind,
        cursor: Option<Vec<u8>>,
        message: String,
    ) -> CheckpointRow {
        let (state, label) = (progress.state.clone(), progress.label.clone());
        self.row(progress, kind, state, label, cursor, message)
    }

    fn row(
        &self,
        progress: &mut Progress,
        kind: RowKind,
        state: Vec<u8>,
        label: String,
        cursor: Option<Vec<u8>>,
        message: String,
    ) -> CheckpointRow {
        let seq = progress.next_seq;
        progress.next_seq += 1;
        // Written, this row records the entry (or stands in for it); not written,
        // `write` puts the flag back from what `Built` kept.
        let entry_unrecorded = std::mem::take(&mut progress.entry_unrecorded);
        // A long (or looping) run's log is compacted: every so often an `Enter` row
        // carries all the data, and the rows before it are dropped. A `Fail` row
        // carries data only when it stands in for its state's entry (see `fail`): a
        // failed state's partial writes are not saved.
        let full = if kind == RowKind::Fail {
            std::mem::take(&mut progress.force_full) && entry_unrecorded
        } else {
            seq == 0
                || std::mem::take(&mut progress.force_full)
                || (matches!(kind, RowKind::Enter | RowKind::Step | RowKind::Completed)
                    && progress.since_snapshot >= self.compact_after)
        };
        progress.since_snapshot = if full { 0 } else { progress.since_snapshot + 1 };
        let data = if kind == RowKind::Fail && !full {
            DataChange::default()
        } else {
            self.durable.take_change(full)
        };
        CheckpointRow {
            run: self.run,
            seq,
            kind,
            workflow: self.workflow.to_string(),
            version: self.version,
            state,
            label,
            data,
            cursor,
            message,
            written_at_ms: now_ms(),
        }
    }

    /// Appends `row`; called with the turn held and the log settled.
    fn write(
        &self,
        row: CheckpointRow,
        built: Built,
    ) -> impl Future<Output = Result<u64, CanoError>> + Send + '_ {
        self.write_taking(row, built, None)
    }

    /// Appends `row`, and takes signal `take` from the inbox in the same step when
    /// given; called with the turn held and the log settled.
    fn write_taking(
        &self,
        row: CheckpointRow,
        built: Built,
        take: Option<u64>,
    ) -> impl Future<Output = Result<u64, CanoError>> + Send + '_ {
        async move {
            let (seq, kind, full) = (row.seq, row.kind, row.data.full);
            let fingerprint = fingerprint(&row);
            let label = row.label.clone();
            let appended = match (take, self.store.signals()) {
                (None, _) => self.store.append(row).await,
                (Some(signal), Some(signals)) => signals.append_taking(row, signal).await,
                (Some(_), None) => Err(CanoError::configuration(
                    "this checkpoint store keeps no signal inbox",
                )),
            };
            if let Err(e) = appended {
                // The change taken for this row may not be saved: carry all data next time.
                // Whether the row itself was written is settled before the next one.
                let mut progress = self.lock();
                progress.force_full = true;
                if progress.next_seq == seq + 1 {
                    progress.next_seq = seq;
                }
                progress.entry_unrecorded = kind == RowKind::Enter || built.entry_unrecorded;
                progress.unsure = Some(Attempt { seq, fingerprint });
                drop(progress);
                return Err(CanoError::store(format!(
                "could not write checkpoint row {seq} ({kind:?} {label}) of run {}: {}",
                self.run,
                e.message()
            ))
            .with_source(e)
            .with_hint(format!(
                "rows before it are safe; fix the store, then continue with Workflow::resume_from({:?})",
                self.run
            )));
            }
            if full && seq > 0 {
                // Compaction only drops rows the snapshot made redundant: if it fails, the
                // log is longer, not wrong, and the next snapshot drops them.
                let _ = self.store.truncate(self.run, seq).await;
            }
            Ok(seq)
        }
    }
}

/// What identifies a row this journal wrote, to recognise it when the log is read
/// back: its number, kind, time, state and cursor, and the shape of its data. Another
/// writer's row at the same number differs in one of them (a resumer's is a `Resume`
/// row, of its own millisecond). Cheap: it is taken for every row.
fn fingerprint(row: &CheckpointRow) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = crate::hash::FastHasher::default();
    (row.seq, row.kind, row.written_at_ms).hash(&mut hasher);
    (row.data.full, row.data.entries.len()).hash(&mut hasher);
    (&row.state, &row.cursor).hash(&mut hasher);
    hasher.finish()
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("run", &self.run)
            .field("workflow", &self.workflow)
            .field("version", &self.version)
            .finish()
    }
}

/// The checkpointed runs this process is driving, by workflow and run id. A second
/// driver of the same run in the same process is refused at once; across processes,
/// the store's append rule (and sled's directory lock, or a lease) does the same.
static ACTIVE: LazyLock<Mutex<HashSet<RunKey>>> = LazyLock::new(Default::default);

/// A run as this process knows it: its workflow's id and its run id.
type RunKey = (Arc<str>, RunId);

/// This process's claim on driving a run; released when dropped.
pub(crate) struct Claim {
    workflow: Arc<str>,
    run: RunId,
}

impl Claim {
    pub(crate) fn take(workflow: &Arc<str>, run: RunId) -> Result<Self, CanoError> {
        let mut active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
        if !active.insert((workflow.clone(), run)) {
            return Err(CanoError::workflow(format!(
                "run {run} of workflow {workflow:?} is already running in this process"
            ))
            .with_hint("wait for it to end (its handle or future) instead of starting or resuming it a second time"));
        }
        Ok(Self {
            workflow: workflow.clone(),
            run,
        })
    }
}

/// Whether run `run` of the workflow with id `workflow` is being driven (started or
/// resumed, and not yet ended) somewhere in this process. A second start or resume of
/// it here would be refused; a worker that took over the run's lease from a stalled
/// driver in this process waits for this to turn false before resuming it.
pub fn is_running_here(workflow: &str, run: RunId) -> bool {
    let active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
    active.contains(&(Arc::<str>::from(workflow), run))
}

/// Woken whenever a claim ends, for those waiting on [`until_not_running_here`].
static ENDED: LazyLock<tokio::sync::Notify> = LazyLock::new(tokio::sync::Notify::new);

/// Completes once run `run` of the workflow with id `workflow` is not driven in this
/// process (at once if it is not): a worker that took over a run's lease from a stalled
/// driver of its own process awaits this before resuming the run.
pub async fn until_not_running_here(workflow: &str, run: RunId) {
    loop {
        let ended = ENDED.notified();
        tokio::pin!(ended);
        // Registered before the check, so an end in between is not missed.
        ended.as_mut().enable();
        if !is_running_here(workflow, run) {
            return;
        }
        ended.await;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
        active.remove(&(self.workflow.clone(), self.run));
        drop(active);
        ENDED.notify_waiters();
    }
}
