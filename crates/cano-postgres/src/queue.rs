//! [`RunQueue`]: submitting runs for workers to claim, and asking how they went.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cano_core::checkpoint::{Bincode, decode_state, encode_state};
use cano_core::{CanoError, RunId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::channels::done_channel;
use crate::db::{retry_transient, run_key, run_of};
use crate::queue_spec::{QueueSpec, WhenFull, limit_of};
use crate::queue_sql::QueueSql;
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
    /// Cancelled: by [`RunQueue::cancel`], or by its queue's [`WhenFull`] policy
    /// (skipped, or cancelled in favour of a newer run); [`QueuedRun::error`] says why.
    Cancelled,
}

impl QueueStatus {
    fn parse(text: &str) -> Self {
        match text {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "finished" => Self::Finished,
            "parked" => Self::Parked,
            "cancelled" => Self::Cancelled,
            _ => Self::Failed,
        }
    }

    /// Whether the run is over (finished, failed or cancelled).
    pub fn is_over(self) -> bool {
        matches!(self, Self::Finished | Self::Failed | Self::Cancelled)
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
    /// The named queue it is on (`None`: the default queue, without limits).
    pub queue: Option<String>,
    /// Its partition key (`None`: none given).
    pub partition: Option<String>,
    /// Its priority (higher is claimed first).
    pub priority: i32,
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

/// One claim of a run, as the database recorded it: which worker drove it, from when
/// to when (on the database's clock), and how the claim ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRecord {
    /// The run.
    pub run: RunId,
    /// The claim's lease epoch (1 for the first claim, then one more per claim).
    pub epoch: i64,
    /// The worker that made the claim.
    pub worker: String,
    /// The named queue the run is on, if any.
    pub queue: Option<String>,
    /// The run's partition key, if any.
    pub partition: Option<String>,
    /// When the claim was made.
    pub claimed_at: SystemTime,
    /// When it ended (`None` while it holds); for a worker that died, when its lease
    /// ran out.
    pub ended_at: Option<SystemTime>,
    /// How it ended: `finished`, `failed`, `cancelled`, `parked`, `handed back` or
    /// `lease expired`.
    pub outcome: Option<String>,
}

impl ClaimRecord {
    fn of(r: &tokio_postgres::Row) -> Self {
        let at = |us: i64| {
            SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(us).unwrap_or(0))
        };
        let partition: String = r.get(4);
        Self {
            run: run_of(r.get(0)),
            epoch: r.get(1),
            worker: r.get(2),
            queue: r.get(3),
            partition: (!partition.is_empty()).then_some(partition),
            claimed_at: at(r.get(5)),
            ended_at: r.get::<_, Option<i64>>(6).map(at),
            outcome: r.get(7),
        }
    }
}

/// The answer to an enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The run: the new one, or the one first enqueued with the same idempotency key.
    pub run: RunId,
    /// Whether this call created it (`false`: the key had been used; nothing was added).
    pub created: bool,
    /// Whether this call found its partition full under [`WhenFull::Skip`]: the run
    /// is recorded as [`QueueStatus::Cancelled`] and never runs. (A repeated enqueue,
    /// `created: false`, says `false`: [`RunQueue::status`] tells how the first went.)
    pub skipped: bool,
}

/// How to enqueue a run.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    run: Option<RunId>,
    key: Option<String>,
    queue: Option<String>,
    partition: Option<String>,
    priority: i32,
    start: Option<Start>,
}

