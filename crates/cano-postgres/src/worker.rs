//! [`Worker`]: a process's share of the run queue. It claims runs of the workflows it
//! has registered, holds each under a lease it renews, and fences every checkpoint
//! write with the lease's epoch, so a claim that lost its lease cannot write over the
//! claim that took it, in another process or in this one.
//!
//! Every claim is known by its run and its epoch together: its lease, its fence and
//! its heartbeat renew exactly that claim, never another claim of the same run. The
//! claim loop and the heartbeat each have a connection of their own, so a pool busy
//! with appends cannot starve them, and a worker that cannot renew a lease in time
//! hands its run back (it stops driving it, undoing nothing) before the lease can
//! expire and be taken.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cano_core::checkpoint::{
    Bincode, CheckpointRow, CheckpointStore, Retention, WaitRecord, decode_state, encode_state,
    until_not_running_here,
};
use cano_core::{
    CancellationToken, CanoError, ResourceKey, RunId, RunOptions, Workflow, WorkflowState,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_postgres::{Notification, Statement};

use crate::awake::woke_to;
use crate::channels::{cancel_channel, ready_channel};
use crate::db::{run_key, run_of};
use crate::finishes::Finishes;
use crate::store::{EndWithFinish, PostgresCheckpointStore};
use crate::worker_sql::WorkerSql;

/// A run's outcome with its state types erased: the exit state's bytes and `Debug` text.
type Drive = Pin<Box<dyn Future<Output = Result<(Vec<u8>, String), CanoError>> + Send>>;
/// Drives one claim: the run, its initial state's bytes, whether it has a log to
/// resume, its token, and the store fenced by the claim's epoch.
type Driver = Arc<
    dyn Fn(RunId, Vec<u8>, bool, CancellationToken, Arc<dyn CheckpointStore>) -> Drive
        + Send
        + Sync,
>;

/// What a worker reports as it goes (see [`RunningWorker::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// The worker handed the run back without an outcome and without undoing anything
    /// (it is stopping, or lost its database connection): another claim resumes it
    /// from its last checkpoint. A hand-back does not count toward the poison limit.
    Released {
        /// The run.
        run: RunId,
    },
    /// The lease of this claim was taken over (it had expired): the worker stopped
    /// driving the run, undoing nothing, and the new owner goes on.
    LeaseLost {
        /// The run.
        run: RunId,
        /// The epoch of the lost claim.
        epoch: i64,
    },
    /// The worker could not renew this claim's lease for most of its length (the
    /// database unreachable, or the process stalled) and stopped driving the run before
    /// the lease could expire, undoing nothing.
    Unrenewed {
        /// The run.
        run: RunId,
        /// The epoch of the claim.
        epoch: i64,
    },
    /// The run parked in a wait state: the queue holds it, without a lease, until a
    /// signal it waits for is sent or its deadline passes; then a worker claims it
    /// again. A park does not count toward the poison limit.
    Parked {
        /// The run.
        run: RunId,
    },
    /// A round of claims failed (the database refused a statement or the connection
    /// went away), or the claim loop could not open its connection and prepare its
    /// statements (a missing table, say): the worker tries again, a new connection
    /// each time. The same error is reported at most once every ten seconds.
    ClaimFailed {
        /// The database's error.
        error: String,
    },
    /// The run was cancelled (asked by [`RunQueue::cancel`](crate::RunQueue::cancel)
    /// or by its queue's [`WhenFull`](crate::WhenFull) policy): it stopped as any
    /// cancelled run stops, compensations included, and the queue recorded it.
    Cancelled {
        /// The run.
        run: RunId,
        /// Why, as the queue records it.
        reason: String,
    },
}

/// Claims runs from the queue and drives them. Build one per process, register the
/// workflows it can run by name, and [`start`](Self::start) it.
///
/// ```
/// use std::time::Duration;
/// use cano_core::{CanoError, Task, TaskResult, Workflow};
/// use cano_postgres::{PgOptions, PostgresCheckpointStore, Worker};
/// # #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
/// # enum Billing { Charge, Done }
/// # struct Charge;
/// # #[async_trait::async_trait]
/// # impl Task<Billing> for Charge {
/// #     async fn run_bare(&self) -> Result<TaskResult<Billing>, CanoError> {
/// #         Ok(TaskResult::Single(Billing::Done))
/// #     }
/// # }
/// # fn billing() -> Workflow<Billing> {
/// #     Workflow::bare().register(Billing::Charge, Charge).add_exit_state(Billing::Done)
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
/// let store = PostgresCheckpointStore::connect(PgOptions::new(url).with_schema("doc_worker")).await?;
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
    /// Each registered workflow's id, version and drawing, kept in the store at start
    /// (the claims' fenced stores keep none: one write per worker, not per run).
    graphs: Vec<(String, u32, String)>,
    /// Made before the start, so that a subscription taken before it misses nothing.
    events: broadcast::Sender<WorkerEvent>,
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
    /// A worker on `store`'s queue, with a name unique to this process start
    /// (`worker-<pid>-<random>`), running up to 16 runs at once under 30 s leases,
    /// failing a run claimed 5 times.
    pub fn new(store: &PostgresCheckpointStore) -> Self {
        Self {
            store: store.clone(),
            name: format!(
                "worker-{}-{:016x}",
                std::process::id(),
                RunId::new().as_u64()
            ),
            flows: HashMap::new(),
            concurrency: 16,
            lease: Duration::from_secs(30),
            max_claims: 5,
            poll: Duration::from_secs(1),
            keep_rows: false,
            graphs: Vec::new(),
            events: broadcast::channel(EVENTS).0,
        }
    }

    /// Every event of the worker once started, from its first (a subscription taken
    /// after [`start`](Self::start), with [`RunningWorker::subscribe`], sees only
    /// what happens after it). Events go to each receiver as they happen; one that
    /// falls more than 1,024 events behind misses the oldest (`Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<WorkerEvent> {
        self.events.subscribe()
    }

    /// Names the worker (shown in the queue's records and in `pg_stat_activity`).
    /// Leases are held by claim, not by name: two workers with one name renew only
    /// their own runs.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Registers `workflow` under `name`: runs enqueued for `name` are driven by it.
    /// The worker gives it this store and `name` as its workflow id, and records a
    /// run's end with its last checkpoint row, in one statement: no crash can come
    /// between the two, so a finished run is never run again (see
    /// [`keep_finished_rows`](Self::keep_finished_rows)).
    pub fn register<S, K>(mut self, name: &str, workflow: Workflow<S, K>) -> Self
    where
        S: WorkflowState + Serialize + DeserializeOwned,
        K: ResourceKey,
    {
        let workflow = workflow
            .with_workflow_id(name)
            .with_retention(Retention::KeepFinished);
        self.graphs.push((
            name.to_owned(),
            workflow.workflow_version(),
            workflow.to_mermaid(),
        ));
        let driver: Driver = Arc::new(move |run, initial, resume, token, store| {
            // Each claim writes through a store fenced by its own epoch.
            let workflow = workflow.clone().with_shared_checkpoint_store(store);
            Box::pin(async move {
                let end = if resume {
                    workflow.resume_from_with(run, Some(token)).await?
                } else {
                    let initial: S = decode_state::<Bincode, S>(&initial).map_err(|e| {
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
                Ok((encode_state::<Bincode, S>(&end)?, format!("{end:?}")))
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

    /// How long a claim lasts without a heartbeat (30 s by default; at least 300 ms;
    /// `Duration::MAX` is "never expires", so a dead worker's runs are never taken
    /// over). Heartbeats renew it every third of that; a worker that cannot renew it
    /// for two thirds of it hands the run back before it can expire.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Fails a run once it has been claimed this many times without finishing (5 by
    /// default): a run that kills every worker that takes it is a poison run. A run a
    /// worker hands back (stopping, losing the database) is not counted.
    pub fn with_max_claims(mut self, claims: u32) -> Self {
        self.max_claims = claims;
        self
    }

    /// How often an idle worker looks for runs when no notification wakes it (1 s by
    /// default; notifications make it claim a new run at once). An idle worker that
    /// stepped back from runs other workers took first looks at a pace of its own,
    /// at most this far apart (and at most a second). While another worker is awake
    /// to its workflows (their enqueues then do not announce new runs; see the crate
    /// docs), it looks at least once a second, in case that worker stalls.
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// Keeps finished runs' checkpoint rows (ending with `Finish`) for audit instead of
    /// clearing them once the queue has recorded the outcome. Off by default: the
    /// statement that records a run's end then deletes its rows, and its `Finish` row
    /// is never written (one statement a run fewer). On, the `Finish` row is written
    /// first, and a crash before the end is recorded finishes the run from that row
    /// instead of running its last state again.
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
                "worker {}: a lease under 300 ms (Worker::with_lease), a poll interval of 0 (with_poll_interval) or a claim limit of 0 (with_max_claims) cannot work (lease {:?}, poll {:?}, max claims {})",
                self.name, self.lease, self.poll, self.max_claims
            ))
            .with_hint("leases must outlast a heartbeat round trip by far; use seconds"));
        }
        for (workflow, version, drawing) in &self.graphs {
            self.store
                .record_graph(workflow, version.to_owned(), &|| drawing.clone())
                .await?;
        }
        let (stop, _) = watch::channel(false);
        let events = self.events;
        let sql = WorkerSql::new(&self.store);
        let finishes = Finishes::start(
            self.store.db().clone(),
            sql.finish.clone(),
            self.keep_rows,
            RECORD_ATTEMPTS,
        );
        let shared = Arc::new(Shared {
            sql,
            keep_rows: self.keep_rows,
            finishes,
            store: self.store,
            name: self.name,
            flows: self.flows,
            concurrency: self.concurrency,
            lease: self.lease,
            max_claims: self.max_claims as i32,
            poll: self.poll,
            leases: Mutex::new(HashMap::new()),
            slot_freed: Notify::new(),
            freed: Mutex::new(HashMap::new()),
            held_us: AtomicU64::new(0),
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
/// ends; [`stop`](Self::stop) hands its runs back cleanly.
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
        self.shared.leases().len()
    }

    /// What the worker does from now on (claims, outcomes, lost leases). Events sent
    /// before this call are not seen: to see every one, subscribe before the start
    /// with [`Worker::subscribe`].
    pub fn subscribe(&self) -> broadcast::Receiver<WorkerEvent> {
        self.shared.events.subscribe()
    }

    /// Stops claiming, gives the runs in flight up to `grace` to end (`Duration::MAX`:
    /// as long as they take), then hands the rest back to the queue: they stop at
    /// their next await point, undoing nothing, and another worker resumes them from
    /// their last checkpoint. Returns when the worker's tasks have ended.
    pub async fn stop(&self, grace: Duration) {
        self.shared.stop.send_replace(true);
        let deadline = Instant::now().checked_add(grace);
        loop {
            let idle = self.shared.slot_freed.notified();
            if self.in_flight() == 0 {
                break;
            }
            let ended = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, idle).await.is_ok(),
                None => {
                    idle.await;
                    true
                }
            };
            if !ended {
                for lease in self.shared.leases().values() {
                    lease.token.hand_back();
                }
                break;
            }
        }
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
    }
}

/// One claim: a run under one lease epoch. A process may hold two claims of one run
/// for a moment (a stalled driver, and the claim that took its lease over).
type ClaimKey = (RunId, i64);

/// Why a claim stopped being this worker's to drive.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// Another claim took the lease: this one records nothing.
    TakenOver,
    /// It could not be renewed in time: this one hands the run back, if it still can.
    Unrenewed,
}

/// A claim this worker holds.
struct Lease {
    token: CancellationToken,
    /// Set once the claim is no longer this worker's to drive.
    lost: Option<Loss>,
    /// When the last heartbeat that renewed this claim was sent (or the claim made):
    /// the lease on the database lasts at least `lease` from then.
    renewed: Instant,
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
    /// Whether a finished run's rows are kept (else its `Finish` row ends its claim).
    keep_rows: bool,
    /// Records finished runs, many to a statement.
    finishes: Finishes,
    leases: Mutex<HashMap<ClaimKey, Lease>>,
    slot_freed: Notify,
    /// Slots of named queues freed by runs that ended here since the last claim
    /// round, by queue: the round claims them back, or hands them on (`hand_on`).
    freed: Mutex<HashMap<String, usize>>,
    /// How long a run has held a slot of late, in µs (a moving average).
    held_us: AtomicU64,
    stop: watch::Sender<bool>,
    events: broadcast::Sender<WorkerEvent>,
}

/// A claim whose run's `Finish` row ends it in the queue (see `EndWithFinish`).
struct ClaimEnd {
    shared: Arc<Shared>,
    run: RunId,
    epoch: i64,
    /// Once the end is recorded: the run's final label, and whether idle workers were
    /// told of the slot it freed.
    recorded: Mutex<Option<(String, bool)>>,
}

#[async_trait::async_trait]
impl EndWithFinish for ClaimEnd {
    async fn end_with(&self, row: &CheckpointRow) -> Result<(), CanoError> {
        let (run, epoch) = (self.run, self.epoch);
        let tell = self.shared.stopping();
        let finishes = &self.shared.finishes;
        // A try whose reply was lost and ended the run counts as ended (the
        // statement says so for a run finished at this very claim).
        let ended = finishes
            .finish(run, epoch, row.state.clone(), row.label.clone(), tell)
            .await?;
        if !ended {
            return Err(CanoError::store(format!(
                "run {run} reached its exit state {}, but this claim (epoch {epoch}) no longer holds it: its lease was lost, so its end is not recorded here",
                row.label
            ))
            .with_hint("the lease expired before a heartbeat renewed it (a stalled process or a lost database connection); the run goes on where it is now leased")
            .permanent());
        }
        if let Ok(mut recorded) = self.recorded.lock() {
            *recorded = Some((row.label.clone(), tell));
        }
        Ok(())
    }
}

/// A statement's values.
type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// How a drive ended, as the queue records it.
enum Verdict {
    Finished(Vec<u8>, String),
    Failed(String),
    Cancelled(String),
    Release,
    /// Parked waiting for any of `names` until `deadline_ms` (ms since the epoch).
    Parked {
        names: Vec<String>,
        deadline_ms: Option<i64>,
    },
}

/// How many events a subscriber may fall behind before it misses the oldest.
const EVENTS: usize = 1024;

/// How long the claim loop waits to connect (and listen) before trying again.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// While runs wait to be claimed, a freed slot waits for others (up to a quarter of
/// the worker's slots) so that one round claims several runs: for an eighth of the
/// time a run has held a slot of late, between `GATHER` and `GATHER_MOST`. With a
/// fixed short wait, a worker whose runs are slow (a busy server makes them so)
/// claimed one run a round, each round made the server busier, and a cluster did
/// more work per run the more workers it had; an eighth of a run's time costs its
/// slots at most that, and usually far less (a quarter of them frees sooner).
const GATHER: Duration = Duration::from_millis(2);
const GATHER_MOST: Duration = Duration::from_millis(100);

/// Tries at recording a run's outcome while the database fails for a transient
/// reason: a lost outcome costs a rerun of the run once its lease expires.
const RECORD_ATTEMPTS: u32 = 8;

/// How often the claim loop fails poison runs.
const POISON_EVERY: Duration = Duration::from_secs(1);

/// How long the claim loop keeps quiet about an error it reported, if it repeats.
const REPORT_AGAIN: Duration = Duration::from_secs(10);

/// How soon the claim loop tries to connect again after failing to.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// Tells of each queue's freed slots with `tell`, one queue at a time, skipping
/// queues with none. Stops at the first failure and returns what was not told of:
/// that queue and every one after it.
async fn tell_each<F, Fut>(queues: HashMap<String, usize>, mut tell: F) -> Vec<(String, usize)>
where
    F: FnMut(String, usize) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut left = queues.into_iter().filter(|(_, slots)| *slots > 0);
    while let Some((queue, slots)) = left.next() {
        if !tell(queue.clone(), slots).await {
            return std::iter::once((queue, slots)).chain(left).collect();
        }
    }
    Vec::new()
}

