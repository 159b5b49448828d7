//! Listing stored runs: what an operator's tool (the `cano` inspector) asks of a store
//! beyond what the engine needs. A store that implements [`RunCatalog`] can be
//! browsed: filtered, counted by status and paged, newest first, without reading
//! every row of every run.

use std::fmt;
use std::str::FromStr;

use super::{CheckpointRow, RowKind, RunStatus};
use crate::error::CanoError;
use crate::run_id::RunId;

/// Where a stored run stands as an operator sees it: [`RunStatus`] read from its log,
/// plus what a queue knows (a worker holds it now, or it waits for one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LiveStatus {
    /// Enqueued and waiting for a worker (PostgreSQL queues only).
    Queued,
    /// A worker holds it under a live lease (PostgreSQL queues only).
    Running,
    /// Parked in a wait state until a signal or its deadline.
    Parked,
    /// Its process stopped while it ran (or its worker's lease expired): resume it.
    Interrupted,
    /// It failed, was cancelled or timed out.
    Failed,
    /// It reached an exit state.
    Finished,
    /// It failed and every completed step was compensated.
    RolledBack,
    /// Its last row cannot be read.
    Unreadable,
}

impl LiveStatus {
    /// Every status, in the order listings show their counts.
    pub const ALL: [LiveStatus; 8] = [
        Self::Queued,
        Self::Running,
        Self::Parked,
        Self::Interrupted,
        Self::Failed,
        Self::Finished,
        Self::RolledBack,
        Self::Unreadable,
    ];

    /// The status's name in listings, filters and JSON (`rolled-back`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Parked => "parked",
            Self::Interrupted => "interrupted",
            Self::Failed => "failed",
            Self::Finished => "finished",
            Self::RolledBack => "rolled-back",
            Self::Unreadable => "unreadable",
        }
    }

    /// Whether the run is over: nothing will drive it again unless someone acts.
    pub fn is_over(self) -> bool {
        matches!(self, Self::Finished | Self::RolledBack)
    }
}

impl From<RunStatus> for LiveStatus {
    fn from(status: RunStatus) -> Self {
        match status {
            RunStatus::Interrupted => Self::Interrupted,
            RunStatus::Failed => Self::Failed,
            RunStatus::Finished => Self::Finished,
            RunStatus::RolledBack => Self::RolledBack,
            RunStatus::Unreadable => Self::Unreadable,
            RunStatus::Parked => Self::Parked,
        }
    }
}

impl fmt::Display for LiveStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LiveStatus {
    type Err = CanoError;

    /// Parses a [`name`](Self::name); `waiting` is taken for `parked` and `rolled_back`
    /// for `rolled-back`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_lowercase().replace('_', "-");
        if wanted == "waiting" {
            return Ok(Self::Parked);
        }
        Self::ALL
            .into_iter()
            .find(|s| s.name() == wanted)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|s| s.name()).collect();
                CanoError::configuration(format!("{text:?} is not a run status"))
                    .with_hint(format!("use one of: {}", names.join(", ")))
            })
    }
}

/// One run in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRun {
    /// The run.
    pub run: RunId,
    /// The workflow that wrote it (or was enqueued for it).
    pub workflow: String,
    /// Its workflow version (0 when no row says).
    pub version: u32,
    /// Where it stands.
    pub status: LiveStatus,
    /// The number of its last row (`None` for a queued run that has none yet).
    pub last_seq: Option<u64>,
    /// The `Debug` text of its current state (or of its initial state, queued).
    pub label: String,
    /// Why it failed (empty unless it failed, was cancelled or is rolling back).
    pub error: String,
    /// When it started (its first row, or its enqueueing), in microseconds since the
    /// Unix epoch: listings are ordered by it, newest first.
    pub started_at_us: u64,
    /// When its last row was written, in milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}

