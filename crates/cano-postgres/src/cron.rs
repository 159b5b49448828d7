//! [`ClusterScheduler`]: cron schedules shared by many scheduler processes, each tick
//! fired once. One process leads: it holds the group's leader row under a lease it
//! renews, with an epoch it bumped on taking over; the others take over once the lease
//! has expired (a leader that died, stalled or lost its connection, half-open ones
//! included, is replaced within a lease). A tick is fired by inserting its (schedule,
//! fire time) row and enqueueing its run in one statement that also checks the leader
//! epoch and lease, so a leader that was replaced cannot fire, and even two processes
//! that both believe they lead fire a tick once. Times are the database's: a node's
//! clock running fast or slow moves no tick and no catch-up window.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cano_core::checkpoint::{Bincode, encode_state};
use cano_core::{CanoError, RunId};
use cano_scheduler::Schedule;
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::channels::ready_channel;
use crate::db::run_key;
use crate::store::PostgresCheckpointStore;

/// What a cluster scheduler reports (see [`RunningClusterScheduler::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterEvent {
    /// This process became the leader, with this epoch.
    Leading {
        /// The leader epoch; every fire is checked against it.
        epoch: i64,
    },
    /// This process fired a tick: it enqueued `run`.
    Fired {
        /// The schedule's id.
        schedule: String,
        /// The tick.
        at: DateTime<Utc>,
        /// The run enqueued for it.
        run: RunId,
    },
    /// This process stopped leading (it could not renew its lease, another took
    /// over, or it is stopping).
    SteppedDown,
    /// Ticks of `schedule` older than the catch-up window were not fired: `count`
    /// of them, from `from` to `to`. A leader that took over after a long gap, or that
    /// was stalled itself, says so instead of firing a backlog of stale ticks.
    Skipped {
        /// The schedule's id.
        schedule: String,
        /// The first tick skipped.
        from: DateTime<Utc>,
        /// The last tick skipped.
        to: DateTime<Utc>,
        /// How many ticks were skipped.
        count: u64,
    },
}

struct Entry {
    id: String,
    schedule: Schedule,
    workflow: String,
    initial: Vec<u8>,
    label: String,
}

/// Cron schedules that enqueue runs on the [`RunQueue`](crate::RunQueue), fired once
/// per tick however many processes run the same scheduler group.
///
/// ```
/// use cano_postgres::{ClusterScheduler, PgOptions, PostgresCheckpointStore};
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// # enum Report { Build, Done }
/// # #[tokio::main]
/// # async fn main() -> Result<(), cano_core::CanoError> {
/// # // Runs against the server `CANO_PG_URL` names (`cargo xtask test` starts one);
/// # // without one it is skipped, except under `cargo xtask test`.
/// # let Ok(url) = std::env::var("CANO_PG_URL") else {
/// #     assert!(std::env::var_os("CANO_PG_REQUIRED").is_none(), "CANO_PG_URL is not set");
/// #     return Ok(());
/// # };
/// # let url = url.as_str();
/// let store = PostgresCheckpointStore::connect(PgOptions::new(url).with_schema("doc_cron")).await?;
/// // Started in every process; one of them fires each tick.
/// let scheduler = ClusterScheduler::new(&store, "reports")
///     .cron("nightly", "0 2 * * *", "report", &Report::Build)?
///     .start()
///     .await?;
/// # scheduler.stop().await;
/// # Ok(()) }
/// ```
pub struct ClusterScheduler {
    store: PostgresCheckpointStore,
    group: String,
    name: String,
    entries: Vec<Entry>,
    catch_up: Duration,
    standby_poll: Duration,
    lease: Duration,
    /// Made before the start, so that a subscription taken before it misses nothing.
    events: broadcast::Sender<ClusterEvent>,
}

