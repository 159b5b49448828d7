//! [`PostgresCheckpointStore`]: checkpoint rows in PostgreSQL, shared by every process
//! that connects to the same schema.
//!
//! An append is one statement that checks the row's number against the run's log head
//! (and, for a leased run, the lease's epoch) and writes the row, so a transition costs
//! one round trip. Appends that arrive while a statement is in flight are sent together
//! in the next one: the rows of many concurrent runs share a round trip and a commit,
//! up to a row and a byte limit per statement.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use cano_core::checkpoint::{
    CheckpointRow, CheckpointStore, RunStatus, RunSummary, SignalStore, check_next_seq,
};
use cano_core::{CanoError, RunId};
pub(crate) use cano_recovery::codec::{decode_row, encode_row};
use tokio::sync::{mpsc, oneshot};

use crate::db::{Db, PgOptions, retry_transient, run_key, run_of};
use crate::pacing::{MAX_BATCH, MAX_BATCH_BYTES, Pacer};

/// How often an append is tried while the connection keeps dropping.
pub(crate) const APPEND_ATTEMPTS: u32 = 5;

/// A checkpoint store in PostgreSQL, for runs that must survive the loss of a machine
/// and be resumed on another.
///
/// Cheap to clone: clones share one pool and one batching writer. Rows are durable
/// when `append` returns, as durable as the server's commit (with `fsync` on, a power
/// loss of the database machine included). A transient failure (a lost connection, a
/// terminated backend, a deadlock or serialization conflict) is retried; if a lost
/// statement had committed, the retry recognises the row it wrote, so a row is neither
/// lost nor written twice. Rows of concurrent runs share statements, but a row the
/// server refuses fails its own run only.
///
/// A run that a [`Worker`](crate::Worker) holds under a lease is written only by that
/// worker's claim: appends from elsewhere (this store used directly, another process)
/// are refused while the lease lasts.
///
/// ```
/// use cano_core::{CanoError, Task, TaskResult, Workflow};
/// use cano_postgres::{PgOptions, PostgresCheckpointStore};
/// # #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
/// # enum Job { Start, Done }
/// # struct Import;
/// # #[async_trait::async_trait]
/// # impl Task<Job> for Import {
/// #     async fn run_bare(&self) -> Result<TaskResult<Job>, CanoError> {
/// #         Ok(TaskResult::Single(Job::Done))
/// #     }
/// # }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), CanoError> {
/// # // Runs against the server `CANO_PG_URL` names (`cargo xtask test` starts one);
/// # // without one it is skipped, except under `cargo xtask test`.
/// # let Ok(url) = std::env::var("CANO_PG_URL") else {
/// #     assert!(std::env::var_os("CANO_PG_REQUIRED").is_none(), "CANO_PG_URL is not set");
/// #     return Ok(());
/// # };
/// # let url = url.as_str();
/// let store = PostgresCheckpointStore::connect(PgOptions::new(url).with_schema("doc_store")).await?;
/// let workflow = Workflow::bare()
///     .register(Job::Start, Import)
///     .add_exit_state(Job::Done)
///     .with_checkpoint_store(store.clone())
///     .with_workflow_id("nightly-import");
/// assert_eq!(workflow.orchestrate(Job::Start).await?, Job::Done);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresCheckpointStore {
    pub(crate) inner: Arc<StoreInner>,
}

pub(crate) struct StoreInner {
    pub(crate) db: Arc<Db>,
    appends: mpsc::UnboundedSender<Pending>,
    stats: Arc<Counters>,
    sql: Arc<Sql>,
    signals: crate::inbox_sql::SignalSql,
    catalog: crate::catalog_sql::CatalogSql,
}

#[derive(Default)]
struct Counters {
    rows: AtomicU64,
    statements: AtomicU64,
    fenced: AtomicU64,
}

/// What a store has done since it connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PgStats {
    /// Rows appended.
    pub rows: u64,
    /// Append statements sent; below `rows` whenever runs wrote at the same moment.
    pub statements: u64,
    /// Appends refused because the writer's lease on the run had been taken over (or,
    /// for a writer without a lease, because a worker holds the run).
    pub fenced: u64,
}