/// What went wrong with a step of the claim loop (`doing`) bounded by `limit`, if
/// anything: its error, or that it hung (its connection is then taken for dead).
fn failed(
    outcome: Result<Result<(), CanoError>, tokio::time::error::Elapsed>,
    doing: &str,
    limit: Duration,
) -> Option<String> {
    match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!(
            "{doing} took longer than {limit:?}: its connection is taken for dead"
        )),
    }
}

/// A notification on the channel of new runs, with its `payload`: whether it
/// announced runs of this worker's workflows (`names`).
///
/// New runs, or slots another worker left: every queue may have room. Runs of its
/// own announced: nobody was awake to them. Another worker that says it woke to
/// one of them (this one is not `awake`, or it hears itself): it looks at least
/// once a second while that one may be (see `awake`).
fn heard_of_runs(payload: &str, names: &[String], awake: bool, turn: &mut Turn) -> bool {
    let mine = |workflow: &str| names.iter().any(|name| name == workflow);
    if let Some(workflow) = woke_to(payload) {
        turn.watch |= !awake && mine(workflow);
        return false;
    }
    turn.capped.clear();
    turn.heard += 1;
    let announced = mine(payload);
    turn.watch &= !announced;
    announced
}

/// After a try to settle (see `awake`), whether a look is owed (`owes`): still, and
/// the next try comes later, or no longer (the look that follows is the one owed).
fn owed_after(owes: &mut bool, turn: &mut Turn, settled: bool) {
    *owes = !settled;
    if settled {
        turn.settle_pace = None;
    } else {
        turn.unsettled();
    }
}

