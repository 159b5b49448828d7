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

use crate::db::{Db, retry_transient, run_key, run_of};
use crate::store::{PostgresCheckpointStore, decode_row};

/// Microseconds of the year 10000: a start time no run has (the first page's cursor).
const NO_CURSOR_US: i64 = 253_402_300_800_000_000;

pub(crate) struct CatalogSql {
    list: String,
    count: String,
    pub(crate) record_graph: String,
    graph: String,
    rows: String,
    record_action: String,
    actions: String,
}

impl CatalogSql {
    pub(crate) fn new(db: &Db) -> Self {
        let (logs, runs) = (db.table("cano_logs"), db.table("cano_runs"));
        let (graphs, actions) = (db.table("cano_graphs"), db.table("cano_actions"));
        let log_status =
            "CASE l.status WHEN -1 THEN 'parked' WHEN 0 THEN 'interrupted' WHEN 1 THEN 'failed'
                               WHEN 2 THEN 'finished' ELSE 'rolled-back' END";
        // A queue's run: its status is the queue's, but a rollback that finished is
        // the log's to tell, and a lease that ran out leaves the run interrupted until
        // a worker claims it again.
        let queue_status = format!(
            "CASE WHEN q.status = 'queued' THEN 'queued'
                  WHEN q.status = 'running' AND q.lease_until > clock_timestamp() THEN 'running'
                  WHEN q.status = 'running' THEN 'interrupted'
                  WHEN q.status = 'parked' THEN 'parked'
                  WHEN l.status = 3 THEN 'rolled-back'
                  WHEN q.status IN ('failed', 'cancelled') THEN 'failed'
                  WHEN q.status = 'finished' THEN 'finished'
                  ELSE {log_status} END"
        );
        // The filters: $1 workflow, $2 version, $3 statuses, $4 state, $5/$6 start
        // range (µs), $7 error text, $8 the run. NULL means any. The page's
        // cursor is $9 and $10, its size $11.
        let filters = |with_status: bool| {
            format!(
                "($1::text IS NULL OR t.workflow = $1)
                 AND ($2::integer IS NULL OR t.version = $2)
                 AND {}
                 AND ($4::text IS NULL OR t.label = $4
                      OR ($4 !~ '[ ({{]' AND substring(t.label from '^[^ ({{]*') = $4))
                 AND ($5::bigint IS NULL OR t.started >= 'epoch'::timestamptz + $5 * interval '1 microsecond')
                 AND ($6::bigint IS NULL OR t.started < 'epoch'::timestamptz + $6 * interval '1 microsecond')
                 AND ($7::text IS NULL OR strpos(lower(t.error), lower($7)) > 0)
                 AND ($8::bigint IS NULL OR t.run_id = $8)",
                if with_status {
                    "($3::text[] IS NULL OR t.status = ANY($3))"
                } else {
                    "($3::text[] IS NULL OR true)"
                }
            )
        };
        let union = |bound: &str| {
            format!(
                "SELECT q.run_id, q.workflow, coalesce(l.version, 0) AS version, l.last_seq,
                        coalesce(l.label, q.initial_label) AS label,
                        coalesce(nullif(q.error, ''), l.message, '') AS error,
                        q.enqueued_at AS started, l.updated_at_ms, {queue_status} AS status
                 FROM {runs} q LEFT JOIN {logs} l ON l.run_id = q.run_id
                 WHERE {bound_q}
                 UNION ALL
                 SELECT l.run_id, l.workflow, l.version, l.last_seq, l.label, l.message,
                        l.created_at, l.updated_at_ms, {log_status}
                 FROM {logs} l
                 WHERE NOT EXISTS (SELECT 1 FROM {runs} q WHERE q.run_id = l.run_id) AND {bound_l}",
                bound_q = bound
                    .replace("{at}", "q.enqueued_at")
                    .replace("{run}", "q.run_id"),
                bound_l = bound
                    .replace("{at}", "l.created_at")
                    .replace("{run}", "l.run_id"),
            )
        };
        let cursor = "({at}, {run}) < ('epoch'::timestamptz + $9::bigint * interval '1 microsecond', $10::bigint)";
        Self {
            list: format!(
                "SELECT t.run_id, t.workflow, t.version, t.last_seq, t.label, t.error,
                        (extract(epoch FROM t.started) * 1000000)::bigint, t.updated_at_ms, t.status
                 FROM ({}) t
                 WHERE {}
                 ORDER BY t.started DESC, t.run_id DESC
                 LIMIT $11",
                union(cursor),
                filters(true)
            ),
            count: format!(
                "SELECT t.status, count(*) FROM ({}) t WHERE ({}) GROUP BY t.status",
                union("true"),
                filters(false)
            ),
            record_graph: format!(
                "INSERT INTO {graphs} (workflow, version, mermaid) VALUES ($1, $2, $3)
                 ON CONFLICT (workflow, version) DO UPDATE SET mermaid = $3, recorded_at = clock_timestamp()
                 WHERE {graphs}.mermaid IS DISTINCT FROM $3"
            ),
            rows: format!(
                "SELECT seq, body FROM {} WHERE run_id = $1 ORDER BY seq",
                db.table("cano_rows")
            ),
            graph: format!(
                "SELECT mermaid FROM {graphs} WHERE workflow = $1 AND ($2 = 0 OR version = $2)
                 ORDER BY version DESC LIMIT 1"
            ),
            record_action: format!(
                "INSERT INTO {actions} (run_id, action, actor, reason, detail, at)
                 VALUES ($1, $2, $3, $4, $5, 'epoch'::timestamptz + $6::bigint * interval '1 millisecond')"
            ),
            actions: format!(
                "SELECT action, actor, reason, detail, (extract(epoch FROM at) * 1000)::bigint
                 FROM {actions} WHERE run_id = $1 ORDER BY id"
            ),
        }
    }
}