/// One append waiting for the writer.
struct Pending {
    run: RunId,
    seq: u64,
    /// The lease epoch the writer holds the run under; -1 for a writer without one.
    fence: i64,
    body: Vec<u8>,
    workflow: String,
    version: u32,
    status: RunStatus,
    label: String,
    /// Why the run failed (`Fail` and `Rollback` rows), for listings' error filter.
    message: String,
    written_at_ms: u64,
    reply: oneshot::Sender<Result<(), CanoError>>,
}

struct Sql {
    append: String,
    diagnose: String,
    load: String,
    truncate: String,
    clear: String,
    unfinished: String,
    prune: String,
}

impl Sql {
    fn new(db: &Db) -> Self {
        let (logs, rows, runs) = (
            db.table("cano_logs"),
            db.table("cano_rows"),
            db.table("cano_runs"),
        );
        let (signals, keys) = (db.table("cano_signals"), db.table("cano_signal_keys"));
        // A writer may touch a run's rows if it holds the run's live lease at its
        // epoch, or holds no lease and no worker holds the run. `$f` is its fence.
        let may_write = |run: &str, fence: &str| {
            format!(
                "(({fence}::bigint >= 0 AND EXISTS (SELECT 1 FROM {runs} q WHERE q.run_id = {run} AND q.epoch = {fence}::bigint AND q.status = 'running'))
                  OR ({fence}::bigint < 0 AND NOT EXISTS (SELECT 1 FROM {runs} q WHERE q.run_id = {run} AND q.status = 'running' AND q.lease_until > clock_timestamp())))"
            )
        };
        Self {
            // `locked` takes a share lock on each leased run whose epoch matches, so a
            // worker claiming the run waits for this statement (and sees its row) or
            // has already bumped the epoch (and this row is refused). Locks are taken
            // in run order, as the workers' heartbeats take theirs: two statements
            // locking the same runs in different orders deadlock (the server aborts
            // one, measured dozens of times a minute under load). Runs are found one
            // key at a time and their status tests wrapped (`IS TRUE`), as in the
            // worker's `finish`: otherwise statistics that counted no running run let
            // the planner read the whole index of running runs for every row.
            append: format!(
                "WITH input AS (
                    SELECT * FROM {batch}
                        AS t(run_id, seq, fence, body, workflow, version, status, label, at, message)),
                 locked AS (
                    SELECT l.run_id FROM (SELECT run_id, fence FROM input WHERE fence >= 0 ORDER BY run_id) i
                    CROSS JOIN LATERAL (
                        SELECT q.run_id FROM {runs} q
                        WHERE q.run_id = i.run_id AND q.epoch = i.fence AND (q.status = 'running') IS TRUE
                        FOR SHARE OF q) l),
                 allowed AS (
                    SELECT i.run_id FROM input i WHERE i.fence < 0 AND NOT EXISTS (
                        SELECT 1 FROM {runs} q WHERE q.run_id = i.run_id
                          AND (q.status = 'running' AND q.lease_until > clock_timestamp()) IS TRUE)
                    UNION ALL SELECT run_id FROM locked),
                 created AS (
                    INSERT INTO {logs} (run_id, last_seq, workflow, version, status, label, updated_at_ms, updated_at, message)
                    SELECT i.run_id, i.seq, i.workflow, i.version, i.status, i.label, i.at, clock_timestamp(), i.message
                    FROM input i JOIN allowed a ON a.run_id = i.run_id WHERE i.seq = 0
                    ON CONFLICT (run_id) DO NOTHING
                    RETURNING run_id),
                 moved AS (
                    UPDATE {logs} l SET last_seq = i.seq, workflow = i.workflow, version = i.version,
                        status = i.status, label = i.label, updated_at_ms = i.at, updated_at = clock_timestamp(),
                        message = i.message
                    FROM input i JOIN allowed a ON a.run_id = i.run_id
                    WHERE l.run_id = ANY(ARRAY(SELECT run_id FROM input WHERE seq > 0))
                      AND l.run_id = i.run_id AND i.seq > 0 AND l.last_seq = i.seq - 1
                    RETURNING l.run_id),
                 accepted AS (SELECT run_id FROM created UNION ALL SELECT run_id FROM moved),
                 written AS (
                    INSERT INTO {rows} (run_id, seq, epoch, body)
                    SELECT i.run_id, i.seq, greatest(i.fence, 0), i.body
                    FROM input i JOIN accepted a ON a.run_id = i.run_id
                    RETURNING run_id)
                 SELECT run_id FROM written",
                batch = crate::db::unnest_batch(&[
                    "$1::bigint[]",
                    "$2::bigint[]",
                    "$3::bigint[]",
                    "$4::bytea[]",
                    "$5::text[]",
                    "$6::integer[]",
                    "$7::smallint[]",
                    "$8::text[]",
                    "$9::bigint[]",
                    "$10::text[]"
                ]),
            ),
            diagnose: format!(
                "SELECT l.last_seq, q.epoch, q.status, r.body = $3 AS same, q.worker,
                        coalesce(q.lease_until > clock_timestamp(), false) AS leased
                 FROM (SELECT 1) one
                 LEFT JOIN {logs} l ON l.run_id = $1
                 LEFT JOIN {runs} q ON q.run_id = $1
                 LEFT JOIN {rows} r ON r.run_id = $1 AND r.seq = $2"
            ),
            load: format!("SELECT seq, body FROM {rows} WHERE run_id = $1 ORDER BY seq"),
            truncate: format!(
                "DELETE FROM {rows} WHERE run_id = $1 AND seq < $2 AND {}",
                may_write("$1", "$3")
            ),
            clear: format!(
                "WITH allowed AS (SELECT 1 WHERE {}),
                      gone AS (DELETE FROM {rows} WHERE run_id = $1 AND EXISTS (SELECT 1 FROM allowed)),
                      inbox AS (DELETE FROM {signals} WHERE run_id = $1 AND EXISTS (SELECT 1 FROM allowed)),
                      keys AS (DELETE FROM {keys} WHERE run_id = $1 AND EXISTS (SELECT 1 FROM allowed))
                 DELETE FROM {logs} WHERE run_id = $1 AND EXISTS (SELECT 1 FROM allowed)",
                may_write("$1", "$2")
            ),
            // Runs the queue manages (queued, or running under a worker) are the
            // workers' to resume, not a local resumer's; a run the queue failed is
            // failed, whatever its log's last row says.
            unfinished: format!(
                "SELECT l.run_id, l.workflow, l.version,
                        CASE WHEN q.status = 'failed' THEN 1::smallint ELSE l.status END,
                        l.last_seq, l.label, l.updated_at_ms
                 FROM {logs} l LEFT JOIN {runs} q ON q.run_id = l.run_id
                 WHERE l.status < 2 AND (q.run_id IS NULL OR q.status NOT IN ('queued', 'running', 'parked'))"
            ),
            // The age is measured on the database's clock, whatever the caller's reads.
            prune: format!(
                "WITH gone AS (DELETE FROM {logs}
                               WHERE updated_at < clock_timestamp() - $1::float8 * interval '1 millisecond'
                               RETURNING run_id),
                      rows AS (DELETE FROM {rows} WHERE run_id IN (SELECT run_id FROM gone)),
                      inbox AS (DELETE FROM {signals} WHERE run_id IN (SELECT run_id FROM gone)),
                      keys AS (DELETE FROM {keys} WHERE run_id IN (SELECT run_id FROM gone))
                 SELECT count(*) FROM gone"
            ),
        }
    }
}