/// How long one heartbeat or claim statement may take before its connection is
/// taken for dead (a half-open connection never answers).
fn statement_limit(lease: Duration) -> Duration {
    (lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(10))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Shared {
    fn leases(&self) -> MutexGuard<'_, HashMap<ClaimKey, Lease>> {
        // Every change is one insert, remove or flag: sound after a panic.
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Folds how long a run held its slot into the moving average (an eighth each).
    fn note_held(&self, held: Duration) {
        let sample = u64::try_from(held.as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .held_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    sample
                } else {
                    old - old / 8 + sample / 8
                })
            });
    }

    fn freed_slots(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // Every change is one insert or take: sound after a panic.
        self.freed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the idle workers of the slots of `queues` this worker freed and did not
    /// take back, if a run waits there. Slots not told of (a statement failed) stay
    /// to be told of next round; meanwhile the others find them when they poll.
    /// Bounded by `limit`, like a round of claims: a connection that hangs must not
    /// hold the claim loop up. Past it every slot is kept (one told of twice costs
    /// an idle worker a look) and `false` says the connection is taken for dead.
    async fn hand_on(
        &self,
        open: &Session,
        queues: HashMap<String, usize>,
        limit: Duration,
    ) -> bool {
        let all: Vec<(String, usize)> = queues.iter().map(|(q, n)| (q.clone(), *n)).collect();
        let telling = tell_each(queues, |queue, slots| async move {
            let slots = i64::try_from(slots).unwrap_or(i64::MAX);
            open.client
                .execute(&open.hand_on, &[&queue, &slots])
                .await
                .is_ok()
        });
        match tokio::time::timeout(limit, telling).await {
            Ok(untold) => {
                self.keep_freed(untold);
                true
            }
            Err(_) => {
                self.keep_freed(all);
                false
            }
        }
    }

    /// Puts slots freed and not yet told of back, for the next round.
    fn keep_freed(&self, queues: impl IntoIterator<Item = (String, usize)>) {
        let mut freed = self.freed_slots();
        for (queue, slots) in queues {
            *freed.entry(queue).or_default() += slots;
        }
    }

    /// Whether this worker's runs free their slots soon (they held them less than
    /// `QUICK` on average): only then does it become awake (see `awake`), since
    /// awake it leaves runs waiting for its own slots, a while.
    fn quick(&self) -> bool {
        let held = self.held_us.load(Ordering::Relaxed);
        held > 0 && Duration::from_micros(held) < QUICK
    }

    fn emit(&self, event: WorkerEvent) {
        let _ = self.events.send(event);
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn lease_ms(&self) -> f64 {
        self.lease.as_secs_f64() * 1_000.0
    }

    async fn claim_loop(self: Arc<Self>) {
        let db = self.store.db().clone();
        let names: Vec<String> = self.flows.keys().cloned().collect();
        // Workers of the same workflows share a front (see `settle_listening`).
        let front_key = {
            let mut sorted = names.clone();
            sorted.sort();
            sorted.join("\n")
        };
        let mut stop = self.stop.subscribe();
        // A connection of the loop's own: it listens for new runs and claims them.
        let mut session: Option<Session> = None;
        let mut runs = JoinSet::new();
        let limit = statement_limit(self.lease);
        let mut turn = Turn::default();
        loop {
            if self.stopping() {
                break;
            }
            if session.is_none() {
                let opening = async {
                    let open = Session::open(&db, &self.sql).await?;
                    // Listening already: a worker that wakes from now on says so.
                    let watched = open.client.query_one(&open.watched, &[&names]).await;
                    let watched = watched.map_err(|e| db.error("asking who is awake", e))?;
                    Ok::<_, CanoError>((open, watched.get::<_, bool>(0)))
                };
                match tokio::time::timeout(CONNECT_LIMIT, opening).await {
                    Ok(Ok((opened, watched))) => {
                        session = Some(opened);
                        turn.watch = watched;
                    }
                    Ok(Err(e)) => self.claim_failed(&mut turn, e.to_string()),
                    Err(_) => self.claim_failed(
                        &mut turn,
                        format!(
                            "the claim loop's connection was not open after {CONNECT_LIMIT:?}: is the database reachable?"
                        ),
                    ),
                }
            }
            // With runs waiting (the last round filled every free slot), a slot that
            // just freed waits a moment for others, so one round claims several runs
            // instead of one round a run.
            if turn.backlog {
                let held = Duration::from_micros(self.held_us.load(Ordering::Relaxed));
                let (most, all) = gathering(held, turn.lock_wait);
                self.gather_slots(most, turn.only_capped, all).await;
            }
            turn.lock_wait = Duration::ZERO;
            let free = self.concurrency.saturating_sub(self.leases().len());
            // Awake or owing a look, and it cannot take what waits (its round left
            // runs, or its slots have been full for `QUICK`): the others are told
            // instead (see `hand_over`). Awake and full, it would look again only as
            // its runs end, and a run may wait on the very run it was to take.
            if free == 0 {
                turn.full_since.get_or_insert_with(Instant::now);
            } else {
                turn.full_since = None;
            }
            let full_too_long = turn.full_since.is_some_and(|at| at.elapsed() >= QUICK);
            if (turn.leaves || full_too_long)
                && let Some(open) = session.as_mut()
                && (open.owes || !open.awake.is_empty())
            {
                let handed = tokio::time::timeout(limit, self.hand_over(open, &names, &mut turn));
                if let Some(error) = failed(handed.await, "telling idle workers of new runs", limit)
                {
                    self.claim_failed(&mut turn, error);
                    session = None;
                }
            }
            let mut claimed = 0;
            turn.round = turn.round.wrapping_add(1);
            if free > 0
                && let Some(open) = session.as_mut()
            {
                // The slots freed here before this round: it takes them back, or
                // tells the idle workers.
                let mut freed = std::mem::take(&mut *self.freed_slots());
                let claiming = self.claim(open, &names, free, &mut turn, &mut freed);
                let outcome = tokio::time::timeout(limit, claiming).await;
                let answered = if matches!(outcome, Ok(Ok(_))) {
                    self.hand_on(open, freed, limit).await
                } else {
                    self.keep_freed(freed);
                    true
                };
                match outcome {
                    Ok(Ok(batch)) => {
                        claimed = batch.len();
                        for claim in batch {
                            runs.spawn(self.clone().drive(claim));
                        }
                    }
                    // The connection is lost or hangs: a new one next time round. (A
                    // claim whose reply was lost is not ours: nobody renews its lease,
                    // and it expires for another claim to take.)
                    Ok(Err(e)) => {
                        self.claim_failed(&mut turn, e.to_string());
                        session = None;
                    }
                    Err(_) => {
                        self.claim_failed(
                            &mut turn,
                            format!(
                                "a round of claims took longer than {limit:?}: its connection is taken for dead"
                            ),
                        );
                        session = None;
                    }
                }
                if !answered {
                    self.claim_failed(
                        &mut turn,
                        format!(
                            "telling idle workers of freed slots took longer than {limit:?}: its connection is taken for dead"
                        ),
                    );
                    session = None;
                }
            }
            while runs.try_join_next().is_some() {}
            turn.backlog = free > 0 && claimed > 0 && turn.waiting;
            if free > 0
                && let Some(open) = &session
            {
                let round = Round {
                    claimed,
                    full: turn.waiting,
                    lost: claimed == 0 && turn.notified && !turn.only_capped,
                    unheard: !open.listening,
                };
                turn.behind = stepped_back(turn.behind, &round, self.poll.min(IDLE_MOST))
                    .filter(|_| !open.front && open.awake.is_empty());
            }
            turn.notified = false;
            // Runs it left with slots free, that enqueues may not have announced, are
            // told of next: its own limit on their queue holds them back (the
            // others' may be free).
            turn.leaves = free > 0 && turn.waiting && claimed < free;
            if turn.leaves
                && std::mem::take(&mut turn.owing)
                && let Some(open) = session.as_mut()
            {
                open.owes = true;
            }
            // Awake, it looks again after a moment (gathering what comes meanwhile):
            // that is its promise to the enqueues that did not announce their runs.
            // Finding nothing, it looks again later each time, and past
            // `AWAKE_LINGER` it dozes: at once, in the round trip of its next look
            // (see `awake`). Runs streaming in (a round took several, or more were
            // announced while it claimed) make it awake.
            let heard = std::mem::take(&mut turn.heard);
            let mut awake = false;
            if free > 0
                && let Some(open) = session.as_mut()
            {
                awake = !open.awake.is_empty();
                if !awake {
                    turn.wake = (claimed >= 2 || (claimed >= 1 && heard >= 2))
                        && turn.behind.is_none()
                        && !turn.watch
                        && self.quick();
                }
                if awake && claimed == 0 {
                    turn.awake_pace = turn.awake_pace.saturating_mul(2).max(AWAKE_GATHER);
                    if turn.awake_pace > AWAKE_LINGER {
                        turn.doze = true;
                        continue;
                    }
                } else {
                    turn.awake_pace = AWAKE_GATHER;
                }
            }
            if free > 0 && claimed == free {
                continue; // there may be more waiting
            }
            // Without a connection, try for one again soon, not a whole poll later.
            let mut pause = if session.is_some() {
                self.poll
            } else {
                self.poll.min(RECONNECT_PAUSE)
            };
            // A worker that stepped back and drives no run stops listening (see
            // `settle_listening`): it looks at its pace instead.
            if let Some(open) = session.as_mut() {
                let settled =
                    tokio::time::timeout(limit, self.settle_listening(open, &mut turn, &front_key))
                        .await;
                if let Some(error) = failed(settled, "listening for new runs", limit) {
                    self.claim_failed(&mut turn, error);
                    session = None;
                } else if !open.listening
                    && let Some(pace) = turn.behind
                {
                    pause = pause.min(pace);
                }
            }
            // Owing a look that a settle put off, it tries again soon; awake and
            // full, it hands over once full for `QUICK`.
            if let Some(open) = &session {
                if let Some(pace) = turn.settle_pace
                    && open.owes
                {
                    pause = pause.min(pace);
                }
                if let Some(at) = turn.full_since
                    && (open.owes || !open.awake.is_empty())
                {
                    pause = pause.min(QUICK.saturating_sub(at.elapsed()));
                }
            }
            // Another worker may be awake to its workflows: it looks once a second, in
            // case that one stalls (see `awake`).
            if turn.watch && !awake {
                pause = pause.min(IDLE_MOST);
            }
            // Awake, at its pace. Else a parked run's deadline, or a delayed run's
            // start, may come before the next poll (a worker with runs waiting claims
            // again as its slots free).
            if awake {
                pause = pause.min(turn.awake_pace);
            } else if !turn.backlog
                && let Some(open) = &session
                && let Ok(Ok(row)) =
                    tokio::time::timeout(limit, open.client.query_one(&open.next_wake, &[&names]))
                        .await
                && let Some(ms) = row.get::<_, Option<f64>>(0)
            {
                pause = pause.min(Duration::from_secs_f64(ms.clamp(0.0, 1e9) / 1000.0));
            }
            let cancel = cancel_channel(&db.schema);
            // A poll of `Duration::MAX` (none) must not overflow the clock: a deadline
            // thirty years on is the same.
            let now = tokio::time::Instant::now();
            let mut until = now
                .checked_add(pause)
                .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
            // A freed slot is a reason to look where runs were left for want of
            // slots, of the queue's room, or of their partitions' (its own runs' ends
            // free them). Else every run was taken: new ones are announced, or a
            // worker awake to them takes them. (Woken by each run it ended, sixteen
            // workers all claimed, a few runs each, while one was awake: a fifth
            // fewer runs a second.)
            let slot_wakes = free == 0 || turn.waiting || (claimed < free && turn.held_back);
            loop {
                let slot = self.slot_freed.notified();
                let woken = async {
                    match session.as_mut() {
                        Some(open) => open.notes.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let notice = tokio::select! {
                    note = woken => match note {
                        None => {
                            session = None;
                            false
                        }
                        Some(note) if note.channel() == cancel => {
                            self.cancel_asked(note.payload());
                            false
                        }
                        // Another worker woke: no run to look for, only a pace to keep
                        // (waking every idle worker for a round, it cost sixteen a
                        // tenth of their runs a second).
                        Some(note) if woke_to(note.payload()).is_some() => {
                            heard_of_runs(note.payload(), &names, awake, &mut turn);
                            true
                        }
                        Some(note) => {
                            turn.notified |= heard_of_runs(note.payload(), &names, awake, &mut turn);
                            false
                        }
                    },
                    _ = slot, if slot_wakes => false,
                    _ = tokio::time::sleep_until(until) => {
                        turn.capped.clear();
                        false
                    }
                    _ = stop.changed() => false,
                };
                if !notice {
                    break;
                }
                if turn.watch && !awake {
                    until = until.min(tokio::time::Instant::now() + IDLE_MOST);
                }
            }
            // A worker that stepped back lets new runs wait that long for the others
            // first (see `stepped_back`).
            let wait = match (turn.behind, turn.notified) {
                (Some(pace), true) => Some(pace),
                _ => None,
            };
            if let (Some(pace), Some(open)) = (wait, session.as_mut()) {
                let until = tokio::time::Instant::now() + pace;
                loop {
                    tokio::select! {
                        note = open.notes.recv() => match note {
                            Some(note) => self.heard_meanwhile(&note, &cancel, &names, &mut turn),
                            None => break,
                        },
                        _ = tokio::time::sleep_until(until) => break,
                        _ = stop.changed() => break,
                    }
                }
            }
            // Notifications that came meanwhile are answered by the same round: while
            // runs are enqueued faster than a round takes, each enqueue's announcement
            // otherwise cost every idle worker a round (and a wait for the queue's
            // lock) of its own.
            if let Some(open) = session.as_mut() {
                while let Ok(note) = open.notes.try_recv() {
                    self.heard_meanwhile(&note, &cancel, &names, &mut turn);
                }
            }
        }
        // Stopping: the runs that enqueues left to it, awake, are left to the others.
        if let Some(open) = session.as_mut()
            && (open.owes || !open.awake.is_empty())
        {
            let handing = async {
                loop {
                    self.hand_over(open, &names, &mut turn).await?;
                    match (open.owes, turn.settle_pace) {
                        (true, Some(pace)) => tokio::time::sleep(pace).await,
                        _ => return Ok::<(), CanoError>(()),
                    }
                }
            };
            let _ = tokio::time::timeout(limit.min(STOP_SETTLE_MOST), handing).await;
        }
        // Stopping: the runs end on their own, or are handed back by `stop`. Slots
        // freed before the stop was seen are told of now (those freed after it
        // were told of as they were freed).
        while runs.join_next().await.is_some() {}
        let freed = std::mem::take(&mut *self.freed_slots());
        if !freed.is_empty()
            && let Some(open) = &session
        {
            self.hand_on(open, freed, limit).await;
        }
    }

    /// Awake or owing a look (see `awake`), this worker cannot take what waits: its
    /// slots are full, or its round left runs. It lets its awake locks go and, once
    /// no enqueue that found it awake is under way, tells the idle workers of its
    /// workflows' new runs. Until then it still owes that, and tries again soon.
    async fn hand_over(
        &self,
        open: &mut Session,
        names: &[String],
        turn: &mut Turn,
    ) -> Result<(), CanoError> {
        let awake = std::mem::take(&mut open.awake);
        let settled = self.let_go(open, &awake, names, true).await?;
        let settled = settled.unwrap_or(false);
        if settled {
            open.client
                .query_one(&open.announce, &[&names])
                .await
                .map_err(|e| self.store.db().error("telling idle workers of new runs", e))?;
        }
        owed_after(&mut open.owes, turn, settled);
        Ok(())
    }

    /// Lets go of the awake locks of `awake` (none: nothing to let go of) and, if
    /// `settle`, tries to settle for `names` (see `awake`), in that order and in one
    /// round trip with whatever the caller sends after: whether it settled (`None`:
    /// no try).
    async fn let_go(
        &self,
        open: &Session,
        awake: &[String],
        names: &[String],
        settle: bool,
    ) -> Result<Option<bool>, CanoError> {
        let db = self.store.db();
        let (dozed, settled) = futures::future::join(
            async {
                if awake.is_empty() {
                    None
                } else {
                    Some(open.client.query_one(&open.doze, &[&awake]).await)
                }
            },
            async {
                if settle {
                    Some(open.client.query_one(&open.settle, &[&names]).await)
                } else {
                    None
                }
            },
        )
        .await;
        if let Some(dozed) = dozed {
            dozed.map_err(|e| db.error("letting new runs be announced again", e))?;
        }
        settled
            .map(|row| {
                row.map(|row| row.get::<_, bool>(0))
                    .map_err(|e| db.error("settling its look at new runs", e))
            })
            .transpose()
    }

    /// Listens for new runs and cancel requests while this worker is in front (it
    /// has not stepped back), holds its workflows' front, or drives runs; stops
    /// otherwise.
    ///
    /// The server wakes every listening connection of the database for every
    /// notification, whichever channel it listens on: with sixteen workers, each
    /// enqueue woke sixteen server processes and sixteen clients, and that cost a
    /// run more than all its statements did. A worker that stepped back and is
    /// idle stops listening and looks at its pace (see `stepped_back`). Before it
    /// stops, it tries for the front, a session lock per set of workflows: the
    /// worker holding it never steps back, so one worker listens whatever the
    /// others do, and a new run into an idle cluster starts at once.
    async fn settle_listening(
        &self,
        open: &mut Session,
        turn: &mut Turn,
        front_key: &str,
    ) -> Result<(), CanoError> {
        let db = self.store.db();
        let driving = !self.leases().is_empty();
        if !open.front && turn.behind.is_some() && !driving {
            let front = open
                .client
                .query_one(&open.front_lock, &[&front_key])
                .await
                .map_err(|e| db.error("trying for its workflows' front", e))?;
            if front.get::<_, bool>(0) {
                open.front = true;
                turn.behind = None;
            }
        }
        let listen = open.front || turn.behind.is_none() || driving;
        if listen != open.listening {
            let sql = if listen {
                listen_to(&db.schema)
            } else {
                "UNLISTEN *".to_owned()
            };
            open.client
                .batch_execute(&sql)
                .await
                .map_err(|e| db.error("listening for new runs", e))?;
            open.listening = listen;
        }
        Ok(())
    }

    /// A notification taken after the one that woke the claim loop, answered by the
    /// round to come: a cancel request is passed on now, and any other says queues
    /// may have room (as the first one did).
    fn heard_meanwhile(
        &self,
        note: &Notification,
        cancel: &str,
        names: &[String],
        turn: &mut Turn,
    ) {
        if note.channel() == cancel {
            self.cancel_asked(note.payload());
        } else {
            heard_of_runs(note.payload(), names, false, turn);
        }
    }

    /// Reports a failed claim round or connection, unless the same error was reported
    /// less than `REPORT_AGAIN` ago (the loop retries five times a second).
    fn claim_failed(&self, turn: &mut Turn, error: String) {
        let repeated = turn
            .reported
            .as_ref()
            .is_some_and(|(last, at)| *last == error && at.elapsed() < REPORT_AGAIN);
        if !repeated {
            turn.reported = Some((error.clone(), Instant::now()));
            self.emit(WorkerEvent::ClaimFailed { error });
        }
    }

    /// Waits until a quarter of the worker's slots are free (`all`: every one), or
    /// `most` has passed.
    ///
    /// `capped`: every queue with runs for this worker is at its cluster limit, so a
    /// round takes back only the slots this worker freed of them (see `claim`). Its
    /// own free slots say nothing then; it waits for a quarter of the runs it holds to
    /// end instead. (Counting free slots, sixteen workers sharing a limit of 256 each
    /// claimed two runs a round, and the server's work per run nearly doubled.)
    async fn gather_slots(&self, most: Duration, capped: bool, all: bool) {
        let enough = if capped {
            (self.leases().len() / 4).max(1)
        } else if all {
            self.concurrency
        } else {
            (self.concurrency / 4).max(1)
        };
        let deadline = Instant::now() + most;
        loop {
            let freed = self.slot_freed.notified();
            let ready = if capped {
                self.freed_slots().values().sum()
            } else {
                self.concurrency.saturating_sub(self.leases().len())
            };
            if ready >= enough || self.stopping() {
                return;
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return;
            }
        }
    }

    /// A cancel request for the run named by `payload` (its id): the claims of it this
    /// worker drives are cancelled, as any run is.
    fn cancel_asked(&self, payload: &str) {
        let Ok(key) = payload.parse::<i64>() else {
            return;
        };
        let run = run_of(key);
        for ((held, _), lease) in self.leases().iter() {
            if *held == run && lease.lost.is_none() {
                lease.token.cancel();
            }
        }
    }

    /// One round of claims, up to `free`: poison runs failed, then the default queue,
    /// then each named queue with runs this worker could claim (starting at a
    /// different one each round, so none waits on the others).
    async fn claim(
        &self,
        open: &mut Session,
        names: &[String],
        free: usize,
        turn: &mut Turn,
        freed: &mut HashMap<String, usize>,
    ) -> Result<Vec<Claim>, CanoError> {
        let db = self.store.db();
        let client = &open.client;
        // Poison runs only appear as leases expire: once a second is soon enough.
        if turn.poisoned.is_none_or(|at| at.elapsed() >= POISON_EVERY) {
            client
                .execute(&open.poison, &[&names, &self.max_claims])
                .await
                .map_err(|e| db.error("failing poison runs", e))?;
            turn.poisoned = Some(Instant::now());
        }
        // Stepped back, it looks only for runs that have waited half its pace: those
        // the workers ahead of it have not kept up with (see `stepped_back`). Awake or
        // owing a look (see `awake`), for every run: enqueues left their runs to it.
        let waited = if open.owes || !open.awake.is_empty() {
            Duration::ZERO
        } else {
            turn.behind.unwrap_or_default() / 2
        };
        let waited_ms = waited.as_secs_f64() * 1000.0;
        // Waking, dozing and settling (see `awake`) go in the same round trip as the
        // look, in that order, so that a look after a settle that succeeded is the
        // look owed.
        let awake = std::mem::take(&mut open.awake);
        let dozing = turn.doze && !awake.is_empty();
        let settling = open.owes && (dozing || awake.is_empty());
        let waking = turn.wake && awake.is_empty();
        turn.owing = open.owes || !awake.is_empty();
        (turn.doze, turn.wake) = (false, false);
        let dozed: &[String] = if dozing { &awake } else { &[] };
        let (let_go, woke, ready) = futures::future::join3(
            self.let_go(open, dozed, names, settling),
            async {
                if waking {
                    Some(client.query_one(&open.wake, &[&names]).await)
                } else {
                    None
                }
            },
            client.query_one(&open.ready, &[&names, &self.name, &waited_ms]),
        )
        .await;
        open.awake = if dozing { Vec::new() } else { awake };
        if let Some(settled) = let_go? {
            owed_after(&mut open.owes, turn, settled);
        }
        if let Some(woke) = woke {
            let woke = woke.map_err(|e| db.error("waking to new runs", e))?;
            open.awake = woke.get(0);
            open.owes |= !open.awake.is_empty();
            turn.watch = open.awake.is_empty();
        }
        let ready = ready.map_err(|e| db.error("looking for runs to claim", e))?;
        let (default_ready, ready): (bool, Vec<String>) = (ready.get(0), ready.get(1));
        let sent = Instant::now();
        let mut rows = if default_ready {
            client
                .query(
                    &open.claim,
                    &[
                        &names,
                        &(free as i64),
                        &self.name,
                        &self.lease_ms(),
                        &self.max_claims,
                    ],
                )
                .await
                .map_err(|e| db.error("claiming runs", e))?
        } else {
            Vec::new()
        };
        let start = if ready.is_empty() {
            0
        } else {
            turn.round % ready.len()
        };
        // More runs wait than this round took (it was short of slots, not of runs).
        turn.waiting = default_ready && rows.len() == free;
        turn.held_back = false;
        for queue in ready[start..].iter().chain(&ready[..start]) {
            let left = free.saturating_sub(rows.len());
            if left == 0 {
                turn.waiting = true;
                break;
            }
            // A queue found full takes back only the slots this worker freed of it,
            // until a notification or a poll says more may be free: otherwise the
            // first worker to claim takes every slot freed in the cluster, and the
            // others, whose runs freed them, claim for nothing.
            let ask = if turn.capped.contains(queue) {
                left.min(freed.get(queue).copied().unwrap_or(0))
            } else {
                left
            };
            if ask == 0 {
                turn.waiting = true;
                continue;
            }
            // One round trip: the four are pipelined (join4 polls them in order, a
            // prepared statement's request is sent at its first poll), and the server
            // runs them in order, so the claim reads the queue after taking its lock.
            // Claims of a queue wait for each other there: fewer rounds than skipping
            // a busy queue and looking again (measured: a third of the statements).
            let (begun, locked, claimed, ended) = futures::future::join4(
                client.batch_execute("BEGIN"),
                client.query(&open.queue_lock, &[queue]),
                client.query(
                    &open.claim_queue,
                    &[
                        &names,
                        &(ask as i64),
                        &self.name,
                        &self.lease_ms(),
                        &self.max_claims,
                        queue,
                    ],
                ),
                client.batch_execute("COMMIT"),
            )
            .await;
            let doing = format!("claiming runs of queue {queue:?}");
            let err = |e| db.error(&doing, e);
            begun.map_err(err)?;
            let asked: Option<f64> = locked.map_err(err)?.first().map(|row| row.get(0));
            let mut claimed = claimed.map_err(err)?;
            ended.map_err(err)?;
            let began: Option<f64> = claimed.first().map(|row| row.get(9));
            if let (Some(asked), Some(began)) = (asked, began) {
                let waited = Duration::try_from_secs_f64(began - asked).unwrap_or_default();
                turn.lock_wait = turn.lock_wait.max(waited);
            }
            let budget = claimed.first().map_or(0, |row| row.get::<_, i64>(8));
            let partitioned = claimed.first().is_some_and(|row| row.get::<_, bool>(10));
            claimed.retain(|row| row.get::<_, Option<i64>>(0).is_some());
            let taken = claimed.len();
            turn.held_back |= partitioned && taken < ask;
            // The queue's limits ran out before this worker's asking did: others took
            // the slots it freed, and nobody need be told of them.
            let queue_full = (budget as usize) < ask && taken >= budget as usize;
            if queue_full {
                turn.capped.insert(queue.clone());
            }
            turn.waiting |= queue_full || taken == ask;
            if let Some(slots) = freed.get_mut(queue) {
                *slots = if queue_full {
                    0
                } else {
                    slots.saturating_sub(taken)
                };
            }
            rows.extend(claimed);
        }
        turn.only_capped =
            !default_ready && !ready.is_empty() && ready.iter().all(|q| turn.capped.contains(q));

        let mut claims = Vec::with_capacity(rows.len());
        let mut unwanted = Vec::new();
        {
            let mut leases = self.leases();
            for row in rows {
                let claim = Claim::of(&row);
                // Stopping (checked under the leases' lock, which `stop` takes to hand
                // the claims back): a claim made meanwhile is handed back, not driven.
                if self.stopping() {
                    unwanted.push(claim);
                    continue;
                }
                let token = CancellationToken::new();
                if claim.cancel {
                    token.cancel();
                }
                leases.insert(
                    (claim.run, claim.epoch),
                    Lease {
                        token,
                        lost: None,
                        renewed: sent,
                    },
                );
                self.emit(WorkerEvent::Claimed {
                    run: claim.run,
                    epoch: claim.epoch,
                    claims: claim.claims,
                });
                claims.push(claim);
            }
        }
        for claim in unwanted {
            self.record(claim.run, claim.epoch, Verdict::Release, true)
                .await;
        }
        Ok(claims)
    }

    async fn drive(self: Arc<Self>, claim: Claim) {
        let Claim { run, epoch, .. } = claim;
        let key = (run, epoch);
        let began = Instant::now();
        let Some(token) = self.leases().get(&key).map(|l| l.token.clone()) else {
            return;
        };
        // Rows that go when the run ends need not be written: its `Finish` row ends
        // the claim instead (see `EndWithFinish`).
        let end = (!self.keep_rows).then(|| {
            Arc::new(ClaimEnd {
                shared: self.clone(),
                run,
                epoch,
                recorded: Mutex::new(None),
            })
        });
        let outcome = match self.flows.get(&claim.workflow) {
            Some(driver) => {
                // An older claim of this run may still be driven in this process (its
                // lease was taken over while it stalled): its writes are refused by its
                // own fence, and it ends soon; wait for that rather than be refused as
                // a second driver.
                tokio::select! {
                    () = until_not_running_here(&claim.workflow, run) => {}
                    () = token.cancelled() => {}
                }
                let fenced = self.store.fenced(run, epoch);
                let fenced = match &end {
                    Some(end) => fenced.ending_with(end.clone()),
                    None => fenced,
                };
                let store: Arc<dyn CheckpointStore> = Arc::new(fenced);
                driver(run, claim.initial, claim.resume, token.clone(), store).await
            }
            None => Err(CanoError::configuration(format!(
                "worker {} claimed run {run} of workflow {:?}, which it has not registered",
                self.name, claim.workflow
            ))),
        };
        let lost = self.leases().get(&key).and_then(|l| l.lost);
        let ended = end.and_then(|end| end.recorded.lock().ok()?.take());
        let verdict = match outcome {
            // The run's end went with its `Finish` row (told idle workers if stopping
            // then): nothing is left to write.
            _ if ended.is_some() => None,
            // Another claim holds the run now: nothing of this one is recorded.
            _ if lost == Some(Loss::TakenOver) => None,
            // Given up before the lease ended: handed back, so another claim need not
            // wait for the lease to expire (refused if one already took it).
            _ if lost == Some(Loss::Unrenewed) => Some(Verdict::Release),
            Ok((bytes, label)) => Some(Verdict::Finished(bytes, label)),
            // Parked: the queue holds it until a signal or its deadline.
            Err(CanoError::Parked(_)) => Some(self.parked(run).await),
            // Handed back by `stop`, or the database went away: not the run's fault.
            Err(CanoError::Cancelled(_)) if token.is_handed_back() => Some(Verdict::Release),
            // Asked to cancel (through the queue): cancelled as any run is.
            Err(e @ CanoError::Cancelled(_)) => Some(Verdict::Cancelled(e.to_string())),
            Err(e) if matches!(e, CanoError::Store(_)) && !e.is_permanent() => {
                Some(Verdict::Release)
            }
            Err(e) => Some(Verdict::Failed(e.to_string())),
        };
        // A run that ends or parks frees its slot of a named queue. This worker takes
        // it back in its next round, and tells the idle workers itself only if it does
        // not; stopping, it tells them at once.
        let (frees, told) = match (ended, verdict) {
            (Some((label, told)), _) => {
                self.emit(WorkerEvent::Finished { run, label });
                (true, told)
            }
            (None, Some(verdict)) => {
                let frees = !matches!(verdict, Verdict::Release);
                let tell = self.stopping();
                self.record(run, epoch, verdict, tell).await;
                (frees, tell)
            }
            (None, None) => (false, false),
        };
        if let Some(queue) = claim.queue.filter(|_| frees && !told) {
            *self.freed_slots().entry(queue).or_default() += 1;
        }
        self.leases().remove(&key);
        self.note_held(began.elapsed());
        // Wake whoever waits now (claim loop, heartbeat, `stop`), and leave a permit
        // for a claim loop that is about to wait.
        self.slot_freed.notify_waiters();
        self.slot_freed.notify_one();
    }

    /// Writes the verdict to the queue, fenced by the claim's epoch; retried while the
    /// database is away (if it stays away, the lease expires and another worker
    /// resumes the run from its checkpoint, which is just as correct).
    /// `tell`: whether idle workers are told of a slot of a named queue it frees.
    async fn record(&self, run: RunId, epoch: i64, verdict: Verdict, tell: bool) {
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
            Verdict::Parked { .. } => WorkerEvent::Parked { run },
            Verdict::Cancelled(reason) => WorkerEvent::Cancelled {
                run,
                reason: reason.clone(),
            },
        };
        let doing = format!("recording the outcome of run {run}");
        let written = match &verdict {
            Verdict::Finished(bytes, label) => {
                self.finishes
                    .finish(run, epoch, bytes.clone(), label.clone(), tell)
                    .await
            }
            Verdict::Failed(error) => {
                self.end(&doing, &self.sql.fail, &[&key, &epoch, error, &tell])
                    .await
            }
            Verdict::Cancelled(error) => {
                self.end(&doing, &self.sql.cancelled, &[&key, &epoch, error, &tell])
                    .await
            }
            Verdict::Release => self.end(&doing, &self.sql.release, &[&key, &epoch]).await,
            // Two statements in a transaction of its own.
            Verdict::Parked { names, deadline_ms } => {
                crate::db::retry_transient(RECORD_ATTEMPTS, || async {
                    let mut client = db.client().await?;
                    self.park(&mut client, key, epoch, names, *deadline_ms, tell)
                        .await
                        .map_err(|e| db.error(&doing, e))
                })
                .await
            }
        };
        match written {
            Ok(true) => self.emit(event),
            // The epoch moved on: another claim holds the run now.
            Ok(false) => self.emit(WorkerEvent::LeaseLost { run, epoch }),
            Err(_) => {}
        }
    }

    /// Runs `sql`, one of the statements that end a claim (fenced by its epoch):
    /// whether it still held the run (the statement changed a row).
    async fn end(&self, doing: &str, sql: &str, params: Params<'_>) -> Result<bool, CanoError> {
        self.store
            .db()
            .query_one(RECORD_ATTEMPTS, doing, sql, params)
            .await
            .map(|row| row.get::<_, i64>(0) > 0)
    }

    /// What a run that parked waits for, from its `Wait` row. A run whose row cannot
    /// be read is handed back: the next claim resumes it, and it parks again.
    async fn parked(&self, run: RunId) -> Verdict {
        let rows = match self.store.load(run).await {
            Ok(rows) => rows,
            Err(_) => return Verdict::Release,
        };
        match rows.last().map(WaitRecord::of) {
            Some(Ok(Some(WaitRecord::Parked {
                signals,
                deadline_ms,
            }))) => Verdict::Parked {
                names: signals,
                deadline_ms: deadline_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)),
            },
            _ => Verdict::Release,
        }
    }

    /// Parks claim `epoch` of run `key` in the queue (see `park_lock`), in one
    /// transaction; whether the claim still held the run.
    async fn park(
        &self,
        client: &mut deadpool_postgres::Object,
        key: i64,
        epoch: i64,
        names: &[String],
        deadline_ms: Option<i64>,
        tell: bool,
    ) -> Result<bool, tokio_postgres::Error> {
        let tx = client.transaction().await?;
        let (lock, park) = (
            tx.prepare_cached(&self.sql.park_lock).await?,
            tx.prepare_cached(&self.sql.park).await?,
        );
        if tx.query_opt(&lock, &[&key, &epoch]).await?.is_none() {
            return Ok(false);
        }
        let parked = tx
            .query_one(&park, &[&key, &epoch, &names, &deadline_ms, &tell])
            .await?
            .get::<_, i64>(0)
            > 0;
        tx.commit().await?;
        Ok(parked)
    }

    /// Renews the leases of the claims this worker drives, every third of a lease, on
    /// a connection of its own. A claim the database no longer has at its epoch was
    /// taken over; a claim not renewed for two thirds of a lease is handed back before
    /// its lease can expire.
    async fn heartbeat_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let every = self.lease / 3;
        let db = self.store.db().clone();
        let mut session: Option<(tokio_postgres::Client, Statement)> = None;
        let mut next_round = Instant::now().checked_add(every);
        loop {
            // While stopping, leases are still renewed until the last run has ended.
            let freed = self.slot_freed.notified();
            let stopping = self.stopping();
            if stopping && self.leases().is_empty() {
                return;
            }
            // Awake for the next round, and for the moment a claim must be handed back
            // if no round renews it first.
            let wake = match (next_round, self.next_hand_back()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                () = sleep_until(wake) => {}
                _ = stop.changed(), if !stopping => continue,
                _ = freed, if stopping => continue,
            }
            self.hand_back_unrenewed();
            if next_round.is_some_and(|at| Instant::now() >= at) {
                next_round = Instant::now().checked_add(every);
                self.renew(&db, &mut session).await;
                self.hand_back_unrenewed();
            }
        }
    }

    /// One heartbeat: renews the claims this worker drives, by run and epoch. A claim
    /// the database no longer has at its epoch was taken over and is handed back. The
    /// statement is bounded: a half-open connection does not hold the heartbeat up.
    async fn renew(
        &self,
        db: &crate::db::Db,
        session: &mut Option<(tokio_postgres::Client, Statement)>,
    ) {
        let held: Vec<ClaimKey> = self
            .leases()
            .iter()
            .filter(|(_, l)| l.lost.is_none())
            .map(|(k, _)| *k)
            .collect();
        if held.is_empty() {
            return;
        }
        let sent = Instant::now();
        let renewed = tokio::time::timeout(statement_limit(self.lease), async {
            if session.as_ref().is_none_or(|(s, _)| s.is_closed()) {
                let client = db.dedicated().await?.0;
                let heartbeat = client
                    .prepare(&self.sql.heartbeat)
                    .await
                    .map_err(|e| db.error("preparing the heartbeat", e))?;
                *session = Some((client, heartbeat));
            }
            let Some((client, heartbeat)) = session.as_ref() else {
                return Err(CanoError::store("no heartbeat connection"));
            };
            let runs: Vec<i64> = held.iter().map(|(r, _)| run_key(*r)).collect();
            let epochs: Vec<i64> = held.iter().map(|(_, e)| *e).collect();
            client
                .query(heartbeat, &[&runs, &epochs, &self.lease_ms()])
                .await
                .map_err(|e| db.error("renewing leases", e))
        })
        .await;
        let Ok(Ok(rows)) = renewed else {
            // Lost, or hanging on a half-open connection: a new one next round.
            *session = None;
            return;
        };
        let renewed: HashMap<ClaimKey, bool> = rows
            .iter()
            .map(|r| ((run_of(r.get(0)), r.get(1)), r.get(2)))
            .collect();
        let mut leases = self.leases();
        for key in &held {
            let Some(lease) = leases.get_mut(key) else {
                continue;
            };
            if let Some(&cancel) = renewed.get(key) {
                lease.renewed = lease.renewed.max(sent);
                // Asked to cancel, and the notification was missed (or not yet here).
                if cancel {
                    lease.token.cancel();
                }
            } else if lease.lost.is_none() {
                // Taken over: stop driving it, undoing nothing.
                lease.lost = Some(Loss::TakenOver);
                lease.token.hand_back();
                self.emit(WorkerEvent::LeaseLost {
                    run: key.0,
                    epoch: key.1,
                });
            }
        }
    }

    /// How long a claim may go unrenewed before it is handed back: two thirds of a
    /// lease (`None` for a lease that never expires).
    fn unrenewed_limit(&self) -> Option<Duration> {
        self.lease.checked_mul(2).map(|d| d / 3)
    }

    /// When the next claim must be handed back if nothing renews it.
    fn next_hand_back(&self) -> Option<Instant> {
        let limit = self.unrenewed_limit()?;
        self.leases()
            .values()
            .filter(|l| l.lost.is_none())
            .filter_map(|l| l.renewed.checked_add(limit))
            .min()
    }

    /// Hands back every claim whose lease was last renewed two thirds of a lease ago:
    /// the database may take it from this worker a third of a lease from now.
    fn hand_back_unrenewed(&self) {
        let Some(window) = self.unrenewed_limit() else {
            return; // a lease of Duration::MAX never expires
        };
        let now = Instant::now();
        let mut leases = self.leases();
        for ((run, epoch), lease) in leases.iter_mut() {
            if lease.lost.is_none() && now.saturating_duration_since(lease.renewed) >= window {
                lease.lost = Some(Loss::Unrenewed);
                lease.token.hand_back();
                self.emit(WorkerEvent::Unrenewed {
                    run: *run,
                    epoch: *epoch,
                });
            }
        }
    }
}