impl ListedRun {
    /// The listing of a run whose first row was written at `started_at_ms` and whose
    /// last row is `last`.
    pub fn from_rows(started_at_ms: u64, last: &CheckpointRow) -> Self {
        let error = match last.kind {
            RowKind::Fail | RowKind::Rollback | RowKind::RolledBack => last.message.clone(),
            _ => String::new(),
        };
        Self {
            run: last.run,
            workflow: last.workflow.clone(),
            version: last.version,
            status: RunStatus::after(last.kind).into(),
            last_seq: Some(last.seq),
            label: last.label.clone(),
            error,
            started_at_us: started_at_ms.saturating_mul(1000),
            updated_at_ms: last.written_at_ms,
        }
    }

    /// Where this run sits in the newest-first order.
    pub fn cursor(&self) -> PageCursor {
        PageCursor {
            started_at_us: self.started_at_us,
            run: self.run,
        }
    }
}

/// Which runs a listing wants. Every field left empty matches every run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only this run.
    pub run: Option<RunId>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs written by this workflow version.
    pub version: Option<u32>,
    /// Only runs in one of these statuses (any status when empty).
    pub statuses: Vec<LiveStatus>,
    /// Only runs whose current state's `Debug` text is this (`Charge`, or
    /// `Charge { .. }`: a run in `Charge { amount: 3 }` matches both).
    pub state: Option<String>,
    /// Only runs started at or after this time (microseconds since the Unix epoch).
    pub started_from_us: Option<u64>,
    /// Only runs started before this time (microseconds since the Unix epoch).
    pub started_before_us: Option<u64>,
    /// Only runs whose error contains this text (case-insensitive).
    pub error_contains: Option<String>,
}

impl RunFilter {
    /// Whether `run` passes every part of the filter.
    pub fn matches(&self, run: &ListedRun) -> bool {
        self.matches_ignoring_status(run)
            && (self.statuses.is_empty() || self.statuses.contains(&run.status))
    }

    /// Whether `run` passes every part of the filter but the statuses (what counts by
    /// status are taken over).
    pub fn matches_ignoring_status(&self, run: &ListedRun) -> bool {
        self.run.is_none_or(|r| r == run.run)
            && self.workflow.as_ref().is_none_or(|w| *w == run.workflow)
            && self.version.is_none_or(|v| v == run.version)
            && self
                .state
                .as_ref()
                .is_none_or(|s| state_matches(s, &run.label))
            && self.started_from_us.is_none_or(|t| run.started_at_us >= t)
            && self.started_before_us.is_none_or(|t| run.started_at_us < t)
            && self
                .error_contains
                .as_ref()
                .is_none_or(|text| run.error.to_lowercase().contains(&text.to_lowercase()))
    }
}

/// Whether a state's `Debug` text `label` is the state `wanted` names: the whole text,
/// or the variant's name before its fields.
pub fn state_matches(wanted: &str, label: &str) -> bool {
    let wanted = wanted.trim();
    label == wanted || (wanted == variant_name(wanted) && variant_name(label) == wanted)
}

/// A state's variant name: its `Debug` text before any fields (`Charge` of
/// `Charge { amount: 3 }`).
pub fn variant_name(label: &str) -> &str {
    label.split([' ', '(', '{']).next().unwrap_or(label)
}

/// A place in the newest-first order: a page starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageCursor {
    /// The start time of the last run of the previous page (microseconds).
    pub started_at_us: u64,
    /// That run (the tie-breaker between runs started in the same microsecond).
    pub run: RunId,
}

impl fmt::Display for PageCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.started_at_us, self.run)
    }
}

impl FromStr for PageCursor {
    type Err = CanoError;

    /// Parses what [`Display`](fmt::Display) prints: `MICROS-RUNID`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            CanoError::configuration(format!("{text:?} is not a page cursor"))
                .with_hint("pass the `next` value a previous page printed")
        };
        let (at, run) = text.trim().split_once('-').ok_or_else(bad)?;
        Ok(Self {
            started_at_us: at.parse().map_err(|_| bad())?,
            run: run.parse().map_err(|_| bad())?,
        })
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunPage {
    /// The runs, newest first.
    pub runs: Vec<ListedRun>,
    /// Where the next page starts, when there are more runs.
    pub next: Option<PageCursor>,
}

