//! cano's tables, created by a versioned migration that any number of processes may
//! run at once (an advisory lock lets one through at a time; each step runs once).

use crate::errors::pg_error;
use cano_core::CanoError;

/// The schema version this build writes. A database at a higher version was written
/// by a newer cano and is refused rather than misread.
pub const SCHEMA_VERSION: i32 = 6;

/// The steps, in order: step `i` brings the schema from version `i` to `i + 1`.
/// `{s}` stands for the schema name. Never edit a released step; add one.
const STEPS: &[&str] = &[
    r#"
CREATE TABLE {s}.cano_logs (
    run_id bigint PRIMARY KEY,
    last_seq bigint NOT NULL,
    workflow text NOT NULL,
    version integer NOT NULL,
    status smallint NOT NULL,
    label text NOT NULL,
    updated_at_ms bigint NOT NULL
);
CREATE INDEX cano_logs_open ON {s}.cano_logs (status) WHERE status < 2;
CREATE TABLE {s}.cano_rows (
    run_id bigint NOT NULL,
    seq bigint NOT NULL,
    epoch bigint NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE {s}.cano_runs (
    run_id bigint PRIMARY KEY,
    workflow text NOT NULL,
    idempotency_key text UNIQUE,
    initial_state bytea NOT NULL,
    initial_label text NOT NULL,
    status text NOT NULL,
    epoch bigint NOT NULL DEFAULT 0,
    claims integer NOT NULL DEFAULT 0,
    worker text,
    lease_until timestamptz,
    enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at timestamptz,
    finished_at timestamptz,
    final_state bytea,
    final_label text,
    error text
);
CREATE INDEX cano_runs_ready ON {s}.cano_runs (workflow, enqueued_at) WHERE status = 'queued';
CREATE INDEX cano_runs_leased ON {s}.cano_runs (lease_until) WHERE status = 'running';
CREATE TABLE {s}.cano_leaders (
    grp text PRIMARY KEY,
    epoch bigint NOT NULL,
    leader text NOT NULL,
    since timestamptz NOT NULL
);
CREATE TABLE {s}.cano_fires (
    grp text NOT NULL,
    schedule text NOT NULL,
    fire_at_ms bigint NOT NULL,
    epoch bigint NOT NULL,
    fired_by text NOT NULL,
    run_id bigint NOT NULL,
    fired_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (grp, schedule, fire_at_ms)
);
"#,
    // 2: the database's clock for pruning; a lease on the cron leader.
    r#"
ALTER TABLE {s}.cano_logs ADD COLUMN updated_at timestamptz;
UPDATE {s}.cano_logs SET updated_at = to_timestamp(updated_at_ms / 1000.0);
ALTER TABLE {s}.cano_logs ALTER COLUMN updated_at SET NOT NULL;
ALTER TABLE {s}.cano_logs ALTER COLUMN updated_at SET DEFAULT clock_timestamp();
ALTER TABLE {s}.cano_leaders ADD COLUMN lease_until timestamptz;
"#,
    // 3: durable waits: parked runs in the queue (woken at `wake_at`), and each run's
    // signal inbox with its idempotency keys.
    r#"
ALTER TABLE {s}.cano_runs ADD COLUMN wake_at timestamptz;
ALTER TABLE {s}.cano_runs ADD COLUMN waits_for text[];
CREATE INDEX cano_runs_parked ON {s}.cano_runs (wake_at) WHERE status = 'parked';
CREATE TABLE {s}.cano_signals (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL,
    name text NOT NULL,
    payload bytea NOT NULL,
    key text,
    sent_at_ms bigint NOT NULL
);
CREATE INDEX cano_signals_run ON {s}.cano_signals (run_id, id);
CREATE TABLE {s}.cano_signal_keys (
    run_id bigint NOT NULL,
    key text NOT NULL,
    id bigint NOT NULL,
    PRIMARY KEY (run_id, key)
);
"#,
    // 4: named queues with limits (cano_queues); a run's queue, partition, priority,
    // earliest start and a durable cancel request; each partition's last turn (for
    // round-robin); and the record of every claim (who ran what, when, how it ended).
    r#"
ALTER TABLE {s}.cano_runs ADD COLUMN queue text;
ALTER TABLE {s}.cano_runs ADD COLUMN partition_key text NOT NULL DEFAULT '';
ALTER TABLE {s}.cano_runs ADD COLUMN priority integer NOT NULL DEFAULT 0;
ALTER TABLE {s}.cano_runs ADD COLUMN not_before timestamptz;
ALTER TABLE {s}.cano_runs ADD COLUMN cancel_requested text;
DROP INDEX {s}.cano_runs_ready;
CREATE INDEX cano_runs_ready ON {s}.cano_runs (workflow, priority DESC, enqueued_at)
    WHERE status = 'queued' AND queue IS NULL;
CREATE INDEX cano_runs_queued ON {s}.cano_runs (queue, partition_key, priority DESC, enqueued_at, run_id)
    WHERE status = 'queued' AND queue IS NOT NULL;
CREATE INDEX cano_runs_active ON {s}.cano_runs (queue, partition_key)
    WHERE status = 'running' AND queue IS NOT NULL;
CREATE INDEX cano_runs_delayed ON {s}.cano_runs (not_before)
    WHERE status = 'queued' AND not_before IS NOT NULL;
CREATE INDEX cano_runs_overclaimed ON {s}.cano_runs (claims) WHERE status = 'queued' AND claims > 0;
CREATE TABLE {s}.cano_queues (
    name text PRIMARY KEY,
    concurrency integer,
    worker_concurrency integer,
    partition_concurrency integer,
    rate_count integer,
    rate_period_ms bigint,
    when_full text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE {s}.cano_partitions (
    queue text NOT NULL,
    partition_key text NOT NULL,
    served_at timestamptz NOT NULL,
    PRIMARY KEY (queue, partition_key)
);
CREATE TABLE {s}.cano_claims (
    run_id bigint NOT NULL,
    epoch bigint NOT NULL,
    workflow text NOT NULL,
    queue text,
    partition_key text NOT NULL,
    worker text NOT NULL,
    claimed_at timestamptz NOT NULL,
    ended_at timestamptz,
    outcome text,
    PRIMARY KEY (run_id, epoch)
);
CREATE INDEX cano_claims_rate ON {s}.cano_claims (queue, claimed_at) WHERE queue IS NOT NULL;
"#,
    // 5: what the inspector lists: when each log started (never updated, so the
    // index on it leaves the per-transition update of the log's row HOT), why a run
    // failed, newest-first indexes for logs (all, and the open ones,
    // which replaces the open index by status, and those with an error) and queue
    // runs (all, and the failed), each workflow's graph,
    // the record of operators' actions on runs, and the cron schedules of each
    // cluster scheduler group (so the next tick can be told without their code).
    r#"
ALTER TABLE {s}.cano_logs ADD COLUMN created_at timestamptz;
UPDATE {s}.cano_logs SET created_at = updated_at;
ALTER TABLE {s}.cano_logs ALTER COLUMN created_at SET NOT NULL;
ALTER TABLE {s}.cano_logs ALTER COLUMN created_at SET DEFAULT clock_timestamp();
ALTER TABLE {s}.cano_logs ADD COLUMN message text NOT NULL DEFAULT '';
CREATE INDEX cano_logs_newest ON {s}.cano_logs (created_at DESC, run_id DESC);
DROP INDEX {s}.cano_logs_open;
CREATE INDEX cano_logs_open ON {s}.cano_logs (status, created_at DESC, run_id DESC) WHERE status < 2;
CREATE INDEX cano_runs_newest ON {s}.cano_runs (enqueued_at DESC, run_id DESC);
CREATE INDEX cano_runs_failed_newest ON {s}.cano_runs (enqueued_at DESC, run_id DESC)
    WHERE status IN ('failed', 'cancelled');
CREATE INDEX cano_logs_with_error ON {s}.cano_logs (created_at DESC, run_id DESC) WHERE message <> '';
CREATE TABLE {s}.cano_graphs (
    workflow text NOT NULL,
    version integer NOT NULL,
    mermaid text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workflow, version)
);
CREATE TABLE {s}.cano_actions (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL,
    action text NOT NULL,
    actor text NOT NULL,
    reason text NOT NULL,
    detail text NOT NULL DEFAULT '',
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX cano_actions_run ON {s}.cano_actions (run_id, id);
CREATE TABLE {s}.cano_schedules (
    grp text NOT NULL,
    schedule text NOT NULL,
    expr text NOT NULL,
    zone text NOT NULL,
    workflow text NOT NULL,
    label text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (grp, schedule)
);
"#,
    // 5 -> 6: whether anyone waits for a queue run to end. A run's end is announced
    // (NOTIFY) only then: PostgreSQL serializes every notifying commit on one lock,
    // and announcing every end queued sixteen workers' finishes behind it.
    r#"
ALTER TABLE {s}.cano_runs ADD COLUMN watched boolean NOT NULL DEFAULT false;
"#,
];

/// Checks that `schema` exists at [`SCHEMA_VERSION`], creating and changing nothing.
pub(crate) async fn check_existing(
    client: &tokio_postgres::Client,
    schema: &str,
    place: &str,
) -> Result<(), CanoError> {
    let doing = |what: &str, e| pg_error(&format!("schema {schema}"), what, e);
    let meta = format!("{schema}.cano_meta");
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&meta])
        .await
        .map_err(|e| doing("looking for the schema", e))?
        .get(0);
    let found: Option<i32> = if exists {
        client
            .query_opt(&format!("SELECT version FROM {meta}"), &[])
            .await
            .map_err(|e| doing("reading the schema version", e))?
            .map(|row| row.get(0))
    } else {
        None
    };
    match found {
        None => Err(CanoError::configuration(format!(
            "there is no cano schema {schema:?} in the database at {place}; nothing was created"
        ))
        .with_hint("check the URL's database and the schema name (--schema); a worker or store of this build creates it")
        .permanent()),
        Some(v) if v > SCHEMA_VERSION => Err(CanoError::configuration(format!(
            "schema {schema} at {place} is at version {v}, written by a newer cano; this build reads versions up to {SCHEMA_VERSION}"
        ))
        .with_hint("use the cano build that the workers of this database run")
        .permanent()),
        Some(v) if v < SCHEMA_VERSION => Err(CanoError::configuration(format!(
            "schema {schema} at {place} is at version {v}; this build reads version {SCHEMA_VERSION} and changed nothing"
        ))
        .with_hint("start a worker or store of this build once to migrate it (migrations are safe to run beside older workers' reads)")
        .permanent()),
        Some(_) => Ok(()),
    }
}

