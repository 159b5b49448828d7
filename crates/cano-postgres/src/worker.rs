//! [`Worker`]: a process's share of the run queue. It claims runs of the workflows it
//! has registered, holds each under a lease it renews, and fences every checkpoint
//! write with the lease's epoch, so a worker that lost a lease cannot write over the
//! worker that took it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cano_core::checkpoint::{Bincode, Codec, Retention, is_running_here};
use cano_core::{
    CancellationToken, CanoError, ResourceKey, RunId, RunOptions, Workflow, WorkflowState,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinSet;

use crate::db::{run_key, run_of};
use crate::queue::{done_channel, ready_channel};
use crate::store::PostgresCheckpointStore;

/// A run's outcome with its state types erased: the exit state's bytes and `Debug` text.
type Drive = Pin<Box<dyn Future<Output = Result<(Vec<u8>, String), CanoError>> + Send>>;
type Driver = Arc<dyn Fn(RunId, Vec<u8>, bool, CancellationToken) -> Drive + Send + Sync>;

/// What a worker reports as it goes (see [`RunningWorker::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    /// The worker claimed `run` under lease `epoch` (its `claims`-th claim).
    Claimed {
        /// The run.
        run: RunId,
        /// The lease's epoch: every checkpoint write of this claim is fenced by it.
        epoch: i64,
        /// How many times the run has been claimed, this claim included.
        claims: u32,
    },
    /// The run reached exit state `label` and the queue recorded it.
    Finished {
        /// The run.
        run: RunId,
        /// The exit state's `Debug` text.
        label: String,
    },
    /// The run failed; the queue recorded why.
    Failed {
        /// The run.
        run: RunId,
        /// The error's text.
        error: String,
    },
    /// The worker let go of the run without an outcome (it is stopping, or lost its
    /// database connection): another claim resumes it from its last checkpoint.
    Released {
        /// The run.
        run: RunId,
    },
    /// A heartbeat found the lease taken over (it had expired); the worker stopped
    /// driving the run.
    LeaseLost {
        /// The run.
        run: RunId,
    },
}

/// Claims runs from the queue and drives them. Build one per process, register the
/// workflows it can run by name, and [`start`](Self::start) it.
///
/// ```no_run
/// use std::time::Duration;
/// use cano_core::{CanoError, Workflow};
/// use cano_postgres::{PgOptions, PostgresCheckpointStore, Worker};
/// # #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
/// # enum Billing { Charge, Done }
/// # fn billing() -> Workflow<Billing> { Workflow::bare().add_exit_state(Billing::Done) }
///
/// # async fn demo() -> Result<(), CanoError> {
/// let store = PostgresCheckpointStore::connect(PgOptions::new("postgres://cano@127.0.0.1/app")).await?;
/// let worker = Worker::new(&store)
///     .register("billing", billing())
///     .with_concurrency(32)
///     .with_lease(Duration::from_secs(15))
///     .start()
///     .await?;
/// // ... until the process is asked to stop:
/// worker.stop(Duration::from_secs(10)).await;
/// # Ok(()) }
/// ```
pub struct Worker {
    store: PostgresCheckpointStore,
    name: String,
    flows: HashMap<String, Driver>,
    concurrency: usize,
    lease: Duration,
    max_claims: u32,
    poll: Duration,
    keep_rows: bool,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("workflows", &self.flows.keys().collect::<Vec<_>>())
            .field("concurrency", &self.concurrency)
            .field("lease", &self.lease)
            .field("max_claims", &self.max_claims)
            .finish()
    }
}

impl Worker {
    /// A worker on `store`'s queue, named after the host process (`worker-<pid>-<n>`),
    /// running up to 16 runs at once under 30 s leases, failing a run claimed 5 times.
    pub fn new(store: &PostgresCheckpointStore) -> Self {
        Self {
            store: store.clone(),
            name: format!(
                "worker-{}-{}",
                std::process::id(),
                RunId::new().as_u64() % 100_000
            ),
            flows: HashMap::new(),
            concurrency: 16,
            lease: Duration::from_secs(30),
            max_claims: 5,
            poll: Duration::from_secs(1),
            keep_rows: false,
        }
    }

