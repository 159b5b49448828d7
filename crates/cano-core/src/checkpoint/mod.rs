//! Checkpoints: what makes a run survive a crash of its process.
//!
//! A workflow with a [`CheckpointStore`] (see `Workflow::with_checkpoint_store`) appends
//! one [`CheckpointRow`] to its run's log each time it enters a state, *before* that
//! state's handler runs. After a crash, `Workflow::resume_from(run_id)` reads the log,
//! re-enters the last state it names, restores the run's [`DurableStore`] and goes on;
//! the state being run at the crash runs again, so tasks from there on must tolerate
//! running twice.
//!
//! The store deals in rows, never in your types: states, durable values and stepped
//! cursors arrive already encoded by a [`Codec`] ([`Bincode`] by default). Backends
//! (in-memory and sled in `cano-recovery`, or your own) only keep rows in order.
//!
//! A workflow without a store pays nothing: no row is built, no state is encoded.

pub mod catalog;
mod codec;
mod durable;
mod journal;
mod progress;
mod replay;
mod signals;
pub mod simple;
mod state_tag;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::CanoError;
use crate::run_id::RunId;

pub use catalog::{
    ActionRecord, ListedRun, LiveStatus, NewestFirst, PageCursor, RunCatalog, RunFilter, RunPage,
    StatusCounts, StoredRow,
};
pub use codec::{Bincode, Codec};
pub use durable::DurableStore;
pub(crate) use durable::ENGINE_PREFIX;
pub(crate) use journal::{Claim, JournalConfig, Start};
pub use journal::{Journal, is_running_here, until_not_running_here};
pub use progress::TaskProgress;
pub use replay::{ResumePoint, replay};
pub use signals::{
    INBOX_LIMIT, Sent, Signal, SignalStore, WaitRecord, check_signal, signal_limit_error,
    signal_taken_error,
};
pub use state_tag::{StateTag, decode_state, encode_state};

/// What a row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RowKind {
    /// The run entered `state`; its handler is about to run.
    Enter,
    /// A stepped task in `state` finished a step; `cursor` is where the next starts.
    Step,
    /// The run was resumed in `state` (after a crash or a failure); its handler runs
    /// again. This row is also the claim: a second resumer's append of the same row
    /// number fails, so one run is never driven twice.
    Resume,
    /// The run ended in the exit state `state` (kept only when finished runs are
    /// retained; by default a finished run's rows are cleared).
    Finish,
    /// The run failed (or was cancelled, or timed out) in `state`; `message` says why.
    /// It can be resumed in that state once the cause is fixed (or, if it had begun
    /// rolling back, its rollback finished), with the data it entered the state with.
    /// Its data is empty (the failed state's partial writes are not kept), except
    /// when the state's own `Enter` row could not be written: then the row carries a
    /// snapshot of the data and stands in for that `Enter` row.
    Fail,
    /// A compensatable step finished: its output is saved in the row's data, and the
    /// run moves on to `state` (the next state, whose own `Enter` row this replaces).
    Completed,
    /// The run failed and is rolling back its completed steps: written when the
    /// rollback starts and after each compensation that succeeded (the row's data drops
    /// that step). `state` is where the run failed; `message` says why.
    Rollback,
    /// The run failed and every completed step was compensated (kept only when
    /// finished runs are retained; by default its rows are cleared). Nothing is left
    /// to resume.
    RolledBack,
    /// The run parked in the wait state `state`: its `cursor` holds the wait's
    /// [`WaitRecord::Parked`] (the signals it waits for and its deadline). Stands in for
    /// the state's `Enter` row. Nothing runs until a signal or the deadline wakes it.
    Wait,
    /// The wait state `state` received what it waited for: its `cursor` holds the
    /// [`WaitRecord`] (the signal taken from the inbox, or the deadline passing). A
    /// signal's row is appended in one step with the signal's removal from the inbox,
    /// so it is consumed exactly once; a resume from here hands the same signal to the
    /// wait's handler again.
    Received,
}

impl RowKind {
    /// Whether a log ending with this row is over: nothing to resume (`Finish` and
    /// `RolledBack`). Backends' [`CheckpointStore::unfinished`] leaves such runs out.
    pub fn ends_run(self) -> bool {
        matches!(self, Self::Finish | Self::RolledBack)
    }
}

/// Durable run data written since the previous row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataChange {
    /// Whether `entries` is the whole of the data (a snapshot) rather than a change.
    /// Rows before a snapshot are no longer needed and may be truncated.
    pub full: bool,
    /// Keys written (`Some(encoded value)`) or removed (`None`), in key order.
    pub entries: Vec<(String, Option<Vec<u8>>)>,
}

