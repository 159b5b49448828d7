//! The statements a [`RunQueue`](crate::RunQueue) runs: enqueueing (with a named
//! queue's partition policy), reading runs, declaring queues and cancelling runs.

use crate::awake::must_announce;
use crate::channels::{cancel_channel, done_channel, ready_channel};
use crate::db::Db;
use crate::queue_lock::queue_lock;

/// The columns of a run's record, in the order `queue::record` reads them.
pub(crate) const RECORD: &str = "run_id, workflow, status, claims, worker, final_label, error, final_state, queue, partition_key, priority";

/// A named queue's settings, in the order `queue::spec_of` reads them.
const SPEC: &str = "name, concurrency, worker_concurrency, partition_concurrency, rate_count, rate_period_ms, when_full";

/// A run's start (`not_before`) from a delay in ms (`delay`, a float8 parameter) or
/// a time in ms since the Unix epoch (`at`, a bigint one); NULL, at once, if neither.
fn start_time(delay: &str, at: &str) -> String {
    format!(
        "CASE WHEN {delay}::float8 IS NOT NULL THEN clock_timestamp() + {delay}::float8 * interval '1 millisecond'
              WHEN {at}::bigint IS NOT NULL THEN to_timestamp({at}::bigint / 1000.0) END"
    )
}

/// The run queue's statements, built once per [`RunQueue`](crate::RunQueue).
pub(crate) struct QueueSql {
    pub(crate) insert: String,
    pub(crate) insert_plain: String,
    pub(crate) by_key: String,
    pub(crate) select: String,
    pub(crate) select_many: String,
    pub(crate) watch: String,
    pub(crate) cancel_parked: String,
    pub(crate) declare: String,
    pub(crate) spec: String,
    pub(crate) lock_queue: String,
    pub(crate) active_in_partition: String,
    pub(crate) cancel: String,
    pub(crate) claims: String,
}

