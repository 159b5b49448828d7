//! Reading a run's log back: checks every row and folds them into a [`ResumePoint`].

use super::{CheckpointRow, DurableStore, RowKind};
use crate::error::CanoError;
use crate::run_id::RunId;

/// Where a run's log says it stands: the state to re-enter and what it had saved.
#[derive(Debug)]
pub struct ResumePoint {
    /// The state of the last row, encoded.
    pub state: Vec<u8>,
    /// Its `Debug` text as written.
    pub label: String,
    /// The number of the last row.
    pub last_seq: u64,
    /// What the last row records.
    pub last_kind: RowKind,
    /// The last row's message (why the run failed or was rolled back), if any.
    pub last_message: String,
    /// The cursor of a stepped state, when the run stopped inside one.
    pub cursor: Option<Vec<u8>>,
    /// The durable data as of the last row.
    pub durable: DurableStore,
    /// How many times the run was resumed before.
    pub resumes: u32,
}

/// Checks `rows` (a run's whole log, in order) and folds them. Every finding names the
/// run and the row.
pub fn replay(
    run: RunId,
    rows: &[CheckpointRow],
    workflow: &str,
    version: u32,
) -> Result<ResumePoint, CanoError> {
    let Some(first) = rows.first() else {
        return Err(CanoError::store(format!("run {run} has no checkpoint rows"))
            .with_hint("it finished (finished runs are cleared), was pruned, or never ran with this store; list resumable runs with Workflow::unfinished_runs")
            .permanent());
    };
    if first.seq != 0 && !first.data.full {
        return Err(CanoError::store(format!(
            "the checkpoint log of run {run} starts at row {} without a snapshot: rows before it are missing",
            first.seq
        ))
        .with_hint("the store lost rows; the run cannot be resumed safely, so restart it under a new run id")
        .permanent());
    }
    let durable = DurableStore::default();
    let mut cursor = None;
    let mut resumes = 0;
    let mut previous: Option<u64> = None;
    for row in rows {
        if row.run != run {
            return Err(CanoError::store(format!(
                "row {} read for run {run} belongs to run {}: the store is corrupt",
                row.seq, row.run
            ))
            .permanent());
        }
        if let Some(prev) = previous
            && row.seq != prev + 1
        {
            return Err(CanoError::store(format!(
                "row {} of run {run} follows row {prev}: rows are missing or duplicated",
                row.seq
            ))
            .with_hint("the store lost or repeated rows; the run cannot be resumed safely")
            .permanent());
        }
        previous = Some(row.seq);
        if row.workflow != workflow {
            return Err(CanoError::configuration(format!(
                "row {} of run {run} was written by workflow {:?}, not by {workflow:?}",
                row.seq, row.workflow
            ))
            .with_hint(
                "resume it with the workflow that wrote it (see Workflow::with_workflow_id)",
            ));
        }
        if row.version != version {
            return Err(CanoError::workflow_version_mismatch(format!(
                "row {} of run {run} was written by version {} of workflow {workflow:?}; this is version {version}",
                row.seq, row.version
            ))
            .with_hint(format!(
                "resume it with a build of version {}, or migrate it and start it again",
                row.version
            )));
        }
        durable.apply(&row.data);
        match row.kind {
            RowKind::Enter | RowKind::Completed => cursor = None,
            RowKind::Step => cursor.clone_from(&row.cursor),
            RowKind::Resume => {
                resumes += 1;
                cursor.clone_from(&row.cursor);
            }
            // A `Fail` row with a snapshot stands in for the `Enter` row of its state,
            // which could not be written: that state starts afresh.
            RowKind::Fail if row.data.full => cursor = None,
            RowKind::Fail | RowKind::Finish | RowKind::Rollback | RowKind::RolledBack => {}
            // A wait's record (its plan, or what woke it) goes back to its handler.
            RowKind::Wait | RowKind::Received => cursor.clone_from(&row.cursor),
        }
    }
    let last = rows.last().unwrap_or(first);
    Ok(ResumePoint {
        state: last.state.clone(),
        label: last.label.clone(),
        last_seq: last.seq,
        last_kind: last.kind,
        last_message: last.message.clone(),
        cursor,
        durable,
        resumes,
    })
}
