//! The statements a [`Worker`](crate::Worker) runs against the queue: claiming runs
//! (queued, with an expired lease, or parked and due), failing poison runs, renewing
//! leases, and recording how a claim ended (finished, failed, handed back, parked).

use crate::queue::{done_channel, ready_channel};
use crate::store::PostgresCheckpointStore;

/// The worker's statements, built once per worker.
pub(crate) struct WorkerSql {
    pub(crate) claim: String,
    pub(crate) poison: String,
    pub(crate) heartbeat: String,
    pub(crate) finish: String,
    pub(crate) fail: String,
    pub(crate) release: String,
    pub(crate) park_lock: String,
    pub(crate) park: String,
    pub(crate) next_wake: String,
}

impl WorkerSql {
    pub(crate) fn new(store: &PostgresCheckpointStore) -> Self {
        let db = store.db();
        let (runs, logs, rows) = (
            db.table("cano_runs"),
            db.table("cano_logs"),
            db.table("cano_rows"),
        );
        let (signals, keys) = (db.table("cano_signals"), db.table("cano_signal_keys"));
        let done = done_channel(&db.schema);
        // Past what a timestamp holds (a lease of Duration::MAX): never expires.
        let lease = "CASE WHEN $4::float8 > 3e14 THEN 'infinity'::timestamptz ELSE clock_timestamp() + $4::float8 * interval '1 millisecond' END";
        Self {
            claim: format!(
                "WITH picked AS (
                    SELECT run_id FROM {runs}
                    WHERE workflow = ANY($1) AND claims < $5
                      AND (status = 'queued' OR (status = 'running' AND lease_until < clock_timestamp())
                           OR (status = 'parked' AND wake_at <= clock_timestamp()))
                    ORDER BY enqueued_at LIMIT $2
                    FOR UPDATE SKIP LOCKED)
                 UPDATE {runs} q SET status = 'running', epoch = q.epoch + 1, claims = q.claims + 1,
                     worker = $3, lease_until = {lease}, wake_at = NULL,
                     started_at = coalesce(q.started_at, clock_timestamp())
                 FROM picked WHERE q.run_id = picked.run_id
                 RETURNING q.run_id, q.workflow, q.epoch, q.claims, q.initial_state,
                     EXISTS (SELECT 1 FROM {logs} l WHERE l.run_id = q.run_id)"
            ),
            poison: format!(
                "WITH dead AS (
                    UPDATE {runs} SET status = 'failed', finished_at = clock_timestamp(), lease_until = NULL,
                        error = format('claimed %s times without finishing (the limit is %s): every worker that took it stopped before it ended, so it is treated as a poison run', claims, $2::integer)
                    WHERE workflow = ANY($1) AND claims >= $2
                      AND (status = 'queued' OR (status = 'running' AND lease_until < clock_timestamp()))
                    RETURNING run_id)
                 SELECT pg_notify('{done}', run_id::text) FROM dead"
            ),
            // Renews exactly the claims given, by run and epoch.
            heartbeat: format!(
                "UPDATE {runs} q SET lease_until = CASE WHEN $3::float8 > 3e14 THEN 'infinity'::timestamptz
                        ELSE clock_timestamp() + $3::float8 * interval '1 millisecond' END
                 FROM unnest($1::bigint[], $2::bigint[]) AS held(run_id, epoch)
                 WHERE q.run_id = held.run_id AND q.epoch = held.epoch AND q.status = 'running'
                 RETURNING q.run_id, q.epoch"
            ),
            finish: format!(
                "WITH fin AS (
                    UPDATE {runs} SET status = 'finished', finished_at = clock_timestamp(), lease_until = NULL,
                        final_state = $3, final_label = $4
                    WHERE run_id = $1 AND epoch = $2 AND status = 'running'
                    RETURNING run_id),
                 rows AS (DELETE FROM {rows} WHERE run_id IN (SELECT run_id FROM fin) AND NOT $5),
                 logs AS (DELETE FROM {logs} WHERE run_id IN (SELECT run_id FROM fin) AND NOT $5),
                 inbox AS (DELETE FROM {signals} WHERE run_id IN (SELECT run_id FROM fin) AND NOT $5),
                 keys AS (DELETE FROM {keys} WHERE run_id IN (SELECT run_id FROM fin) AND NOT $5),
                 note AS (SELECT pg_notify('{done}', run_id::text) FROM fin)
                 SELECT count(*) FROM fin, note"
            ),
            fail: format!(
                "WITH failed AS (
                    UPDATE {runs} SET status = 'failed', finished_at = clock_timestamp(), lease_until = NULL, error = $3
                    WHERE run_id = $1 AND epoch = $2 AND status = 'running'
                    RETURNING run_id)
                 SELECT pg_notify('{done}', run_id::text) FROM failed"
            ),
            // A hand-back is not a failed claim: it does not count toward the poison limit.
            release: format!(
                "WITH back AS (
                    UPDATE {runs} SET status = 'queued', lease_until = NULL, claims = greatest(claims - 1, 0)
                    WHERE run_id = $1 AND epoch = $2 AND status = 'running'
                    RETURNING workflow)
                 SELECT pg_notify('{ready}', workflow) FROM back",
                ready = ready_channel(&db.schema)
            ),
            // Parking takes the run's row lock first, in its own statement: a send to
            // the run then either committed before (and the next statement, with a
            // snapshot of its own, sees its signal) or waits for the park (and finds
            // the run parked, which it wakes).
            park_lock: format!(
                "SELECT 1 FROM {runs} WHERE run_id = $1 AND epoch = $2 AND status = 'running' FOR UPDATE"
            ),
            // Not a failed claim: it does not count toward the poison limit.
            park: format!(
                "WITH parked AS (
                    UPDATE {runs} SET status = 'parked', lease_until = NULL, waits_for = $3,
                        claims = greatest(claims - 1, 0),
                        wake_at = CASE
                            WHEN EXISTS (SELECT 1 FROM {signals} s WHERE s.run_id = $1 AND s.name = ANY($3))
                                THEN clock_timestamp()
                            WHEN $4::bigint IS NULL THEN 'infinity'::timestamptz
                            ELSE to_timestamp($4::bigint / 1000.0) END
                    WHERE run_id = $1 AND epoch = $2 AND status = 'running'
                    RETURNING workflow, wake_at <= clock_timestamp() AS due),
                 note AS (SELECT pg_notify('{ready}', workflow) FROM parked WHERE due)
                 SELECT (SELECT count(*) FROM parked), (SELECT count(*) FROM note)",
                ready = ready_channel(&db.schema)
            ),
            // Milliseconds until the earliest deadline of a parked run of these workflows.
            next_wake: format!(
                "SELECT (extract(epoch FROM (min(wake_at) - clock_timestamp())) * 1000)::float8
                 FROM {runs} WHERE status = 'parked' AND workflow = ANY($1) AND wake_at < 'infinity'"
            ),
        }
    }
}
