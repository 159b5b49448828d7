//! The statements a [`Worker`](crate::Worker) runs against the queue: claiming runs
//! (queued, with an expired lease, or parked and due) from the default queue and,
//! within their limits, from named queues; failing poison runs, renewing leases, and
//! recording how a claim ended (finished, failed, cancelled, handed back, parked).
//!
//! Every claim is written to `cano_claims` (run, epoch, worker, when it began) and
//! closed there when it ends, or, if its worker died, at the end of its lease when the
//! run is claimed again: the database's own record of who ran what when.

use crate::awake;
use crate::channels::{done_channel, ready_channel};
use crate::db::unnest_batch;
use crate::queue_lock::queue_lock;
use crate::store::PostgresCheckpointStore;

/// The worker's statements, built once per worker.
pub(crate) struct WorkerSql {
    pub(crate) claim: String,
    pub(crate) claim_queue: String,
    pub(crate) queue_lock: String,
    pub(crate) poison: String,
    pub(crate) ready: String,
    pub(crate) heartbeat: String,
    pub(crate) finish: String,
    pub(crate) fail: String,
    pub(crate) cancelled: String,
    pub(crate) release: String,
    pub(crate) park_lock: String,
    pub(crate) park: String,
    pub(crate) next_wake: String,
    pub(crate) hand_on: String,
    pub(crate) front: String,
    pub(crate) wake: String,
    pub(crate) watched: String,
    pub(crate) doze: String,
    pub(crate) settle: String,
    pub(crate) announce: String,
}

/// The order of a named queue's waiting runs in their index (`cano_runs_queued`),
/// for a run `r`: a check for a waiting run that reads in it reads the queue's head,
/// where statistics taken while a backlog waited let the planner expect the first
/// row of a full scan to match, and it read every finished run before one queued.
const QUEUED_ORDER: &str = "r.partition_key, r.priority DESC, r.enqueued_at, r.run_id";

/// Whether run `r` can be claimed: queued and due, its lease expired, or parked and due.
/// Times are compared with the statement's start (stable within it), not the clock
/// (volatile), so that the partial indexes on lease, wake and start times serve the
/// comparison as a range instead of filtering every row they hold.
fn claimable(r: &str) -> String {
    format!(
        "({r}.status = 'queued' AND ({r}.not_before IS NULL OR {r}.not_before <= statement_timestamp()))
         OR ({r}.status = 'running' AND {r}.lease_until < statement_timestamp())
         OR ({r}.status = 'parked' AND {r}.wake_at <= statement_timestamp())"
    )
}