impl PostgresCheckpointStore {
    /// Connects to the database in `options` (waiting, with backoff, up to its connect
    /// timeout while the server cannot be reached) and creates or checks cano's
    /// schema. A schema written by a newer cano is refused.
    pub async fn connect(options: PgOptions) -> Result<Self, CanoError> {
        let db = Db::connect(&options).await?;
        let (appends, receiver) = mpsc::unbounded_channel();
        let stats = Arc::new(Counters::default());
        let sql = Arc::new(Sql::new(&db));
        let writer = Writer {
            db: db.clone(),
            sql: sql.clone(),
            stats: stats.clone(),
        };
        let signals = crate::inbox_sql::SignalSql::new(&db);
        let catalog = crate::catalog_sql::CatalogSql::new(&db);
        let inner = Arc::new(StoreInner {
            catalog,
            db,
            appends,
            stats,
            sql,
            signals,
        });
        // At most as many append statements in flight as the pool has connections.
        let pacer = Pacer::new(inner.db.pool.status().max_size);
        tokio::spawn(writer.run(receiver, pacer));
        Ok(Self { inner })
    }

    /// What the store has done since it connected.
    pub fn stats(&self) -> PgStats {
        let s = &self.inner.stats;
        PgStats {
            rows: s.rows.load(Ordering::Relaxed),
            statements: s.statements.load(Ordering::Relaxed),
            fenced: s.fenced.load(Ordering::Relaxed),
        }
    }

