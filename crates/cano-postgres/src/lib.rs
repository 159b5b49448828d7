//! # cano-postgres
//!
//! cano on many machines, on the PostgreSQL its users already run; no coordinator of
//! its own.
//!
//! - [`PostgresCheckpointStore`]: the [`CheckpointStore`](cano_core::CheckpointStore)
//!   in PostgreSQL. One statement per transition; rows of concurrent runs share
//!   statements; a lost connection is retried without losing or doubling a row. Its
//!   schema is created by a versioned migration, and a schema written by a newer
//!   cano is refused.
//! - [`RunQueue`]: enqueue runs (with idempotency keys), read their status and final
//!   state, wait for them.
//! - [`Worker`]: claims runs with `FOR UPDATE SKIP LOCKED` under leases it renews,
//!   fences every checkpoint write with the claim's epoch (so a claim that lost its
//!   lease cannot write, even beside a newer claim of the run in the same process),
//!   hands a run back untouched when it loses or cannot renew the lease or is stopped
//!   (compensation runs only when the run itself fails), resumes runs whose worker
//!   died from their last checkpoint, fails poison runs after too many claims, and is
//!   woken by LISTEN/NOTIFY (polling as the fallback). Its heartbeat and claim loop
//!   have connections of their own. Workers do not all race for every new run: one
//!   that finds the runs it was woken for taken by others steps back (it then waits
//!   5 to 100 ms before it looks, for runs the workers in front have left waiting),
//!   and, idle, stops listening (PostgreSQL wakes every listener for every
//!   notification) and looks at its own pace, up to a second apart. One worker per
//!   set of workflows holds their front (a session lock) and always listens, so a
//!   run enqueued into an idle cluster starts at once; a worker comes forward when
//!   it finds more runs waiting than it has slots for. While runs stream in, the
//!   worker claiming them stays *awake* to their workflow (a session lock) and looks
//!   again every few ms, and an enqueue that finds it awake does not announce its
//!   run: the server serializes every notifying commit through its flush to disk.
//!   Every enqueue holds a second, shared lock of its workflow until it commits; a
//!   worker that stops being awake lets go of the first and, before the look it owes,
//!   makes sure (trying the second, without waiting) that every enqueue that found it
//!   awake has committed, so no run is left unannounced and unseen. A worker whose
//!   slots stay full, or that is left with runs it cannot take, lets go and
//!   announces them to the others. A worker that wakes says so, and while one is
//!   awake the others look at least once a second: one that stalls while awake (a
//!   paused process keeps its session, and so its lock) delays new runs by a
//!   second at most, whatever the others' poll interval.
//! - Durable waits (`cano_core::wait`): the store keeps each run's signal inbox
//!   (`Workflow::signal` from any process), and takes a signal in one fenced
//!   transaction with the run's `Received` row. A run that parks is held by the queue
//!   ([`QueueStatus::Parked`]) with no lease and no worker; a signal for it makes it
//!   due and wakes the workers (NOTIFY), and a worker's claim loop also wakes for the
//!   earliest deadline. [`RunQueue::cancel_parked`] ends one that should wait no more.
//! - Named queues ([`QueueSpec`], declared with [`RunQueue::declare`]): flow control
//!   across the cluster. At most so many runs at once in the cluster, on one worker
//!   and per partition ([`EnqueueOptions::with_partition`], a tenant say; partitions
//!   take turns, so one tenant's burst does not starve the others), at most so many
//!   starts per period, priority ([`EnqueueOptions::with_priority`]) and delayed
//!   starts ([`EnqueueOptions::with_delay`]); a full partition queues the new run,
//!   skips it, or cancels its oldest run ([`WhenFull`]). Claims of a queue take its
//!   lock (an advisory lock), so every limit holds under any number of workers;
//!   slots are held through the leases (a dead worker's come back when its leases
//!   end) and a parked run holds none. A slot a run frees is taken back by its own
//!   worker; idle workers are told of it (NOTIFY) only when that worker cannot use
//!   it and the queue was at its cluster limit, so a bigger cluster does not wake
//!   every worker for every run. A run's end is
//!   announced only to waiters that asked ([`RunQueue::wait`], and `wait_all` for its
//!   last 64 runs): PostgreSQL takes one lock for the whole server for every
//!   notifying commit. [`RunQueue::cancel`] is a durable cancel request the driving
//!   worker honours, and [`RunQueue::claims`] reads the database's record of every
//!   claim: which worker ran what, from when to when.
//! - [`ClusterScheduler`]: cron ticks that fire once across any number of scheduler
//!   processes (a leader holding a lease and an epoch on the database's clock, and a
//!   unique row per tick); a stalled leader is replaced within a lease.
//!
//! Transient database failures (lost connections, terminated backends, deadlocks,
//! serialization conflicts) are retried; a row the server refuses fails its own run.
//!
//! Tables live in one schema (`cano` by default, see [`PgOptions::with_schema`]).
//!
//! ```
//! use std::time::Duration;
//! use cano_core::{CanoError, Task, TaskResult, Workflow};
//! use cano_postgres::{EnqueueOptions, PgOptions, PostgresCheckpointStore, QueueStatus, RunQueue, Worker};
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
//! enum Email { Send, Sent }
//!
//! struct SendEmail;
//! #[async_trait::async_trait]
//! impl Task<Email> for SendEmail {
//!     async fn run_bare(&self) -> Result<TaskResult<Email>, CanoError> {
//!         Ok(TaskResult::Single(Email::Sent))
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), CanoError> {
//! # // Runs against the server `CANO_PG_URL` names (`cargo xtask test` starts one);
//! # // without one it is skipped, except under `cargo xtask test`.
//! # let Ok(url) = std::env::var("CANO_PG_URL") else {
//! #     assert!(std::env::var_os("CANO_PG_REQUIRED").is_none(), "CANO_PG_URL is not set");
//! #     return Ok(());
//! # };
//! # let url = url.as_str();
//! let store = PostgresCheckpointStore::connect(PgOptions::new(url).with_schema("doc_crate")).await?;
//! let email = Workflow::bare()
//!     .register(Email::Send, SendEmail)
//!     .add_exit_state(Email::Sent);
//! // In each worker process:
//! let worker = Worker::new(&store).register("email", email).start().await?;
//! // Anywhere:
//! let queue = RunQueue::new(&store);
//! let run = queue
//!     .enqueue("email", &Email::Send, EnqueueOptions::new())
//!     .await?
//!     .run;
//! let record = queue.wait(run, Duration::from_secs(30)).await?;
//! assert_eq!(record.status, QueueStatus::Finished);
//! assert_eq!(record.final_state::<Email>()?, Some(Email::Sent));
//! worker.stop(Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```

mod awake;
mod catalog;
mod catalog_sql;
mod channels;
mod cron;
mod db;
mod errors;
mod finishes;
mod inbox_sql;
mod operate;
mod pacing;
mod queue;
mod queue_lock;
mod queue_spec;
mod queue_sql;
mod schema;
mod signals;
mod store;
mod worker;
mod worker_sql;

pub use cron::{ClusterEvent, ClusterScheduler, RunningClusterScheduler};
pub use db::PgOptions;
pub use operate::{ClusterOverview, Requeued, ScheduleView, WorkerView};
pub use queue::{ClaimRecord, EnqueueOptions, Enqueued, QueueStatus, QueuedRun, RunQueue};
pub use queue_spec::{QueueSpec, WhenFull};
pub use schema::SCHEMA_VERSION;
pub use store::{PgStats, PostgresCheckpointStore};
pub use worker::{RunningWorker, Worker, WorkerEvent};
