//! The simple checkpoint store: three methods over rows keyed by a workflow id, as
//! cano 0.13 defined it, and the adapter that lets the engine write to one.
//!
//! A workflow given a simple store (`Workflow::with_checkpoint_store(Arc::new(store))`)
//! runs as cano 0.13's did: [`with_workflow_id`](crate::Workflow::with_workflow_id)
//! names the run, every state entered is one row labelled with the state's `Debug`
//! text, and `resume_from("that id")` re-enters the last state. The engine's own
//! rows (durable data, stepped cursors, compensation records, failures) travel in
//! `output_blob`, so everything a full [`CheckpointStore`](super::CheckpointStore)
//! gives a resumed run (its data, its compensations, its cursor) a simple store
//! gives too. What it cannot give: listing unfinished runs (it has no listing),
//! compaction (rows are kept until the run ends and its log is cleared), and
//! fencing across processes beyond what its `append` refuses: a store that rejects
//! a duplicate sequence, as the contract below asks, keeps two resumers of one run
//! apart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::codec::{Bincode, Codec};
use super::{CheckpointStore as FullStore, DataChange, RunSummary, check_next_seq};
use crate::error::CanoError;
use crate::run_id::RunId;

/// Why a [`CheckpointRow`] was written.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum RowKind {
    /// The run entered a state (the common case).
    #[default]
    StateEntry,
    /// A compensatable step finished, or a rollback moved on; `output_blob` holds the
    /// record.
    CompensationCompletion,
    /// A stepped task finished a step; `output_blob` holds the cursor.
    StepCursor,
}

/// One row of a run's log in a simple store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRow {
    /// The row's position in its run, from 0, without gaps.
    pub sequence: u64,
    /// The `Debug` text of the state the row is about.
    pub state: String,
    /// The task that wrote it (empty where no single task did).
    pub task_id: String,
    /// Opaque bytes the engine needs back on resume; see [`kind`](Self::kind).
    pub output_blob: Option<Vec<u8>>,
    /// Why the row was written.
    pub kind: RowKind,
}

impl CheckpointRow {
    /// A state-entry row without a blob.
    pub fn new(sequence: u64, state: impl Into<String>, task_id: impl Into<String>) -> Self {
        Self {
            sequence,
            state: state.into(),
            task_id: task_id.into(),
            output_blob: None,
            kind: RowKind::StateEntry,
        }
    }

    /// The row with `output_blob` set, marked [`RowKind::CompensationCompletion`].
    pub fn with_output(mut self, output_blob: Vec<u8>) -> Self {
        self.output_blob = Some(output_blob);
        self.kind = RowKind::CompensationCompletion;
        self
    }

    /// The row with a stepped task's cursor, marked [`RowKind::StepCursor`].
    pub fn with_cursor(mut self, cursor: Vec<u8>) -> Self {
        self.output_blob = Some(cursor);
        self.kind = RowKind::StepCursor;
        self
    }
}

/// An append-only log of rows per workflow id (cano 0.13's trait). Write impls with
/// `#[checkpoint_store]` (through the `cano` facade) or `#[async_trait::async_trait]`.
///
/// The contract:
/// - [`append`](Self::append) keeps `row` durably, and refuses (with an error) a row
///   whose `sequence` the id already has: that is how two processes resuming one run
///   are told apart.
/// - [`load_run`](Self::load_run) returns the id's rows in ascending `sequence`, or
///   none for an unknown id.
/// - [`clear`](Self::clear) removes the id's rows and nothing else; an unknown id is
///   not an error.
#[async_trait::async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// Appends `row` to the log of `workflow_id`.
    async fn append(&self, workflow_id: &str, row: CheckpointRow) -> Result<(), CanoError>;

    /// Every row of `workflow_id`, in ascending `sequence`.
    async fn load_run(&self, workflow_id: &str) -> Result<Vec<CheckpointRow>, CanoError>;

    /// Removes every row of `workflow_id`.
    async fn clear(&self, workflow_id: &str) -> Result<(), CanoError>;
}

#[async_trait::async_trait]
impl<T: CheckpointStore + ?Sized> CheckpointStore for Arc<T> {
    async fn append(&self, workflow_id: &str, row: CheckpointRow) -> Result<(), CanoError> {
        (**self).append(workflow_id, row).await
    }
    async fn load_run(&self, workflow_id: &str) -> Result<Vec<CheckpointRow>, CanoError> {
        (**self).load_run(workflow_id).await
    }
    async fn clear(&self, workflow_id: &str) -> Result<(), CanoError> {
        (**self).clear(workflow_id).await
    }
}

/// The run id the engine gives the run a simple store keys by `workflow_id`
/// ([`RunId::named`]): the same in every process, so a resume anywhere finds the run.
pub fn run_id_for(workflow_id: &str) -> RunId {
    RunId::named(workflow_id)
}