    /// The schema the store's tables are in.
    pub fn schema(&self) -> &str {
        &self.inner.db.schema
    }

    /// This store as the holder of lease `epoch` on `run` sees it: its writes of the
    /// run land only while the run's lease is still at that epoch. A worker drives
    /// each claim through one, so a claim that lost its lease cannot write, even in a
    /// process where a newer claim of the same run is under way.
    pub(crate) fn fenced(&self, run: RunId, epoch: i64) -> FencedStore {
        FencedStore {
            store: self.clone(),
            run,
            epoch,
            ending: None,
        }
    }

    pub(crate) fn db(&self) -> &Arc<Db> {
        &self.inner.db
    }

    /// The listing statements.
    pub(crate) fn catalog_sql(&self) -> &crate::catalog_sql::CatalogSql {
        &self.inner.catalog
    }

    /// The inbox's statements.
    pub(crate) fn signal_sql(&self) -> &crate::inbox_sql::SignalSql {
        &self.inner.signals
    }

    /// The batched append statement (also used, with one row, to take a signal).
    pub(crate) fn append_sql(&self) -> &str {
        &self.inner.sql.append
    }

    async fn append_as(&self, row: CheckpointRow, fence: i64) -> Result<(), CanoError> {
        let body = encode_row(&row)?;
        let (reply, outcome) = oneshot::channel();
        let pending = Pending {
            run: row.run,
            seq: row.seq,
            fence,
            body,
            status: RunStatus::after(row.kind),
            workflow: row.workflow,
            version: row.version,
            label: row.label,
            message: match row.kind {
                cano_core::checkpoint::RowKind::Fail
                | cano_core::checkpoint::RowKind::Rollback
                | cano_core::checkpoint::RowKind::RolledBack => row.message,
                _ => String::new(),
            },
            written_at_ms: row.written_at_ms,
            reply,
        };
        self.inner.appends.send(pending).map_err(|_| {
            CanoError::store("the PostgreSQL checkpoint writer has stopped (its runtime shut down)")
                .with_hint("keep the tokio runtime that connected the store running while runs write checkpoints")
        })?;
        outcome.await.map_err(|_| {
            CanoError::store("the PostgreSQL checkpoint writer stopped before answering")
        })?
    }

    async fn truncate_as(&self, run: RunId, before: u64, fence: i64) -> Result<(), CanoError> {
        self.inner
            .db
            .execute(
                APPEND_ATTEMPTS,
                "truncating a run's log",
                &self.inner.sql.truncate,
                &[&run_key(run), &(before as i64), &fence],
            )
            .await
            .map(drop)
    }

    async fn clear_as(&self, run: RunId, fence: i64) -> Result<(), CanoError> {
        self.inner
            .db
            .execute(
                APPEND_ATTEMPTS,
                "clearing a run's log",
                &self.inner.sql.clear,
                &[&run_key(run), &fence],
            )
            .await
            .map(drop)
    }
}

pub(crate) fn status_code(status: RunStatus) -> i16 {
    match status {
        // Open (below 2, like interrupted runs), but not to be resumed as one.
        RunStatus::Parked => -1,
        RunStatus::Failed => 1,
        RunStatus::Finished => 2,
        RunStatus::RolledBack => 3,
        // A row is never written with an unreadable status; count it as open.
        _ => 0,
    }
}

fn status_of(code: i16) -> RunStatus {
    match code {
        -1 => RunStatus::Parked,
        0 => RunStatus::Interrupted,
        1 => RunStatus::Failed,
        2 => RunStatus::Finished,
        _ => RunStatus::RolledBack,
    }
}

