//! One run in full: its timeline of checkpoint rows, its durable data at any row,
//! what it waits for, its graph with the path it took, the claims that drove it and
//! the actions taken on it.

use std::collections::BTreeMap;

use cano_core::RunId;
use cano_core::checkpoint::{
    ActionRecord, CheckpointRow, ListedRun, LiveStatus, RowKind, StoredRow, WaitRecord,
};
use serde::Serialize;

use crate::error::InspectError;
use crate::inspector::Inspector;
use crate::value::{ShownValue, show};
use crate::when::now_ms;

/// Keys the engine keeps in a run's data for itself (when the run started, ...).
const ENGINE_PREFIX: &str = "\u{0}cano/";

/// A run as listings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunView {
    /// The run id (16 hex digits).
    pub run: String,
    /// Its workflow.
    pub workflow: String,
    /// Its workflow version.
    pub version: u32,
    /// Where it stands (`running`, `parked`, `failed`, ...).
    pub status: &'static str,
    /// Its current state (`Debug` text).
    pub state: String,
    /// Why it failed, if it did.
    pub error: String,
    /// Its last row's number.
    pub last_seq: Option<u64>,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// When its last row was written, in milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}

impl From<&ListedRun> for RunView {
    fn from(run: &ListedRun) -> Self {
        Self {
            run: run.run.to_string(),
            workflow: run.workflow.clone(),
            version: run.version,
            status: run.status.name(),
            state: run.label.clone(),
            error: run.error.clone(),
            last_seq: run.last_seq,
            started_at_ms: run.started_at_us / 1000,
            updated_at_ms: run.updated_at_ms,
        }
    }
}

/// One row of a run's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEntry {
    /// The row's number.
    pub seq: u64,
    /// What the row records: `enter`, `step`, `resume`, `finish`, `fail`,
    /// `completed`, `rollback`, `rolled-back`, `wait`, `received`, or `unreadable`.
    pub kind: &'static str,
    /// The state (`Debug` text).
    pub state: String,
    /// When the row was written, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// How long until the next row (or until now, for a run still going).
    pub in_state_ms: Option<u64>,
    /// Which entry into this state it belongs to: 1, then one more per resume.
    pub attempt: u32,
    /// The row's message (why it failed), or why the row cannot be read.
    pub message: String,
    /// What else the row says: the signal a wait took, what it waits for, a cursor.
    pub note: String,
    /// Durable keys the row wrote (`-key` for a removal).
    pub data_keys: Vec<String>,
    /// The worker whose claim wrote the row (PostgreSQL queue runs: the claim of the
    /// row's lease epoch); `None` for a row written without a lease.
    pub worker: Option<String>,
}

/// One durable value at a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataEntry {
    /// The key.
    pub key: String,
    /// The value, decoded where it can be.
    pub value: ShownValue,
    /// The row that last wrote it.
    pub written_at_row: u64,
    /// Whether the engine keeps it for itself.
    pub engine: bool,
}

/// What a parked run waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitView {
    /// The signals that wake it.
    pub signals: Vec<String>,
    /// When it stops waiting, in milliseconds since the Unix epoch (`None`: never).
    pub deadline_ms: Option<u64>,
}

/// One claim of a run by a worker (PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClaimView {
    /// The claim's lease epoch: writes of older epochs are fenced off.
    pub epoch: i64,
    /// The worker.
    pub worker: String,
    /// When the claim began, in milliseconds since the Unix epoch.
    pub claimed_at_ms: u64,
    /// When it ended.
    pub ended_at_ms: Option<u64>,
    /// How it ended (`finished`, `lease expired`, `handed back`, ...).
    pub outcome: Option<String>,
}

/// An action taken on the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionView {
    /// What was done.
    pub action: String,
    /// By whom.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// What came of it.
    pub detail: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl From<&ActionRecord> for ActionView {
    fn from(a: &ActionRecord) -> Self {
        Self {
            action: a.action.clone(),
            actor: a.actor.clone(),
            reason: a.reason.clone(),
            detail: a.detail.clone(),
            at_ms: a.at_ms,
        }
    }
}

/// Everything the inspector shows of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunDetail {
    /// The run as listed.
    pub run: RunView,
    /// Its rows, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// The row the data is shown at.
    pub data_at: Option<u64>,
    /// Its durable data at that row, by key.
    pub data: Vec<DataEntry>,
    /// What it waits for, when parked.
    pub waits_for: Option<WaitView>,
    /// Its workflow's recorded drawing (Mermaid) with the run's path and current
    /// state marked; `None` when the workflow recorded none.
    pub graph: Option<String>,
    /// The states it entered, in order.
    pub path: Vec<String>,
    /// The claims that drove it (PostgreSQL queue runs).
    pub claims: Vec<ClaimView>,
    /// The actions taken on it.
    pub actions: Vec<ActionView>,
}

fn kind_name(kind: RowKind) -> &'static str {
    match kind {
        RowKind::Enter => "enter",
        RowKind::Step => "step",
        RowKind::Resume => "resume",
        RowKind::Finish => "finish",
        RowKind::Fail => "fail",
        RowKind::Completed => "completed",
        RowKind::Rollback => "rollback",
        RowKind::RolledBack => "rolled-back",
        RowKind::Wait => "wait",
        RowKind::Received => "received",
    }
}