impl QueueSql {
    pub(crate) fn new(db: &Db) -> Self {
        let (runs, queues) = (db.table("cano_runs"), db.table("cano_queues"));
        let claims = db.table("cano_claims");
        let ready = ready_channel(&db.schema);
        let done = done_channel(&db.schema);
        let cancel = cancel_channel(&db.schema);
        // A run is announced unless a worker is awake to its workflow (see `awake`).
        let announce = must_announce(&db.schema, "$2");
        Self {
            // Times in µs since the Unix epoch, on the database's clock.
            claims: format!(
                "SELECT run_id, epoch, worker, queue, partition_key,
                    (extract(epoch FROM claimed_at) * 1e6)::bigint,
                    (extract(epoch FROM ended_at) * 1e6)::bigint, outcome
                 FROM {claims} WHERE run_id = ANY($1) ORDER BY claimed_at, run_id, epoch"
            ),
            // $6 is 'queued', or 'cancelled' for a run its full partition skips (with
            // the reason in $12); $10 is a delay in ms, $11 a start time in ms.
            insert: format!(
                "WITH added AS (
                    INSERT INTO {runs} (run_id, workflow, idempotency_key, initial_state, initial_label,
                        status, queue, partition_key, priority, not_before, finished_at, error)
                    VALUES ($1, $2, $3, $4, $5, $6::text, $7, $8, $9, {start},
                        CASE WHEN $6::text = 'cancelled' THEN clock_timestamp() END, $12)
                    ON CONFLICT DO NOTHING RETURNING run_id, status),
                 woke AS (SELECT pg_notify('{ready}', $2) FROM added WHERE status = 'queued' AND {announce}),
                 told AS (SELECT pg_notify('{done}', run_id::text) FROM added WHERE status = 'cancelled')
                 SELECT run_id, (SELECT count(*) FROM woke), (SELECT count(*) FROM told) FROM added",
                start = start_time("$10", "$11"),
            ),
            // The insert above on named queue $6, if it is declared and its policy
            // does not look at partitions (then nothing stands between a run and its
            // queue but the queue's existence): one statement, where the policy's way
            // is a transaction of four. It says whether the queue is declared, whether
            // it is such a queue, and the run if it was added.
            insert_plain: format!(
                "WITH spec AS (
                    SELECT when_full = 'queue' OR partition_concurrency IS NULL AS plain
                    FROM {queues} WHERE name = $6),
                 added AS (
                    INSERT INTO {runs} (run_id, workflow, idempotency_key, initial_state, initial_label,
                        status, queue, partition_key, priority, not_before)
                    SELECT $1::bigint, $2::text, $3::text, $4::bytea, $5::text, 'queued', $6::text,
                        $7::text, $8::integer, {start}
                    FROM spec WHERE spec.plain
                    ON CONFLICT DO NOTHING RETURNING run_id),
                 woke AS (SELECT pg_notify('{ready}', $2) FROM added WHERE {announce})
                 SELECT EXISTS (SELECT FROM spec), coalesce((SELECT plain FROM spec), false),
                    (SELECT run_id FROM added), (SELECT count(*) FROM woke)",
                start = start_time("$9", "$10"),
            ),
            by_key: format!("SELECT run_id, workflow FROM {runs} WHERE idempotency_key = $1"),
            select: format!("SELECT {RECORD} FROM {runs} WHERE run_id = $1"),
            select_many: format!("SELECT {RECORD} FROM {runs} WHERE run_id = ANY($1)"),
            // Asks for the end of these runs to be announced (see `RunQueue::wait_all`).
            // Locks in run order, as the checkpoint writes and heartbeats do: locking
            // several runs in another order could deadlock with them.
            watch: format!(
                "WITH locked AS (
                    SELECT run_id FROM {runs} WHERE run_id = ANY($1) AND NOT watched
                      AND status IN ('queued', 'running', 'parked')
                    ORDER BY run_id FOR UPDATE)
                 UPDATE {runs} r SET watched = true FROM locked WHERE r.run_id = locked.run_id"
            ),
            cancel_parked: format!(
                "WITH cancelled AS (
                    UPDATE {runs} SET status = 'failed', finished_at = clock_timestamp(),
                        wake_at = NULL, error = 'cancelled while parked'
                    WHERE run_id = $1 AND status = 'parked'
                    RETURNING run_id, watched),
                 note AS (SELECT pg_notify('{done}', run_id::text) FROM cancelled WHERE watched)
                 SELECT (SELECT count(*) FROM cancelled), (SELECT count(*) FROM note)"
            ),
            // Workers read the settings at every claim; the notice makes idle ones
            // claim at once under limits that may have been raised. The queue's lock
            // is taken first (once, in an initplan, before the row is written), so a
            // claim runs wholly under the old limits or wholly under the new.
            declare: format!(
                "WITH locked AS (SELECT {lock}),
                 saved AS (
                    INSERT INTO {queues} ({SPEC})
                    SELECT $1::text, $2::integer, $3::integer, $4::integer, $5::integer, $6::bigint, $7::text
                    WHERE (SELECT count(*) FROM locked) = 1
                    ON CONFLICT (name) DO UPDATE SET concurrency = $2, worker_concurrency = $3,
                        partition_concurrency = $4, rate_count = $5, rate_period_ms = $6, when_full = $7,
                        updated_at = clock_timestamp()
                    RETURNING name)
                 SELECT pg_notify('{ready}', name) FROM saved",
                lock = queue_lock(&db.schema, "$1"),
            ),
            spec: format!("SELECT {SPEC} FROM {queues} WHERE name = $1"),
            // The queue's lock (see `queue_lock`), taken by an enqueue whose policy
            // looks at its partition, as by every claim of the queue: so a
            // partition's count cannot change under either. A statement of its
            // own, so that the spec read after it sees any declaration it waited for.
            lock_queue: format!("SELECT FROM {lock}", lock = queue_lock(&db.schema, "$1")),
            // A run asked to cancel still holds its slot, so it counts as active.
            active_in_partition: format!(
                "SELECT run_id, cancel_requested IS NOT NULL FROM {runs}
                 WHERE queue = $1 AND partition_key = $2 AND status IN ('queued', 'running')
                 ORDER BY enqueued_at, run_id"
            ),
            // A run that never started is cancelled at once; a running one is asked
            // (its worker cancels it as any run is cancelled, compensations included);
            // one parked, or handed back after starting, is made due so that a worker
            // claims it and cancels it the same way. (SET reads the old row; RETURNING
            // the new one.) The runs are locked in run order first, as the checkpoint
            // writes and heartbeats lock theirs: a bulk cancel in another order could
            // deadlock with them.
            cancel: format!(
                "WITH locked AS (
                    SELECT run_id FROM {runs} WHERE run_id = ANY($1) AND status IN ('queued', 'running', 'parked')
                    ORDER BY run_id FOR UPDATE),
                 target AS (
                    UPDATE {runs} r SET cancel_requested = $2,
                        status = CASE WHEN r.status = 'queued' AND r.started_at IS NULL THEN 'cancelled' ELSE r.status END,
                        finished_at = CASE WHEN r.status = 'queued' AND r.started_at IS NULL THEN clock_timestamp() ELSE r.finished_at END,
                        error = CASE WHEN r.status = 'queued' AND r.started_at IS NULL THEN $2 ELSE r.error END,
                        wake_at = CASE WHEN r.status = 'parked' THEN clock_timestamp() ELSE r.wake_at END
                    FROM locked WHERE r.run_id = locked.run_id AND r.status IN ('queued', 'running', 'parked')
                    RETURNING r.run_id, r.status, r.workflow, r.watched),
                 told AS (SELECT pg_notify('{done}', run_id::text) FROM target WHERE status = 'cancelled' AND watched),
                 asked AS (SELECT pg_notify('{cancel}', run_id::text) FROM target WHERE status = 'running'),
                 due AS (SELECT pg_notify('{ready}', workflow) FROM target WHERE status IN ('queued', 'parked'))
                 SELECT run_id, status,
                     (SELECT count(*) FROM told) + (SELECT count(*) FROM asked) + (SELECT count(*) FROM due)
                 FROM target"
            ),
        }
    }
}
