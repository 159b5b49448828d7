//! [`PostgresCheckpointStore`]: checkpoint rows in PostgreSQL, shared by every process
//! that connects to the same schema.
//!
//! An append is one statement that checks the row's number against the run's log head
//! (and, for a leased run, the lease's epoch) and writes the row, so a transition costs
//! one round trip. Appends that arrive while a statement is in flight are sent together
//! in the next one: the rows of many concurrent runs share a round trip and a commit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use cano_core::checkpoint::{
    CheckpointRow, CheckpointStore, RunStatus, RunSummary, check_next_seq,
};
use cano_core::{CanoError, RunId};
use cano_recovery::codec::{decode_row, encode_row};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::db::{Db, PgOptions, retry_lost, run_key, run_of};

/// The most rows one statement carries.
const MAX_BATCH: usize = 512;
/// How often an append is tried while the connection keeps dropping.
const APPEND_ATTEMPTS: u32 = 5;

/// A checkpoint store in PostgreSQL, for runs that must survive the loss of a machine
/// and be resumed on another.
///
/// Cheap to clone: clones share one pool and one batching writer. Rows are durable
/// when `append` returns, as durable as the server's commit (with `fsync` on, a power
/// loss of the database machine included). A connection lost mid-append is retried on
/// a fresh one; if the lost statement had committed, the retry recognises the row it
/// wrote, so a row is neither lost nor written twice.
///
/// ```no_run
/// use cano_core::{CanoError, Workflow};
/// use cano_postgres::{PgOptions, PostgresCheckpointStore};
/// # #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
/// # enum Job { Start, Done }
///
/// # async fn demo() -> Result<(), CanoError> {
/// let store = PostgresCheckpointStore::connect(PgOptions::new("postgres://cano@127.0.0.1/app")).await?;
/// let workflow: Workflow<Job> = Workflow::bare()
///     .add_exit_state(Job::Done)
///     .with_checkpoint_store(store.clone())
///     .with_workflow_id("nightly-import");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresCheckpointStore {
    pub(crate) inner: Arc<StoreInner>,
}

pub(crate) struct StoreInner {
    pub(crate) db: Arc<Db>,
    appends: mpsc::UnboundedSender<Pending>,
    /// Leases this process holds: run → epoch. Appends of these runs are fenced.
    fences: Mutex<HashMap<RunId, i64>>,
    stats: Arc<Counters>,
    sql: Arc<Sql>,
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
    /// Appends refused because this process's lease on the run had been taken over.
    pub fenced: u64,
}

