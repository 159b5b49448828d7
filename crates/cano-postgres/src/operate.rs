//! What an operator does to runs and sees of the cluster, beyond what the engine
//! needs: send a failed run back to the workers, forget a run that is over, and the
//! cron schedules and workers at a glance (the `cano` inspector's PostgreSQL views).

use cano_core::{CanoError, RunId};
use cano_scheduler::Schedule;
use chrono::Utc;

use crate::channels::ready_channel;
use crate::db::{Db, run_key};
use crate::queue::RunQueue;
use crate::store::PostgresCheckpointStore;

/// One cron schedule of a [`ClusterScheduler`](crate::ClusterScheduler) group, as its
/// last leader recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleView {
    /// The scheduler group.
    pub group: String,
    /// The schedule's id in its group.
    pub schedule: String,
    /// The cron expression, as written.
    pub expr: String,
    /// The time zone its fields are read in.
    pub zone: String,
    /// The workflow each tick enqueues.
    pub workflow: String,
    /// The `Debug` text of the initial state of each tick's run.
    pub label: String,
    /// The process leading the group (firing its ticks), if any has.
    pub leader: Option<String>,
    /// Whether that leader's lease is live now.
    pub leader_live: bool,
    /// The last tick fired, in milliseconds since the Unix epoch.
    pub last_fire_ms: Option<u64>,
    /// The next tick after now, in milliseconds since the Unix epoch (`None` when the
    /// expression has none, or this build cannot read it).
    pub next_fire_ms: Option<u64>,
}

/// One worker process, as the claims' record and the runs' leases show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    /// The worker's name (`Worker::named`).
    pub worker: String,
    /// Runs it holds under a live lease now.
    pub holding: u64,
    /// The latest end of its leases (renewed by its heartbeat), in milliseconds since
    /// the Unix epoch.
    pub lease_until_ms: Option<u64>,
    /// Its latest claim, in milliseconds since the Unix epoch.
    pub last_claim_ms: u64,
    /// Its claims in the last hour.
    pub claims_last_hour: u64,
}

/// What [`PostgresCheckpointStore::overview`] reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterOverview {
    /// Every recorded cron schedule, by group and id.
    pub schedules: Vec<ScheduleView>,
    /// Workers that claimed a run in the last day, latest first.
    pub workers: Vec<WorkerView>,
}

impl PostgresCheckpointStore {
    /// The cluster's cron schedules (with their last and next tick and the group's
    /// leader) and its recent workers (with the runs they hold and their leases).
    pub async fn overview(&self) -> Result<ClusterOverview, CanoError> {
        let db = self.db();
        let (schedules, leaders, fires) = (
            db.table("cano_schedules"),
            db.table("cano_leaders"),
            db.table("cano_fires"),
        );
        let (runs, claims) = (db.table("cano_runs"), db.table("cano_claims"));
        let schedule_sql = format!(
            "SELECT s.grp, s.schedule, s.expr, s.zone, s.workflow, s.label, l.leader,
                    coalesce(l.lease_until > clock_timestamp(), false),
                    (SELECT max(f.fire_at_ms) FROM {fires} f WHERE f.grp = s.grp AND f.schedule = s.schedule)
             FROM {schedules} s LEFT JOIN {leaders} l ON l.grp = s.grp
             ORDER BY s.grp, s.schedule"
        );
        let worker_sql = format!(
            "SELECT c.worker,
                    (SELECT count(*) FROM {runs} q WHERE q.worker = c.worker AND q.status = 'running'
                        AND q.lease_until > clock_timestamp()),
                    (SELECT (extract(epoch FROM max(q.lease_until)) * 1000)::float8 FROM {runs} q
                        WHERE q.worker = c.worker AND q.status = 'running'),
                    (extract(epoch FROM max(c.claimed_at)) * 1000)::bigint,
                    count(*) FILTER (WHERE c.claimed_at > clock_timestamp() - interval '1 hour')
             FROM {claims} c WHERE c.claimed_at > clock_timestamp() - interval '1 day'
             GROUP BY c.worker ORDER BY max(c.claimed_at) DESC"
        );
        let schedule_rows = db
            .query(5, "reading the cron schedules", &schedule_sql, &[])
            .await?;
        let worker_rows = db.query(5, "reading the workers", &worker_sql, &[]).await?;
        let now = Utc::now();
        let schedules = schedule_rows
            .iter()
            .map(|r| {
                let (expr, zone): (String, String) = (r.get(2), r.get(3));
                let next_fire_ms = Schedule::cron_in(&expr, &zone)
                    .ok()
                    .and_then(|s| s.next_cron(now))
                    .and_then(|t| u64::try_from(t.timestamp_millis()).ok());
                ScheduleView {
                    group: r.get(0),
                    schedule: r.get(1),
                    expr,
                    zone,
                    workflow: r.get(4),
                    label: r.get(5),
                    leader: r.get(6),
                    leader_live: r.get(7),
                    last_fire_ms: r
                        .get::<_, Option<i64>>(8)
                        .and_then(|t| u64::try_from(t).ok()),
                    next_fire_ms,
                }
            })
            .collect();
        let workers = worker_rows
            .iter()
            .map(|r| WorkerView {
                worker: r.get(0),
                holding: r.get::<_, i64>(1).max(0) as u64,
                // An infinite lease (Duration::MAX) reads as infinity.
                lease_until_ms: r.get::<_, Option<f64>>(2).map(|t| {
                    if t.is_finite() {
                        t.max(0.0) as u64
                    } else {
                        u64::MAX
                    }
                }),
                last_claim_ms: r.get::<_, i64>(3).max(0) as u64,
                claims_last_hour: r.get::<_, i64>(4).max(0) as u64,
            })
            .collect();
        Ok(ClusterOverview { schedules, workers })
    }
}