/// Whether `runs` holds a run of the workflows `$1` on the queue `queue` (`IS NULL`, or
/// `= q.name`) that can be claimed now, and could for at least `$3` ms (a worker that
/// stepped back looks only for runs the others left waiting; 0 for any). The claim
/// limit is the claim's to check.
fn has_claimable(runs: &str, queue: &str) -> String {
    // Not the claim count: a hint needs no exactness (the claim checks it), and with
    // it the planner reaches for the index of over-claimed runs.
    let mine = format!("r.queue {queue} AND r.workflow = ANY($1)");
    // Named queues' runs are in indexes that hold only runs with a queue.
    let named = queue.starts_with('=');
    let mine = if named {
        format!("{mine} AND r.queue IS NOT NULL")
    } else {
        mine
    };
    // Scalar subqueries, not EXISTS: for a test per queue (`= q.name`), the planner
    // turns OR-ed EXISTS into hashed subplans that read every queued run of every
    // queue (measured: 3,900 rows, 1.6 ms a call); a scalar subquery with LIMIT 1
    // is run per queue, reading one index entry.
    let due = "statement_timestamp() - $3::float8 * interval '1 millisecond'";
    let any = |filter: &str, order: &str| {
        format!(
            "coalesce((SELECT true FROM {runs} r WHERE {filter} AND {mine} {order} LIMIT 1), false)"
        )
    };
    // A named queue's waiting runs are read in its index's order (see QUEUED_ORDER).
    let queued_order = if named {
        format!("ORDER BY {QUEUED_ORDER}")
    } else {
        String::new()
    };
    format!(
        "({} OR {} OR {})",
        any(
            &format!("r.status = 'queued' AND (r.not_before IS NULL OR r.not_before <= statement_timestamp())
                AND greatest(r.enqueued_at, r.not_before) <= {due}"),
            &queued_order
        ),
        any(
            &format!("r.status = 'running' AND r.lease_until < statement_timestamp() AND r.lease_until <= {due}"),
            ""
        ),
        any(
            &format!("r.status = 'parked' AND r.wake_at <= statement_timestamp() AND r.wake_at <= {due}"),
            ""
        ),
    )
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
        let (queues, partitions, claims) = (
            db.table("cano_queues"),
            db.table("cano_partitions"),
            db.table("cano_claims"),
        );
        let done = done_channel(&db.schema);
        let ready = ready_channel(&db.schema);
        // A claim acts on its run only while its lease lives: once it has expired, the
        // run's slot counts as free and another claim may hold it, so a worker that
        // stalled past its lease (paused, swapped out) neither renews nor records
        // anything when it wakes; the run is claimed again and resumes from its last
        // checkpoint, and the stalled claim is closed at its lease's end.
        // Whether the claim of run `r` (a prefix: "q." or "") still holds it. Wrapped
        // (`IS TRUE`) so that no index of running runs can serve it, and the primary
        // key does: with statistics that counted none running, the planner read that
        // whole index, dead versions and all, to end one run.
        let holds = |r: &str| {
            format!("({r}status = 'running' AND {r}lease_until >= clock_timestamp()) IS TRUE")
        };
        let (holds_q, holds_here) = (holds("q."), holds(""));
        // Past what a timestamp holds (a lease of Duration::MAX): never expires.
        let lease = "CASE WHEN $4::float8 > 3e14 THEN 'infinity'::timestamptz ELSE clock_timestamp() + $4::float8 * interval '1 millisecond' END";
        let claimable_q = claimable("q");
        // Whether a claimed run has a log (to resume from) is read once for the
        // round, by keys. Read per run, the planner (whose statistics of the logs,
        // a table of the runs in flight, are often of an empty one) went through a
        // whole index of logs for each; at worst now it reads the table once.
        // Claims the runs of `picked` (run_id, was, old_lease, turn), records each
        // claim, and closes the claim whose lease expired (at its lease's end) if it
        // had one. Claims of one statement are recorded at its start, a microsecond
        // apart in the order their turns came (`turn`, from 0): the record then says
        // who was served first, where the times rows happen to be written at follow
        // the order the plan met them in.
        let claim_tail = format!(
            "claimed AS (
                UPDATE {runs} q SET status = 'running', epoch = q.epoch + 1, claims = q.claims + 1,
                    worker = $3, lease_until = {lease}, wake_at = NULL,
                    started_at = coalesce(q.started_at, clock_timestamp())
                FROM picked WHERE q.run_id = picked.run_id AND ({claimable_q})
                RETURNING q.run_id, q.workflow, q.epoch, q.claims, q.initial_state, q.queue,
                    q.partition_key, q.cancel_requested, picked.was, picked.old_lease, picked.turn),
             history AS (
                INSERT INTO {claims} (run_id, epoch, workflow, queue, partition_key, worker, claimed_at)
                SELECT run_id, epoch, workflow, queue, partition_key, $3,
                    statement_timestamp() + turn * interval '1 microsecond' FROM claimed),
             expired AS (
                UPDATE {claims} c SET ended_at = least(claimed.old_lease, clock_timestamp()), outcome = 'lease expired'
                FROM claimed WHERE c.run_id = claimed.run_id AND c.epoch < claimed.epoch
                  AND c.ended_at IS NULL AND claimed.was = 'running'),
             logged AS (
                SELECT run_id FROM {logs} WHERE run_id = ANY(ARRAY(SELECT run_id FROM claimed))),
             outcome AS (
                SELECT run_id, workflow, epoch, claims, initial_state,
                    run_id IN (SELECT run_id FROM logged), cancel_requested, queue
                FROM claimed)"
        );
        // Closes claim ($1, $2) in the record, if `ended` (a CTE) holds the run.
        let close = |ended: &str, outcome: &str| {
            format!(
                "closed AS (
                    UPDATE {claims} SET ended_at = clock_timestamp(), outcome = {outcome}
                    WHERE run_id = $1 AND epoch = $2 AND ended_at IS NULL
                      AND EXISTS (SELECT 1 FROM {ended}))"
            )
        };
        // A run of a named queue that ends frees a slot: idle workers are told if
        // `tell` holds. Its own worker passes false unless it is stopping: it claims
        // again itself, and tells the others only if it leaves the slot (`hand_on`).
        // Telling every idle worker of every end cost each of them a round of
        // statements per run, so a cluster did more work per run the more workers it had.
        let freed = |ended: &str, tell: &str| {
            format!(
                "freed AS (SELECT pg_notify('{ready}', workflow) FROM {ended} WHERE queue IS NOT NULL AND {tell})"
            )
        };
        // Ends claim ($1, $2) with `status` and `error` ($3), closing its record,
        // freeing its slot (telling idle workers if $4) and announcing the run as over.
        let over = |status: &str, error: &str| {
            format!(
                "WITH ended AS (
                    UPDATE {runs} SET status = '{status}', finished_at = clock_timestamp(), lease_until = NULL,
                        error = {error}
                    WHERE run_id = $1 AND epoch = $2 AND {holds_here}
                    RETURNING run_id, workflow, queue, partition_key, watched),
                 {closed},
                 {freed},
                 note AS (SELECT pg_notify('{done}', run_id::text) FROM ended WHERE watched)
                 SELECT (SELECT count(*) FROM ended), (SELECT count(*) FROM note), (SELECT count(*) FROM freed)",
                closed = close("ended", &format!("'{status}'")),
                freed = freed("ended", "$4::bool"),
            )
        };
        // A running run of a queue whose lease still holds, for counting a queue's
        // busy slots. Written so that no index can serve the lease test: the index of
        // leases keeps an entry for every running version of every run until vacuum
        // removes it, and its future half holds every run finished within the last
        // lease. Counting through it is a plan the planner picks (seen on a copy of a
        // queue mid-drain: 2,422 blocks to count 128 running runs, where the queue's
        // index of running runs, the way in now, reads a few).
        let held = |r: &str| format!("({r}lease_until >= statement_timestamp()) IS TRUE");
        let held_live = held("");
        Self {
            // The default queue: no limits, so SKIP LOCKED lets claims run side by side.
            // Each way a run can be claimable is read from its own index, in order,
            // up to the runs asked for (per workflow, for waiting runs): so a claim
            // reads the head of the backlog, not the backlog. As one test (`OR`-ed
            // tests and `= ANY` of the workflows), the planner read and sorted every
            // waiting run at every claim: 1,500 blocks and 50 ms a claim with
            // 30,000 waiting, a fifth of the starts a second of a short backlog. A
            // run locked here but not taken (a worker of several workflows, with
            // runs waiting in more than one) is let go when the claim commits.
            claim: format!(
                "WITH candidates AS (
                    SELECT c.* FROM unnest($1::text[]) w(name) CROSS JOIN LATERAL (
                        SELECT run_id, status AS was, lease_until AS old_lease, priority, enqueued_at
                        FROM {runs} r
                        WHERE r.queue IS NULL AND r.workflow = w.name AND r.status = 'queued'
                          AND (r.not_before IS NULL OR r.not_before <= statement_timestamp())
                          AND r.claims < $5
                        ORDER BY r.priority DESC, r.enqueued_at LIMIT $2
                        FOR UPDATE SKIP LOCKED) c
                    UNION ALL
                    SELECT * FROM (
                        SELECT run_id, status AS was, lease_until AS old_lease, priority, enqueued_at
                        FROM {runs} r
                        WHERE r.status = 'running' AND r.lease_until < statement_timestamp()
                          AND r.queue IS NULL AND r.workflow = ANY($1) AND r.claims < $5
                        ORDER BY r.lease_until LIMIT $2
                        FOR UPDATE SKIP LOCKED) expired
                    UNION ALL
                    SELECT * FROM (
                        SELECT run_id, status AS was, lease_until AS old_lease, priority, enqueued_at
                        FROM {runs} r
                        WHERE r.status = 'parked' AND r.wake_at <= statement_timestamp()
                          AND r.queue IS NULL AND r.workflow = ANY($1) AND r.claims < $5
                        ORDER BY r.wake_at LIMIT $2
                        FOR UPDATE SKIP LOCKED) due),
                 locked AS (SELECT * FROM candidates ORDER BY priority DESC, enqueued_at, run_id LIMIT $2),
                 picked AS (
                    SELECT run_id, was, old_lease,
                        row_number() OVER (ORDER BY priority DESC, enqueued_at, run_id) - 1 AS turn
                    FROM locked),
                 {claim_tail}
                 SELECT * FROM outcome"
            ),
            // A named queue, under its lock (taken by `queue_lock` before, in the
            // same transaction, so this statement's snapshot follows it), so neither
            // its limits nor the counts below can change until the claim commits.
            // $6 is the queue; its limits (NULL: none) cap the runs in the cluster,
            // on this worker, per partition, and the claims per window. Partitions
            // take turns: within a priority, every partition's first candidate
            // before any second, the least recently served first. Only the
            // head of each waiting partition is read (a skip scan finds the partitions
            // with queued runs), so a claim costs the partitions waiting and the runs
            // taken, not the runs queued. Its last column is the budget the limits
            // left (one row with only that if none was claimed): fewer claims than
            // the budget means the runs ran out, not the slots. The runs chosen are
            // looked up by key (`= ANY` of an array): the planner cannot know how
            // few the budget lets through, and once statistics counted thousands of
            // queued runs (an ANALYZE mid-drain) it joined them to every run with a
            // full scan, three times a claim (2,000 blocks; starts fell from 3,500 to
            // 1,300 a second).
            claim_queue: format!(
                "WITH RECURSIVE spec AS (
                    SELECT concurrency, worker_concurrency, partition_concurrency, rate_count, rate_period_ms
                    FROM {queues} WHERE name = $6),
                 live AS (
                    SELECT partition_key, worker FROM {runs}
                    WHERE queue = $6 AND status = 'running' AND {held_live}),
                 budget AS (
                    SELECT least($2::bigint,
                        coalesce((SELECT concurrency FROM spec) - (SELECT count(*) FROM live), $2::bigint),
                        coalesce((SELECT worker_concurrency FROM spec) - (SELECT count(*) FROM live WHERE worker = $3), $2::bigint),
                        CASE WHEN (SELECT rate_count FROM spec) IS NULL THEN $2::bigint
                            -- The statement's start, not the clock: a stable time lets the
                            -- index of claims by queue and time serve the window.
                            ELSE (SELECT rate_count FROM spec) - (SELECT count(*) FROM {claims}
                                WHERE queue = $6 AND claimed_at > statement_timestamp()
                                    - (SELECT rate_period_ms FROM spec) * interval '1 millisecond') END) AS n),
                 busy AS (SELECT partition_key, count(*) AS n FROM live GROUP BY partition_key),
                 keys AS (
                    SELECT min(partition_key) AS k FROM {runs} WHERE queue = $6 AND status = 'queued'
                    UNION ALL
                    SELECT (SELECT min(partition_key) FROM {runs}
                            WHERE queue = $6 AND status = 'queued' AND partition_key > keys.k)
                    FROM keys WHERE keys.k IS NOT NULL),
                 waiting AS (
                    SELECT w.run_id, w.partition_key, w.priority, w.enqueued_at
                    FROM keys CROSS JOIN LATERAL (
                        SELECT run_id, partition_key, priority, enqueued_at FROM {runs}
                        WHERE queue = $6 AND partition_key = keys.k AND status = 'queued'
                          AND (not_before IS NULL OR not_before <= statement_timestamp())
                          AND workflow = ANY($1) AND claims < $5
                        ORDER BY priority DESC, enqueued_at, run_id
                        LIMIT (SELECT greatest(least(b.n, coalesce((SELECT partition_concurrency FROM spec)
                                    - (SELECT count(*) FROM live WHERE live.partition_key = keys.k), b.n)), 0)
                               FROM budget b)) w
                    WHERE keys.k IS NOT NULL
                    UNION ALL
                    SELECT run_id, partition_key, priority, enqueued_at FROM {runs}
                    WHERE queue = $6 AND workflow = ANY($1) AND claims < $5
                      AND ((status = 'running' AND lease_until < statement_timestamp())
                           OR (status = 'parked' AND wake_at <= statement_timestamp()))),
                 candidates AS (
                    SELECT w.*, row_number() OVER (PARTITION BY w.partition_key
                                                   ORDER BY w.priority DESC, w.enqueued_at, w.run_id) AS rn
                    FROM waiting w),
                 chosen AS (
                    SELECT c.run_id, row_number() OVER (ORDER BY c.priority DESC, c.rn,
                        p.served_at NULLS FIRST, c.enqueued_at, c.run_id) - 1 AS turn
                    FROM candidates c
                    LEFT JOIN busy b ON b.partition_key = c.partition_key
                    LEFT JOIN {partitions} p ON p.queue = $6 AND p.partition_key = c.partition_key
                    WHERE (SELECT partition_concurrency FROM spec) IS NULL
                       OR c.rn <= (SELECT partition_concurrency FROM spec) - coalesce(b.n, 0)
                    ORDER BY turn
                    LIMIT (SELECT greatest(n, 0) FROM budget)),
                 picked AS (
                    SELECT r.run_id, r.status AS was, r.lease_until AS old_lease, r.partition_key,
                        (SELECT turn FROM chosen WHERE chosen.run_id = r.run_id) AS turn
                    FROM {runs} r WHERE r.run_id = ANY(ARRAY(SELECT run_id FROM chosen))
                    ORDER BY r.run_id FOR UPDATE OF r),
                 served AS (
                    INSERT INTO {partitions} (queue, partition_key, served_at)
                    SELECT DISTINCT ON (partition_key) $6, partition_key, clock_timestamp() FROM picked
                    ON CONFLICT (queue, partition_key) DO UPDATE SET served_at = excluded.served_at),
                 {claim_tail}
                 SELECT outcome.*, b.n, extract(epoch FROM statement_timestamp())::float8,
                     (SELECT partition_concurrency FROM spec) IS NOT NULL
                 FROM (SELECT greatest(n, 0) AS n FROM budget) b LEFT JOIN outcome ON true"
            ),
            // Takes queue $1's lock (see `queue_lock`); says when it was asked for
            // (the claim after it says when it began, so the worker learns how long
            // it waited).
            queue_lock: format!(
                "SELECT extract(epoch FROM statement_timestamp())::float8 FROM {lock}",
                lock = queue_lock(&db.schema, "$1"),
            ),
            // Takes the front of the workflows named by $1 for this session, if no
            // other session holds it (see `Shared::settle_listening`).
            front: format!(
                "SELECT pg_try_advisory_lock(hashtext('cano-front:{schema}'), hashtext($1))",
                schema = db.schema
            ),
            // A worker awake to its workflows' new runs, and its way back (see `awake`).
            wake: awake::wake(&db.schema, &ready),
            watched: awake::watched(&db.schema),
            doze: awake::doze(&db.schema),
            settle: awake::settle(&db.schema),
            // New runs of the workflows $1 that an awake worker leaves to the others.
            announce: format!("SELECT count(pg_notify('{ready}', w)) FROM unnest($1::text[]) w"),
            // Fails poison runs, closing their last claim at its lease's end (run once
            // a second at most: a run only becomes poison when a lease expires). The
            // runs found are then addressed by key (`= ANY`): joined, the kept plan
            // hashed them against every run and every claim, once a second.
            poison: format!(
                "WITH doomed AS (
                    SELECT run_id, lease_until FROM {runs}
                    WHERE run_id = ANY(ARRAY(
                        SELECT run_id FROM {runs} WHERE status = 'running' AND lease_until < statement_timestamp()
                          AND workflow = ANY($1) AND claims >= $2
                        UNION ALL
                        SELECT run_id FROM {runs} WHERE status = 'queued' AND claims > 0 AND claims >= $2
                          AND workflow = ANY($1)))
                      AND claims >= $2
                      AND (status = 'queued' OR (status = 'running' AND lease_until < statement_timestamp()))
                    FOR UPDATE SKIP LOCKED),
                 dead AS (
                    UPDATE {runs} q SET status = 'failed', finished_at = clock_timestamp(), lease_until = NULL,
                        error = format('claimed %s times without finishing (the limit is %s): every worker that took it stopped before it ended, so it is treated as a poison run', q.claims, $2::integer)
                    FROM doomed WHERE q.run_id = ANY(ARRAY(SELECT run_id FROM doomed)) AND q.run_id = doomed.run_id
                    RETURNING q.run_id, q.workflow, q.queue, q.partition_key, doomed.lease_until, q.watched),
                 closed AS (
                    UPDATE {claims} c SET ended_at = least(coalesce(dead.lease_until, clock_timestamp()), clock_timestamp()),
                        outcome = 'lease expired'
                    FROM dead WHERE c.run_id = ANY(ARRAY(SELECT run_id FROM dead)) AND c.run_id = dead.run_id
                      AND c.ended_at IS NULL),
                 told AS (SELECT pg_notify('{done}', run_id::text) FROM dead WHERE watched),
                 {freed}
                 SELECT (SELECT count(*) FROM told) + (SELECT count(*) FROM freed)",
                freed = freed("dead", "true")
            ),
            // Where this worker has runs to claim: the default queue (whether), and the
            // named queues. Each branch of a test is one index's range, so an idle
            // round costs little however many runs are stored.
            // Named queues are listed whatever their limits: the claim checks every
            // limit under the queue's lock, and a queue it finds full is then asked
            // only for the slots this worker freed of it (see `Turn::capped`). ($2,
            // this worker, is among the parameters but not read.)
            ready: format!(
                "SELECT {default_ready},
                     array(SELECT q.name FROM {queues} q WHERE {queue_ready} AND $2::text IS NOT NULL)",
                default_ready = has_claimable(&runs, "IS NULL"),
                queue_ready = has_claimable(&runs, "= q.name")
            ),
            // Renews exactly the claims given, by run and epoch, and says which of them
            // are asked to cancel. The rows are locked in run order first, as a batch
            // of checkpoint writes locks them (in any other order the two deadlock),
            // found by key alone (see `finish`).
            heartbeat: format!(
                "WITH locked AS (
                    SELECT l.run_id
                    FROM (SELECT * FROM {held} AS held(run_id, epoch)
                          ORDER BY run_id) held
                    CROSS JOIN LATERAL (
                        SELECT q.run_id FROM {runs} q WHERE q.run_id = held.run_id AND q.epoch = held.epoch
                        FOR UPDATE OF q) l)
                 UPDATE {runs} q SET lease_until = CASE WHEN $3::float8 > 3e14 THEN 'infinity'::timestamptz
                        ELSE clock_timestamp() + $3::float8 * interval '1 millisecond' END
                 FROM locked WHERE q.run_id = locked.run_id
                   AND {holds_q}
                 RETURNING q.run_id, q.epoch, q.cancel_requested IS NOT NULL",
                held = unnest_batch(&["$1::bigint[]", "$2::bigint[]"]),
            ),
            // Ends every claim of the batch that still holds its run ($1 runs, $2
            // epochs, $3 final states, $4 labels, $6 whether to tell idle workers of
            // a freed slot; rows deleted unless $5): the runs it ended, and those
            // already finished at the claim's own epoch (a try whose reply was lost
            // ended them: only that claim finishes a run at its epoch), so that a
            // retried statement says what the first one did. The rows are
            // locked in run order first, as a batch of checkpoint writes and the
            // heartbeat lock them (in any other order they deadlock). The lock finds
            // them one key at a time (a lateral lookup, which only the primary key
            // serves): joined to the batch, they were hashed against every run when
            // the plan was kept from a time the table was small. The status tests are
            // wrapped (`IS TRUE`) so that no index of running runs can serve them:
            // with statistics that counted few running, the planner read every
            // running run of that index for each batch.
            finish: format!(
                "WITH ending AS (
                    SELECT * FROM {batch}
                        AS e(run_id, epoch, final_state, final_label, tell)),
                 locked AS (
                    SELECT l.run_id, l.status FROM (SELECT run_id, epoch FROM ending ORDER BY run_id) e
                    CROSS JOIN LATERAL (
                        SELECT q.run_id, q.status FROM {runs} q WHERE q.run_id = e.run_id AND q.epoch = e.epoch
                        FOR UPDATE OF q) l),
                 fin AS (
                    UPDATE {runs} q SET status = 'finished', finished_at = clock_timestamp(), lease_until = NULL,
                        final_state = e.final_state, final_label = e.final_label
                    FROM locked JOIN ending e ON e.run_id = locked.run_id
                    WHERE q.run_id = locked.run_id AND q.epoch = e.epoch AND {holds_q}
                    RETURNING q.run_id, q.epoch, q.workflow, q.queue, q.watched, e.tell),
                 rows AS (DELETE FROM {rows} WHERE run_id = ANY(ARRAY(SELECT run_id FROM fin)) AND NOT $5),
                 logs AS (DELETE FROM {logs} WHERE run_id = ANY(ARRAY(SELECT run_id FROM fin)) AND NOT $5),
                 inbox AS (DELETE FROM {signals} WHERE run_id = ANY(ARRAY(SELECT run_id FROM fin)) AND NOT $5),
                 keys AS (DELETE FROM {keys} WHERE run_id = ANY(ARRAY(SELECT run_id FROM fin)) AND NOT $5),
                 closed AS (
                    UPDATE {claims} c SET ended_at = clock_timestamp(), outcome = 'finished'
                    FROM fin WHERE c.run_id = fin.run_id AND c.epoch = fin.epoch AND c.ended_at IS NULL),
                 {freed},
                 note AS (SELECT pg_notify('{done}', run_id::text) FROM fin WHERE watched)
                 SELECT array(SELECT run_id FROM fin UNION ALL SELECT run_id FROM locked WHERE status = 'finished'),
                     (SELECT count(*) FROM note), (SELECT count(*) FROM freed)",
                freed = freed("fin", "tell"),
                batch = unnest_batch(&[
                    "$1::bigint[]",
                    "$2::bigint[]",
                    "$3::bytea[]",
                    "$4::text[]",
                    "$6::bool[]"
                ]),
            ),
            fail: over("failed", "$3"),
            // A cancelled run keeps the reason it was asked to cancel for, if it was.
            cancelled: over("cancelled", "coalesce(cancel_requested, $3)"),
            // A hand-back is not a failed claim: it does not count toward the poison limit.
            release: format!(
                "WITH back AS (
                    UPDATE {runs} SET status = 'queued', lease_until = NULL, claims = greatest(claims - 1, 0)
                    WHERE run_id = $1 AND epoch = $2 AND {holds_here}
                    RETURNING workflow),
                 {closed},
                 note AS (SELECT pg_notify('{ready}', workflow) FROM back)
                 SELECT (SELECT count(*) FROM back), (SELECT count(*) FROM note)",
                closed = close("back", "'handed back'"),
            ),
            // Parking takes the run's row lock first, in its own statement: a send to
            // the run then either committed before (and the next statement, with a
            // snapshot of its own, sees its signal) or waits for the park (and finds
            // the run parked, which it wakes).
            park_lock: format!(
                "SELECT 1 FROM {runs} WHERE run_id = $1 AND epoch = $2 AND {holds_here}
                 FOR UPDATE"
            ),
            // Not a failed claim: it does not count toward the poison limit. A parked
            // run of a named queue frees its slot (idle workers are told if $5, as
            // when a run ends).
            park: format!(
                "WITH parked AS (
                    UPDATE {runs} SET status = 'parked', lease_until = NULL, waits_for = $3,
                        claims = greatest(claims - 1, 0),
                        wake_at = CASE
                            WHEN EXISTS (SELECT 1 FROM {signals} s WHERE s.run_id = $1 AND s.name = ANY($3))
                                THEN clock_timestamp()
                            WHEN $4::bigint IS NULL THEN 'infinity'::timestamptz
                            ELSE to_timestamp($4::bigint / 1000.0) END
                    WHERE run_id = $1 AND epoch = $2 AND {holds_here}
                    RETURNING workflow, queue, wake_at <= clock_timestamp() AS due),
                 {closed},
                 note AS (SELECT pg_notify('{ready}', workflow) FROM parked WHERE due OR (queue IS NOT NULL AND $5::bool))
                 SELECT (SELECT count(*) FROM parked), (SELECT count(*) FROM note)",
                closed = close("parked", "'parked'"),
            ),
            // A worker that freed $2 slots of queue $1 and did not take them all back
            // tells the idle workers, if the queue has a run to claim (of any
            // workflow: the others may register workflows it does not), is below its
            // cluster limit (at it, another worker took the slot: telling the idle
            // ones would only send them to the queue's lock for nothing), and was at
            // it before these slots freed. Only then may idle workers have left the
            // queue's runs for its limit, waiting to be told; else the runs were
            // announced when enqueued, or a worker awake to them takes them (telling
            // every idle worker of every run an awake worker was to take cost a
            // round of claims each, queued on the queue's lock).
            hand_on: format!(
                "SELECT pg_notify('{ready}', q.name) FROM {queues} q WHERE q.name = $1
                   AND (coalesce((SELECT true FROM {runs} r WHERE r.queue = $1 AND r.queue IS NOT NULL
                          AND r.status = 'queued'
                          AND (r.not_before IS NULL OR r.not_before <= statement_timestamp())
                          ORDER BY {QUEUED_ORDER} LIMIT 1), false)
                     OR EXISTS (SELECT 1 FROM {runs} r WHERE r.queue = $1 AND r.queue IS NOT NULL
                          AND r.status = 'running' AND r.lease_until < statement_timestamp())
                     OR EXISTS (SELECT 1 FROM {runs} r WHERE r.queue = $1 AND r.queue IS NOT NULL
                          AND r.status = 'parked' AND r.wake_at <= statement_timestamp()))
                   AND (SELECT q.concurrency > n AND q.concurrency <= n + $2::bigint FROM (
                        SELECT count(*) AS n FROM {runs} l WHERE l.queue = $1 AND l.queue IS NOT NULL
                          AND l.status = 'running' AND {held_l}) running)",
                held_l = held("l.")
            ),
            // Milliseconds until the earliest deadline of a parked run, or the earliest
            // start of a delayed one, of these workflows, or until a rate-limited queue's
            // oldest claim leaves its window (a start may be allowed then).
            next_wake: format!(
                "SELECT (extract(epoch FROM (min(at) - clock_timestamp())) * 1000)::float8 FROM (
                    SELECT min(wake_at) AS at FROM {runs}
                    WHERE status = 'parked' AND workflow = ANY($1) AND wake_at < 'infinity'
                    UNION ALL
                    SELECT min(not_before) FROM {runs}
                    WHERE status = 'queued' AND not_before > statement_timestamp() AND workflow = ANY($1)
                    UNION ALL
                    SELECT min(oldest.claimed_at + q.rate_period_ms * interval '1 millisecond')
                    FROM {queues} q CROSS JOIN LATERAL (
                        SELECT claimed_at FROM {claims} c
                        WHERE c.queue = q.name
                          AND c.claimed_at > clock_timestamp() - q.rate_period_ms * interval '1 millisecond'
                        ORDER BY claimed_at LIMIT 1) oldest
                    WHERE q.rate_count IS NOT NULL) soonest"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{QueueSpec, RunQueue};

    /// A store on a fresh `schema` of the test server, with queue "q" declared
    /// (a limit of `concurrency`, two runs per partition), and an admin connection;
    /// `None` where no server is given.
    async fn store_with_queue(
        schema: &str,
        concurrency: u32,
    ) -> Option<(tokio_postgres::Client, crate::PostgresCheckpointStore)> {
        let (store, admin) = crate::db::test_store(schema).await?;
        RunQueue::new(&store)
            .declare(
                &QueueSpec::new("q")
                    .with_concurrency(concurrency)
                    .with_partition_concurrency(2),
            )
            .await
            .unwrap();
        Some((admin, store))
    }

    /// The plan the server makes of a claim of a named queue, for a worker asking for
    /// `ask` runs, with plans made as `mode` says (custom, for the values, or generic,
    /// as kept statements settle on): its lines.
    async fn claim_plan(
        admin: &tokio_postgres::Client,
        sql: &str,
        mode: &str,
        ask: i64,
    ) -> Vec<String> {
        admin
            .batch_execute(&format!(
                "DEALLOCATE ALL; SET plan_cache_mode = {mode};
                 PREPARE claim(text[], bigint, text, float8, integer, text) AS {sql}"
            ))
            .await
            .unwrap();
        admin
            .query(
                &format!("EXPLAIN EXECUTE claim(ARRAY['w'], {ask}, 'me', 30000, 5, 'q')"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// Beside the code: it plans the crate's own claim statement. Statistics taken
    /// while thousands of runs wait (an ANALYZE in the middle of a drain) once made
    /// the planner join the few runs a claim takes to every run, with a full scan,
    /// three times a claim; runs started fell to a third until the next ANALYZE.
    #[tokio::test]
    async fn a_claim_finds_its_runs_by_key_however_many_wait() {
        let schema = "unit_claim_plan";
        let Some((admin, store)) = store_with_queue(schema, 64).await else {
            return;
        };
        // 20,000 waiting runs over 50 partitions, 64 running, and statistics that
        // know it.
        admin
            .batch_execute(&format!(
                "INSERT INTO {schema}.cano_runs (run_id, workflow, initial_state, initial_label, status, queue, partition_key)
                 SELECT id, 'w', '\\x00', 'Start', 'queued', 'q', 'tenant-' || (id % 50)
                 FROM generate_series(1, 20000) id;
                 UPDATE {schema}.cano_runs SET status = 'running', epoch = 1, claims = 1, worker = 'other',
                     lease_until = now() + interval '1 hour'
                 WHERE run_id <= 64;
                 ANALYZE {schema}.cano_runs;"
            ))
            .await
            .unwrap();
        let sql = WorkerSql::new(&store).claim_queue;
        for mode in ["force_custom_plan", "force_generic_plan"] {
            for ask in [1, 32] {
                let plan = claim_plan(&admin, &sql, mode, ask).await;
                let scans: Vec<&String> = plan
                    .iter()
                    .filter(|line| line.contains("Seq Scan on cano_runs"))
                    .collect();
                assert!(
                    scans.is_empty(),
                    "{mode}, asking for {ask}: the claim reads every run\n{}",
                    plan.join("\n")
                );
            }
        }
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }

    /// A claim of the default queue reads the head of its backlog, not the
    /// backlog: run with 35,000 runs waiting over two workflows (and some parked,
    /// some with expired leases), no step of its plan handles more than a few times
    /// the runs it asks for. As one `OR`-ed test over `= ANY` of the workflows, the
    /// planner read and sorted every waiting run at every claim (a fifth of the
    /// starts a second, with 30,000 waiting, of a short backlog).
    #[tokio::test]
    async fn a_claim_of_the_default_queue_reads_the_head_of_its_backlog() {
        let schema = "unit_default_claim_rows";
        let Some((admin, store)) = store_with_queue(schema, 64).await else {
            return;
        };
        admin
            .batch_execute(&format!(
                "INSERT INTO {schema}.cano_runs (run_id, workflow, initial_state, initial_label, status, priority)
                 SELECT id, CASE WHEN id % 7 = 0 THEN 'v' ELSE 'w' END, '\\x00', 'Start', 'queued', id % 3
                 FROM generate_series(1, 35000) id;
                 UPDATE {schema}.cano_runs SET status = 'running', epoch = 1, claims = 1, worker = 'gone',
                     lease_until = now() - interval '1 minute' WHERE run_id <= 20;
                 UPDATE {schema}.cano_runs SET status = 'parked', wake_at = now() - interval '1 second'
                     WHERE run_id BETWEEN 21 AND 40;
                 ANALYZE {schema}.cano_runs;"
            ))
            .await
            .unwrap();
        let sql = WorkerSql::new(&store).claim;
        for mode in ["force_custom_plan", "force_generic_plan"] {
            for ask in [1_i64, 32] {
                admin
                    .batch_execute(&format!(
                        "DEALLOCATE ALL; SET plan_cache_mode = {mode}; BEGIN;
                         PREPARE claim(text[], bigint, text, float8, integer) AS {sql}"
                    ))
                    .await
                    .unwrap();
                let plan: Vec<String> = admin
                    .query(
                        &format!(
                            "EXPLAIN (ANALYZE, TIMING OFF) EXECUTE claim(ARRAY['w', 'v'], {ask}, 'me', 30000, 5)"
                        ),
                        &[],
                    )
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                admin.batch_execute("ROLLBACK").await.unwrap();
                // Rows a step handled: its rows per loop times its loops.
                let most = plan
                    .iter()
                    .filter_map(|line| {
                        let at = line.find("(actual rows=")?;
                        let mut words = line[at + 13..].split([' ', ')']);
                        let rows: u64 = words.next()?.parse().ok()?;
                        let loops: u64 =
                            words.find_map(|w| w.strip_prefix("loops="))?.parse().ok()?;
                        Some(rows * loops)
                    })
                    .max()
                    .unwrap();
                let claimed = plan.iter().any(|line| line.contains("Update on cano_runs"));
                assert!(claimed, "{mode}: the plan claims\n{}", plan.join("\n"));
                assert!(
                    most <= 4 * ask as u64 + 40,
                    "{mode}, asking for {ask}: a step handled {most} rows\n{}",
                    plan.join("\n")
                );
            }
        }
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }

    /// The lines of the generic plan the server keeps for `sql` (a kept statement
    /// settles on it after five runs, or at once where forced): planned without its
    /// values, so each parameter is given as NULL.
    async fn generic_plan(admin: &tokio_postgres::Client, sql: &str) -> Vec<String> {
        admin
            .batch_execute(&format!(
                "DEALLOCATE ALL; SET plan_cache_mode = force_generic_plan; PREPARE kept AS {sql}"
            ))
            .await
            .unwrap();
        let params: i32 = admin
            .query_one(
                "SELECT cardinality(parameter_types) FROM pg_prepared_statements WHERE name = 'kept'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let nulls = vec!["NULL"; params as usize].join(", ");
        admin
            .query(&format!("EXPLAIN EXECUTE kept({nulls})"), &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// The scans of `plan` that read a whole table of runs or claims (which grow
    /// with every run ever queued) where keys or an index range would do: a
    /// sequential scan, or an index scan with no condition on the index.
    /// `counts_running`: the statement counts a queue's running runs, which may read
    /// a whole index of running runs (bounded by the runs in flight, not by every
    /// run ever queued).
    fn whole_table_reads(plan: &[String], counts_running: bool) -> Vec<String> {
        let mut found = Vec::new();
        for (i, line) in plan.iter().enumerate() {
            let in_flight = line.contains("cano_runs_leased") || line.contains("cano_runs_active");
            let growing = (line.contains(" on cano_runs") || line.contains(" on cano_claims"))
                && !(counts_running && in_flight);
            if !growing {
                continue;
            }
            let conditioned = plan[i + 1..]
                .iter()
                .take(2)
                .any(|next| next.contains("Index Cond") || next.contains("TID Cond"));
            let index = line.contains("Index Scan") || line.contains("Index Only Scan");
            if line.contains("Seq Scan") || (index && !conditioned) {
                found.push(line.trim().to_owned());
            }
        }
        found
    }

    /// Beside the code: every statement a worker runs, as the server keeps it, on
    /// statistics taken mid-drain (an ANALYZE, as autovacuum runs one). Each was
    /// seen reading whole tables once the statistics said the runs it looks for
    /// were few: the checkpoint append and the heartbeat went through the index of
    /// leases (every running run, per row written), the end of a batch of runs
    /// hashed every run, and a claim's check for a log scanned every log.
    #[tokio::test]
    async fn every_worker_statement_finds_its_runs_by_key_on_a_drained_queue() {
        let schema = "unit_worker_plans";
        let Some((admin, store)) = store_with_queue(schema, 256).await else {
            return;
        };
        // 20,000 runs of a queue and 2,000 of the default queue: most finished (with
        // their claims), 64 running (with logs and rows), the rest waiting.
        admin
            .batch_execute(&format!(
                "INSERT INTO {schema}.cano_runs (run_id, workflow, initial_state, initial_label, status,
                     queue, partition_key, epoch, claims, finished_at)
                 SELECT id, 'w', '\\x00', 'Start', CASE WHEN id <= 16000 THEN 'finished' ELSE 'queued' END,
                     CASE WHEN id % 10 = 0 THEN NULL ELSE 'q' END, 'tenant-' || (id % 50),
                     CASE WHEN id <= 16000 THEN 1 ELSE 0 END, CASE WHEN id <= 16000 THEN 1 ELSE 0 END,
                     CASE WHEN id <= 16000 THEN now() END
                 FROM generate_series(1, 22000) id;
                 INSERT INTO {schema}.cano_claims (run_id, epoch, workflow, queue, partition_key, worker, claimed_at, ended_at, outcome)
                 SELECT run_id, 1, workflow, queue, partition_key, 'other', now(), now(), 'finished'
                 FROM {schema}.cano_runs WHERE status = 'finished';
                 UPDATE {schema}.cano_runs SET status = 'running', epoch = 1, claims = 1, worker = 'other',
                     lease_until = now() + interval '1 hour'
                 WHERE run_id BETWEEN 16001 AND 16064;
                 INSERT INTO {schema}.cano_logs (run_id, last_seq, workflow, version, status, label, updated_at_ms)
                 SELECT run_id, 0, 'w', 1, 0, 'Start', 0 FROM {schema}.cano_runs WHERE status = 'running';
                 INSERT INTO {schema}.cano_rows (run_id, seq, epoch, body)
                 SELECT run_id, 0, 1, '\\x00' FROM {schema}.cano_runs WHERE status = 'running';
                 ANALYZE {schema}.cano_runs, {schema}.cano_claims, {schema}.cano_logs, {schema}.cano_rows;"
            ))
            .await
            .unwrap();
        let sql = WorkerSql::new(&store);
        let statements = [
            ("claim", &sql.claim),
            ("claim_queue", &sql.claim_queue),
            ("ready", &sql.ready),
            ("poison", &sql.poison),
            ("heartbeat", &sql.heartbeat),
            ("finish", &sql.finish),
            ("fail", &sql.fail),
            ("cancelled", &sql.cancelled),
            ("release", &sql.release),
            ("park_lock", &sql.park_lock),
            ("park", &sql.park),
            ("next_wake", &sql.next_wake),
            ("hand_on", &sql.hand_on),
        ];
        let append = store.append_sql().to_owned();
        let statements: Vec<(&str, &String)> = statements
            .into_iter()
            .chain([("append", &append)])
            .collect();
        let mut failures = Vec::new();
        // Statistics that saw 64 runs running, then statistics taken at a moment
        // none was (between two claim rounds): the planner then takes the index of
        // running runs for an empty one, whatever else the statement asks.
        for (moment, before) in [
            ("64 running", ""),
            (
                "none running",
                "UPDATE {schema}.cano_runs SET status = 'queued' WHERE status = 'running';
                 ANALYZE {schema}.cano_runs;
                 UPDATE {schema}.cano_runs SET status = 'running' WHERE run_id BETWEEN 16001 AND 16064;",
            ),
        ] {
            admin
                .batch_execute(&before.replace("{schema}", schema))
                .await
                .unwrap();
            for (name, text) in &statements {
                let plan = generic_plan(&admin, text).await;
                let counts_running = ["claim_queue", "hand_on"].contains(name);
                let reads = whole_table_reads(&plan, counts_running);
                if !reads.is_empty() {
                    failures.push(format!("{name}, {moment}: {reads:?}\n{}", plan.join("\n")));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }

    /// Waits until a backend waits for the lock of queue "q" in `schema` (there is
    /// no signal for it: the server's lock table is read until it shows one), or
    /// fails if `waiter` ends first: it did not wait for the lock.
    async fn until_it_waits_for_the_lock<T: std::fmt::Debug>(
        admin: &tokio_postgres::Client,
        schema: &str,
        waiter: &mut tokio::task::JoinHandle<T>,
    ) {
        // pg_locks shows the keys unsigned.
        let (class, object) = crate::queue_lock::lock_keys(schema, "'q'");
        let awaited = format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
               AND classid::text::bigint = ({class}::bigint & 4294967295)
               AND objid::text::bigint = ({object}::bigint & 4294967295)"
        );
        let waiting = async {
            loop {
                let waiting: i64 = admin.query_one(&awaited, &[]).await.unwrap().get(0);
                if waiting > 0 {
                    return;
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            () = waiting => {}
            ended = waiter => panic!("ended while a claim held the queue's lock: {ended:?}"),
        }
    }

    #[tokio::test]
    async fn a_claims_queue_lock_holds_off_a_declaration_and_a_policy_enqueue_until_it_ends() {
        let schema = "cano_test_queue_lock";
        let Some((admin, store)) = store_with_queue(schema, 4).await else {
            return;
        };
        let queue = RunQueue::new(&store);
        let sql = WorkerSql::new(&store);
        // A second connection plays the claim: it takes the lock and holds it.
        let url = std::env::var("CANO_PG_URL").unwrap();
        let (claim, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        claim.batch_execute("BEGIN").await.unwrap();
        claim.query(&sql.queue_lock, &[&"q"]).await.unwrap();

        // Raising the limit waits for the claim: a claim counts under one version.
        let mut raising = tokio::spawn({
            let queue = RunQueue::new(&store);
            async move {
                queue
                    .declare(
                        &QueueSpec::new("q")
                            .with_concurrency(9)
                            .with_partition_concurrency(1)
                            .when_full(crate::WhenFull::Skip),
                    )
                    .await
            }
        });
        until_it_waits_for_the_lock(&admin, schema, &mut raising).await;
        let spec = queue.spec("q").await.unwrap().unwrap();
        assert_eq!(
            spec.concurrency(),
            Some(4),
            "the old limit holds while the claim runs"
        );
        claim.batch_execute("COMMIT").await.unwrap();
        raising.await.unwrap().unwrap();
        assert_eq!(
            queue.spec("q").await.unwrap().unwrap().concurrency(),
            Some(9)
        );

        // An enqueue whose policy counts its partition waits for the claim too, and
        // then counts what the claim left: one run in the partition fills it.
        let first = queue
            .enqueue(
                "w",
                &1_u32,
                crate::EnqueueOptions::new()
                    .on_queue("q")
                    .with_partition("t"),
            )
            .await
            .unwrap();
        assert!(first.created && !first.skipped);
        claim.batch_execute("BEGIN").await.unwrap();
        claim.query(&sql.queue_lock, &[&"q"]).await.unwrap();
        let mut second = tokio::spawn(async move {
            queue
                .enqueue(
                    "w",
                    &2_u32,
                    crate::EnqueueOptions::new()
                        .on_queue("q")
                        .with_partition("t"),
                )
                .await
        });
        until_it_waits_for_the_lock(&admin, schema, &mut second).await;
        claim.batch_execute("COMMIT").await.unwrap();
        let second = second.await.unwrap().unwrap();
        assert!(
            second.skipped,
            "the partition's one slot is taken: the policy skips"
        );
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }
}