/// What a row's cursor says, for people.
fn note_of(row: &CheckpointRow) -> String {
    let Some(cursor) = &row.cursor else {
        return String::new();
    };
    match row.kind {
        RowKind::Wait | RowKind::Received => match WaitRecord::decode(cursor) {
            Ok(WaitRecord::Parked {
                signals,
                deadline_ms,
            }) => match deadline_ms {
                Some(ms) => format!(
                    "waits for {} until {}",
                    signals.join(" or "),
                    crate::when::time(ms)
                ),
                None => format!("waits for {}", signals.join(" or ")),
            },
            Ok(WaitRecord::Signal { id, name, payload }) => format!(
                "took signal {name:?} (#{id}, payload {})",
                show(&payload).text
            ),
            Ok(WaitRecord::DeadlinePassed) => "its deadline passed".to_owned(),
            Err(e) => format!("wait record unreadable: {e}"),
        },
        _ => format!("cursor {}", show(cursor).text),
    }
}

/// The timeline of `rows`; the last row's time in state runs to `end_ms`, or stays
/// open (`None`) for a run that is over.
pub(crate) fn timeline(rows: &[StoredRow], end_ms: Option<u64>) -> Vec<TimelineEntry> {
    let mut entries: Vec<TimelineEntry> = Vec::with_capacity(rows.len());
    let mut attempt = 0u32;
    let mut previous_state: Option<String> = None;
    for stored in rows {
        let entry = match stored {
            StoredRow::Read(row) => {
                let same = previous_state.as_deref() == Some(row.label.as_str());
                attempt = match row.kind {
                    RowKind::Resume if same => attempt + 1,
                    RowKind::Enter | RowKind::Completed | RowKind::Wait if !same => 1,
                    _ if !same => 1,
                    _ => attempt.max(1),
                };
                previous_state = Some(row.label.clone());
                TimelineEntry {
                    seq: row.seq,
                    kind: kind_name(row.kind),
                    state: row.label.clone(),
                    at_ms: row.written_at_ms,
                    in_state_ms: None,
                    attempt,
                    message: row.message.clone(),
                    note: note_of(row),
                    data_keys: row
                        .data
                        .entries
                        .iter()
                        .filter(|(k, _)| !k.starts_with(ENGINE_PREFIX))
                        .map(|(k, v)| match v {
                            Some(_) => k.clone(),
                            None => format!("-{k}"),
                        })
                        .collect(),
                    worker: None,
                }
            }
            StoredRow::Unreadable { seq, error } => TimelineEntry {
                seq: *seq,
                kind: "unreadable",
                state: String::new(),
                at_ms: 0,
                in_state_ms: None,
                attempt: 0,
                message: error.clone(),
                note: String::new(),
                data_keys: Vec::new(),
                worker: None,
            },
        };
        entries.push(entry);
    }
    let times: Vec<u64> = entries.iter().map(|e| e.at_ms).collect();
    for (i, entry) in entries.iter_mut().enumerate() {
        if entry.at_ms == 0 {
            continue;
        }
        let next = times.get(i + 1).copied().or(end_ms);
        entry.in_state_ms = next
            .filter(|&n| n != 0)
            .map(|n| n.saturating_sub(entry.at_ms));
    }
    entries
}

/// The run's durable data as of row `at` (every readable row up to it folded).
pub(crate) fn data_at(rows: &[StoredRow], at: u64) -> Vec<DataEntry> {
    let mut data: BTreeMap<String, (Vec<u8>, u64)> = BTreeMap::new();
    for stored in rows {
        let StoredRow::Read(row) = stored else {
            continue;
        };
        if row.seq > at {
            break;
        }
        if row.data.full {
            data.clear();
        }
        for (key, value) in &row.data.entries {
            match value {
                Some(bytes) => {
                    data.insert(key.clone(), (bytes.clone(), row.seq));
                }
                None => {
                    data.remove(key);
                }
            }
        }
    }
    data.into_iter()
        .map(|(key, (bytes, seq))| DataEntry {
            engine: key.starts_with(ENGINE_PREFIX),
            key: key.trim_start_matches(ENGINE_PREFIX).to_owned(),
            value: show(&bytes),
            written_at_row: seq,
        })
        .collect()
}

/// What the run's last row says it waits for.
fn waits_for(rows: &[StoredRow]) -> Option<WaitView> {
    let StoredRow::Read(last) = rows.last()? else {
        return None;
    };
    if last.kind != RowKind::Wait {
        return None;
    }
    match WaitRecord::decode(last.cursor.as_deref()?).ok()? {
        WaitRecord::Parked {
            signals,
            deadline_ms,
        } => Some(WaitView {
            signals,
            deadline_ms,
        }),
        _ => None,
    }
}

/// The states a run entered, in order, each once per visit.
fn path_of(rows: &[StoredRow]) -> Vec<String> {
    let mut path: Vec<String> = Vec::new();
    for stored in rows {
        if let StoredRow::Read(row) = stored
            && path.last() != Some(&row.label)
        {
            path.push(row.label.clone());
        }
    }
    path
}