impl DataChange {
    /// Whether the row carries no data at all.
    pub fn is_empty(&self) -> bool {
        !self.full && self.entries.is_empty()
    }
}

/// One entry of a run's checkpoint log.
///
/// Rows of a run are numbered from 0 without gaps (`seq`). Everything a backend must
/// keep is here; how it lays the row out on disk is its own affair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRow {
    /// The run the row belongs to.
    pub run: RunId,
    /// The row's number within its run, from 0.
    pub seq: u64,
    /// What the row records.
    pub kind: RowKind,
    /// The workflow's id (`Workflow::with_workflow_id`), so a row of another workflow
    /// is never resumed by mistake.
    pub workflow: String,
    /// The workflow's version (`Workflow::with_workflow_version`).
    pub version: u32,
    /// The state, encoded by the workflow's codec (its serde encoding, not its `Debug`
    /// text, so payloads round-trip and a changed `Debug` impl breaks nothing).
    pub state: Vec<u8>,
    /// The state's `Debug` text, for people: listings and error messages. Never read
    /// back as a state.
    pub label: String,
    /// Durable run data written since the previous row.
    pub data: DataChange,
    /// A stepped task's cursor, encoded (`Step` rows, and `Resume` rows of a stepped state).
    pub cursor: Option<Vec<u8>>,
    /// Why the run failed (`Fail` and `Rollback` rows); empty otherwise.
    pub message: String,
    /// When the row was written, in milliseconds since the Unix epoch.
    pub written_at_ms: u64,
}

impl CheckpointRow {
    /// When the row was written.
    pub fn written_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.written_at_ms)
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where a run with rows stands, from its last row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RunStatus {
    /// Its process stopped while it ran or rolled back (its last row is `Enter`,
    /// `Step`, `Resume`, `Completed` or `Rollback`): resume it.
    Interrupted,
    /// It failed, was cancelled or timed out; it can be resumed once the cause is fixed
    /// (a run whose rollback failed then finishes its rollback).
    Failed,
    /// It reached an exit state (rows kept for audit).
    Finished,
    /// It failed and all its completed steps were compensated (rows kept for audit).
    RolledBack,
    /// Its last row cannot be read (damaged, or written by a newer build): it cannot
    /// be resumed as it is. Its summary says what its readable rows say of it, and
    /// its label carries the error; inspect it, resume it with the build that wrote
    /// it, or clear it.
    Unreadable,
    /// It is parked in a wait state (its last row is `Wait`): it goes on when a signal
    /// it waits for is sent or its deadline passes, not by a plain resume.
    Parked,
}

impl RunStatus {
    /// Where a run stands when its last row is of `kind`.
    pub fn after(kind: RowKind) -> Self {
        match kind {
            RowKind::Enter
            | RowKind::Step
            | RowKind::Resume
            | RowKind::Completed
            | RowKind::Rollback
            | RowKind::Received => Self::Interrupted,
            RowKind::Wait => Self::Parked,
            RowKind::Fail => Self::Failed,
            RowKind::Finish => Self::Finished,
            RowKind::RolledBack => Self::RolledBack,
        }
    }
}

/// A run in a store, described by its last row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// The run.
    pub run: RunId,
    /// The workflow that wrote it.
    pub workflow: String,
    /// Its workflow version.
    pub version: u32,
    /// Where it stands.
    pub status: RunStatus,
    /// The number of its last row.
    pub last_seq: u64,
    /// The `Debug` text of the state of its last row.
    pub label: String,
    /// When its last row was written, in milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}

impl RunSummary {
    /// The summary of a run whose last row is `last`.
    pub fn from_last_row(last: &CheckpointRow) -> Self {
        Self {
            run: last.run,
            workflow: last.workflow.clone(),
            version: last.version,
            status: RunStatus::after(last.kind),
            last_seq: last.seq,
            label: last.label.clone(),
            updated_at_ms: last.written_at_ms,
        }
    }
}