/// When a delayed run may start.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// This long after the enqueue, on the database's clock.
    After(Duration),
    /// At this time.
    At(SystemTime),
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

    /// Puts the run on the named queue `queue` (declared first with
    /// [`RunQueue::declare`]), whose limits then apply to it.
    pub fn on_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Puts the run in partition `key` of its queue (a tenant, a customer): the queue's
    /// partition limit and [`WhenFull`] policy count runs per key, and partitions take
    /// turns. Needs [`on_queue`](Self::on_queue); an empty key is no key.
    pub fn with_partition(mut self, key: impl Into<String>) -> Self {
        self.partition = Some(key.into());
        self
    }

    /// Claims the run before runs of lower priority (0 by default; higher first, any
    /// `i32`). Among runs of equal priority the oldest goes first; on a partitioned
    /// queue priority comes before the partitions' turns.
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Lets no worker claim the run until `delay` after the enqueue (on the
    /// database's clock, so workers' clocks do not matter).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.start = Some(Start::After(delay));
        self
    }

    /// Lets no worker claim the run before `at` (a time already past starts it at once).
    pub fn not_before(mut self, at: SystemTime) -> Self {
        self.start = Some(Start::At(at));
        self
    }

    /// The start's parameters: a delay in ms, or a time in ms since the Unix epoch.
    fn start_params(&self) -> Result<(Option<f64>, Option<i64>), CanoError> {
        // The furthest delay taken: about 100 years, well inside a timestamp's range.
        const FURTHEST_MS: f64 = 3.15e12;
        // The latest start time taken: about 200 years after 1970.
        const LATEST_MS: f64 = 2.0 * FURTHEST_MS;
        match self.start {
            None => Ok((None, None)),
            Some(Start::After(delay)) => {
                let ms = delay.as_secs_f64() * 1000.0;
                if ms > FURTHEST_MS {
                    return Err(CanoError::configuration(format!(
                        "a start delay of {delay:?} is past what the queue can hold (about 100 years)"
                    ))
                    .with_hint("delay runs by at most years; a run that should never start need not be enqueued"));
                }
                Ok((Some(ms), None))
            }
            Some(Start::At(at)) => {
                let ms = match at.duration_since(SystemTime::UNIX_EPOCH) {
                    Ok(since) => since.as_millis(),
                    Err(_) => 0, // before 1970: already past
                };
                if ms as f64 > LATEST_MS {
                    return Err(CanoError::configuration(format!(
                        "a start time {ms} ms after 1970 is past what the queue can hold"
                    ))
                    .with_hint("give a start time before the year 2170; a run that should never start need not be enqueued"));
                }
                Ok((None, Some(ms as i64)))
            }
        }
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
    sql: Arc<QueueSql>,
}

impl fmt::Debug for RunQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunQueue")
            .field("schema", &self.store.schema())
            .finish()
    }
}

pub(crate) fn record(r: &tokio_postgres::Row) -> QueuedRun {
    let partition: String = r.get(9);
    QueuedRun {
        run: run_of(r.get(0)),
        workflow: r.get(1),
        status: QueueStatus::parse(r.get(2)),
        claims: r.get::<_, i32>(3) as u32,
        worker: r.get(4),
        final_label: r.get(5),
        error: r.get(6),
        final_state: r.get(7),
        queue: r.get(8),
        partition: (!partition.is_empty()).then_some(partition),
        priority: r.get(10),
    }
}

/// A named queue's settings, from a row of `cano_queues`.
fn spec_of(r: &tokio_postgres::Row) -> QueueSpec {
    let mut spec = QueueSpec::new(r.get::<_, String>(0));
    if let Some(n) = limit_of(r.get(1)) {
        spec = spec.with_concurrency(n);
    }
    if let Some(n) = limit_of(r.get(2)) {
        spec = spec.with_worker_concurrency(n);
    }
    if let Some(n) = limit_of(r.get(3)) {
        spec = spec.with_partition_concurrency(n);
    }
    if let (Some(n), Some(ms)) = (limit_of(r.get(4)), r.get::<_, Option<i64>>(5)) {
        spec = spec.with_rate_limit(n, Duration::from_millis(ms.max(0) as u64));
    }
    spec.when_full(WhenFull::parse(r.get(6)))
}

/// How long [`RunQueue::wait_all`] trusts the announcements alone: after this long
/// without one, it reads every pending run again.
const QUIET_SPELL: Duration = Duration::from_secs(10);

/// How many pending runs [`RunQueue::wait_all`] asks to have announced. A run's end is
/// announced only if someone waits for it (PostgreSQL serializes every notifying
/// commit on one lock, so announcing every end slowed a busy cluster); a wait for
/// more runs than this reads them every [`POLL_MANY`] until this many are left.
const WATCH_AT_MOST: usize = 64;