/// The filter as the statements' first seven parameters.
struct Params {
    workflow: Option<String>,
    version: Option<i32>,
    statuses: Option<Vec<String>>,
    state: Option<String>,
    from_us: Option<i64>,
    before_us: Option<i64>,
    error: Option<String>,
    run: Option<i64>,
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
        }
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
        let sql = &self.catalog_sql().list;
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
        let rows = retry_transient(5, || async {
            let client = db.client().await?;
            client
                .query(
                    sql,
                    &[
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
                    ],
                )
                .await
                .map_err(|e| db.error("listing runs", e))
        })
        .await?;
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
        let more = runs.len() > limit;
        runs.truncate(limit);
        // The cursor carries the database's own order key (the run id as stored).
        let next = more.then(|| runs.last().map(ListedRun::cursor)).flatten();
        Ok(RunPage { runs, next })
    }

    async fn count_runs(&self, filter: &RunFilter) -> Result<StatusCounts, CanoError> {
        let db = self.db();
        let sql = &self.catalog_sql().count;
        let p = Params::of(filter);
        let none: Option<Vec<String>> = None;
        let rows = retry_transient(5, || async {
            let client = db.client().await?;
            client
                .query(
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
                .await
                .map_err(|e| db.error("counting runs", e))
        })
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
        let rows = retry_transient(5, || async {
            let client = db.client().await?;
            client
                .query(sql, &[&run_key(run)])
                .await
                .map_err(|e| db.error(&format!("loading the rows of run {run}"), e))
        })
        .await?;
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

    async fn graph(&self, workflow: &str, version: u32) -> Result<Option<String>, CanoError> {
        let db = self.db();
        let sql = &self.catalog_sql().graph;
        let version = version as i32;
        let row = retry_transient(5, || async {
            let client = db.client().await?;
            client
                .query_opt(sql, &[&workflow, &version])
                .await
                .map_err(|e| db.error(&format!("reading the graph of workflow {workflow:?}"), e))
        })
        .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn record_action(&self, action: &ActionRecord) -> Result<(), CanoError> {
        let db = self.db();
        let sql = &self.catalog_sql().record_action;
        let at = i64::try_from(action.at_ms).unwrap_or(i64::MAX);
        retry_transient(5, || async {
            let client = db.client().await?;
            client
                .execute(
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
                .map_err(|e| {
                    db.error(
                        &format!("recording the {} of run {}", action.action, action.run),
                        e,
                    )
                })
        })
        .await
        .map(drop)
    }

    async fn actions(&self, run: RunId) -> Result<Vec<ActionRecord>, CanoError> {
        let db = self.db();
        let sql = &self.catalog_sql().actions;
        let rows = retry_transient(5, || async {
            let client = db.client().await?;
            client
                .query(sql, &[&run_key(run)])
                .await
                .map_err(|e| db.error(&format!("reading the actions on run {run}"), e))
        })
        .await?;
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