/// Keeps runs' checkpoint logs. Narrow on purpose: backends only store rows in order.
///
/// Implement it for your own storage with `#[async_trait::async_trait]`; `cano-recovery` has an
/// in-memory store and the embedded sled store. The contract, which the engine relies
/// on for its guarantees:
///
/// - [`append`](Self::append) succeeds only for the next row of a run: `seq` is 0 for
///   a run without rows, otherwise one past its last row. Anything else is a conflict
///   ([`CanoError::Store`], naming the run and the row): it is how two processes
///   resuming one run are told apart, so it must be checked atomically with the write.
/// - When `append` returns `Ok`, the row survives the crash the backend promises to
///   survive (document it: process crash, power loss).
/// - [`load`](Self::load) returns a run's rows in `seq` order, an empty list for an
///   unknown run, and an error naming the run and row for a row it cannot read.
#[async_trait::async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// Appends `row` to the log of `row.run` (see the trait docs for the rules).
    async fn append(&self, row: CheckpointRow) -> Result<(), CanoError>;

    /// Every row of `run`, in order; empty if it has none.
    async fn load(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError>;

    /// Deletes the rows of `run` numbered below `before` (compaction after a snapshot).
    async fn truncate(&self, run: RunId, before: u64) -> Result<(), CanoError>;

    /// Deletes every row of `run`.
    async fn clear(&self, run: RunId) -> Result<(), CanoError>;

    /// The runs whose last row does not end them (see [`RowKind::ends_run`]):
    /// interrupted and failed runs, and runs whose last row cannot be read
    /// ([`RunStatus::Unreadable`]): one bad run must not hide the others.
    async fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError>;

    /// Deletes every run (finished or not) whose last row was written before
    /// `older_than`; returns how many runs went.
    async fn prune(&self, older_than: SystemTime) -> Result<usize, CanoError>;

    /// The store's signal inbox, when it keeps one: what wait states need (see
    /// [`SignalStore`]). `None` by default: a workflow with a wait state refuses such a
    /// store when it is validated.
    fn signals(&self) -> Option<&dyn SignalStore> {
        None
    }

    /// Keeps the drawing of a workflow version's graph (Mermaid, which `drawing`
    /// makes: `Workflow::to_mermaid`), so tools can draw a run without the workflow's
    /// code. The engine calls it before the first run of a workflow writes to this
    /// store (once per workflow and store attachment, again after a failure); a later
    /// call for the same workflow and version replaces the drawing. By default nothing
    /// is kept (and the drawing is never made).
    async fn record_graph(
        &self,
        _workflow: &str,
        _version: u32,
        _drawing: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<(), CanoError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl<T: CheckpointStore + ?Sized> CheckpointStore for Arc<T> {
    async fn append(&self, row: CheckpointRow) -> Result<(), CanoError> {
        (**self).append(row).await
    }
    async fn load(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError> {
        (**self).load(run).await
    }
    async fn truncate(&self, run: RunId, before: u64) -> Result<(), CanoError> {
        (**self).truncate(run, before).await
    }
    async fn clear(&self, run: RunId) -> Result<(), CanoError> {
        (**self).clear(run).await
    }
    async fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError> {
        (**self).unfinished().await
    }
    async fn prune(&self, older_than: SystemTime) -> Result<usize, CanoError> {
        (**self).prune(older_than).await
    }
    fn signals(&self) -> Option<&dyn SignalStore> {
        (**self).signals()
    }
    async fn record_graph(
        &self,
        workflow: &str,
        version: u32,
        drawing: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<(), CanoError> {
        (**self).record_graph(workflow, version, drawing).await
    }
}

/// The append rule every backend enforces: `seq` must be 0 for a run without rows
/// (`last == None`), otherwise `last + 1`. The error names the run and the row and says
/// what the clash most likely means.
pub fn check_next_seq(run: RunId, last: Option<u64>, seq: u64) -> Result<(), CanoError> {
    let conflict = |message: String, hint: &'static str| {
        Err(CanoError::store(message).with_hint(hint).permanent())
    };
    match last {
        None if seq == 0 => Ok(()),
        Some(last) if seq == last + 1 => Ok(()),
        None => conflict(
            format!(
                "row {seq} of run {run} cannot be appended: the run has no rows (was it cleared or pruned?)"
            ),
            "the run's log is gone; start the run again rather than resuming it",
        ),
        Some(last) if seq == 0 => conflict(
            format!(
                "run {run} already has checkpoint rows (up to row {last}); a new run cannot reuse its id"
            ),
            "resume it with Workflow::resume_from, clear it, or start the new run under another id",
        ),
        Some(last) if seq <= last => conflict(
            format!(
                "row {seq} of run {run} already exists (the log is at row {last}): another process or task is driving this run"
            ),
            "resume a run from one place only; the other resumer goes on",
        ),
        Some(last) => conflict(
            format!("row {seq} of run {run} would leave a gap after row {last}"),
            "rows must be appended in order; this is a bug in the caller",
        ),
    }
}

/// What happens to a run's rows when it reaches an exit state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retention {
    /// Delete them: nothing is left to resume. The default.
    #[default]
    ClearFinished,
    /// Keep them, ending with a `Finish` row, for audit; remove them later with
    /// `CheckpointStore::prune` or `clear`.
    KeepFinished,
}