/// One append waiting for the writer: the row's columns, moved out of the row.
struct Pending {
    run: RunId,
    seq: u64,
    fence: i64,
    body: Vec<u8>,
    workflow: String,
    version: u32,
    status: RunStatus,
    label: String,
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
        Self {
            // `locked` takes a share lock on each leased run whose epoch matches, so a
            // worker claiming the run waits for this statement (and sees its row) or
            // has already bumped the epoch (and this row is refused).
            append: format!(
                "WITH input AS (
                    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[],
                                         $5::text[], $6::integer[], $7::smallint[], $8::text[], $9::bigint[])
                        AS t(run_id, seq, fence, body, workflow, version, status, label, at)),
                 locked AS (
                    SELECT q.run_id FROM {runs} q JOIN input i ON q.run_id = i.run_id
                    WHERE i.fence >= 0 AND q.epoch = i.fence AND q.status = 'running'
                    FOR SHARE OF q),
                 allowed AS (
                    SELECT run_id FROM input WHERE fence < 0
                    UNION ALL SELECT run_id FROM locked),
                 created AS (
                    INSERT INTO {logs} (run_id, last_seq, workflow, version, status, label, updated_at_ms)
                    SELECT i.run_id, i.seq, i.workflow, i.version, i.status, i.label, i.at
                    FROM input i JOIN allowed a ON a.run_id = i.run_id WHERE i.seq = 0
                    ON CONFLICT (run_id) DO NOTHING
                    RETURNING run_id),
                 moved AS (
                    UPDATE {logs} l SET last_seq = i.seq, workflow = i.workflow, version = i.version,
                        status = i.status, label = i.label, updated_at_ms = i.at
                    FROM input i JOIN allowed a ON a.run_id = i.run_id
                    WHERE l.run_id = i.run_id AND i.seq > 0 AND l.last_seq = i.seq - 1
                    RETURNING l.run_id),
                 accepted AS (SELECT run_id FROM created UNION ALL SELECT run_id FROM moved),
                 written AS (
                    INSERT INTO {rows} (run_id, seq, epoch, body)
                    SELECT i.run_id, i.seq, greatest(i.fence, 0), i.body
                    FROM input i JOIN accepted a ON a.run_id = i.run_id
                    RETURNING run_id)
                 SELECT run_id FROM written"
            ),
            diagnose: format!(
                "SELECT l.last_seq, q.epoch, q.status, r.body = $3 AS same
                 FROM (SELECT 1) one
                 LEFT JOIN {logs} l ON l.run_id = $1
                 LEFT JOIN {runs} q ON q.run_id = $1
                 LEFT JOIN {rows} r ON r.run_id = $1 AND r.seq = $2"
            ),
            load: format!("SELECT seq, body FROM {rows} WHERE run_id = $1 ORDER BY seq"),
            truncate: format!("DELETE FROM {rows} WHERE run_id = $1 AND seq < $2"),
            clear: format!(
                "WITH gone AS (DELETE FROM {rows} WHERE run_id = $1) DELETE FROM {logs} WHERE run_id = $1"
            ),
            unfinished: format!(
                "SELECT run_id, workflow, version, status, last_seq, label, updated_at_ms
                 FROM {logs} WHERE status < 2"
            ),
            prune: format!(
                "WITH gone AS (DELETE FROM {logs} WHERE updated_at_ms < $1 RETURNING run_id),
                      rows AS (DELETE FROM {rows} WHERE run_id IN (SELECT run_id FROM gone))
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
        // As many append statements in flight as the pool has connections.
        let permits = Arc::new(Semaphore::new(db.pool.status().max_size.max(1)));
        let writer = Writer {
            db: db.clone(),
            sql: sql.clone(),
            stats: stats.clone(),
            permits,
        };
        let inner = Arc::new(StoreInner {
            db,
            appends,
            fences: Mutex::new(HashMap::new()),
            stats,
            sql,
        });
        tokio::spawn(writer.run(receiver));
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

    /// Fences this process's appends of `run` with lease `epoch` until
    /// [`unfence`](Self::unfence): they land only while the run's lease is still at
    /// that epoch. Workers do this for the runs they claim.
    pub(crate) fn fence(&self, run: RunId, epoch: i64) {
        self.inner.fences.lock().unwrap().insert(run, epoch);
    }

    pub(crate) fn unfence(&self, run: RunId) {
        self.inner.fences.lock().unwrap().remove(&run);
    }

    pub(crate) fn db(&self) -> &Arc<Db> {
        &self.inner.db
    }
}

fn status_code(status: RunStatus) -> i16 {
    match status {
        RunStatus::Failed => 1,
        RunStatus::Finished => 2,
        RunStatus::RolledBack => 3,
        // A row is never written with an unreadable status; count it as open.
        _ => 0,
    }
}

fn status_of(code: i16) -> RunStatus {
    match code {
        0 => RunStatus::Interrupted,
        1 => RunStatus::Failed,
        2 => RunStatus::Finished,
        _ => RunStatus::RolledBack,
    }
}

/// Takes appends off the channel and sends them in batches, one statement per batch,
/// with as many statements in flight as the pool has connections.
struct Writer {
    db: Arc<Db>,
    sql: Arc<Sql>,
    stats: Arc<Counters>,
    permits: Arc<Semaphore>,
}

