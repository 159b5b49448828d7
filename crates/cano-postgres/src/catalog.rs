//! Browsing stored runs ([`RunCatalog`]): the queue's runs (queued, running, parked,
//! over) and the logs of runs driven outside a queue, as one newest-first listing.
//! Both halves are read through indexes on a column that never changes after its row
//! is written (`cano_runs.enqueued_at`, `cano_logs.created_at`), so a page costs the
//! same with a thousand runs as with a million, and the per-transition update of a
//! log stays HOT.

use cano_core::checkpoint::{
    ActionRecord, ListedRun, LiveStatus, PageCursor, RunCatalog, RunFilter, RunPage, StatusCounts,
    StoredRow,
};
use cano_core::{CanoError, RunId};

use crate::db::{run_key, run_of};
use crate::store::{PostgresCheckpointStore, decode_row};

/// The statuses a queue run can have in a listing.
const QUEUE_STATUSES: [LiveStatus; 7] = [
    LiveStatus::Queued,
    LiveStatus::Running,
    LiveStatus::Parked,
    LiveStatus::Interrupted,
    LiveStatus::Failed,
    LiveStatus::Finished,
    LiveStatus::RolledBack,
];

/// The statuses a run with only a log can have (no queue: never queued or running).
const LOG_STATUSES: [LiveStatus; 5] = [
    LiveStatus::Parked,
    LiveStatus::Interrupted,
    LiveStatus::Failed,
    LiveStatus::Finished,
    LiveStatus::RolledBack,
];

/// Microseconds of the year 10000: a start time no run has (the first page's cursor).
const NO_CURSOR_US: i64 = 253_402_300_800_000_000;

/// The filter as the statements' parameters.
struct Params {
    workflow: Option<String>,
    version: Option<i32>,
    statuses: Option<Vec<String>>,
    state: Option<String>,
    from_us: Option<i64>,
    before_us: Option<i64>,
    error: Option<String>,
    run: Option<i64>,
    log_codes: Option<Vec<i16>>,
    queue_statuses: Option<Vec<String>>,
}

impl Params {
    fn of(filter: &RunFilter) -> Self {
        let micros = |t: u64| i64::try_from(t).unwrap_or(i64::MAX).min(NO_CURSOR_US);
        Self {
            workflow: filter.workflow.clone(),
            version: filter.version.map(|v| i32::try_from(v).unwrap_or(i32::MAX)),
            statuses: (!filter.statuses.is_empty()).then(|| {
                filter
                    .statuses
                    .iter()
                    .map(|s| s.name().to_owned())
                    .collect()
            }),
            state: filter
                .state
                .as_ref()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            from_us: filter.started_from_us.map(micros),
            before_us: filter.started_before_us.map(micros),
            error: filter.error_contains.clone().filter(|e| !e.is_empty()),
            run: filter.run.map(run_key),
            log_codes: (!filter.statuses.is_empty()).then(|| {
                let mut codes: Vec<i16> = filter
                    .statuses
                    .iter()
                    .filter_map(|s| log_code(*s))
                    .collect();
                codes.sort_unstable();
                codes.dedup();
                codes
            }),
            queue_statuses: (!filter.statuses.is_empty()).then(|| {
                let mut names: Vec<String> = filter
                    .statuses
                    .iter()
                    .flat_map(|s| queue_names(*s))
                    .map(|n| (*n).to_owned())
                    .collect();
                names.sort_unstable();
                names.dedup();
                names
            }),
        }
    }
}

/// The log status code a listed status of a log-only run has (see `status_code`).
fn log_code(status: LiveStatus) -> Option<i16> {
    match status {
        LiveStatus::Parked => Some(-1),
        LiveStatus::Interrupted => Some(0),
        LiveStatus::Failed => Some(1),
        LiveStatus::Finished => Some(2),
        LiveStatus::RolledBack => Some(3),
        LiveStatus::Queued | LiveStatus::Running | LiveStatus::Unreadable => None,
    }
}

/// The queue statuses a listed status of a queue run comes from (see the listing's
/// `CASE`): a lapsed lease makes a running run interrupted, a finished rollback
/// makes a failed or cancelled one rolled back.
fn queue_names(status: LiveStatus) -> &'static [&'static str] {
    match status {
        LiveStatus::Queued => &["queued"],
        LiveStatus::Running | LiveStatus::Interrupted => &["running"],
        LiveStatus::Parked => &["parked"],
        LiveStatus::Failed | LiveStatus::RolledBack => &["failed", "cancelled"],
        LiveStatus::Finished => &["finished"],
        LiveStatus::Unreadable => &[],
    }
}

fn status_of(name: &str) -> LiveStatus {
    name.parse().unwrap_or(LiveStatus::Unreadable)
}