    /// Names the worker (shown in the queue's records and in `pg_stat_activity`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Registers `workflow` under `name`: runs enqueued for `name` are driven by it.
    /// The worker gives it this store, `name` as its workflow id, and keeps its rows
    /// until the queue has recorded the outcome (so a crash in between finishes the
    /// run from its `Finish` row instead of running it again).
    pub fn register<S, K>(mut self, name: &str, workflow: Workflow<S, K>) -> Self
    where
        S: WorkflowState + Serialize + DeserializeOwned,
        K: ResourceKey,
    {
        let workflow = Arc::new(
            workflow
                .with_checkpoint_store(self.store.clone())
                .with_workflow_id(name)
                .with_retention(Retention::KeepFinished),
        );
        let driver: Driver = Arc::new(move |run, initial, resume, token| {
            let workflow = workflow.clone();
            Box::pin(async move {
                let end = if resume {
                    workflow.resume_from_with(run, Some(token)).await?
                } else {
                    let initial: S = Bincode::decode(&initial).map_err(|e| {
                        CanoError::configuration(format!(
                            "the initial state of run {run} does not decode as this workflow's state type: {}",
                            e.message()
                        ))
                        .with_source(e)
                        .with_hint("enqueue runs with the state type of the workflow registered under that name")
                    })?;
                    let options = RunOptions::new().with_run_id(run).with_cancellation(token);
                    workflow.orchestrate_with(initial, options).await?
                };
                Ok((Bincode::encode(&end)?, format!("{end:?}")))
            })
        });
        self.flows.insert(name.to_owned(), driver);
        self
    }

    /// How many runs the worker drives at once (16 by default; at least 1).
    pub fn with_concurrency(mut self, runs: usize) -> Self {
        self.concurrency = runs.max(1);
        self
    }

    /// How long a claim lasts without a heartbeat (30 s by default). Heartbeats renew
    /// it every third of that; a worker that stops renewing (it died, or lost the
    /// database) loses its runs to other workers once it expires.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Fails a run once it has been claimed this many times without finishing (5 by
    /// default): a run that kills every worker that takes it is a poison run.
    pub fn with_max_claims(mut self, claims: u32) -> Self {
        self.max_claims = claims;
        self
    }

    /// How often an idle worker looks for runs when no notification wakes it (1 s by
    /// default; notifications make it claim a new run at once).
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// Keeps finished runs' checkpoint rows (ending with `Finish`) for audit instead of
    /// clearing them once the queue has recorded the outcome.
    pub fn keep_finished_rows(mut self, keep: bool) -> Self {
        self.keep_rows = keep;
        self
    }

    /// Starts claiming. Errors if no workflow is registered, or on bad settings.
    pub async fn start(self) -> Result<RunningWorker, CanoError> {
        if self.flows.is_empty() {
            return Err(CanoError::configuration(format!(
                "worker {} has no workflow registered, so it could never claim a run",
                self.name
            ))
            .with_hint("register the workflows it runs with Worker::register(name, workflow)"));
        }
        if self.lease < Duration::from_millis(300) || self.max_claims == 0 || self.poll.is_zero() {
            return Err(CanoError::configuration(format!(
                "worker {}: a lease under 300 ms, a poll interval of 0 or a claim limit of 0 cannot work (lease {:?}, poll {:?}, max claims {})",
                self.name, self.lease, self.poll, self.max_claims
            ))
            .with_hint("leases must outlast a heartbeat round trip by far; use seconds"));
        }
        let (stop, _) = watch::channel(false);
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            sql: WorkerSql::new(&self.store),
            store: self.store,
            name: self.name,
            flows: self.flows,
            concurrency: self.concurrency,
            lease: self.lease,
            max_claims: self.max_claims as i32,
            poll: self.poll,
            keep_rows: self.keep_rows,
            leases: Mutex::new(HashMap::new()),
            slot_freed: Notify::new(),
            stop,
            events,
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(shared.clone().claim_loop());
        tasks.spawn(shared.clone().heartbeat_loop());
        Ok(RunningWorker {
            shared,
            tasks: Arc::new(tokio::sync::Mutex::new(tasks)),
        })
    }
}