struct Claim {
    run: RunId,
    workflow: String,
    /// The named queue the run is on, if any.
    queue: Option<String>,
    epoch: i64,
    claims: u32,
    initial: Vec<u8>,
    resume: bool,
    /// The run is asked to cancel: it is driven only to be cancelled.
    cancel: bool,
}

impl Claim {
    fn of(row: &tokio_postgres::Row) -> Self {
        Self {
            run: run_of(row.get(0)),
            workflow: row.get(1),
            epoch: row.get(2),
            claims: row.get::<_, i32>(3) as u32,
            initial: row.get(4),
            resume: row.get(5),
            cancel: row.get::<_, Option<String>>(6).is_some(),
            queue: row.get(7),
        }
    }
}

/// What the claim loop carries from one round of claims to the next.
#[derive(Default)]
struct Turn {
    /// The round's number: named queues are tried from a different one each round.
    round: usize,
    /// When poison runs were last failed.
    poisoned: Option<Instant>,
    /// The last round claimed, and more runs wait than it took: a freed slot waits
    /// a moment for others before the next round.
    backlog: bool,
    /// Whether the last round left runs waiting (it was short of slots, not runs).
    waiting: bool,
    /// The last claim failure reported, and when.
    reported: Option<(String, Instant)>,
    /// Named queues found full: a round asks them only for the slots this worker
    /// freed of them, until a notification or a poll wakes the worker.
    capped: std::collections::HashSet<String>,
    /// The last round found runs only in full queues (none in the default queue).
    only_capped: bool,
    /// The longest a claim of the last round waited for its queue's lock.
    lock_wait: Duration,
    /// How far this worker has stepped back from new runs after finding them taken
    /// by other workers (`None`: not at all); see `stepped_back`.
    behind: Option<Duration>,
    /// A notification of new runs of this worker's workflows woke it.
    notified: bool,
    /// The last round took runs as they streamed in: the next becomes awake to them
    /// (see `awake`).
    wake: bool,
    /// Awake, the last round found nothing: the next lets the awake locks go.
    doze: bool,
    /// The round was made awake or owing a look: runs it leaves must be announced.
    owing: bool,
    /// The last round left runs of a queue with a partition limit: their
    /// partitions may have been full, and its own runs' ends may free them.
    held_back: bool,
    /// Since when all its slots have been taken (`None`: some are free).
    full_since: Option<Instant>,
    /// Another worker may be awake to its workflows: it said so, or this worker's
    /// try to wake was refused, or one was when this connection opened. Until a run
    /// of them is announced (then nobody was), this worker looks at least once a
    /// second and does not try to wake (see `awake`).
    watch: bool,
    /// Notifications of new runs (or freed slots) heard since the last round.
    heard: usize,
    /// Awake, how long it waits before its next look (see `AWAKE_GATHER`).
    awake_pace: Duration,
    /// The last round left runs this worker cannot take soon.
    leaves: bool,
    /// Owing a look, its last settle found an enqueue under way: it tries again
    /// after this long (doubling up to `SETTLE_MOST`).
    settle_pace: Option<Duration>,
}