/// Collects the newest `limit` runs older than a cursor from runs seen in any order,
/// holding at most `limit + 1` of them: how a store without an index on start time
/// pages through its runs in bounded memory.
#[derive(Debug)]
pub struct NewestFirst {
    after: Option<PageCursor>,
    limit: usize,
    kept: std::collections::BinaryHeap<std::cmp::Reverse<Keyed>>,
}

#[derive(Debug, PartialEq, Eq)]
struct Keyed(PageCursor, ListedRun);

impl PartialOrd for Keyed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Keyed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl NewestFirst {
    /// A page of at most `limit` runs (at least one) starting after `after`.
    pub fn new(after: Option<PageCursor>, limit: usize) -> Self {
        Self {
            after,
            limit: limit.max(1),
            kept: Default::default(),
        }
    }

    /// Offers a run (already filtered).
    pub fn offer(&mut self, run: ListedRun) {
        let key = run.cursor();
        if self.after.is_some_and(|after| key >= after) {
            return;
        }
        // One more than the page holds, to know whether a next page exists.
        if self.kept.len() <= self.limit {
            self.kept.push(std::cmp::Reverse(Keyed(key, run)));
        } else if self.kept.peek().is_some_and(|oldest| key > oldest.0.0) {
            self.kept.pop();
            self.kept.push(std::cmp::Reverse(Keyed(key, run)));
        }
    }

    /// The page: newest first, with a cursor when more runs follow.
    pub fn finish(self) -> RunPage {
        let mut runs: Vec<ListedRun> = self
            .kept
            .into_sorted_vec()
            .into_iter()
            .map(|k| k.0.1)
            .collect();
        let more = runs.len() > self.limit;
        runs.truncate(self.limit);
        let next = more.then(|| runs.last().map(ListedRun::cursor)).flatten();
        RunPage { runs, next }
    }
}

/// Counts of runs by status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusCounts(pub Vec<(LiveStatus, u64)>);

impl StatusCounts {
    /// Adds one run in `status`.
    pub fn add(&mut self, status: LiveStatus, n: u64) {
        match self.0.iter_mut().find(|(s, _)| *s == status) {
            Some((_, count)) => *count += n,
            None => {
                self.0.push((status, n));
                self.0.sort();
            }
        }
    }

    /// The count of `status` (0 when none).
    pub fn of(&self, status: LiveStatus) -> u64 {
        self.0
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    }

    /// Every run counted.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }
}

/// An operator's action on a run, kept beside the run's log (and after it, when the
/// action deleted the run): who did what, when and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ActionRecord {
    /// The run acted on.
    pub run: RunId,
    /// What was done (`cancel`, `delete`, `retry`, `resume`, `signal`).
    pub action: String,
    /// Who did it (a user name, or the tool's).
    pub actor: String,
    /// Why, as they said.
    pub reason: String,
    /// What came of it (the new run of a retry, the row a cancel wrote, ...).
    pub detail: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// One stored row of a run, as an inspector reads it: a row this build cannot read
/// is shown as such rather than failing the whole run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredRow {
    /// The row, read.
    Read(CheckpointRow),
    /// Row `seq` could not be read; `error` says why.
    Unreadable {
        /// The row's number.
        seq: u64,
        /// Why it cannot be read.
        error: String,
    },
}

impl StoredRow {
    /// The row's number.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Read(row) => row.seq,
            Self::Unreadable { seq, .. } => *seq,
        }
    }
}