/// Most runs one read of [`RunQueue::wait_all`] looks at, after its first: the
/// first of those still pending, in the order given. A wait for 60,000 runs read
/// every one of them five times a second, 115 ms of the server's time each; it
/// cannot end before its first pending run does, so the rest can wait for their
/// turn (once those are all over, the next are read at once).
const READ_AT_MOST: usize = 1024;

/// How often [`RunQueue::wait_all`] reads its runs while more than [`WATCH_AT_MOST`]
/// are pending, at most.
const POLL_MANY: Duration = Duration::from_millis(200);

/// How soon [`RunQueue::wait_all`] reads its runs again, at least.
const POLL_SOON: Duration = Duration::from_millis(10);

/// How long [`RunQueue::wait_all`] sleeps before reading its `pending` runs again,
/// while too many are pending to watch, given that `ended` of them ended over the
/// `since` before: [`POLL_MANY`], or sooner where, at that pace, few enough to watch
/// would be left sooner. (Every [`POLL_MANY`], a wait for thousands of runs learnt
/// of the last hundred up to 200 ms after they ended.)
fn next_read(pending: usize, ended: usize, since: Duration) -> Duration {
    if ended == 0 || pending <= WATCH_AT_MOST {
        return POLL_MANY;
    }
    let ratio = (pending - WATCH_AT_MOST) as f64 / ended as f64;
    Duration::try_from_secs_f64(since.as_secs_f64() * ratio)
        .unwrap_or(POLL_MANY)
        .clamp(POLL_SOON, POLL_MANY)
}

impl RunQueue {
    /// The queue in `store`'s schema.
    pub fn new(store: &PostgresCheckpointStore) -> Self {
        Self {
            store: store.clone(),
            sql: Arc::new(QueueSql::new(store.db())),
        }
    }

    /// The store the queue lives in.
    pub(crate) fn store(&self) -> &PostgresCheckpointStore {
        &self.store
    }

    /// Creates the named queue `spec` describes, or changes its limits (workers read
    /// them at every claim, so a change applies from the next claim on). Errors on a
    /// spec that [`QueueSpec::validate`] refuses.
    pub async fn declare(&self, spec: &QueueSpec) -> Result<(), CanoError> {
        spec.validate()?;
        let limit = |n: Option<u32>| n.map(|n| n as i32);
        let (rate_count, rate_ms) = spec.rate_ms();
        let db = self.store.db();
        let doing = format!("declaring queue {:?}", spec.name());
        db.execute(
            5,
            &doing,
            &self.sql.declare,
            &[
                &spec.name(),
                &limit(spec.concurrency()),
                &limit(spec.worker_concurrency()),
                &limit(spec.partition_concurrency()),
                &rate_count,
                &rate_ms,
                &spec.full_policy().as_text(),
            ],
        )
        .await?;
        Ok(())
    }

    /// The settings of the named queue `name`, or `None` if it was never declared.
    pub async fn spec(&self, name: &str) -> Result<Option<QueueSpec>, CanoError> {
        let db = self.store.db();
        let doing = format!("reading queue {name:?}");
        let row = db.query_opt(5, &doing, &self.sql.spec, &[&name]).await?;
        Ok(row.as_ref().map(spec_of))
    }