impl fmt::Debug for ClusterScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterScheduler")
            .field("group", &self.group)
            .field("name", &self.name)
            .field(
                "schedules",
                &self.entries.iter().map(|e| &e.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ClusterScheduler {
    /// A scheduler in `group`: processes that start the same group share its ticks.
    pub fn new(store: &PostgresCheckpointStore, group: &str) -> Self {
        Self {
            store: store.clone(),
            group: group.to_owned(),
            name: format!(
                "scheduler-{}-{:016x}",
                std::process::id(),
                RunId::new().as_u64()
            ),
            entries: Vec::new(),
            catch_up: Duration::from_secs(300),
            standby_poll: Duration::from_secs(1),
            lease: Duration::from_secs(6),
            events: broadcast::channel(1024).0,
        }
    }

    /// Every event of the scheduler once started, from its first (its first
    /// `Leading`, say, which a subscription taken after [`start`](Self::start), with
    /// [`RunningClusterScheduler::subscribe`], can miss). A receiver that falls more
    /// than 1,024 events behind misses the oldest (`Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    /// Names this process in the fire records (`scheduler-<pid>-<random>` by default).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// At each instant of cron expression `expr` (UTC; see [`Schedule::cron`]),
    /// enqueues a run of `workflow` starting in `initial`.
    pub fn cron<S: Serialize + fmt::Debug>(
        self,
        id: &str,
        expr: &str,
        workflow: &str,
        initial: &S,
    ) -> Result<Self, CanoError> {
        self.schedule(id, Schedule::cron(expr)?, workflow, initial)
    }

    /// Like [`cron`](Self::cron) with a ready [`Schedule`] (for a time zone, use
    /// [`Schedule::cron_in`]). Only cron schedules have ticks that every process agrees
    /// on; intervals and manual schedules are refused.
    pub fn schedule<S: Serialize + fmt::Debug>(
        mut self,
        id: &str,
        schedule: Schedule,
        workflow: &str,
        initial: &S,
    ) -> Result<Self, CanoError> {
        if !matches!(schedule, Schedule::Cron { .. }) {
            return Err(CanoError::configuration(format!(
                "schedule {id:?} is {schedule:?}; a cluster scheduler fires cron schedules only"
            ))
            .with_hint("interval ticks depend on when each process started, so processes would not agree on them: express it in cron, or use cano-scheduler in one process"));
        }
        if self.entries.iter().any(|e| e.id == id) {
            return Err(CanoError::configuration(format!(
                "schedule {id:?} is registered twice in group {:?}",
                self.group
            ))
            .with_hint("give each schedule its own id"));
        }
        self.entries.push(Entry {
            id: id.to_owned(),
            schedule,
            workflow: workflow.to_owned(),
            initial: encode_state::<Bincode, S>(initial)?,
            label: format!("{initial:?}"),
        });
        Ok(self)
    }

    /// How late a tick may still be fired (5 min by default, on the database's clock):
    /// a leader that took over, or that was stalled, fires each missed tick at most
    /// this old, once, and skips older ones, reporting them as
    /// [`ClusterEvent::Skipped`]. Zero fires no missed tick; `Duration::MAX` fires
    /// every one.
    pub fn with_catch_up(mut self, window: Duration) -> Self {
        self.catch_up = window;
        self
    }

    /// How often a waiting process tries to take over (1 s by default).
    pub fn with_standby_poll(mut self, every: Duration) -> Self {
        self.standby_poll = every;
        self
    }

    /// How long the leader's hold lasts without renewal (6 s by default; at least
    /// 300 ms): the leader renews it every third of that, and steps down when it could
    /// not for two thirds of it. A leader that died or lost the database is replaced
    /// within one lease (plus a standby poll). `Duration::MAX` never expires: a dead
    /// leader is then never replaced.
    pub fn with_leader_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Starts leading or waiting to lead.
    pub async fn start(self) -> Result<RunningClusterScheduler, CanoError> {
        if self.entries.is_empty() {
            return Err(CanoError::configuration(format!(
                "cluster scheduler group {:?} has no schedule",
                self.group
            ))
            .with_hint("add one with ClusterScheduler::cron"));
        }
        if self.standby_poll.is_zero() {
            return Err(
                CanoError::configuration("a standby poll interval of 0 would spin")
                    .with_hint("use ClusterScheduler::with_standby_poll with a non-zero interval"),
            );
        }
        if self.lease < Duration::from_millis(300) {
            return Err(CanoError::configuration(format!(
                "a leader lease of {:?} (ClusterScheduler::with_leader_lease) cannot outlast its own renewal",
                self.lease
            ))
            .with_hint("use a lease of seconds"));
        }
        let (stop, _) = watch::channel(false);
        let events = self.events.clone();
        let shared = Arc::new(Shared {
            sql: CronSql::new(&self.store),
            scheduler: self,
            leading: AtomicBool::new(false),
            stop,
            events,
        });
        let task = tokio::spawn(shared.clone().run());
        Ok(RunningClusterScheduler {
            shared,
            task: Arc::new(tokio::sync::Mutex::new(Some(task))),
        })
    }
}

/// A started [`ClusterScheduler`].
#[derive(Clone)]
pub struct RunningClusterScheduler {
    shared: Arc<Shared>,
    task: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl fmt::Debug for RunningClusterScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningClusterScheduler")
            .field("group", &self.shared.scheduler.group)
            .field("leading", &self.is_leader())
            .finish()
    }
}

impl RunningClusterScheduler {
    /// Whether this process leads its group now.
    pub fn is_leader(&self) -> bool {
        self.shared.leading.load(Ordering::SeqCst)
    }

    /// What the scheduler does from now on. Events sent before this call are not
    /// seen: to see every one, subscribe before the start with
    /// [`ClusterScheduler::subscribe`].
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.shared.events.subscribe()
    }

    /// Stops leading (or waiting); another process takes over.
    pub async fn stop(&self) {
        self.shared.stop.send_replace(true);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

struct Shared {
    scheduler: ClusterScheduler,
    sql: CronSql,
    leading: AtomicBool,
    stop: watch::Sender<bool>,
    events: broadcast::Sender<ClusterEvent>,
}

struct CronSql {
    take_over: String,
    renew: String,
    step_down: String,
    last_fire: String,
    fire: String,
    describe: String,
}

/// `$n` milliseconds from the database's now, as a timestamp; past what one holds
/// (a lease of `Duration::MAX`), infinity.
fn from_now(param: &str) -> String {
    format!(
        "CASE WHEN {param}::float8 > 3e14 THEN 'infinity'::timestamptz ELSE clock_timestamp() + {param}::float8 * interval '1 millisecond' END"
    )
}

impl CronSql {
    fn new(store: &PostgresCheckpointStore) -> Self {
        let db = store.db();
        let (leaders, fires, runs) = (
            db.table("cano_leaders"),
            db.table("cano_fires"),
            db.table("cano_runs"),
        );
        let schedules = db.table("cano_schedules");
        let ready = ready_channel(&db.schema);
        let until = from_now("$3");
        Self {
            // Only an expired (or given up) lease can be taken over.
            take_over: format!(
                "INSERT INTO {leaders} AS l (grp, epoch, leader, since, lease_until)
                 VALUES ($1, 1, $2, clock_timestamp(), {until})
                 ON CONFLICT (grp) DO UPDATE SET epoch = l.epoch + 1, leader = $2,
                     since = clock_timestamp(), lease_until = {until}
                 WHERE l.lease_until IS NULL OR l.lease_until < clock_timestamp()
                 RETURNING epoch, (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
            ),
            renew: format!(
                "UPDATE {leaders} SET lease_until = {until}
                 WHERE grp = $1 AND epoch = $2 AND leader = $4
                 RETURNING (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
            ),
            step_down: format!(
                "UPDATE {leaders} SET lease_until = NULL WHERE grp = $1 AND epoch = $2"
            ),
            // What the group fires, for operators' tools (the next tick of each).
            describe: format!(
                "INSERT INTO {schedules} AS s (grp, schedule, expr, zone, workflow, label)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (grp, schedule) DO UPDATE SET expr = $3, zone = $4, workflow = $5,
                     label = $6, updated_at = clock_timestamp()"
            ),
            last_fire: format!(
                "SELECT max(fire_at_ms) FROM {fires} WHERE grp = $1 AND schedule = $2"
            ),
            fire: format!(
                "WITH leader AS (
                    SELECT epoch FROM {leaders}
                    WHERE grp = $1 AND epoch = $2 AND lease_until > clock_timestamp() FOR SHARE),
                 fire AS (
                    INSERT INTO {fires} (grp, schedule, fire_at_ms, epoch, fired_by, run_id)
                    SELECT $1, $3, $4, $2, $5, $6 FROM leader
                    ON CONFLICT DO NOTHING RETURNING run_id),
                 run AS (
                    INSERT INTO {runs} (run_id, workflow, idempotency_key, initial_state, initial_label, status)
                    SELECT run_id, $7, $8, $9, $10, 'queued' FROM fire
                    ON CONFLICT DO NOTHING RETURNING run_id),
                 note AS (SELECT pg_notify('{ready}', $7) FROM run)
                 SELECT (SELECT count(*) FROM leader), (SELECT count(*) FROM fire), (SELECT count(*) FROM note)"
            ),
        }
    }
}

/// How a fire went.
enum Fired {
    Now(RunId),
    Already,
    Deposed,
}

/// The database's clock as this process reads it: the local wall clock plus the
/// offset last measured against the server (refreshed by every lease renewal).
#[derive(Clone, Copy)]
struct DbClock {
    offset_ms: i64,
}

impl DbClock {
    fn measured(db_now_ms: i64) -> Self {
        Self {
            offset_ms: db_now_ms - Utc::now().timestamp_millis(),
        }
    }

    fn now(self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms)
    }
}

/// `at` minus `window`, or the start of time for a window past what a date holds.
fn before(at: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(window)
        .ok()
        .and_then(|w| at.checked_sub_signed(w))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Shared {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn lease_ms(&self) -> f64 {
        self.scheduler.lease.as_secs_f64() * 1_000.0
    }

    async fn run(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        while !self.stopping() {
            match self.take_over().await {
                Ok(Some((epoch, clock))) => {
                    self.leading.store(true, Ordering::SeqCst);
                    let _ = self.events.send(ClusterEvent::Leading { epoch });
                    self.lead(epoch, clock, &mut stop).await;
                    self.leading.store(false, Ordering::SeqCst);
                    let _ = self.events.send(ClusterEvent::SteppedDown);
                }
                // Led by another (or the database is away): try again later.
                Ok(None) | Err(_) => self.pause(&mut stop).await,
            }
        }
    }

    async fn pause(&self, stop: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(self.scheduler.standby_poll) => {}
            _ = stop.changed() => {}
        }
    }

    /// Takes the group's lead if its lease has expired: the new epoch and the
    /// database's clock.
    async fn take_over(&self) -> Result<Option<(i64, DbClock)>, CanoError> {
        let db = self.scheduler.store.db();
        let row = db
            .query_opt(
                1,
                "taking over as cron leader",
                &self.sql.take_over,
                &[
                    &self.scheduler.group,
                    &self.scheduler.name,
                    &self.lease_ms(),
                ],
            )
            .await?;
        Ok(row.map(|row| (row.get(0), DbClock::measured(row.get(1)))))
    }

    /// Renews the lead: the database's clock if this process still holds it at
    /// `epoch`, `None` if another took over. Bounded: a connection that hangs is a
    /// failed renewal.
    async fn renew(&self, epoch: i64) -> Result<Option<DbClock>, CanoError> {
        let db = self.scheduler.store.db();
        let limit =
            (self.scheduler.lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(10));
        tokio::time::timeout(limit, async {
            let row = db
                .query_opt(
                    1,
                    "renewing the cron lead",
                    &self.sql.renew,
                    &[
                        &self.scheduler.group,
                        &epoch,
                        &self.lease_ms(),
                        &self.scheduler.name,
                    ],
                )
                .await?;
            Ok(row.map(|r| DbClock::measured(r.get(0))))
        })
        .await
        .map_err(|_| CanoError::store("renewing the cron lead timed out"))?
    }

    /// Fires ticks while this process holds the lead at `epoch`, renewing it every
    /// third of a lease; steps down when it could not renew for two thirds of one.
    /// Records the group's schedules for operators' tools. Best effort: a failure
    /// costs the inspector its view of the next tick, never a tick.
    async fn describe(&self) {
        let scheduler = &self.scheduler;
        let db = scheduler.store.db();
        let Ok(client) = db.client().await else {
            return;
        };
        let Ok(statement) = db
            .prepared(&client, &self.sql.describe, "describing the schedules")
            .await
        else {
            return;
        };
        for entry in &scheduler.entries {
            if let Schedule::Cron { expr, zone, .. } = &entry.schedule {
                let _ = client
                    .execute(
                        &statement,
                        &[
                            &scheduler.group,
                            &entry.id,
                            expr,
                            &zone.name(),
                            &entry.workflow,
                            &entry.label,
                        ],
                    )
                    .await;
            }
        }
    }

    async fn lead(&self, epoch: i64, mut clock: DbClock, stop: &mut watch::Receiver<bool>) {
        let scheduler = &self.scheduler;
        let db = scheduler.store.db();
        // Where each schedule stands: after its last fired tick.
        let mut next = Vec::with_capacity(scheduler.entries.len());
        self.describe().await;
        for entry in &scheduler.entries {
            let last = db
                .query_one(
                    1,
                    "reading a schedule's last tick",
                    &self.sql.last_fire,
                    &[&scheduler.group, &entry.id],
                )
                .await
                .map(|row| row.get::<_, Option<i64>>(0));
            let Ok(last) = last else {
                return self.step_down(epoch).await;
            };
            let from = last
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                .unwrap_or_else(|| clock.now());
            next.push(entry.schedule.next_cron(from));
        }
        let every = scheduler.lease / 3;
        let give_up = scheduler.lease.checked_mul(2).map(|d| d / 3);
        let mut renewed = tokio::time::Instant::now();
        let mut next_renewal = renewed.checked_add(every);
        loop {
            // Checked here as well as in the select: the stop may have been seen
            // (and its change consumed) while this process was waiting to lead.
            if self.stopping() {
                return self.step_down(epoch).await;
            }
            let due = next
                .iter()
                .enumerate()
                .filter_map(|(i, at)| at.map(|at| (i, at)))
                .min_by_key(|&(_, at)| at);
            let tick_wait = due.map(|(_, at)| {
                let wait = (at - clock.now()).to_std().unwrap_or_default();
                tokio::time::Instant::now().checked_add(wait)
            });
            tokio::select! {
                () = sleep_until(tick_wait.flatten()), if due.is_some() => {}
                () = sleep_until(next_renewal) => {
                    match self.renew(epoch).await {
                        Ok(Some(now)) => {
                            clock = now;
                            renewed = tokio::time::Instant::now();
                        }
                        Ok(None) => return, // taken over
                        Err(_) if give_up.is_some_and(|g| renewed.elapsed() >= g) => {
                            // The lease may be taken a third of a lease from now.
                            return;
                        }
                        Err(_) => {}
                    }
                    next_renewal = tokio::time::Instant::now().checked_add(every);
                    continue;
                }
                _ = stop.changed() => return self.step_down(epoch).await,
            }
            let Some((index, at)) = due else { continue };
            let entry = &scheduler.entries[index];
            let now = clock.now();
            if at > now {
                continue; // woken early (a clock measured anew): wait again
            }
            // Ticks older than the catch-up window are reported, not fired.
            let oldest = before(now, scheduler.catch_up);
            if at < oldest {
                let (mut to, mut count, mut after) = (at, 0u64, Some(at));
                while let Some(tick) = after.filter(|t| *t < oldest) {
                    to = tick;
                    count += 1;
                    after = entry.schedule.next_cron(tick);
                }
                let _ = self.events.send(ClusterEvent::Skipped {
                    schedule: entry.id.clone(),
                    from: at,
                    to,
                    count,
                });
                next[index] = after;
                continue;
            }
            match self.fire(entry, at, epoch).await {
                Ok(Fired::Now(run)) => {
                    let _ = self.events.send(ClusterEvent::Fired {
                        schedule: entry.id.clone(),
                        at,
                        run,
                    });
                }
                Ok(Fired::Already) => {}
                Ok(Fired::Deposed) => return,
                // Tried again after a pause (its row makes it fire once), while the
                // lease lasts.
                Err(_) => {
                    self.pause(stop).await;
                    continue;
                }
            }
            next[index] = entry.schedule.next_cron(at);
        }
    }

    /// Gives the lead up at once, so another process need not wait out the lease.
    async fn step_down(&self, epoch: i64) {
        let db = self.scheduler.store.db();
        let _ = db
            .execute(
                1,
                "stepping down as cron leader",
                &self.sql.step_down,
                &[&self.scheduler.group, &epoch],
            )
            .await;
    }

    async fn fire(&self, entry: &Entry, at: DateTime<Utc>, epoch: i64) -> Result<Fired, CanoError> {
        let scheduler = &self.scheduler;
        let db = scheduler.store.db();
        let ms = at.timestamp_millis();
        let run = RunId::new();
        let key = format!("cron:{}:{}:{ms}", scheduler.group, entry.id);
        let doing = format!("firing schedule {:?} at {at}", entry.id);
        let row = db
            .query_one(
                3,
                &doing,
                &self.sql.fire,
                &[
                    &scheduler.group,
                    &epoch,
                    &entry.id,
                    &ms,
                    &scheduler.name,
                    &run_key(run),
                    &entry.workflow,
                    &key,
                    &entry.initial,
                    &entry.label,
                ],
            )
            .await?;
        Ok(match (row.get::<_, i64>(0), row.get::<_, i64>(1)) {
            (0, _) => Fired::Deposed,
            (_, 0) => Fired::Already,
            _ => Fired::Now(run),
        })
    }
}