/// The first and the longest pause between a worker's tries to settle (see `awake`).
const SETTLE_FIRST: Duration = Duration::from_millis(1);
const SETTLE_MOST: Duration = Duration::from_millis(100);

/// Awake, a worker waits this long after a round that claimed before it looks
/// again (runs enqueued meanwhile are claimed by one round), and twice as long each
/// time it finds nothing, until it has waited longer than `AWAKE_LINGER` (some
/// 30 ms in five looks): then it dozes.
const AWAKE_GATHER: Duration = Duration::from_millis(1);
const AWAKE_LINGER: Duration = Duration::from_millis(16);

/// The longest its runs may hold their slots, on average, for a worker to become
/// awake (see `Shared::quick`), and the longest an awake worker stays full before
/// it lets go and announces what waits.
const QUICK: Duration = Duration::from_millis(20);

/// The longest a stopping worker tries to hand over the runs it was awake to.
const STOP_SETTLE_MOST: Duration = Duration::from_secs(1);

impl Turn {
    /// A settle found an enqueue under way: the next try comes a little later.
    fn unsettled(&mut self) {
        self.settle_pace = Some(
            self.settle_pace
                .map_or(SETTLE_FIRST, |pace| pace.saturating_mul(2).min(SETTLE_MOST)),
        );
    }
}