/// A started [`Worker`]. Dropping it leaves the worker running until the runtime
/// ends; [`stop`](Self::stop) lets go of its runs cleanly.
#[derive(Clone)]
pub struct RunningWorker {
    shared: Arc<Shared>,
    tasks: Arc<tokio::sync::Mutex<JoinSet<()>>>,
}

impl fmt::Debug for RunningWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningWorker")
            .field("name", &self.shared.name)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl RunningWorker {
    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The runs it is driving now.
    pub fn in_flight(&self) -> usize {
        self.shared.leases.lock().unwrap().len()
    }

    /// What the worker does from now on (claims, outcomes, lost leases).
    pub fn subscribe(&self) -> broadcast::Receiver<WorkerEvent> {
        self.shared.events.subscribe()
    }

    /// Stops claiming, gives the runs in flight up to `grace` to end, then cancels the
    /// rest and hands them back to the queue (another worker resumes them from their
    /// last checkpoint). Returns when the worker's tasks have ended.
    pub async fn stop(&self, grace: Duration) {
        let _ = self.shared.stop.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let idle = self.shared.slot_freed.notified();
            if self.in_flight() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                for lease in self.shared.leases.lock().unwrap().values() {
                    lease.token.cancel();
                }
                break;
            }
        }
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
    }
}

/// A run this worker holds.
struct Lease {
    epoch: i64,
    token: CancellationToken,
    lost: bool,
    claimed_at: tokio::time::Instant,
}

struct Shared {
    store: PostgresCheckpointStore,
    sql: WorkerSql,
    name: String,
    flows: HashMap<String, Driver>,
    concurrency: usize,
    lease: Duration,
    max_claims: i32,
    poll: Duration,
    keep_rows: bool,
    leases: Mutex<HashMap<RunId, Lease>>,
    slot_freed: Notify,
    stop: watch::Sender<bool>,
    events: broadcast::Sender<WorkerEvent>,
}

struct WorkerSql {
    claim: String,
    poison: String,
    heartbeat: String,
    finish: String,
    fail: String,
    release: String,
}

impl WorkerSql {
    fn new(store: &PostgresCheckpointStore) -> Self {
        let db = store.db();
        let (runs, logs, rows) = (
            db.table("cano_runs"),
            db.table("cano_logs"),
            db.table("cano_rows"),
        );
        let done = done_channel(&db.schema);
        let lease = "clock_timestamp() + $4 * interval '1 millisecond'";
        Self {
            claim: format!(
                "WITH picked AS (
                    SELECT run_id FROM {runs}
                    WHERE workflow = ANY($1) AND claims < $5
                      AND (status = 'queued' OR (status = 'running' AND lease_until < clock_timestamp()))
                    ORDER BY enqueued_at LIMIT $2
                    FOR UPDATE SKIP LOCKED)
                 UPDATE {runs} q SET status = 'running', epoch = q.epoch + 1, claims = q.claims + 1,
                     worker = $3, lease_until = {lease},
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
            heartbeat: format!(
                "UPDATE {runs} SET lease_until = clock_timestamp() + $2 * interval '1 millisecond'
                 WHERE worker = $1 AND status = 'running' RETURNING run_id, epoch"
            ),
            finish: format!(
                "WITH fin AS (
                    UPDATE {runs} SET status = 'finished', finished_at = clock_timestamp(), lease_until = NULL,
                        final_state = $3, final_label = $4
                    WHERE run_id = $1 AND epoch = $2 AND status = 'running'
                    RETURNING run_id),
                 rows AS (DELETE FROM {rows} WHERE run_id IN (SELECT run_id FROM fin) AND NOT $5),
                 logs AS (DELETE FROM {logs} WHERE run_id IN (SELECT run_id FROM fin) AND NOT $5),
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
            release: format!(
                "UPDATE {runs} SET status = 'queued', lease_until = NULL
                 WHERE run_id = $1 AND epoch = $2 AND status = 'running'"
            ),
        }
    }
}

/// How a drive ended, as the queue records it.
enum Verdict {
    Finished(Vec<u8>, String),
    Failed(String),
    Release,
}