#[async_trait::async_trait]
impl RunCatalog for PostgresCheckpointStore {
    async fn list_runs(
        &self,
        filter: &RunFilter,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<RunPage, CanoError> {
        let db = self.db();
        // A leg that cannot hold a wanted status is not read: with no match, its
        // index would be read to the end.
        let wants = |possible: &[LiveStatus]| {
            filter.statuses.is_empty() || filter.statuses.iter().any(|s| possible.contains(s))
        };
        let sql = self.catalog_sql();
        let sqls: Vec<&String> = [
            (wants(&QUEUE_STATUSES), &sql.list_queue),
            (wants(&LOG_STATUSES), &sql.list_logs),
        ]
        .into_iter()
        .filter_map(|(wanted, sql)| wanted.then_some(sql))
        .collect();
        let p = Params::of(filter);
        let limit = limit.clamp(1, 10_000);
        let (at, run) = match after {
            Some(c) => (
                i64::try_from(c.started_at_us).unwrap_or(NO_CURSOR_US),
                run_key(c.run),
            ),
            None => (NO_CURSOR_US, i64::MAX),
        };
        // One more than asked, to know whether a next page exists.
        let fetch = limit as i64 + 1;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 13] = [
            &p.workflow,
            &p.version,
            &p.statuses,
            &p.state,
            &p.from_us,
            &p.before_us,
            &p.error,
            &p.run,
            &at,
            &run,
            &fetch,
            &p.log_codes,
            &p.queue_statuses,
        ];
        let mut rows = Vec::new();
        for sql in sqls {
            rows.extend(
                db.query_planned_each_time(5, "listing runs", sql, &params)
                    .await?,
            );
        }
        let mut runs: Vec<ListedRun> = rows
            .iter()
            .map(|r| ListedRun {
                run: run_of(r.get(0)),
                workflow: r.get(1),
                version: u32::try_from(r.get::<_, i32>(2)).unwrap_or(0),
                status: status_of(r.get(8)),
                last_seq: r.get::<_, Option<i64>>(3).map(|s| s as u64),
                label: r.get(4),
                error: r.get(5),
                started_at_us: u64::try_from(r.get::<_, i64>(6)).unwrap_or(0),
                updated_at_ms: r
                    .get::<_, Option<i64>>(7)
                    .map_or(0, |t| u64::try_from(t).unwrap_or(0)),
            })
            .collect();
        // Both kinds newest first, in the database's own order (the run id as stored,
        // signed), which the next page's cursor is compared in.
        runs.sort_by_key(|r| std::cmp::Reverse((r.started_at_us, run_key(r.run))));
        let more = runs.len() > limit;
        runs.truncate(limit);
        let next = more.then(|| runs.last().map(ListedRun::cursor)).flatten();
        Ok(RunPage { runs, next })
    }

    async fn count_runs(&self, filter: &RunFilter) -> Result<StatusCounts, CanoError> {
        let db = self.db();
        let sql = &self.catalog_sql().count;
        let p = Params::of(filter);
        let none: Option<Vec<String>> = None;
        let rows = db
            .query_planned_each_time(
                5,
                "counting runs",
                sql,
                &[
                    &p.workflow,
                    &p.version,
                    &none,
                    &p.state,
                    &p.from_us,
                    &p.before_us,
                    &p.error,
                    &p.run,
                ],
            )
            .await?;
        let mut counts = StatusCounts::default();
        for row in rows {
            counts.add(status_of(row.get(0)), row.get::<_, i64>(1) as u64);
        }
        Ok(counts)
    }

    async fn rows(&self, run: RunId) -> Result<Vec<StoredRow>, CanoError> {
        let db = self.db();
        let sql = &self.catalog_sql().rows;
        let doing = format!("loading the rows of run {run}");
        let rows = db.query(5, &doing, sql, &[&run_key(run)]).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let seq = r.get::<_, i64>(0) as u64;
                match decode_row(r.get(1)) {
                    Ok(row) => StoredRow::Read(row),
                    Err(e) => StoredRow::Unreadable {
                        seq,
                        error: e.to_string(),
                    },
                }
            })
            .collect())
    }

    async fn row_epochs(&self, run: RunId) -> Result<Vec<(u64, u64)>, CanoError> {
        let db = self.db();
        let sql = &self.catalog_sql().row_epochs;
        let doing = format!("reading the epochs of run {run}'s rows");
        let rows = db.query(5, &doing, sql, &[&run_key(run)]).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let (seq, epoch): (i64, i64) = (r.get(0), r.get(1));
                (seq.max(0) as u64, epoch.max(0) as u64)
            })
            .collect())
    }

    async fn graph(&self, workflow: &str, version: u32) -> Result<Option<String>, CanoError> {
        let db = self.db();
        let sql = &self.catalog_sql().graph;
        let version = version as i32;
        let doing = format!("reading the graph of workflow {workflow:?}");
        let row = db.query_opt(5, &doing, sql, &[&workflow, &version]).await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn record_action(&self, action: &ActionRecord) -> Result<(), CanoError> {
        let db = self.db();
        let sql = &self.catalog_sql().record_action;
        let at = i64::try_from(action.at_ms).unwrap_or(i64::MAX);
        let doing = format!("recording the {} of run {}", action.action, action.run);
        db.execute(
            5,
            &doing,
            sql,
            &[
                &run_key(action.run),
                &action.action,
                &action.actor,
                &action.reason,
                &action.detail,
                &at,
            ],
        )
        .await
        .map(drop)
    }

    async fn actions(&self, run: RunId) -> Result<Vec<ActionRecord>, CanoError> {
        let db = self.db();
        let sql = &self.catalog_sql().actions;
        let doing = format!("reading the actions on run {run}");
        let rows = db.query(5, &doing, sql, &[&run_key(run)]).await?;
        Ok(rows
            .iter()
            .map(|r| ActionRecord {
                run,
                action: r.get(0),
                actor: r.get(1),
                reason: r.get(2),
                detail: r.get(3),
                at_ms: u64::try_from(r.get::<_, i64>(4)).unwrap_or(0),
            })
            .collect())
    }
}