/// What [`RunQueue::requeue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeued {
    /// The queue's failed or cancelled run is queued again: a worker resumes it from
    /// its last checkpoint (or starts it, if it never wrote one).
    Again,
    /// A run driven outside the queue (its log only) is now in the queue: a worker
    /// that registered its workflow resumes it from its log.
    Adopted,
}

impl RunQueue {
    /// Sends `run` back to the workers: a failed or cancelled run of the queue is
    /// queued again (its claim count reset, its error cleared), and a run that only
    /// has a checkpoint log (driven by a store outside the queue) and is interrupted
    /// or failed is adopted by the queue. Either way a worker resumes it from its last
    /// checkpoint row, so fix what failed it first. Errors for a run that is queued,
    /// running, parked or finished, and for an unknown run.
    pub async fn requeue(&self, run: RunId) -> Result<Requeued, CanoError> {
        let db: &Db = self.store().db();
        let (runs, logs) = (db.table("cano_runs"), db.table("cano_logs"));
        let ready = ready_channel(&db.schema);
        let sql = format!(
            "WITH again AS (
                UPDATE {runs} SET status = 'queued', error = NULL, finished_at = NULL,
                    final_state = NULL, final_label = NULL, lease_until = NULL, worker = NULL,
                    cancel_requested = NULL, claims = 0, wake_at = NULL, not_before = NULL
                WHERE run_id = $1 AND status IN ('failed', 'cancelled')
                RETURNING workflow),
             adopted AS (
                INSERT INTO {runs} (run_id, workflow, initial_state, initial_label, status, started_at)
                SELECT l.run_id, l.workflow, ''::bytea, l.label, 'queued', l.created_at
                FROM {logs} l
                WHERE l.run_id = $1 AND l.status IN (0, 1)
                  AND NOT EXISTS (SELECT 1 FROM {runs} q WHERE q.run_id = $1)
                ON CONFLICT DO NOTHING
                RETURNING workflow),
             told AS (
                SELECT pg_notify('{ready}', workflow) FROM (SELECT workflow FROM again UNION ALL SELECT workflow FROM adopted) w)
             SELECT (SELECT count(*) FROM again), (SELECT count(*) FROM adopted), (SELECT count(*) FROM told)"
        );
        let doing = format!("requeueing run {run}");
        let row = db.query_one(5, &doing, &sql, &[&run_key(run)]).await?;
        let (again, adopted): (i64, i64) = (row.get(0), row.get(1));
        if again > 0 {
            return Ok(Requeued::Again);
        }
        if adopted > 0 {
            return Ok(Requeued::Adopted);
        }
        Err(self
            .not_actionable(
                run,
                "requeued",
                "only a failed, cancelled or interrupted run can be sent back to the workers",
            )
            .await)
    }

    /// Deletes everything kept of `run`, which must be over (finished, failed or
    /// cancelled in the queue; or a log no worker holds): its queue record, its
    /// checkpoint rows and its signal inbox. The claims' record and the actions'
    /// record stay, for audit. Errors for a run that is queued, running or parked
    /// (cancel it first) and for an unknown run.
    pub async fn forget(&self, run: RunId) -> Result<(), CanoError> {
        let db: &Db = self.store().db();
        let (runs, logs, rows) = (
            db.table("cano_runs"),
            db.table("cano_logs"),
            db.table("cano_rows"),
        );
        let (signals, keys) = (db.table("cano_signals"), db.table("cano_signal_keys"));
        // Locks the run's queue record (if any) so no worker claims it meanwhile.
        let sql = format!(
            "WITH target AS (
                SELECT $1::bigint AS run_id WHERE
                    NOT EXISTS (SELECT 1 FROM {runs} q WHERE q.run_id = $1
                                AND q.status IN ('queued', 'running', 'parked'))
                    AND (EXISTS (SELECT 1 FROM {runs} q WHERE q.run_id = $1)
                         OR EXISTS (SELECT 1 FROM {logs} l WHERE l.run_id = $1))),
             q AS (DELETE FROM {runs} WHERE run_id IN (SELECT run_id FROM target) RETURNING 1),
             l AS (DELETE FROM {logs} WHERE run_id IN (SELECT run_id FROM target) RETURNING 1),
             r AS (DELETE FROM {rows} WHERE run_id IN (SELECT run_id FROM target)),
             s AS (DELETE FROM {signals} WHERE run_id IN (SELECT run_id FROM target)),
             k AS (DELETE FROM {keys} WHERE run_id IN (SELECT run_id FROM target))
             SELECT count(*) FROM target"
        );
        let doing = format!("deleting run {run}");
        let row = db.query_one(5, &doing, &sql, &[&run_key(run)]).await?;
        if row.get::<_, i64>(0) > 0 {
            return Ok(());
        }
        Err(self
            .not_actionable(
                run,
                "deleted",
                "cancel it first, and delete it once it is over",
            )
            .await)
    }

    /// The error for an action `run` is in the wrong status for.
    async fn not_actionable(&self, run: RunId, done: &str, hint: &'static str) -> CanoError {
        match self.status(run).await {
            Ok(Some(record)) => CanoError::workflow(format!(
                "run {run} of workflow {:?} is {:?}, so it cannot be {done}",
                record.workflow, record.status
            ))
            .with_hint(hint),
            Ok(None) => CanoError::configuration(format!(
                "run {run} has no queue record and no checkpoint log it could be {done} from"
            ))
            .with_hint("check the run id (cano runs list shows them)"),
            Err(e) => e,
        }
    }
}