impl Shared {
    fn emit(&self, event: WorkerEvent) {
        let _ = self.events.send(event);
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn claim_loop(self: Arc<Self>) {
        let db = self.store.db().clone();
        let names: Vec<String> = self.flows.keys().cloned().collect();
        let mut stop = self.stop.subscribe();
        let mut notes = None;
        let mut runs = JoinSet::new();
        loop {
            if self.stopping() {
                break;
            }
            // The wake-up connection: reopened whenever it drops; polling covers the gap.
            if notes.is_none()
                && let Ok((client, receiver)) = db.dedicated().await
            {
                let listen = format!("LISTEN {}", ready_channel(&db.schema));
                if client.batch_execute(&listen).await.is_ok() {
                    notes = Some((client, receiver));
                }
            }
            let free = self
                .concurrency
                .saturating_sub(self.leases.lock().unwrap().len());
            let mut claimed = 0;
            if free > 0 {
                // On an error the database is away: try again after the poll interval.
                if let Ok(batch) = self.claim(&names, free).await {
                    claimed = batch.len();
                    for claim in batch {
                        runs.spawn(self.clone().drive(claim));
                    }
                }
            }
            while runs.try_join_next().is_some() {}
            if free > 0 && claimed == free {
                continue; // there may be more waiting
            }
            let slot = self.slot_freed.notified();
            let woken = async {
                match notes.as_mut() {
                    Some((_, receiver)) => receiver.recv().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                alive = woken => if !alive { notes = None },
                _ = slot, if free == 0 || claimed < free => {}
                _ = tokio::time::sleep(self.poll) => {}
                _ = stop.changed() => {}
            }
        }
        // Stopping: the runs end on their own, or are cancelled by `stop`.
        while runs.join_next().await.is_some() {}
    }

    async fn claim(&self, names: &[String], free: usize) -> Result<Vec<Claim>, CanoError> {
        let db = self.store.db();
        let client = db.client().await?;
        client
            .execute(&self.sql.poison, &[&names, &self.max_claims])
            .await
            .map_err(|e| db.error("failing poison runs", e))?;
        let rows = client
            .query(
                &self.sql.claim,
                &[
                    &names,
                    &(free as i64),
                    &self.name,
                    &(self.lease.as_millis() as f64),
                    &self.max_claims,
                ],
            )
            .await
            .map_err(|e| db.error("claiming runs", e))?;
        let mut claims = Vec::with_capacity(rows.len());
        for row in rows {
            let claim = Claim {
                run: run_of(row.get(0)),
                workflow: row.get(1),
                epoch: row.get(2),
                claims: row.get::<_, i32>(3) as u32,
                initial: row.get(4),
                resume: row.get(5),
            };
            // Fence before the first write of this claim, and count it in flight.
            self.store.fence(claim.run, claim.epoch);
            self.leases.lock().unwrap().insert(
                claim.run,
                Lease {
                    epoch: claim.epoch,
                    token: CancellationToken::new(),
                    lost: false,
                    claimed_at: tokio::time::Instant::now(),
                },
            );
            self.emit(WorkerEvent::Claimed {
                run: claim.run,
                epoch: claim.epoch,
                claims: claim.claims,
            });
            claims.push(claim);
        }
        Ok(claims)
    }

    async fn drive(self: Arc<Self>, claim: Claim) {
        let Claim { run, epoch, .. } = claim;
        let token = self.leases.lock().unwrap()[&run].token.clone();
        let outcome = match self.flows.get(&claim.workflow) {
            Some(driver) => {
                // Another worker of this process may still drive the run whose lease it
                // lost; its heartbeat cancels it shortly. Wait for that rather than be
                // refused as a second driver. (A process has no signal for a run's end
                // that this could await, so it looks every 50 ms.)
                while is_running_here(&claim.workflow, run) && !token.is_cancelled() {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                driver(run, claim.initial, claim.resume, token).await
            }
            None => Err(CanoError::configuration(format!(
                "worker {} claimed run {run} of workflow {:?}, which it has not registered",
                self.name, claim.workflow
            ))),
        };
        let lost = self
            .leases
            .lock()
            .unwrap()
            .get(&run)
            .is_some_and(|l| l.lost);
        let verdict = match outcome {
            // Another worker holds the run now: nothing of this claim is recorded.
            _ if lost => None,
            Ok((bytes, label)) => Some(Verdict::Finished(bytes, label)),
            // Cancelled by `stop`, or the database went away: not the run's fault.
            Err(CanoError::Cancelled(_)) if self.stopping() => Some(Verdict::Release),
            Err(e) if matches!(e, CanoError::Store(_)) && !e.is_permanent() => {
                Some(Verdict::Release)
            }
            Err(e) => Some(Verdict::Failed(e.to_string())),
        };
        match verdict {
            Some(verdict) => self.record(run, epoch, verdict).await,
            None => self.emit(WorkerEvent::LeaseLost { run }),
        }
        self.store.unfence(run);
        self.leases.lock().unwrap().remove(&run);
        // Wake whoever waits now (claim loop, heartbeat, `stop`), and leave a permit
        // for a claim loop that is about to wait.
        self.slot_freed.notify_waiters();
        self.slot_freed.notify_one();
    }

    /// Writes the verdict to the queue, fenced by the claim's epoch; retried while the
    /// database is away (if it stays away, the lease expires and another worker
    /// resumes the run from its checkpoint, which is just as correct).
    async fn record(&self, run: RunId, epoch: i64, verdict: Verdict) {
        let db = self.store.db();
        let key = run_key(run);
        let event = match &verdict {
            Verdict::Finished(_, label) => WorkerEvent::Finished {
                run,
                label: label.clone(),
            },
            Verdict::Failed(error) => WorkerEvent::Failed {
                run,
                error: error.clone(),
            },
            Verdict::Release => WorkerEvent::Released { run },
        };
        let written = crate::db::retry_lost(8, || async {
            let client = db.client().await?;
            let result = match &verdict {
                Verdict::Finished(bytes, label) => client
                    .query_one(
                        &self.sql.finish,
                        &[&key, &epoch, bytes, label, &self.keep_rows],
                    )
                    .await
                    .map(|row| row.get::<_, i64>(0) > 0),
                Verdict::Failed(error) => client
                    .query(&self.sql.fail, &[&key, &epoch, error])
                    .await
                    .map(|rows| !rows.is_empty()),
                Verdict::Release => client
                    .execute(&self.sql.release, &[&key, &epoch])
                    .await
                    .map(|n| n > 0),
            };
            result.map_err(|e| db.error(&format!("recording the outcome of run {run}"), e))
        })
        .await;
        match written {
            Ok(true) => self.emit(event),
            // The epoch moved on: another worker holds the run now.
            Ok(false) => self.emit(WorkerEvent::LeaseLost { run }),
            Err(_) => {}
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let every = self.lease / 3;
        let db = self.store.db().clone();
        loop {
            // While stopping, leases are still renewed until the last run has ended.
            let freed = self.slot_freed.notified();
            let stopping = self.stopping();
            if stopping && self.leases.lock().unwrap().is_empty() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed(), if !stopping => continue,
                _ = freed, if stopping => continue,
            }
            let sent = tokio::time::Instant::now();
            let renewed = async {
                let client = db.client().await?;
                client
                    .query(
                        &self.sql.heartbeat,
                        &[&self.name, &(self.lease.as_millis() as f64)],
                    )
                    .await
                    .map_err(|e| db.error("renewing leases", e))
            }
            .await;
            let Ok(rows) = renewed else { continue };
            let held: HashMap<RunId, i64> =
                rows.iter().map(|r| (run_of(r.get(0)), r.get(1))).collect();
            let mut leases = self.leases.lock().unwrap();
            for (run, lease) in leases.iter_mut() {
                // A claim newer than the statement may be missing from its answer.
                if !lease.lost && lease.claimed_at < sent && held.get(run) != Some(&lease.epoch) {
                    lease.lost = true;
                    lease.token.cancel();
                }
            }
        }
    }
}

struct Claim {
    run: RunId,
    workflow: String,
    epoch: i64,
    claims: u32,
    initial: Vec<u8>,
    resume: bool,
}