/// Marks a row rebuilt from a plain state-entry row: its workflow and version were
/// not stored, and resume fills them in from the workflow resuming it.
pub(crate) const UNRECORDED_VERSION: u32 = 0;

/// A simple store seen as a full one: the engine's rows go in as 0.13 rows keyed by
/// the run's workflow id.
pub(crate) struct SimpleAdapter {
    inner: Arc<dyn CheckpointStore>,
    /// Each run's workflow id, and the last sequence appended in this process.
    runs: Mutex<HashMap<RunId, Key>>,
}

struct Key {
    id: Arc<str>,
    last: Option<u64>,
}

impl SimpleAdapter {
    pub(crate) fn new(inner: Arc<dyn CheckpointStore>) -> Self {
        Self {
            inner,
            runs: Mutex::new(HashMap::new()),
        }
    }

    /// Records that `run` is the run keyed by `workflow_id`.
    pub(crate) fn bind(&self, run: RunId, workflow_id: &str) {
        self.lock().entry(run).or_insert_with(|| Key {
            id: workflow_id.into(),
            last: None,
        });
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RunId, Key>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, run: RunId) -> Result<Arc<str>, CanoError> {
        self.lock().get(&run).map(|k| k.id.clone()).ok_or_else(|| {
            CanoError::configuration(format!(
                "run {run} is not known to this simple checkpoint store: it keys runs by workflow id"
            ))
            .with_hint("resume it by its workflow id: Workflow::resume_from(\"the id\")")
        })
    }

    /// Whether the engine's `row` is a plain state entry a 0.13 row says all of.
    fn is_plain(row: &super::CheckpointRow) -> bool {
        // A run's first row snapshots its (empty) data: the same as no change there.
        let no_data = row.data.is_empty() || (row.seq == 0 && row.data.entries.is_empty());
        row.kind == super::RowKind::Enter
            && no_data
            && row.cursor.is_none()
            && row.message.is_empty()
    }

    fn to_simple(row: &super::CheckpointRow) -> Result<CheckpointRow, CanoError> {
        let simple = CheckpointRow::new(row.seq, row.label.clone(), "");
        if Self::is_plain(row) {
            return Ok(simple);
        }
        let blob = Bincode::encode(row)?;
        Ok(match row.kind {
            super::RowKind::Step => simple.with_cursor(blob),
            super::RowKind::Completed | super::RowKind::Rollback | super::RowKind::RolledBack => {
                simple.with_output(blob)
            }
            _ => CheckpointRow {
                output_blob: Some(blob),
                ..simple
            },
        })
    }

    fn from_simple(
        run: RunId,
        id: &str,
        row: CheckpointRow,
    ) -> Result<super::CheckpointRow, CanoError> {
        match row.output_blob {
            Some(blob) => {
                let mut full: super::CheckpointRow = Bincode::decode(&blob).map_err(|e| {
                    CanoError::store(format!(
                        "row {} of {id:?} in the simple checkpoint store does not decode: {}",
                        row.sequence,
                        e.message()
                    ))
                    .with_source(e)
                    .with_hint("the row was written by another program or build; resume it with the one that wrote it")
                    .permanent()
                })?;
                full.run = run;
                Ok(full)
            }
            None => Ok(super::CheckpointRow {
                run,
                seq: row.sequence,
                kind: super::RowKind::Enter,
                workflow: String::new(),
                version: UNRECORDED_VERSION,
                state: row.state.clone().into_bytes(),
                label: row.state,
                data: DataChange {
                    full: row.sequence == 0,
                    entries: Vec::new(),
                },
                cursor: None,
                message: String::new(),
                written_at_ms: 0,
            }),
        }
    }
}

#[async_trait::async_trait]
impl FullStore for SimpleAdapter {
    async fn append(&self, row: super::CheckpointRow) -> Result<(), CanoError> {
        let run = row.run;
        let id = self.key(run)?;
        let known = self.lock().get(&run).and_then(|k| k.last);
        let last = match known {
            Some(last) => Some(last),
            None => self
                .inner
                .load_run(&id)
                .await?
                .iter()
                .map(|r| r.sequence)
                .max(),
        };
        check_next_seq(run, last, row.seq)?;
        let seq = row.seq;
        self.inner.append(&id, Self::to_simple(&row)?).await?;
        if let Some(key) = self.lock().get_mut(&run) {
            key.last = Some(seq);
        }
        Ok(())
    }

    async fn load(&self, run: RunId) -> Result<Vec<super::CheckpointRow>, CanoError> {
        let id = self.key(run)?;
        let mut rows = self.inner.load_run(&id).await?;
        rows.sort_by_key(|r| r.sequence);
        if let Some(key) = self.lock().get_mut(&run) {
            key.last = rows.last().map(|r| r.sequence);
        }
        rows.into_iter()
            .map(|row| Self::from_simple(run, &id, row))
            .collect()
    }