/// The first and the longest step back of a worker that finds new runs taken (the
/// longest: what a run that no worker in front can take may wait for one that
/// stepped back, and listens).
const BEHIND_FIRST: Duration = Duration::from_millis(5);
const BEHIND_MOST: Duration = Duration::from_millis(100);

/// The longest a worker that stepped back and stopped listening waits between looks
/// (or its poll interval, if shorter).
const IDLE_MOST: Duration = Duration::from_secs(1);

/// What a round of claims tells a worker of its place among the others.
struct Round {
    /// Runs it claimed.
    claimed: usize,
    /// More runs waited than it had slots for.
    full: bool,
    /// Woken for new runs, it claimed none (other workers took them first). Runs it
    /// saw that it could not take when it woke for another reason (its own run's
    /// end, a poll) may be held back by their partitions' limits: no loss.
    lost: bool,
    /// It was not listening (it looked at its pace).
    unheard: bool,
}

/// How far a worker stands back from new runs after `round` (`None`: not at all).
///
/// Every enqueue wakes every idle worker. While runs come one by one, each went to
/// whichever worker was first, and the others had paid a round (and a wait for the
/// queue's lock) for nothing: four workers started half the runs a second that one
/// did. A worker that loses steps back, further each time it loses again (up to
/// `BEHIND_MOST`): woken, it waits that long before it looks, and then looks only
/// for runs that have waited half that long, which the workers still ahead have not
/// kept up with (a run it was woken for has waited the whole pace by then, so none
/// is left behind). It keeps its place while it claims such runs (helping in
/// batches at its pace), and comes all the way forward once it finds more runs
/// waiting than it has slots for. (Coming halfway forward at each claim, workers on
/// a busy server, where a run often waits a few ms, were soon all in front again:
/// a third fewer runs a second with sixteen.) Not listening (see
/// `settle_listening`), it looks at its pace, which grows while it finds nothing,
/// up to `idle_most`.
fn stepped_back(behind: Option<Duration>, round: &Round, idle_most: Duration) -> Option<Duration> {
    let further =
        |most: Duration| behind.map_or(BEHIND_FIRST, |pace| pace.saturating_mul(2).min(most));
    match behind {
        _ if round.claimed > 0 && round.full => None,
        Some(_) if round.claimed > 0 => behind,
        _ if round.lost => Some(further(BEHIND_MOST)),
        Some(_) if round.unheard => Some(further(idle_most.max(BEHIND_MOST))),
        _ => behind,
    }
}

