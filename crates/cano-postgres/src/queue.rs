//! [`RunQueue`]: submitting runs for workers to claim, and asking how they went.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use cano_core::checkpoint::{Bincode, decode_state, encode_state};
use cano_core::{CanoError, RunId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::db::{retry_transient, run_key, run_of};
use crate::store::PostgresCheckpointStore;

/// Where a queued run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueStatus {
    /// Waiting for a worker.
    Queued,
    /// Leased by a worker (or its lease expired and it waits to be claimed again).
    Running,
    /// Reached an exit state; [`QueuedRun::final_state`] has it.
    Finished,
    /// Failed, or was claimed more often than the worker allows (a poison run);
    /// [`QueuedRun::error`] says why.
    Failed,
    /// Parked in a wait state, without a lease: a worker claims it again once a
    /// signal it waits for is sent or its deadline passes.
    Parked,
}

impl QueueStatus {
    fn parse(text: &str) -> Self {
        match text {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "finished" => Self::Finished,
            "parked" => Self::Parked,
            _ => Self::Failed,
        }
    }

    /// Whether the run is over (finished or failed).
    pub fn is_over(self) -> bool {
        matches!(self, Self::Finished | Self::Failed)
    }
}

/// What the queue knows of one run.
#[derive(Debug, Clone)]
pub struct QueuedRun {
    /// The run.
    pub run: RunId,
    /// The workflow name it was enqueued for.
    pub workflow: String,
    /// Where it stands.
    pub status: QueueStatus,
    /// How many claims of it count toward the poison limit: more than one after a
    /// worker died with it or lost its lease; a claim a worker handed back (stopping)
    /// is not counted.
    pub claims: u32,
    /// The worker that holds (or last held) it.
    pub worker: Option<String>,
    /// The `Debug` text of its exit state, once finished.
    pub final_label: Option<String>,
    /// Why it failed, once failed.
    pub error: Option<String>,
    final_state: Option<Vec<u8>>,
}

impl QueuedRun {
    /// The exit state it reached, decoded as `S` (the workflow's state type); `None`
    /// while it has not finished. A state of another variant or shape than `S` has
    /// is refused, never read as a wrong value.
    pub fn final_state<S: Serialize + DeserializeOwned>(&self) -> Result<Option<S>, CanoError> {
        self.final_state
            .as_deref()
            .map(decode_state::<Bincode, S>)
            .transpose()
    }
}

/// The answer to an enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The run: the new one, or the one first enqueued with the same idempotency key.
    pub run: RunId,
    /// Whether this call created it (`false`: the key had been used; nothing was added).
    pub created: bool,
}

/// How to enqueue a run.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    run: Option<RunId>,
    key: Option<String>,
}

impl EnqueueOptions {
    /// A fresh run id, no idempotency key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `run` as the run's id (for example one a caller derived and logged first).
    pub fn with_run_id(mut self, run: RunId) -> Self {
        self.run = Some(run);
        self
    }

    /// Makes the enqueue safe to repeat: a second enqueue with `key` adds nothing and
    /// returns the first run.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
}

/// Submits runs for [`Worker`](crate::Worker)s to claim, and reports on them.
///
/// ```
/// use cano_postgres::{EnqueueOptions, PgOptions, PostgresCheckpointStore, QueueStatus, RunQueue};
/// # use cano_core::{CanoError, Task, TaskResult, Workflow};
/// # #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
/// # enum Billing { Charge { order: u32 }, Done }
/// # struct Charge;
/// # #[async_trait::async_trait]
/// # impl Task<Billing> for Charge {
/// #     async fn run_bare(&self) -> Result<TaskResult<Billing>, CanoError> {
/// #         Ok(TaskResult::Single(Billing::Done))
/// #     }
/// # }
/// # #[tokio::main]
/// # async fn main() -> Result<(), CanoError> {
/// # // Runs against the server `CANO_PG_URL` names (`cargo xtask test` starts one);
/// # // without one it is skipped, except under `cargo xtask test`.
/// # let Ok(url) = std::env::var("CANO_PG_URL") else {
/// #     assert!(std::env::var_os("CANO_PG_REQUIRED").is_none(), "CANO_PG_URL is not set");
/// #     return Ok(());
/// # };
/// # let url = url.as_str();
/// let store = PostgresCheckpointStore::connect(PgOptions::new(url).with_schema("doc_queue")).await?;
/// # let billing = Workflow::bare()
/// #     .register(Billing::Charge { order: 17 }, Charge)
/// #     .add_exit_state(Billing::Done);
/// # let worker = cano_postgres::Worker::new(&store).register("billing", billing).start().await?;
/// let queue = RunQueue::new(&store);
/// let first = queue
///     .enqueue("billing", &Billing::Charge { order: 17 }, EnqueueOptions::new().with_idempotency_key("order-17"))
///     .await?;
/// // The client retried after a timeout: the same key gives the same run.
/// let again = queue
///     .enqueue("billing", &Billing::Charge { order: 17 }, EnqueueOptions::new().with_idempotency_key("order-17"))
///     .await?;
/// assert_eq!((again.run, again.created), (first.run, false));
/// let done = queue.wait(first.run, std::time::Duration::from_secs(30)).await?;
/// assert_eq!(done.status, QueueStatus::Finished);
/// # worker.stop(std::time::Duration::from_secs(5)).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RunQueue {
    store: PostgresCheckpointStore,
    insert: String,
    by_key: String,
    select: String,
    select_many: String,
    cancel_parked: String,
}