impl Writer {
    async fn run(self, mut receiver: mpsc::UnboundedReceiver<Pending>) {
        let this = Arc::new(self);
        // Rows of a run already in the batch being built wait for the next one: one
        // statement must not check two rows of a run against the same log head.
        let mut held: VecDeque<Pending> = VecDeque::new();
        loop {
            let first = match held.pop_front() {
                Some(p) => p,
                None => match receiver.recv().await {
                    Some(p) => p,
                    None => return,
                },
            };
            // Wait for a free connection first: appends arriving meanwhile join this batch.
            let Ok(permit) = this.permits.clone().acquire_owned().await else {
                return;
            };
            let mut batch = vec![first];
            let mut runs: HashSet<RunId> = batch.iter().map(|p| p.run).collect();
            let mut again = VecDeque::new();
            while batch.len() < MAX_BATCH {
                let next = match held.pop_front() {
                    Some(p) => p,
                    None => match receiver.try_recv() {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                if runs.insert(next.run) {
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
                drop(permit);
            });
        }
    }

    async fn write(&self, mut batch: Vec<Pending>) {
        let mut cols = Columns::with_capacity(batch.len());
        for p in &mut batch {
            cols.push(p);
        }
        // Tried again on a fresh connection while the connection drops. Only then can a
        // refused row be one this statement already wrote (its commit reply was lost).
        let mut tries = 0;
        let result = retry_lost(APPEND_ATTEMPTS, || {
            tries += 1;
            async {
                let client = self.db.client().await?;
                client
                    .query(
                        &self.sql.append,
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
                        ],
                    )
                    .await
                    .map_err(|e| self.db.error("appending checkpoint rows", e))
            }
        })
        .await;
        let retried = tries > 1;
        self.stats.statements.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(rows) => {
                let written: HashSet<i64> = rows.iter().map(|r| r.get::<_, i64>(0)).collect();
                for (p, body) in batch.into_iter().zip(&cols.body) {
                    let outcome = if written.contains(&run_key(p.run)) {
                        Ok(())
                    } else {
                        self.refused(&p, body, retried).await
                    };
                    if outcome.is_ok() {
                        self.stats.rows.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = p.reply.send(outcome);
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

    /// Why a row was not written: it already was (an earlier try whose reply was lost),
    /// the lease moved on, or the row number clashes.
    async fn refused(&self, p: &Pending, body: &[u8], retried: bool) -> Result<(), CanoError> {
        let (run, seq) = (p.run, p.seq);
        let row = retry_lost(APPEND_ATTEMPTS, || async {
            let client = self.db.client().await?;
            client
                .query_one(&self.sql.diagnose, &[&run_key(run), &(seq as i64), &body])
                .await
                .map_err(|e| self.db.error("checking a refused checkpoint row", e))
        })
        .await?;
        let last: Option<i64> = row.get(0);
        let epoch: Option<i64> = row.get(1);
        let status: Option<String> = row.get(2);
        let same: Option<bool> = row.get(3);
        if retried && same == Some(true) {
            return Ok(());
        }
        if p.fence >= 0 && (epoch != Some(p.fence) || status.as_deref() != Some("running")) {
            self.stats.fenced.fetch_add(1, Ordering::Relaxed);
            let now = match (epoch, status.as_deref()) {
                (Some(e), Some("running")) => format!("another worker holds it at epoch {e}"),
                (Some(_), Some(status)) => format!("the run is now {status}"),
                _ => "the run is no longer queued".to_owned(),
            };
            return Err(CanoError::store(format!(
                "row {seq} of run {run} was refused: this worker's lease (epoch {}) was lost, {now}",
                p.fence
            ))
            .with_hint("the lease expired before a heartbeat renewed it (a stalled process or a lost database connection); the run goes on where it is now leased, this worker must stop driving it")
            .permanent());
        }
        check_next_seq(run, last.map(|l| l as u64), seq)?;
        Err(CanoError::store(format!(
            "row {seq} of run {run} was refused by a concurrent write; try the run again"
        )))
    }
}

/// The batch laid out as one array per column.
struct Columns {
    run: Vec<i64>,
    seq: Vec<i64>,
    fence: Vec<i64>,
    body: Vec<Vec<u8>>,
    workflow: Vec<String>,
    version: Vec<i32>,
    status: Vec<i16>,
    label: Vec<String>,
    at: Vec<i64>,
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        Self {
            run: Vec::with_capacity(n),
            seq: Vec::with_capacity(n),
            fence: Vec::with_capacity(n),
            body: Vec::with_capacity(n),
            workflow: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            label: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
        }
    }

    /// Moves `p`'s columns in (the bytes and texts are not copied).
    fn push(&mut self, p: &mut Pending) {
        self.run.push(run_key(p.run));
        self.seq.push(p.seq as i64);
        self.fence.push(p.fence);
        self.body.push(std::mem::take(&mut p.body));
        self.workflow.push(std::mem::take(&mut p.workflow));
        self.version.push(p.version as i32);
        self.status.push(status_code(p.status));
        self.label.push(std::mem::take(&mut p.label));
        self.at.push(p.written_at_ms as i64);
    }
}

#[async_trait::async_trait]
impl CheckpointStore for PostgresCheckpointStore {
    async fn append(&self, row: CheckpointRow) -> Result<(), CanoError> {
        let body = encode_row(&row)?;
        let fence = self
            .inner
            .fences
            .lock()
            .unwrap()
            .get(&row.run)
            .copied()
            .unwrap_or(-1);
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

    async fn load(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError> {
        let inner = &self.inner;
        let rows = retry_lost(APPEND_ATTEMPTS, || async {
            let client = inner.db.client().await?;
            client
                .query(&inner.sql.load, &[&run_key(run)])
                .await
                .map_err(|e| inner.db.error(&format!("loading the rows of run {run}"), e))
        })
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
        self.execute(
            &self.inner.sql.truncate,
            &[&run_key(run), &(before as i64)],
            "truncating a run's log",
        )
        .await
        .map(drop)
    }

    async fn clear(&self, run: RunId) -> Result<(), CanoError> {
        self.execute(
            &self.inner.sql.clear,
            &[&run_key(run)],
            "clearing a run's log",
        )
        .await
        .map(drop)
    }

    async fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError> {
        let inner = &self.inner;
        let rows = retry_lost(APPEND_ATTEMPTS, || async {
            let client = inner.db.client().await?;
            client
                .query(&inner.sql.unfinished, &[])
                .await
                .map_err(|e| inner.db.error("listing unfinished runs", e))
        })
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
        let ms = older_than
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let inner = &self.inner;
        let row = retry_lost(APPEND_ATTEMPTS, || async {
            let client = inner.db.client().await?;
            client
                .query_one(&inner.sql.prune, &[&ms])
                .await
                .map_err(|e| inner.db.error("pruning old runs", e))
        })
        .await?;
        Ok(row.get::<_, i64>(0) as usize)
    }
}

impl PostgresCheckpointStore {
    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        doing: &str,
    ) -> Result<u64, CanoError> {
        let db = &self.inner.db;
        retry_lost(APPEND_ATTEMPTS, || async {
            let client = db.client().await?;
            client
                .execute(sql, params)
                .await
                .map_err(|e| db.error(doing, e))
        })
        .await
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

    #[test]
    fn run_ids_keep_their_bits_in_a_signed_column() {
        for id in [0u64, 1, u64::MAX, 1 << 63, 0x9E37_79B9_7F4A_7C15] {
            assert_eq!(run_of(run_key(RunId::from(id))), RunId::from(id));
        }
    }
}