/// How long a round with runs waiting gathers freed slots before it claims, and
/// whether it waits for every slot (else a quarter), given how long runs are held
/// and how long the last round's claims waited for their queues' locks.
///
/// Where claims queued for a lock, the round waits for all of this worker's slots,
/// no longer than the claim waited: it would have waited that long in the queue
/// anyway. (Asking for the slots free when it was sent, sixteen workers each took
/// some fifteen runs a round, and the lock, passed on at every round, set the
/// pace; gathering, they started a quarter more runs a second, with a third fewer
/// statements per run.)
fn gathering(held: Duration, lock_wait: Duration) -> (Duration, bool) {
    let most = (held / 8).clamp(GATHER, GATHER_MOST);
    if lock_wait > GATHER {
        (most.max(lock_wait.min(GATHER_MOST)), true)
    } else {
        (most, false)
    }
}

/// The claim loop's connection: it listens for new runs and for cancel requests, and
/// holds the claim statements prepared (so each is one round trip).
struct Session {
    client: tokio_postgres::Client,
    notes: UnboundedReceiver<Notification>,
    poison: Statement,
    ready: Statement,
    claim: Statement,
    queue_lock: Statement,
    claim_queue: Statement,
    next_wake: Statement,
    hand_on: Statement,
    front_lock: Statement,
    wake: Statement,
    doze: Statement,
    settle: Statement,
    announce: Statement,
    watched: Statement,
    /// Whether it listens for new runs and cancel requests.
    listening: bool,
    /// Whether it holds its workflows' front (see `Shared::settle_listening`).
    front: bool,
    /// The workflows whose awake lock it holds (see `awake`): their enqueues do not
    /// announce their runs, and it looks again after each round.
    awake: Vec<String>,
    /// It may have been awake when a run was enqueued whose commit its looks have
    /// not yet been shown to follow: it owes a look after a settled `settle`.
    owes: bool,
}

/// The statements that make a connection listen for new runs and cancel requests.
fn listen_to(schema: &str) -> String {
    format!(
        "LISTEN {}; LISTEN {}",
        ready_channel(schema),
        cancel_channel(schema)
    )
}