    /// Enqueues a run of the workflow registered under `workflow` on the workers,
    /// starting in `initial`. Idle workers are woken at once (LISTEN/NOTIFY). On a
    /// named queue ([`EnqueueOptions::on_queue`]) the queue's limits apply, and a full
    /// partition its [`WhenFull`] policy. One statement (one round trip) unless the
    /// queue's policy looks at partitions: then a transaction under the queue's lock.
    ///
    /// Errors: a run id that is already enqueued (without the same idempotency key),
    /// an idempotency key already used for another workflow, a queue that was never
    /// declared, a partition key without a queue, or a start too far ahead.
    pub async fn enqueue<S: Serialize + fmt::Debug>(
        &self,
        workflow: &str,
        initial: &S,
        options: EnqueueOptions,
    ) -> Result<Enqueued, CanoError> {
        let state = encode_state::<Bincode, S>(initial)?;
        let label = format!("{initial:?}");
        let (delay_ms, at_ms) = options.start_params()?;
        let partition = options.partition.clone().unwrap_or_default();
        if options.queue.is_none() && !partition.is_empty() {
            return Err(CanoError::configuration(format!(
                "run of workflow {workflow:?} has partition key {partition:?} but no queue"
            ))
            .with_hint("partitions belong to a named queue: add EnqueueOptions::on_queue"));
        }
        let run = options.run.unwrap_or_default();
        let db = self.store.db();
        let key = options.key.as_deref();
        let row = Insert {
            run: run_key(run),
            workflow,
            key,
            state: &state,
            label: &label,
            queue: options.queue.as_deref(),
            partition: &partition,
            priority: options.priority,
            delay_ms,
            at_ms,
        };
        let added = retry_transient(5, || async {
            let mut client = db.client().await?;
            let added = match row.queue {
                None => self.insert(&client, &row, None).await,
                Some(queue) => self.insert_on_queue(&mut client, &row, queue).await,
            };
            added.map_err(|e| match e {
                Refused::Db(e) => db.error("enqueueing a run", e),
                Refused::Cano(e) => e,
            })
        })
        .await?;
        if let Some(skipped) = added {
            return Ok(Enqueued {
                run,
                created: true,
                skipped,
            });
        }
        // Nothing inserted: the key or the run id is taken.
        if let Some(key) = key
            && let Some(row) = db
                .query_opt(
                    5,
                    "looking up an idempotency key",
                    &self.sql.by_key,
                    &[&key],
                )
                .await?
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
                skipped: false,
            });
        }
        let existing = self.status(run).await?;
        let detail = existing
            .map(|r| format!(" (workflow {:?}, {:?})", r.workflow, r.status))
            .unwrap_or_default();
        Err(CanoError::configuration(format!("run {run} is already enqueued{detail}"))
            .with_hint("enqueue each run id once; give enqueue an idempotency key to make retrying it safe"))
    }

    /// Inserts `row`, as skipped (cancelled, with `skipped` the reason) if given; whether
    /// it was inserted as skipped, or `None` if the key or run id was taken.
    async fn insert(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        row: &Insert<'_>,
        skipped: Option<&str>,
    ) -> Result<Option<bool>, Refused> {
        let status = if skipped.is_some() {
            "cancelled"
        } else {
            "queued"
        };
        let insert = client.prepare_cached(&self.sql.insert).await?;
        let added = client
            .query_opt(
                &insert,
                &[
                    &row.run,
                    &row.workflow,
                    &row.key,
                    &row.state,
                    &row.label,
                    &status,
                    &row.queue,
                    &row.partition,
                    &row.priority,
                    &row.delay_ms,
                    &row.at_ms,
                    &skipped,
                ],
            )
            .await?;
        Ok(added.map(|_| skipped.is_some()))
    }

    /// Inserts `row` on the named queue `queue`, in one transaction with its
    /// partition's policy: under the queue's lock when the policy looks at the
    /// partition, so concurrent enqueues and claims cannot both find room. A queue
    /// whose policy does not look at partitions (the default) takes the run in one
    /// statement.
    async fn insert_on_queue(
        &self,
        client: &mut deadpool_postgres::Object,
        row: &Insert<'_>,
        queue: &str,
    ) -> Result<Option<bool>, Refused> {
        let plain = client.prepare_cached(&self.sql.insert_plain).await?;
        let found = client
            .query_one(
                &plain,
                &[
                    &row.run,
                    &row.workflow,
                    &row.key,
                    &row.state,
                    &row.label,
                    &queue,
                    &row.partition,
                    &row.priority,
                    &row.delay_ms,
                    &row.at_ms,
                ],
            )
            .await?;
        let (declared, plain, added): (bool, bool, Option<i64>) =
            (found.get(0), found.get(1), found.get(2));
        if declared && plain {
            return Ok(added.map(|_| false));
        }
        let tx = client.transaction().await?;
        let read_spec = tx.prepare_cached(&self.sql.spec).await?;
        let Some(found) = tx.query_opt(&read_spec, &[&queue]).await? else {
            return Err(Refused::Cano(
                CanoError::configuration(format!(
                    "queue {queue:?} was never declared (enqueueing a run of workflow {:?})",
                    row.workflow
                ))
                .with_hint("declare it first with RunQueue::declare(&QueueSpec::new(name))")
                .permanent(),
            ));
        };
        let mut spec = spec_of(&found);
        if spec.full_policy() != WhenFull::Queue && spec.partition_concurrency().is_some() {
            // Read again under the lock: the policy and limit are the ones in force.
            let lock = tx.prepare_cached(&self.sql.lock_queue).await?;
            tx.execute(&lock, &[&queue]).await?;
            if let Some(found) = tx.query_opt(&read_spec, &[&queue]).await? {
                spec = spec_of(&found);
            }
        }
        let limit = spec.partition_concurrency().map(|n| n as usize);
        let policy = spec.full_policy();
        let mut supersede = Vec::new();
        let mut skipped = None;
        if let Some(limit) = limit
            && policy != WhenFull::Queue
        {
            let active = tx.prepare_cached(&self.sql.active_in_partition).await?;
            let active = tx.query(&active, &[&queue, &row.partition]).await?;
            let partition = if row.partition.is_empty() {
                "without a key".to_owned()
            } else {
                format!("{:?}", row.partition)
            };
            match policy {
                WhenFull::Skip if active.len() >= limit => {
                    skipped = Some(format!(
                        "skipped: partition {partition} of queue {queue:?} was full ({} active, the limit is {limit})",
                        active.len()
                    ));
                }
                WhenFull::CancelRunning => {
                    // Runs already asked to cancel still hold a slot but need no second ask.
                    let asked = active.iter().filter(|r| r.get::<_, bool>(1)).count();
                    let excess = (active.len() + 1).saturating_sub(limit + asked);
                    supersede = active
                        .iter()
                        .filter(|r| !r.get::<_, bool>(1))
                        .take(excess)
                        .map(|r| r.get::<_, i64>(0))
                        .collect();
                }
                _ => {}
            }
        }
        let added = self.insert(&tx, row, skipped.as_deref()).await?;
        if added.is_some() && !supersede.is_empty() {
            let reason = format!(
                "cancelled in favour of the newer run {} (partition of queue {queue:?} full, policy cancel-running)",
                run_of(row.run)
            );
            let cancel = tx.prepare_cached(&self.sql.cancel).await?;
            tx.query(&cancel, &[&supersede, &reason]).await?;
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Cancels `run`, saying `reason` (kept as its error), and returns where it stood:
    /// one that never started is cancelled at once; a running one is asked to cancel
    /// and its worker cancels it at its next await point, as any run is cancelled
    /// (compensations run, checkpoint rules apply), within a moment (a notification)
    /// or a third of a lease (its heartbeat); a parked one, or one handed back after
    /// starting, is claimed by a worker and cancelled the same way. The request is
    /// durable: it outlives the worker that drives the run. Its final status is
    /// [`QueueStatus::Cancelled`] ([`wait`](Self::wait) for it).
    ///
    /// Errors for a run that was never enqueued or is already over.
    pub async fn cancel(&self, run: RunId, reason: &str) -> Result<QueueStatus, CanoError> {
        let db = self.store.db();
        let doing = format!("cancelling run {run}");
        let rows = db
            .query(5, &doing, &self.sql.cancel, &[&vec![run_key(run)], &reason])
            .await?;
        if let Some(row) = rows.first() {
            return Ok(QueueStatus::parse(row.get(1)));
        }
        match self.status(run).await? {
            None => Err(
                CanoError::configuration(format!("run {run} was never enqueued"))
                    .with_hint("cancel run ids that RunQueue::enqueue returned"),
            ),
            Some(record) => Err(CanoError::workflow(format!(
                "run {run} of workflow {:?} is already over ({:?}), so there is nothing to cancel",
                record.workflow, record.status
            ))
            .with_hint("RunQueue::status tells where a run stands before acting on it")),
        }
    }

    /// Cancels `run` while it is parked in a wait state: the queue records it as
    /// failed ("cancelled while parked"), so no signal or deadline wakes it and no
    /// worker claims it again. Fails for a run that is not parked (cancel a running
    /// one by stopping its worker or through its workflow's cancellation).
    pub async fn cancel_parked(&self, run: RunId) -> Result<(), CanoError> {
        let db = self.store.db();
        let doing = format!("cancelling parked run {run}");
        let cancelled: i64 = db
            .query_one(5, &doing, &self.sql.cancel_parked, &[&run_key(run)])
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

    /// Every claim of the runs in `runs`, oldest first: the database's own record of
    /// which worker ran what, and when.
    pub async fn claims(&self, runs: &[RunId]) -> Result<Vec<ClaimRecord>, CanoError> {
        let keys: Vec<i64> = runs.iter().map(|&r| run_key(r)).collect();
        let db = self.store.db();
        let rows = db
            .query(5, "reading the claims of runs", &self.sql.claims, &[&keys])
            .await?;
        Ok(rows.iter().map(ClaimRecord::of).collect())
    }

    /// The queue's record of `run`, or `None` if it was never enqueued.
    pub async fn status(&self, run: RunId) -> Result<Option<QueuedRun>, CanoError> {
        let db = self.store.db();
        let doing = format!("reading the status of run {run}");
        let row = db
            .query_opt(5, &doing, &self.sql.select, &[&run_key(run)])
            .await?;
        Ok(row.as_ref().map(record))
    }

    /// Waits until every run in `runs` is over and returns their records in the same
    /// order, with one listening connection however many runs there are. Errors after
    /// `timeout` (naming how many are still going), or at once for a run that was
    /// never enqueued.
    ///
    /// The workers announce the end of the runs it waits for, up to 64 at a time: a
    /// wait for more reads them up to five times a second until 64 are left, each
    /// time the first 1,024 still pending in the order given (it cannot end before
    /// they do), and the next ones at once when those are all over. Give the runs
    /// in the order they were enqueued, and a wait for many costs the server about
    /// what the runs that end cost, not what all of them do.
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
        // In the order given (often the order enqueued, so roughly the order they
        // end in): a read of many runs looks at the first of them (see READ_AT_MOST).
        let mut seen = HashSet::with_capacity(runs.len());
        let mut pending: Vec<i64> = runs
            .iter()
            .map(|&r| run_key(r))
            .filter(|r| seen.insert(*r))
            .collect();
        drop(seen);
        let mut first = true;
        // Whether the pending runs' ends are announced: asked for once few are left.
        let mut watching = false;
        // What to read next: the first READ_AT_MOST runs still pending (every one
        // at first; again after a quiet spell, and after a notification that names
        // no run), or only the runs announced.
        let mut announced: Option<HashSet<i64>> = None;
        // The last read of the pending runs while they are not watched: when, and
        // how many were pending (their pace sets the next read's time).
        let mut last_read: Option<(tokio::time::Instant, usize)> = None;
        let mut pace = (0, Duration::ZERO);
        while !pending.is_empty() {
            // Asked before the read below: a run that ends after it is announced, and
            // one that ended before it is read as over.
            if !watching && pending.len() <= WATCH_AT_MOST {
                db.execute(
                    5,
                    "asking for the runs' ends to be announced",
                    &self.sql.watch,
                    &[&pending],
                )
                .await?;
                watching = true;
                announced = None;
            }
            // Read after LISTEN (and after each wake-up): no announcement is missed.
            let asked: Vec<i64> = match announced.take() {
                Some(named) => pending
                    .iter()
                    .copied()
                    .filter(|r| named.contains(r))
                    .collect(),
                // The first read takes every run (one never enqueued is an error at
                // once); later ones the first READ_AT_MOST still pending.
                None if first => pending.clone(),
                None => pending.iter().copied().take(READ_AT_MOST).collect(),
            };
            let rows = if asked.is_empty() {
                Vec::new()
            } else {
                db.query(
                    5,
                    "reading the status of runs",
                    &self.sql.select_many,
                    &[&asked],
                )
                .await?
            };
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
            let before = pending.len();
            pending.retain(|r| !over.contains_key(&run_of(*r)));
            if pending.is_empty() {
                break;
            }
            // Every run of a partial read was over: the next ones are read at once.
            // Each such read takes its runs off, so this ends.
            let all_over = !asked.is_empty() && before - pending.len() == asked.len();
            if !watching && asked.len() < before && all_over {
                continue;
            }
            if !watching {
                let now = tokio::time::Instant::now();
                if let Some((at, was)) = last_read {
                    pace = (was.saturating_sub(pending.len()), now - at);
                }
                last_read = Some((now, pending.len()));
            }
            // Sleep until an announcement (or a quiet spell, after which everything is
            // read again), then drain the others that came with it.
            let now = tokio::time::Instant::now();
            let quiet = now
                + if watching {
                    QUIET_SPELL
                } else {
                    next_read(pending.len(), pace.0, pace.1)
                };
            let wake_at = deadline.map_or(quiet, |d| d.min(quiet));
            match tokio::time::timeout_at(wake_at, notes.recv()).await {
                Ok(Some(note)) => {
                    let mut named = HashSet::new();
                    let mut all = false;
                    for note in
                        std::iter::once(note).chain(std::iter::from_fn(|| notes.try_recv().ok()))
                    {
                        match note.payload().parse::<i64>() {
                            Ok(run) => {
                                named.insert(run);
                            }
                            Err(_) => all = true,
                        }
                    }
                    announced = (!all).then_some(named);
                }
                Ok(None) => {
                    let left = deadline.map_or(Duration::MAX, |d| {
                        d.saturating_duration_since(tokio::time::Instant::now())
                    });
                    let rest: Vec<RunId> = pending.iter().map(|r| run_of(*r)).collect();
                    let tail = Box::pin(self.wait_all(&rest, left)).await?;
                    over.extend(tail.into_iter().map(|r| (r.run, r)));
                    break;
                }
                Err(_) if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) => {
                    return Err(CanoError::timeout(format!(
                        "{} of {} runs were not over after {timeout:?}",
                        pending.len(),
                        runs.len()
                    ))
                    .with_hint("are workers running with these workflows registered? RunQueue::status shows where a run stands"));
                }
                // A quiet spell: read them all again.
                Err(_) => {}
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

/// One run to insert.
struct Insert<'a> {
    run: i64,
    workflow: &'a str,
    key: Option<&'a str>,
    state: &'a [u8],
    label: &'a str,
    queue: Option<&'a str>,
    partition: &'a str,
    priority: i32,
    delay_ms: Option<f64>,
    at_ms: Option<i64>,
}

/// Why an insert did not go through: the database, or the queue's own rules.
enum Refused {
    Db(tokio_postgres::Error),
    Cano(CanoError),
}

impl From<tokio_postgres::Error> for Refused {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_for_many_runs_reads_sooner_as_the_last_ones_near() {
        let ms = Duration::from_millis;
        // Nothing ended yet, or few enough to watch: the usual pace.
        assert_eq!(next_read(4_000, 0, ms(200)), POLL_MANY);
        assert_eq!(next_read(WATCH_AT_MOST, 500, ms(200)), POLL_MANY);
        // 1,000 ended in 200 ms with 564 left: 100 ms until 64 are left.
        assert_eq!(next_read(564, 1_000, ms(200)), ms(100));
        // Just over the line: no sooner than POLL_SOON.
        assert_eq!(next_read(WATCH_AT_MOST + 1, 1_000, ms(200)), POLL_SOON);
        // A slow trickle, or a pace past what a duration holds: no later than POLL_MANY.
        assert_eq!(next_read(4_000, 1, ms(200)), POLL_MANY);
        assert_eq!(next_read(usize::MAX, 1, Duration::MAX), POLL_MANY);
    }
}