    /// A simple store cannot drop part of a log: rows stay until the run's log is
    /// cleared.
    async fn truncate(&self, _run: RunId, _before: u64) -> Result<(), CanoError> {
        Ok(())
    }

    async fn clear(&self, run: RunId) -> Result<(), CanoError> {
        let id = self.key(run)?;
        self.inner.clear(&id).await?;
        if let Some(key) = self.lock().get_mut(&run) {
            key.last = None;
        }
        Ok(())
    }

    /// A simple store has no listing of its runs.
    async fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError> {
        Ok(Vec::new())
    }

    /// A simple store has no listing of its runs, so nothing is pruned.
    async fn prune(&self, _older_than: SystemTime) -> Result<usize, CanoError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Rows(Mutex<HashMap<String, Vec<CheckpointRow>>>);

    #[async_trait::async_trait]
    impl CheckpointStore for Rows {
        async fn append(&self, id: &str, row: CheckpointRow) -> Result<(), CanoError> {
            let mut runs = self.0.lock().unwrap();
            let rows = runs.entry(id.to_owned()).or_default();
            if rows.iter().any(|r| r.sequence == row.sequence) {
                return Err(CanoError::checkpoint_store("duplicate"));
            }
            rows.push(row);
            Ok(())
        }
        async fn load_run(&self, id: &str) -> Result<Vec<CheckpointRow>, CanoError> {
            Ok(self.0.lock().unwrap().get(id).cloned().unwrap_or_default())
        }
        async fn clear(&self, id: &str) -> Result<(), CanoError> {
            self.0.lock().unwrap().remove(id);
            Ok(())
        }
    }

    fn row(run: RunId, seq: u64, kind: super::super::RowKind) -> super::super::CheckpointRow {
        super::super::CheckpointRow {
            run,
            seq,
            kind,
            workflow: "orders".into(),
            version: 3,
            state: b"Ship".to_vec(),
            label: "Ship".into(),
            data: DataChange::default(),
            cursor: None,
            message: String::new(),
            written_at_ms: 7,
        }
    }

    #[tokio::test]
    async fn plain_rows_read_as_0_13_rows_and_the_rest_travel_whole() {
        let rows = Arc::new(Rows::default());
        let adapter = SimpleAdapter::new(rows.clone());
        let run = run_id_for("order-42");
        adapter.bind(run, "order-42");
        adapter
            .append(row(run, 0, super::super::RowKind::Enter))
            .await
            .unwrap();
        let mut failed = row(run, 1, super::super::RowKind::Fail);
        failed.message = "the carrier is down".into();
        adapter.append(failed.clone()).await.unwrap();
        let mut step = row(run, 2, super::super::RowKind::Step);
        step.cursor = Some(vec![1, 2]);
        adapter.append(step.clone()).await.unwrap();

        let stored = rows.load_run("order-42").await.unwrap();
        assert_eq!(stored[0], CheckpointRow::new(0, "Ship", ""));
        assert_eq!(stored[1].kind, RowKind::StateEntry);
        assert!(stored[1].output_blob.is_some());
        assert_eq!(stored[2].kind, RowKind::StepCursor);

        let back = adapter.load(run).await.unwrap();
        assert_eq!(back[0].version, UNRECORDED_VERSION);
        assert_eq!(
            (back[0].label.as_str(), back[0].state.as_slice()),
            ("Ship", &b"Ship"[..])
        );
        assert_eq!(back[1], failed);
        assert_eq!(back[2], step);

        // The next row must follow the last; a gap or a repeat is refused before the
        // store sees it.
        assert!(
            adapter
                .append(row(run, 2, super::super::RowKind::Enter))
                .await
                .is_err()
        );
        assert!(
            adapter
                .append(row(run, 9, super::super::RowKind::Enter))
                .await
                .is_err()
        );
        assert_eq!(rows.load_run("order-42").await.unwrap().len(), 3);

        adapter.clear(run).await.unwrap();
        assert!(rows.load_run("order-42").await.unwrap().is_empty());
        // A run the adapter was never told about is a clear error, not someone else's rows.
        let stranger = adapter.load(RunId::from(5)).await.unwrap_err();
        assert!(stranger.to_string().contains("workflow id"), "{stranger}");
    }

    #[test]
    fn the_run_id_of_a_workflow_id_is_the_same_everywhere() {
        assert_eq!(run_id_for("order-42"), run_id_for("order-42"));
        assert_ne!(run_id_for("order-42"), run_id_for("order-43"));
        assert_eq!(run_id_for("").as_u64(), 0xcbf2_9ce4_8422_2325);
    }
}