impl fmt::Debug for RunQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunQueue")
            .field("schema", &self.store.schema())
            .finish()
    }
}

fn record(r: &tokio_postgres::Row) -> QueuedRun {
    QueuedRun {
        run: run_of(r.get(0)),
        workflow: r.get(1),
        status: QueueStatus::parse(r.get(2)),
        claims: r.get::<_, i32>(3) as u32,
        worker: r.get(4),
        final_label: r.get(5),
        error: r.get(6),
        final_state: r.get(7),
    }
}

/// The channel a worker listens on for new runs in `schema`.
pub(crate) fn ready_channel(schema: &str) -> String {
    format!("cano_ready_{schema}")
}

/// The channel on which finished and failed runs in `schema` are announced.
pub(crate) fn done_channel(schema: &str) -> String {
    format!("cano_done_{schema}")
}

impl RunQueue {
    /// The queue in `store`'s schema.
    pub fn new(store: &PostgresCheckpointStore) -> Self {
        let db = store.db();
        let runs = db.table("cano_runs");
        let ready = ready_channel(&db.schema);
        Self {
            store: store.clone(),
            insert: format!(
                "WITH added AS (
                    INSERT INTO {runs} (run_id, workflow, idempotency_key, initial_state, initial_label, status)
                    VALUES ($1, $2, $3, $4, $5, 'queued')
                    ON CONFLICT DO NOTHING RETURNING run_id),
                 woke AS (SELECT pg_notify('{ready}', $2) FROM added)
                 SELECT run_id, (SELECT count(*) FROM woke) FROM added"
            ),
            by_key: format!("SELECT run_id, workflow FROM {runs} WHERE idempotency_key = $1"),
            select: format!(
                "SELECT run_id, workflow, status, claims, worker, final_label, error, final_state
                 FROM {runs} WHERE run_id = $1"
            ),
            select_many: format!(
                "SELECT run_id, workflow, status, claims, worker, final_label, error, final_state
                 FROM {runs} WHERE run_id = ANY($1)"
            ),
            cancel_parked: format!(
                "WITH cancelled AS (
                    UPDATE {runs} SET status = 'failed', finished_at = clock_timestamp(),
                        wake_at = NULL, error = 'cancelled while parked'
                    WHERE run_id = $1 AND status = 'parked'
                    RETURNING run_id),
                 note AS (SELECT pg_notify('{done}', run_id::text) FROM cancelled)
                 SELECT count(*) FROM cancelled, note",
                done = done_channel(&db.schema)
            ),
        }
    }

    /// Enqueues a run of the workflow registered under `workflow` on the workers,
    /// starting in `initial`. Idle workers are woken at once (LISTEN/NOTIFY).
    ///
    /// Errors: a run id that is already enqueued (without the same idempotency key),
    /// or an idempotency key already used for another workflow.
    pub async fn enqueue<S: Serialize + fmt::Debug>(
        &self,
        workflow: &str,
        initial: &S,
        options: EnqueueOptions,
    ) -> Result<Enqueued, CanoError> {
        let state = encode_state::<Bincode, S>(initial)?;
        let label = format!("{initial:?}");
        let run = options.run.unwrap_or_default();
        let db = self.store.db();
        let key = options.key.as_deref();
        let added = retry_transient(5, || async {
            let client = db.client().await?;
            client
                .query_opt(
                    &self.insert,
                    &[&run_key(run), &workflow, &key, &state, &label],
                )
                .await
                .map_err(|e| db.error("enqueueing a run", e))
        })
        .await?;
        if added.is_some() {
            return Ok(Enqueued { run, created: true });
        }
        // Nothing inserted: the key or the run id is taken.
        if let Some(key) = key {
            let client = db.client().await?;
            if let Some(row) = client
                .query_opt(&self.by_key, &[&key])
                .await
                .map_err(|e| db.error("looking up an idempotency key", e))?
            {
                let first = run_of(row.get(0));
                let first_workflow: String = row.get(1);
                if first_workflow != workflow {
                    return Err(CanoError::configuration(format!(
                        "idempotency key {key:?} was used for run {first} of workflow {first_workflow:?}, not {workflow:?}"
                    ))
                    .with_hint("idempotency keys are global to the queue: prefix them with the workflow's name"));
                }
                return Ok(Enqueued {
                    run: first,
                    created: false,
                });
            }
        }
        let existing = self.status(run).await?;
        let detail = existing
            .map(|r| format!(" (workflow {:?}, {:?})", r.workflow, r.status))
            .unwrap_or_default();
        Err(CanoError::configuration(format!("run {run} is already enqueued{detail}"))
            .with_hint("enqueue each run id once; give enqueue an idempotency key to make retrying it safe"))
    }

    /// Cancels `run` while it is parked in a wait state: the queue records it as
    /// failed ("cancelled while parked"), so no signal or deadline wakes it and no
    /// worker claims it again. Fails for a run that is not parked (cancel a running
    /// one by stopping its worker or through its workflow's cancellation).
    pub async fn cancel_parked(&self, run: RunId) -> Result<(), CanoError> {
        let db = self.store.db();
        let cancelled: i64 = retry_transient(5, || async {
            let client = db.client().await?;
            client
                .query_one(&self.cancel_parked, &[&run_key(run)])
                .await
                .map_err(|e| db.error(&format!("cancelling parked run {run}"), e))
        })
        .await?
        .get(0);
        if cancelled == 0 {
            let status = self.status(run).await?.map(|r| r.status);
            return Err(CanoError::workflow(format!(
                "run {run} is not parked in the queue ({status:?})"
            ))
            .with_hint("only a parked run can be cancelled this way"));
        }
        Ok(())
    }

    /// The queue's record of `run`, or `None` if it was never enqueued.
    pub async fn status(&self, run: RunId) -> Result<Option<QueuedRun>, CanoError> {
        let db = self.store.db();
        let row = retry_transient(5, || async {
            let client = db.client().await?;
            client
                .query_opt(&self.select, &[&run_key(run)])
                .await
                .map_err(|e| db.error(&format!("reading the status of run {run}"), e))
        })
        .await?;
        Ok(row.as_ref().map(record))
    }

    /// Waits until every run in `runs` is over and returns their records in the same
    /// order, with one listening connection however many runs there are. Errors after
    /// `timeout` (naming how many are still going), or at once for a run that was
    /// never enqueued.
    pub async fn wait_all(
        &self,
        runs: &[RunId],
        timeout: Duration,
    ) -> Result<Vec<QueuedRun>, CanoError> {
        let db = self.store.db();
        let (listener, mut notes) = db.dedicated().await?;
        listener
            .batch_execute(&format!("LISTEN {}", done_channel(&db.schema)))
            .await
            .map_err(|e| db.error("listening for finished runs", e))?;
        // A timeout past what the clock can name (`Duration::MAX`) is no timeout.
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let mut over: HashMap<RunId, QueuedRun> = HashMap::with_capacity(runs.len());
        let mut pending: Vec<i64> = runs.iter().map(|&r| run_key(r)).collect();
        pending.sort_unstable();
        pending.dedup();
        let mut first = true;
        while !pending.is_empty() {
            // Read after LISTEN (and after each wake-up): no announcement is missed.
            let rows = retry_transient(5, || async {
                let client = db.client().await?;
                client
                    .query(&self.select_many, &[&pending])
                    .await
                    .map_err(|e| db.error("reading the status of runs", e))
            })
            .await?;
            if first && rows.len() < pending.len() {
                let known: HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
                let missing = pending
                    .iter()
                    .find(|r| !known.contains(r))
                    .copied()
                    .unwrap_or_default();
                return Err(CanoError::configuration(format!(
                    "run {} was never enqueued",
                    run_of(missing)
                ))
                .with_hint("wait for run ids that RunQueue::enqueue returned"));
            }
            first = false;
            for row in &rows {
                let run = record(row);
                if run.status.is_over() {
                    over.insert(run.run, run);
                }
            }
            pending.retain(|r| !over.contains_key(&run_of(*r)));
            if pending.is_empty() {
                break;
            }
            // Sleep until an announcement, then drain the others that came with it.
            let woken = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, notes.recv()).await,
                None => Ok(notes.recv().await),
            };
            match woken {
                Ok(Some(_)) => while notes.try_recv().is_ok() {},
                Ok(None) => {
                    let left = deadline.map_or(Duration::MAX, |d| {
                        d.saturating_duration_since(tokio::time::Instant::now())
                    });
                    let rest: Vec<RunId> = pending.iter().map(|r| run_of(*r)).collect();
                    let tail = Box::pin(self.wait_all(&rest, left)).await?;
                    over.extend(tail.into_iter().map(|r| (r.run, r)));
                    break;
                }
                Err(_) => {
                    return Err(CanoError::timeout(format!(
                        "{} of {} runs were not over after {timeout:?}",
                        pending.len(),
                        runs.len()
                    ))
                    .with_hint("are workers running with these workflows registered? RunQueue::status shows where a run stands"));
                }
            }
        }
        runs.iter()
            .map(|r| {
                over.get(r).cloned().ok_or_else(|| {
                    CanoError::store(format!("run {r} was not found among the runs waited for"))
                })
            })
            .collect()
    }

    /// Waits until `run` is over (finished or failed) and returns its record. Woken
    /// by the workers' announcements (LISTEN/NOTIFY), so it does not poll the table;
    /// errors after `timeout`, or at once for a run that was never enqueued.
    pub async fn wait(&self, run: RunId, timeout: Duration) -> Result<QueuedRun, CanoError> {
        let mut records = self.wait_all(&[run], timeout).await?;
        Ok(records.remove(0))
    }
}