impl Inspector {
    /// Everything about `run`, with its data as of row `data_at` (its last row when
    /// `None`). Rows that cannot be read are shown as such.
    pub async fn detail(
        &self,
        run: RunId,
        data_at: Option<u64>,
    ) -> Result<RunDetail, InspectError> {
        let listed = self.summary(run).await?;
        let rows = self.catalog.rows(run).await?;
        let going = !listed.status.is_over() && listed.status != LiveStatus::Failed;
        let mut timeline = timeline(&rows, going.then(now_ms));
        let claims = self.claims(run).await?;
        if !claims.is_empty() {
            // Each row names the claim that wrote it by its lease epoch.
            let epochs: std::collections::HashMap<u64, u64> =
                self.catalog.row_epochs(run).await?.into_iter().collect();
            for entry in &mut timeline {
                entry.worker = epochs.get(&entry.seq).and_then(|epoch| {
                    claims
                        .iter()
                        .find(|c| c.epoch as u64 == *epoch)
                        .map(|c| c.worker.clone())
                });
            }
        }
        let last_seq = rows.last().map(StoredRow::seq);
        let at = match (data_at, last_seq) {
            (Some(at), Some(last)) if at > last => {
                return Err(InspectError::BadInput(format!(
                    "run {run} has rows 0 to {last}; there is no row {at}"
                )));
            }
            (Some(at), _) => Some(at),
            (None, last) => last,
        };
        let data = at.map(|at| self::data_at(&rows, at)).unwrap_or_default();
        let path = path_of(&rows);
        let graph = match self.catalog.graph(&listed.workflow, listed.version).await? {
            Some(drawing) => {
                let current = (!listed.status.is_over()).then_some(listed.label.as_str());
                Some(crate::graph::highlight(&drawing, &path, current))
            }
            None => None,
        };
        let actions = self
            .catalog
            .actions(run)
            .await?
            .iter()
            .map(ActionView::from)
            .collect();
        Ok(RunDetail {
            run: RunView::from(&listed),
            timeline,
            data_at: at,
            data,
            waits_for: waits_for(&rows),
            graph,
            path,
            claims,
            actions,
        })
    }

    // Only PostgreSQL keeps claims.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    async fn claims(&self, run: RunId) -> Result<Vec<ClaimView>, InspectError> {
        match &self.backend {
            #[cfg(feature = "postgres")]
            crate::inspector::Backend::Postgres { queue, .. } => {
                let ms = crate::when::millis;
                Ok(queue
                    .claims(&[run])
                    .await?
                    .into_iter()
                    .map(|c| ClaimView {
                        epoch: c.epoch,
                        worker: c.worker,
                        claimed_at_ms: ms(c.claimed_at),
                        ended_at_ms: c.ended_at.map(ms),
                        outcome: c.outcome,
                    })
                    .collect())
            }
            _ => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cano_core::checkpoint::{Bincode, Codec, DataChange};

    fn row(
        seq: u64,
        kind: RowKind,
        label: &str,
        at: u64,
        data: Vec<(&str, Option<Vec<u8>>)>,
    ) -> StoredRow {
        StoredRow::Read(CheckpointRow {
            run: RunId::from(1),
            seq,
            kind,
            workflow: "w".into(),
            version: 1,
            state: Vec::new(),
            label: label.into(),
            data: DataChange {
                full: false,
                entries: data.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            },
            cursor: None,
            message: if kind == RowKind::Fail {
                "boom".into()
            } else {
                String::new()
            },
            written_at_ms: at,
        })
    }

    #[test]
    fn the_timeline_counts_resumes_and_times_each_state() {
        let text = Bincode::encode(&"x".to_owned()).unwrap();
        let rows = vec![
            row(
                0,
                RowKind::Enter,
                "Fetch",
                1_000,
                vec![("k", Some(text.clone()))],
            ),
            row(1, RowKind::Resume, "Fetch", 1_500, vec![]),
            row(2, RowKind::Enter, "Parse", 1_700, vec![("k", None)]),
            StoredRow::Unreadable {
                seq: 3,
                error: "corrupt".into(),
            },
            row(4, RowKind::Fail, "Parse", 2_000, vec![]),
        ];
        let entries = timeline(&rows, None);
        let attempts: Vec<u32> = entries.iter().map(|e| e.attempt).collect();
        assert_eq!(attempts, [1, 2, 1, 0, 1]);
        assert_eq!(entries[0].in_state_ms, Some(500));
        assert_eq!(entries[2].in_state_ms, None, "the next row has no time");
        assert_eq!(entries[3].kind, "unreadable");
        assert_eq!(
            entries[4].in_state_ms, None,
            "a failed run's last row stays open"
        );
        assert_eq!(entries[2].data_keys, ["-k"]);
        assert_eq!(data_at(&rows, 1)[0].value.text, "x");
        assert!(data_at(&rows, 4).is_empty());
        assert_eq!(path_of(&rows), ["Fetch", "Parse"]);
    }
}