/// Takes appends off the channel and sends them in batches, one statement per batch,
/// paced (see [`crate::pacing`]).
struct Writer {
    db: Arc<Db>,
    sql: Arc<Sql>,
    stats: Arc<Counters>,
}

impl Writer {
    /// The writer's loop: a batch goes when the pacer lets it, with every append that
    /// arrived meanwhile.
    async fn run(self, mut receiver: mpsc::UnboundedReceiver<Pending>, mut pacer: Pacer) {
        let this = Arc::new(self);
        // Rows of a run already in the batch being built wait for the next one: one
        // statement must not check two rows of a run against the same log head. So do
        // rows past the batch's byte budget.
        let mut held: VecDeque<Pending> = VecDeque::new();
        loop {
            let first = match held.pop_front() {
                Some(p) => p,
                None => match receiver.recv().await {
                    Some(p) => p,
                    None => return,
                },
            };
            let in_flight = pacer.next().await;
            let mut bytes = first.body.len();
            let mut batch = vec![first];
            let mut runs: HashSet<RunId> = batch.iter().map(|p| p.run).collect();
            let mut again = VecDeque::new();
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                let next = match held.pop_front() {
                    Some(p) => p,
                    None => match receiver.try_recv() {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                if bytes + next.body.len() <= MAX_BATCH_BYTES && runs.insert(next.run) {
                    bytes += next.body.len();
                    batch.push(next);
                } else {
                    again.push_back(next);
                }
            }
            again.extend(held.drain(..));
            held = again;
            let writer = this.clone();
            tokio::spawn(async move {
                writer.write(batch).await;
                drop(in_flight);
            });
        }
    }

    /// Writes `batch` in one statement and answers each row. A statement the server
    /// refuses as a whole (one row it cannot take) is split, so that only that row's
    /// run sees the error.
    async fn write(&self, batch: Vec<Pending>) {
        let result = self.send(&batch).await;
        match result {
            Ok((written, retried)) => {
                for p in batch {
                    let outcome = if written.contains(&run_key(p.run)) {
                        Ok(())
                    } else {
                        self.refused(&p, retried).await
                    };
                    if outcome.is_ok() {
                        self.stats.rows.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = p.reply.send(outcome);
                }
            }
            Err(e) if e.is_permanent() && batch.len() > 1 => {
                for p in batch {
                    Box::pin(self.write(vec![p])).await;
                }
            }
            Err(e) => {
                // Every row of the batch gets the error, keeping its retryability.
                for p in batch {
                    let each = CanoError::store(e.to_string());
                    let each = match e.detail().hint() {
                        Some(hint) => each.with_hint(hint.to_owned()),
                        None => each,
                    };
                    let each = if e.is_permanent() {
                        each.permanent()
                    } else {
                        each
                    };
                    let _ = p.reply.send(Err(each));
                }
            }
        }
    }

    /// Sends the append statement for `batch`, again on a fresh connection while it
    /// fails for a transient reason. Returns the runs whose rows it wrote, and whether
    /// it was tried more than once (only then can a refused row be one an earlier try
    /// wrote, its commit reply lost).
    async fn send(&self, batch: &[Pending]) -> Result<(HashSet<i64>, bool), CanoError> {
        let cols = Columns::of(batch);
        let mut tries = 0;
        let result = retry_transient(APPEND_ATTEMPTS, || {
            tries += 1;
            async {
                let client = self.db.client().await?;
                let append = self
                    .db
                    .prepared(&client, &self.sql.append, "appending checkpoint rows")
                    .await?;
                client
                    .query(
                        &append,
                        &[
                            &cols.run,
                            &cols.seq,
                            &cols.fence,
                            &cols.body,
                            &cols.workflow,
                            &cols.version,
                            &cols.status,
                            &cols.label,
                            &cols.at,
                            &cols.message,
                        ],
                    )
                    .await
                    .map_err(|e| self.db.error("appending checkpoint rows", e))
            }
        })
        .await;
        self.stats.statements.fetch_add(1, Ordering::Relaxed);
        let rows = result?;
        Ok((rows.iter().map(|r| r.get::<_, i64>(0)).collect(), tries > 1))
    }

    /// Why a row was not written: it already was (an earlier try whose reply was lost),
    /// the lease moved on, a worker holds the run, or the row number clashes.
    async fn refused(&self, p: &Pending, retried: bool) -> Result<(), CanoError> {
        let (run, seq) = (p.run, p.seq);
        let row = self
            .db
            .query_one(
                APPEND_ATTEMPTS,
                "checking a refused checkpoint row",
                &self.sql.diagnose,
                &[&run_key(run), &(seq as i64), &p.body],
            )
            .await?;
        let last: Option<i64> = row.get(0);
        let epoch: Option<i64> = row.get(1);
        let status: Option<String> = row.get(2);
        let same: Option<bool> = row.get(3);
        let worker: Option<String> = row.get(4);
        let leased: bool = row.get(5);
        if retried && same == Some(true) {
            return Ok(());
        }
        if p.fence >= 0 && (epoch != Some(p.fence) || status.as_deref() != Some("running")) {
            self.stats.fenced.fetch_add(1, Ordering::Relaxed);
            let now = match (epoch, status.as_deref()) {
                (Some(e), Some("running")) => format!("another claim holds it at epoch {e}"),
                (Some(_), Some(status)) => format!("the run is now {status}"),
                _ => "the run is no longer queued".to_owned(),
            };
            return Err(CanoError::store(format!(
                "row {seq} of run {run} was refused: this claim's lease (epoch {}) was lost, {now}",
                p.fence
            ))
            .with_hint("the lease expired before a heartbeat renewed it (a stalled process or a lost database connection); the run goes on where it is now leased, this claim must stop driving it")
            .permanent());
        }
        if p.fence < 0 && leased && status.as_deref() == Some("running") {
            self.stats.fenced.fetch_add(1, Ordering::Relaxed);
            return Err(CanoError::store(format!(
                "row {seq} of run {run} was refused: worker {} holds the run under a lease (epoch {})",
                worker.as_deref().unwrap_or("?"),
                epoch.unwrap_or_default()
            ))
            .with_hint("a run enqueued on the RunQueue is driven by the worker that claims it; do not resume it elsewhere")
            .permanent());
        }
        check_next_seq(run, last.map(|l| l as u64), seq)?;
        Err(CanoError::store(format!(
            "row {seq} of run {run} was refused by a concurrent write; try the run again"
        )))
    }
}

/// A batch laid out as one array per column, borrowing the rows' bytes and texts.
struct Columns<'a> {
    run: Vec<i64>,
    seq: Vec<i64>,
    fence: Vec<i64>,
    body: Vec<&'a [u8]>,
    workflow: Vec<&'a str>,
    version: Vec<i32>,
    status: Vec<i16>,
    label: Vec<&'a str>,
    at: Vec<i64>,
    message: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a [Pending]) -> Self {
        Self {
            run: batch.iter().map(|p| run_key(p.run)).collect(),
            seq: batch.iter().map(|p| p.seq as i64).collect(),
            fence: batch.iter().map(|p| p.fence).collect(),
            body: batch.iter().map(|p| p.body.as_slice()).collect(),
            workflow: batch.iter().map(|p| p.workflow.as_str()).collect(),
            version: batch.iter().map(|p| p.version as i32).collect(),
            status: batch.iter().map(|p| status_code(p.status)).collect(),
            label: batch.iter().map(|p| p.label.as_str()).collect(),
            at: batch.iter().map(|p| p.written_at_ms as i64).collect(),
            message: batch.iter().map(|p| p.message.as_str()).collect(),
        }
    }
}