impl Session {
    async fn open(db: &crate::db::Db, sql: &WorkerSql) -> Result<Self, CanoError> {
        let (client, notes) = db.dedicated().await?;
        let err = |e| db.error("preparing the claim loop's connection", e);
        // Its statements keep their generic plans from the first run: each finds its
        // runs by key or index range whatever the statistics say (a test checks the
        // plans), and the custom plans the server otherwise makes cost more than they
        // save (the check for claimable runs was planned afresh at every round,
        // 0.4 ms each, once an ANALYZE had run).
        client
            .batch_execute(&format!(
                "SET plan_cache_mode = force_generic_plan; {}",
                listen_to(&db.schema)
            ))
            .await
            .map_err(err)?;
        let (
            (poison, ready, hand_on, front_lock),
            (claim, queue_lock, claim_queue, next_wake),
            (wake, doze, settle, announce, watched),
        ) = futures::future::try_join3(
            futures::future::try_join4(
                client.prepare(&sql.poison),
                client.prepare(&sql.ready),
                client.prepare(&sql.hand_on),
                client.prepare(&sql.front),
            ),
            futures::future::try_join4(
                client.prepare(&sql.claim),
                client.prepare(&sql.queue_lock),
                client.prepare(&sql.claim_queue),
                client.prepare(&sql.next_wake),
            ),
            futures::future::try_join5(
                client.prepare(&sql.wake),
                client.prepare(&sql.doze),
                client.prepare(&sql.settle),
                client.prepare(&sql.announce),
                client.prepare(&sql.watched),
            ),
        )
        .await
        .map_err(err)?;
        // The server plans a kept statement at its first run. The claim of a named
        // queue runs holding the queue's lock, and its plan, the biggest of the
        // loop's, takes a new connection some 5 ms: every claim of the queue in the
        // cluster would wait that long at each worker's start. So it is planned now,
        // outside the lock, by a run that can claim nothing (no workflow, no queue,
        // an ask of 0). With sixteen workers that joined a busy queue, these plans
        // were a tenth of the time the lock was held in their first second.
        let (no_workflows, none) = (Vec::<String>::new(), "");
        client
            .query(
                &claim_queue,
                &[&no_workflows, &0_i64, &none, &0_f64, &0_i32, &none],
            )
            .await
            .map_err(err)?;
        Ok(Self {
            client,
            notes,
            poison,
            ready,
            claim,
            queue_lock,
            claim_queue,
            next_wake,
            hand_on,
            front_lock,
            wake,
            doze,
            settle,
            announce,
            watched,
            listening: true,
            front: false,
            awake: Vec::new(),
            // A connection before it may have been awake and died: its first look
            // follows a settle, like any owed look.
            owes: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_steps_back_each_time_it_loses_and_forward_as_it_claims() {
        let ms = Duration::from_millis;
        let round = |claimed, full, lost, unheard| Round {
            claimed,
            full,
            lost,
            unheard,
        };
        let step = |behind, r: Round| stepped_back(behind, &r, IDLE_MOST);
        // Losing: a first step, doubled at each loss after, never past the bound.
        assert_eq!(step(None, round(0, false, true, false)), Some(BEHIND_FIRST));
        assert_eq!(
            step(Some(ms(8)), round(0, false, true, false)),
            Some(ms(16))
        );
        assert_eq!(
            step(Some(BEHIND_MOST), round(0, false, true, false)),
            Some(BEHIND_MOST)
        );
        // An idle round that lost nothing leaves it where it stands.
        assert_eq!(
            step(Some(ms(8)), round(0, false, false, false)),
            Some(ms(8))
        );
        assert_eq!(step(None, round(0, false, false, false)), None);
        // Claiming runs the others left keeps it where it stands.
        assert_eq!(
            step(Some(ms(40)), round(3, false, false, false)),
            Some(ms(40))
        );
        assert_eq!(
            step(Some(BEHIND_FIRST), round(1, false, false, true)),
            Some(BEHIND_FIRST)
        );
        // More runs waiting than it had slots for: all the way forward at once.
        assert_eq!(step(Some(BEHIND_MOST), round(4, true, false, true)), None);
        // A worker in front that claims stays in front.
        assert_eq!(step(None, round(2, false, false, false)), None);
        // Not listening, a look that finds nothing doubles its pace up to the idle
        // bound (the poll interval if shorter; Duration::MAX polls do not overflow).
        assert_eq!(
            step(Some(ms(100)), round(0, false, false, true)),
            Some(ms(200))
        );
        assert_eq!(
            step(Some(ms(800)), round(0, false, false, true)),
            Some(IDLE_MOST)
        );
        assert_eq!(
            stepped_back(Some(ms(80)), &round(0, false, false, true), ms(20)),
            Some(BEHIND_MOST),
            "never held to less than a listening worker's bound"
        );
        assert_eq!(
            stepped_back(
                Some(IDLE_MOST),
                &round(0, false, false, true),
                Duration::MAX
            ),
            Some(IDLE_MOST * 2)
        );
        // Not listening and losing what it saw: back to the listening bound.
        assert_eq!(
            step(Some(IDLE_MOST), round(0, false, true, true)),
            Some(BEHIND_MOST)
        );
        // In front, not listening never happens; a worker not behind stays so.
        assert_eq!(step(None, round(0, false, false, true)), None);
    }

    #[test]
    fn a_round_gathers_every_slot_only_where_claims_queued_for_a_lock() {
        let ms = Duration::from_millis;
        // Uncontended: a quarter of the slots, an eighth of a run's hold at most,
        // within the usual bounds.
        assert_eq!(gathering(ms(80), Duration::ZERO), (ms(10), false));
        assert_eq!(gathering(Duration::ZERO, GATHER), (GATHER, false));
        assert_eq!(
            gathering(Duration::MAX, Duration::ZERO),
            (GATHER_MOST, false)
        );
        // Queued for a lock: every slot, as long as the claim waited (or the usual
        // wait if longer), never past the bound.
        assert_eq!(gathering(ms(8), ms(30)), (ms(30), true));
        assert_eq!(gathering(ms(800), ms(30)), (ms(100), true));
        assert_eq!(gathering(ms(8), Duration::MAX), (GATHER_MOST, true));
    }

    /// A worker that joins a busy queue must not plan its claim holding the queue's
    /// lock: every claim in the cluster waits for it meanwhile. The claim loop's
    /// connection has the plan before its first claim, and making it claimed
    /// nothing, though a run waited on the queue.
    #[tokio::test]
    async fn a_new_claim_connection_plans_its_queue_claim_before_taking_any_lock() {
        let schema = "unit_claim_warmed";
        let Some((store, admin)) = crate::db::test_store(schema).await else {
            return;
        };
        let queue = crate::RunQueue::new(&store);
        queue
            .declare(&crate::QueueSpec::new("q").with_concurrency(1))
            .await
            .unwrap();
        let waiting = queue
            .enqueue("w", &1_u8, crate::EnqueueOptions::new().on_queue("q"))
            .await
            .unwrap()
            .run;
        let sql = WorkerSql::new(&store);
        let open = Session::open(store.db(), &sql).await.unwrap();
        let plans: Vec<(i64, i64)> = open
            .client
            .query(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
                &[&sql.claim_queue],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        assert_eq!(
            plans,
            [(1, 0)],
            "one generic plan, made at the session's opening"
        );
        let status = queue.status(waiting).await.unwrap().unwrap();
        assert_eq!(status.status, crate::QueueStatus::Queued, "{status:?}");
        let claims: i64 = admin
            .query_one(&format!("SELECT count(*) FROM {schema}.cano_claims"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(claims, 0);
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }

    /// The awake protocol on a real server, step by step: an enqueue that finds a
    /// worker awake does not announce its run; the worker that lets go cannot
    /// settle until that enqueue has committed, so the look after its settle sees
    /// the run; an enqueue after it let go announces its run.
    #[tokio::test]
    async fn an_enqueue_that_found_a_worker_awake_is_seen_by_the_look_after_it_settles() {
        let schema = "unit_awake";
        let Some((store, admin)) = crate::db::test_store(schema).await else {
            return;
        };
        crate::RunQueue::new(&store)
            .declare(&crate::QueueSpec::new("q"))
            .await
            .unwrap();
        let (db, sql) = (store.db(), WorkerSql::new(&store));
        let insert = crate::queue_sql::QueueSql::new(db).insert_plain;
        let (producer, _) = db.dedicated().await.unwrap();
        let (listener, mut heard) = db.dedicated().await.unwrap();
        listener.batch_execute(&listen_to(schema)).await.unwrap();
        // What the listener hears up to a marker sent after the step: everything a
        // step announced arrives before it (notifications keep commit order).
        let mut heard_up_to = async |mark: &str| {
            let channel = crate::channels::ready_channel(schema);
            admin
                .execute("SELECT pg_notify($1, $2)", &[&channel, &mark])
                .await
                .unwrap();
            let mut payloads = Vec::new();
            loop {
                let note = heard.recv().await.unwrap();
                if note.payload() == mark {
                    return payloads;
                }
                payloads.push(note.payload().to_owned());
            }
        };
        let enqueue = async |client: &tokio_postgres::Client, run: i64| -> i64 {
            let none: (Option<&str>, Option<f64>, Option<i64>) = (None, None, None);
            let row = client
                .query_one(
                    &insert,
                    &[
                        &run,
                        &"w",
                        &none.0,
                        &vec![0_u8],
                        &"Start",
                        &"q",
                        &"",
                        &0_i32,
                        &none.1,
                        &none.2,
                    ],
                )
                .await
                .unwrap();
            assert_eq!(row.get::<_, Option<i64>>(2), Some(run), "run {run} added");
            row.get(3)
        };
        let names = vec!["w".to_owned()];
        let worker = Session::open(db, &sql).await.unwrap();
        let other = Session::open(db, &sql).await.unwrap();
        let run = async |open: &Session, statement: &Statement| {
            open.client.query_one(statement, &[&names]).await.unwrap()
        };
        let woke = async |open: &Session| -> Vec<String> { run(open, &open.wake).await.get(0) };
        let settled = async |open: &Session| -> bool { run(open, &open.settle).await.get(0) };
        let watched = async |open: &Session| -> bool { run(open, &open.watched).await.get(0) };
        assert!(
            settled(&worker).await,
            "nothing under way: it settles at once"
        );
        assert!(!watched(&other).await, "nobody is awake yet");
        assert_eq!(woke(&worker).await, names, "the worker wakes to w");
        assert!(
            woke(&other).await.is_empty(),
            "one worker at a time is awake"
        );
        assert!(watched(&other).await, "the other session sees one awake");
        assert!(!watched(&worker).await, "a session does not watch itself");

        // An enqueue that finds it awake, its commit held back.
        producer.batch_execute("BEGIN").await.unwrap();
        assert_eq!(
            enqueue(&producer, 1).await,
            0,
            "not announced: a worker is awake"
        );
        let doze: i64 = worker
            .client
            .query_one(&worker.doze, &[&names])
            .await
            .unwrap()
            .get(0);
        assert_eq!(doze, 1, "the worker lets go of its awake lock");
        for _ in 0..3 {
            assert!(
                !settled(&worker).await,
                "an enqueue that found it awake is under way: no settling"
            );
        }
        let look = async || -> Vec<String> {
            worker
                .client
                .query_one(&worker.ready, &[&names, &"worker", &0.0_f64])
                .await
                .unwrap()
                .get(1)
        };
        assert!(look().await.is_empty(), "the run is not committed yet");
        producer.batch_execute("COMMIT").await.unwrap();
        assert!(settled(&worker).await, "the enqueue committed: it settles");
        assert_eq!(
            look().await,
            ["q"],
            "the look after the settle sees the run"
        );
        assert_eq!(
            heard_up_to("one").await,
            ["awake\nw"],
            "the worker said it woke, once; run 1 was never announced"
        );
        assert!(!watched(&other).await, "nobody is awake now");

        // Nobody awake now: the next enqueue announces its run.
        assert_eq!(enqueue(&producer, 2).await, 1);
        assert_eq!(heard_up_to("two").await, ["w"]);
        // And the enqueue lets go of both locks: the other worker wakes and settles.
        assert_eq!(woke(&other).await, names);
        assert!(settled(&other).await);
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }

    #[test]
    fn a_worker_watches_while_another_says_it_woke_and_until_a_run_is_announced() {
        let names = ["billing".to_owned(), "mail".to_owned()];
        let mut turn = Turn::default();
        assert!(!heard_of_runs("awake\nbilling", &names, false, &mut turn));
        assert!(turn.watch, "another worker woke to one of its workflows");
        assert_eq!(turn.heard, 0, "a notice announces no run");
        assert!(!heard_of_runs("reports", &names, false, &mut turn));
        assert!(
            turn.watch,
            "runs of another workflow say nothing of its own"
        );
        assert_eq!(turn.heard, 1);
        assert!(heard_of_runs("mail", &names, false, &mut turn));
        assert!(
            !turn.watch,
            "a run of its own announced: nobody was awake to it"
        );
        heard_of_runs("awake\nreports", &names, false, &mut turn);
        assert!(
            !turn.watch,
            "a worker awake to another workflow is not watched"
        );
        heard_of_runs("awake\nmail", &names, true, &mut turn);
        assert!(!turn.watch, "awake itself, it hears its own notice");
    }

    #[test]
    fn a_worker_that_cannot_settle_tries_again_sooner_than_it_polls_and_no_faster_than_a_ms() {
        let mut turn = Turn::default();
        let mut paces = Vec::new();
        for _ in 0..12 {
            turn.unsettled();
            paces.push(turn.settle_pace.unwrap());
        }
        assert_eq!(paces[0], SETTLE_FIRST);
        assert_eq!(paces[1], SETTLE_FIRST * 2);
        assert!(paces.windows(2).all(|w| w[0] <= w[1]), "{paces:?}");
        assert_eq!(*paces.last().unwrap(), SETTLE_MOST, "bounded: {paces:?}");
    }

    fn freed(slots: &[(&str, usize)]) -> HashMap<String, usize> {
        slots.iter().map(|(q, n)| (q.to_string(), *n)).collect()
    }

    #[tokio::test]
    async fn every_queue_with_freed_slots_is_told_of_once() {
        let mut told = Vec::new();
        let untold = tell_each(freed(&[("a", 2), ("b", 0), ("c", 1)]), |queue, slots| {
            told.push((queue, slots));
            async { true }
        })
        .await;
        assert!(untold.is_empty(), "{untold:?}");
        told.sort();
        assert_eq!(
            told,
            [("a".to_owned(), 2), ("c".to_owned(), 1)],
            "a queue with no freed slot is not told of; the others with their count"
        );
    }

    #[tokio::test]
    async fn a_failed_telling_keeps_that_queue_and_the_rest_for_next_round() {
        let slots = freed(&[("a", 1), ("b", 2), ("c", 3), ("d", 4), ("idle", 0)]);
        let mut told = Vec::new();
        let untold = tell_each(slots.clone(), |queue, _| {
            told.push(queue);
            let fails = told.len() == 2;
            async move { !fails }
        })
        .await;
        // The first was told of; the second failed and is kept with the two never tried.
        assert_eq!(told.len(), 2);
        assert_eq!(untold.len(), 3, "{untold:?}");
        assert_eq!(untold[0].0, told[1], "the failed queue comes back first");
        assert!(untold.iter().all(|(q, _)| *q != told[0]));
        for (queue, n) in &untold {
            assert_eq!(slots[queue], *n, "queue {queue} keeps its count");
        }
        // Nothing is lost and nothing counted twice.
        let kept: usize = untold.iter().map(|(_, n)| n).sum();
        assert_eq!(kept + slots[&told[0]], 10);
    }
}