/// A store whose runs can be browsed. Implemented by the in-memory and sled stores
/// (`cano-recovery`) and by the PostgreSQL store (`cano-postgres`).
#[async_trait::async_trait]
pub trait RunCatalog: Send + Sync {
    /// The runs `filter` matches, newest first (by start time), at most `limit` of
    /// them, starting after `after`.
    async fn list_runs(
        &self,
        filter: &RunFilter,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<RunPage, CanoError>;

    /// How many runs `filter` matches, by status (the filter's own statuses are
    /// ignored, so every status is counted).
    async fn count_runs(&self, filter: &RunFilter) -> Result<StatusCounts, CanoError>;

    /// Every row of `run`, in order, each read on its own (empty for an unknown run).
    async fn rows(&self, run: RunId) -> Result<Vec<StoredRow>, CanoError>;

    /// The lease epoch each of `run`'s rows was written under, by row number, for a
    /// store whose workers fence their writes (PostgreSQL); a row written without a
    /// lease has epoch 0. Empty by default: the store keeps no epochs.
    async fn row_epochs(&self, run: RunId) -> Result<Vec<(u64, u64)>, CanoError> {
        let _ = run;
        Ok(Vec::new())
    }

    /// The drawing a workflow version recorded (see `CheckpointStore::record_graph`);
    /// version 0 asks for the highest version recorded (a queue run whose rows are
    /// gone has no version of its own).
    async fn graph(&self, workflow: &str, version: u32) -> Result<Option<String>, CanoError>;

    /// Keeps `action` in the run's action log.
    async fn record_action(&self, action: &ActionRecord) -> Result<(), CanoError>;

    /// The actions taken on `run`, oldest first.
    async fn actions(&self, run: RunId) -> Result<Vec<ActionRecord>, CanoError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(id: u64, at: u64) -> ListedRun {
        ListedRun {
            run: RunId::from(id),
            workflow: "w".into(),
            version: 1,
            status: LiveStatus::Finished,
            last_seq: Some(0),
            label: "Done".into(),
            error: String::new(),
            started_at_us: at,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn statuses_parse_by_name_and_alias() {
        for status in LiveStatus::ALL {
            assert_eq!(status.name().parse::<LiveStatus>().unwrap(), status);
        }
        assert_eq!("waiting".parse::<LiveStatus>().unwrap(), LiveStatus::Parked);
        assert_eq!(
            "Rolled_Back".parse::<LiveStatus>().unwrap(),
            LiveStatus::RolledBack
        );
        let err = "done".parse::<LiveStatus>().unwrap_err().to_string();
        assert!(
            err.contains("\"done\"") && err.contains("rolled-back"),
            "{err}"
        );
    }

    #[test]
    fn states_match_by_whole_text_or_variant_name() {
        assert!(state_matches("Charge", "Charge { amount: 3 }"));
        assert!(state_matches(
            "Charge { amount: 3 }",
            "Charge { amount: 3 }"
        ));
        assert!(!state_matches(
            "Charge { amount: 4 }",
            "Charge { amount: 3 }"
        ));
        assert!(!state_matches("Char", "Charge"));
        assert!(state_matches("Fetch", "Fetch(2)"));
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let cursor = run(0xabc, 17).cursor();
        assert_eq!(cursor.to_string().parse::<PageCursor>().unwrap(), cursor);
        assert!("17".parse::<PageCursor>().is_err());
        assert!("x-00".parse::<PageCursor>().is_err());
    }

    proptest! {
        /// Paging through any set of runs offered in any order yields each run once,
        /// newest first, whatever the page size.
        #[test]
        fn pages_cover_every_run_once_newest_first(
            times in proptest::collection::vec(0u64..20, 0..60),
            limit in 1usize..8,
        ) {
            let runs: Vec<ListedRun> =
                times.iter().enumerate().map(|(i, &t)| run(i as u64 * 7919 % 1000, t)).collect();
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let mut page = NewestFirst::new(after, limit);
                for r in runs.iter().rev() {
                    page.offer(r.clone());
                }
                let page = page.finish();
                prop_assert!(page.runs.len() <= limit);
                seen.extend(page.runs.iter().map(ListedRun::cursor));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            let mut expected: Vec<PageCursor> = runs.iter().map(ListedRun::cursor).collect();
            expected.sort_by(|a, b| b.cmp(a));
            prop_assert_eq!(seen, expected);
        }
    }
}