#[async_trait::async_trait]
impl CheckpointStore for PostgresCheckpointStore {
    async fn append(&self, row: CheckpointRow) -> Result<(), CanoError> {
        self.append_as(row, -1).await
    }

    async fn load(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError> {
        let inner = &self.inner;
        let doing = format!("loading the rows of run {run}");
        let rows = inner
            .db
            .query(APPEND_ATTEMPTS, &doing, &inner.sql.load, &[&run_key(run)])
            .await?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.get(0);
                let body: &[u8] = r.get(1);
                decode_row(body).map_err(|e| {
                    CanoError::store(format!(
                        "row {seq} of run {run} in PostgreSQL cannot be read: {}",
                        e.message()
                    ))
                    .with_source(e)
                    .permanent()
                })
            })
            .collect()
    }

    async fn truncate(&self, run: RunId, before: u64) -> Result<(), CanoError> {
        self.truncate_as(run, before, -1).await
    }

    async fn clear(&self, run: RunId) -> Result<(), CanoError> {
        self.clear_as(run, -1).await
    }

    async fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError> {
        let inner = &self.inner;
        let rows = inner
            .db
            .query(
                APPEND_ATTEMPTS,
                "listing unfinished runs",
                &inner.sql.unfinished,
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| RunSummary {
                run: run_of(r.get(0)),
                workflow: r.get(1),
                version: r.get::<_, i32>(2) as u32,
                status: status_of(r.get(3)),
                last_seq: r.get::<_, i64>(4) as u64,
                label: r.get(5),
                updated_at_ms: r.get::<_, i64>(6) as u64,
            })
            .collect())
    }

    async fn prune(&self, older_than: SystemTime) -> Result<usize, CanoError> {
        // The caller's cut-off, as an age on its own clock: the database's clock then
        // decides which runs are that old.
        let age_ms = match SystemTime::now().duration_since(older_than) {
            Ok(age) => age.as_secs_f64() * 1_000.0,
            Err(ahead) => -(ahead.duration().as_secs_f64() * 1_000.0),
        };
        let inner = &self.inner;
        let row = inner
            .db
            .query_one(
                APPEND_ATTEMPTS,
                "pruning old runs",
                &inner.sql.prune,
                &[&age_ms],
            )
            .await?;
        Ok(row.get::<_, i64>(0) as usize)
    }

    fn signals(&self) -> Option<&dyn SignalStore> {
        Some(self)
    }

    async fn record_graph(
        &self,
        workflow: &str,
        version: u32,
        drawing: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<(), CanoError> {
        let sql = &self.catalog_sql().record_graph;
        let drawing = drawing();
        self.inner
            .db
            .execute(
                APPEND_ATTEMPTS,
                &format!("keeping the graph of workflow {workflow:?}"),
                sql,
                &[&workflow, &(version as i32), &drawing],
            )
            .await
            .map(drop)
    }
}