/// Creates the schema or brings it up to [`SCHEMA_VERSION`]; refuses a newer one.
pub(crate) async fn migrate(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Result<(), CanoError> {
    let place = format!("schema {schema}");
    let err = |doing: &str, e| pg_error(&place, doing, e);
    // One transaction: a failed step leaves the schema as it was.
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| err("starting the migration", e))?;
    let result = async {
        client
            .execute(
                "SELECT pg_advisory_xact_lock(hashtext('cano-migrate:' || $1))",
                &[&schema],
            )
            .await
            .map_err(|e| err("waiting for the migration lock", e))?;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {schema}.cano_meta (
                     id integer PRIMARY KEY CHECK (id = 1),
                     version integer NOT NULL);
                 INSERT INTO {schema}.cano_meta VALUES (1, 0) ON CONFLICT DO NOTHING;"
            ))
            .await
            .map_err(|e| err("creating the schema", e))?;
        let row = client
            .query_one(&format!("SELECT version FROM {schema}.cano_meta"), &[])
            .await
            .map_err(|e| err("reading the schema version", e))?;
        let found: i32 = row.get(0);
        if found > SCHEMA_VERSION {
            return Err(CanoError::configuration(format!(
                "schema {schema} is at version {found}, written by a newer cano; this build knows versions up to {SCHEMA_VERSION}"
            ))
            .with_hint("upgrade this process to the cano version the other processes run, or point it at another schema")
            .permanent());
        }
        for (from, step) in STEPS.iter().enumerate().skip(found as usize) {
            client
                .batch_execute(&step.replace("{s}", schema))
                .await
                .map_err(|e| err(&format!("migrating from version {from}"), e))?;
        }
        client
            .execute(
                &format!("UPDATE {schema}.cano_meta SET version = $1"),
                &[&SCHEMA_VERSION],
            )
            .await
            .map_err(|e| err("recording the schema version", e))?;
        Ok(())
    }
    .await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = client.batch_execute(end).await;
    result?;
    ended.map_err(|e| err("committing the migration", e))
}