/// The store as one claim of one run sees it (see [`PostgresCheckpointStore::fenced`]):
/// every write of its run carries the claim's epoch. Writes of other runs, and reads,
/// are the store's own.
#[derive(Clone)]
pub(crate) struct FencedStore {
    store: PostgresCheckpointStore,
    run: RunId,
    epoch: i64,
    /// Ends the claim with its run's `Finish` row, if given (see [`EndWithFinish`]).
    ending: Option<Arc<dyn EndWithFinish>>,
}

/// Ends a claim in the queue with its run's `Finish` row, in place of appending the
/// row, for a claim whose run's rows are deleted once the queue records its end (a
/// worker that does not keep finished rows). Appended, the row cost a statement of
/// its own and was deleted by the next; ended with it, the run's end and its
/// `Finish` are one statement, so no crash can come between them either.
#[async_trait::async_trait]
pub(crate) trait EndWithFinish: Send + Sync {
    /// Ends the claim with `row`, its run's `Finish` row: an error (permanent) if the
    /// claim no longer holds the run, as a refused append is.
    async fn end_with(&self, row: &CheckpointRow) -> Result<(), CanoError>;
}

impl FencedStore {
    /// This store, ending the claim with its run's `Finish` row through `ending`.
    pub(crate) fn ending_with(mut self, ending: Arc<dyn EndWithFinish>) -> Self {
        self.ending = Some(ending);
        self
    }

    fn fence(&self, run: RunId) -> i64 {
        if run == self.run { self.epoch } else { -1 }
    }

    /// The fence of a write of `run` (see `fence`).
    pub(crate) fn fence_of(&self, run: RunId) -> i64 {
        self.fence(run)
    }

    /// The store itself, unfenced.
    pub(crate) fn store(&self) -> &PostgresCheckpointStore {
        &self.store
    }
}

#[async_trait::async_trait]
impl CheckpointStore for FencedStore {
    async fn append(&self, row: CheckpointRow) -> Result<(), CanoError> {
        if let Some(ending) = &self.ending
            && row.run == self.run
            && row.kind == cano_core::checkpoint::RowKind::Finish
        {
            return ending.end_with(&row).await;
        }
        let fence = self.fence(row.run);
        self.store.append_as(row, fence).await
    }
    async fn load(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError> {
        self.store.load(run).await
    }
    async fn truncate(&self, run: RunId, before: u64) -> Result<(), CanoError> {
        self.store.truncate_as(run, before, self.fence(run)).await
    }
    async fn clear(&self, run: RunId) -> Result<(), CanoError> {
        self.store.clear_as(run, self.fence(run)).await
    }
    async fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError> {
        self.store.unfinished().await
    }
    async fn prune(&self, older_than: SystemTime) -> Result<usize, CanoError> {
        self.store.prune(older_than).await
    }
    fn signals(&self) -> Option<&dyn SignalStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_status_codes_round_trip_and_open_runs_sort_first() {
        for status in [
            RunStatus::Interrupted,
            RunStatus::Failed,
            RunStatus::Finished,
            RunStatus::RolledBack,
        ] {
            assert_eq!(status_of(status_code(status)), status);
        }
        // `unfinished` and the partial index select `status < 2`.
        assert!(status_code(RunStatus::Interrupted) < 2 && status_code(RunStatus::Failed) < 2);
        assert!(status_code(RunStatus::Finished) >= 2 && status_code(RunStatus::RolledBack) >= 2);
    }

    /// Beside the code, not in `tests/`: it reads the pool's own connection, which
    /// only the crate can reach.
    #[tokio::test]
    async fn a_statement_is_prepared_once_per_connection_however_often_it_runs() {
        let schema = "unit_prepared_once";
        let Some((url, _admin)) = crate::db::test_server(schema).await else {
            return;
        };
        // One connection: every statement below runs on it.
        let store = PostgresCheckpointStore::connect(
            PgOptions::new(&url).with_schema(schema).with_pool_size(1),
        )
        .await
        .unwrap();
        let runs: Vec<RunId> = (0..20).map(|_| RunId::new()).collect();
        for &run in &runs {
            let row = CheckpointRow {
                run,
                seq: 0,
                kind: cano_core::checkpoint::RowKind::Enter,
                workflow: "prepared".into(),
                version: 1,
                state: vec![1],
                label: "Start".into(),
                data: Default::default(),
                cursor: None,
                message: String::new(),
                written_at_ms: 1,
            };
            store.append(row).await.unwrap();
            assert_eq!(store.load(run).await.unwrap().len(), 1);
        }
        store.truncate(runs[0], 1).await.unwrap();
        store.truncate(runs[1], 1).await.unwrap();
        // Listings filter on optional values: planned for each call's values, never
        // kept (after a few calls the server would keep one plan for all values).
        use cano_core::checkpoint::{RunCatalog, RunFilter};
        for _ in 0..8 {
            let page = store
                .list_runs(&RunFilter::default(), None, 50)
                .await
                .unwrap();
            assert_eq!(page.runs.len(), 20);
            store.count_runs(&RunFilter::default()).await.unwrap();
        }

        let client = store.db().client().await.unwrap();
        // (The client prepares this question too, for as long as it runs.)
        let asking = "SELECT statement FROM pg_prepared_statements WHERE statement NOT LIKE '%pg_prepared_statements%'";
        let prepared: Vec<String> = client
            .query(asking, &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let sql = &store.inner.sql;
        for (what, text) in [
            ("append", &sql.append),
            ("load", &sql.load),
            ("truncate", &sql.truncate),
        ] {
            let times = prepared.iter().filter(|p| *p == text).count();
            assert_eq!(
                times, 1,
                "the {what} statement was prepared {times} times: {prepared:#?}"
            );
        }
        let catalog = store.catalog_sql();
        for listing in [&catalog.list_queue, &catalog.list_logs, &catalog.count] {
            assert!(!prepared.contains(listing), "kept: {listing}");
        }
        // Nothing else piles up: 20 runs' writes and reads, three statements.
        assert_eq!(prepared.len(), 3, "{prepared:#?}");
    }

    #[test]
    fn run_ids_keep_their_bits_in_a_signed_column() {
        for id in [0u64, 1, u64::MAX, 1 << 63, 0x9E37_79B9_7F4A_7C15] {
            assert_eq!(run_of(run_key(RunId::from(id))), RunId::from(id));
        }
    }
}
