//! [`ClusterScheduler`]: cron schedules shared by many scheduler processes, each tick
//! fired once. One process leads (it holds a session advisory lock and a leader epoch
//! it bumped on taking over); the others wait to take over. A tick is fired by
//! inserting its (schedule, fire time) row and enqueueing its run in one statement that
//! also checks the leader epoch, so a leader that was replaced cannot fire, and even
//! two processes that both believe they lead fire a tick once.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cano_core::checkpoint::{Bincode, Codec};
use cano_core::{CanoError, RunId};
use cano_scheduler::Schedule;
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::db::run_key;
use crate::queue::ready_channel;
use crate::store::PostgresCheckpointStore;

/// What a cluster scheduler reports (see [`RunningClusterScheduler::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// This process stopped leading (its session was lost, or another took over).
    SteppedDown,
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
/// ```no_run
/// use cano_postgres::{ClusterScheduler, PgOptions, PostgresCheckpointStore};
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// # enum Report { Build, Done }
/// # async fn demo() -> Result<(), cano_core::CanoError> {
/// let store = PostgresCheckpointStore::connect(PgOptions::new("postgres://cano@127.0.0.1/app")).await?;
/// // Started in every process; one of them fires each tick.
/// let scheduler = ClusterScheduler::new(&store, "reports")
///     .cron("nightly", "0 2 * * *", "report", &Report::Build)?
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
pub struct ClusterScheduler {
    store: PostgresCheckpointStore,
    group: String,
    name: String,
    entries: Vec<Entry>,
    catch_up: Duration,
    standby_poll: Duration,
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
            name: format!("scheduler-{}", std::process::id()),
            entries: Vec::new(),
            catch_up: Duration::from_secs(300),
            standby_poll: Duration::from_secs(1),
        }
    }

    /// Names this process in the fire records (`scheduler-<pid>` by default).
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
            initial: Bincode::encode(initial)?,
            label: format!("{initial:?}"),
        });
        Ok(self)
    }

    /// Ticks a new leader fires on taking over, if the old one missed them: those at
    /// most this old (5 min by default). Older missed ticks are skipped.
    pub fn with_catch_up(mut self, window: Duration) -> Self {
        self.catch_up = window;
        self
    }

    /// How often a waiting process tries to take over (1 s by default): the longest a
    /// tick waits after its leader died, beyond the server noticing the death.
    pub fn with_standby_poll(mut self, every: Duration) -> Self {
        self.standby_poll = every;
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
        let (stop, _) = watch::channel(false);
        let (events, _) = broadcast::channel(1024);
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

    /// What the scheduler does from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.shared.events.subscribe()
    }

    /// Stops leading (or waiting); another process takes over.
    pub async fn stop(&self) {
        let _ = self.shared.stop.send(true);
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
    lock_key: String,
    take_over: String,
    last_fire: String,
    fire: String,
}

impl CronSql {
    fn new(store: &PostgresCheckpointStore) -> Self {
        let db = store.db();
        let (leaders, fires, runs) = (
            db.table("cano_leaders"),
            db.table("cano_fires"),
            db.table("cano_runs"),
        );
        let ready = ready_channel(&db.schema);
        Self {
            lock_key: format!("cano-cron:{}:", db.schema),
            take_over: format!(
                "INSERT INTO {leaders} (grp, epoch, leader, since) VALUES ($1, 1, $2, clock_timestamp())
                 ON CONFLICT (grp) DO UPDATE SET epoch = {leaders}.epoch + 1, leader = $2, since = clock_timestamp()
                 RETURNING epoch"
            ),
            last_fire: format!(
                "SELECT max(fire_at_ms) FROM {fires} WHERE grp = $1 AND schedule = $2"
            ),
            fire: format!(
                "WITH leader AS (
                    SELECT epoch FROM {leaders} WHERE grp = $1 AND epoch = $2 FOR SHARE),
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

impl Shared {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn run(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let db = self.scheduler.store.db().clone();
        let key = format!("{}{}", self.sql.lock_key, self.scheduler.group);
        while !self.stopping() {
            // The lock belongs to this session: it is released when the session ends,
            // which the server sees at once when the process dies.
            let session = match db.dedicated().await {
                Ok((client, _notes)) => client,
                Err(_) => {
                    self.pause(&mut stop).await;
                    continue;
                }
            };
            let held = loop {
                let got = session
                    .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&key])
                    .await
                    .map(|row| row.get::<_, bool>(0));
                match got {
                    Ok(true) => break true,
                    Ok(false) if !self.stopping() => self.pause(&mut stop).await,
                    // Stopping, or the session failed: start over on a new one.
                    _ => break false,
                }
            };
            if !held || self.stopping() {
                if !held && !self.stopping() {
                    self.pause(&mut stop).await;
                }
                continue;
            }
            if let Ok(epoch) = self.take_over().await {
                self.leading.store(true, Ordering::SeqCst);
                let _ = self.events.send(ClusterEvent::Leading { epoch });
                self.lead(&session, epoch, &mut stop).await;
                self.leading.store(false, Ordering::SeqCst);
                let _ = self.events.send(ClusterEvent::SteppedDown);
            }
            drop(session); // releases the lock
        }
    }

    async fn pause(&self, stop: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(self.scheduler.standby_poll) => {}
            _ = stop.changed() => {}
        }
    }

    async fn take_over(&self) -> Result<i64, CanoError> {
        let db = self.scheduler.store.db();
        let client = db.client().await?;
        client
            .query_one(
                &self.sql.take_over,
                &[&self.scheduler.group, &self.scheduler.name],
            )
            .await
            .map(|row| row.get(0))
            .map_err(|e| db.error("taking over as cron leader", e))
    }

    /// Fires ticks while this process holds the lock and its epoch.
    async fn lead(
        &self,
        session: &tokio_postgres::Client,
        epoch: i64,
        stop: &mut watch::Receiver<bool>,
    ) {
        let scheduler = &self.scheduler;
        let db = scheduler.store.db();
        let now = Utc::now();
        let oldest = now - chrono::Duration::from_std(scheduler.catch_up).unwrap_or_default();
        // Where each schedule stands: after its last fired tick, within the window.
        let mut next = Vec::with_capacity(scheduler.entries.len());
        for entry in &scheduler.entries {
            let last = match db.client().await {
                Ok(client) => client
                    .query_one(&self.sql.last_fire, &[&scheduler.group, &entry.id])
                    .await
                    .map(|row| row.get::<_, Option<i64>>(0)),
                Err(_) => return,
            };
            let Ok(last) = last else { return };
            let from = match last.and_then(|ms| Utc.timestamp_millis_opt(ms).single()) {
                Some(last) if last > oldest => last,
                Some(_) => oldest,
                None => now,
            };
            next.push(entry.schedule.next_cron(from));
        }
        loop {
            // Checked here as well as in the select: the stop may have been seen
            // (and its change consumed) while this process was waiting for the lock.
            if self.stopping() {
                return;
            }
            let Some((index, at)) = next
                .iter()
                .enumerate()
                .filter_map(|(i, at)| at.map(|at| (i, at)))
                .min_by_key(|&(_, at)| at)
            else {
                // No schedule has a further tick: hold the lead until stopped.
                while !self.stopping() {
                    if stop.changed().await.is_err() {
                        break;
                    }
                }
                return;
            };
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            if session.is_closed() || session.simple_query("SELECT 1").await.is_err() {
                return; // the lock went with the session
            }
            match self.fire(&scheduler.entries[index], at, epoch).await {
                Ok(Fired::Now(run)) => {
                    let _ = self.events.send(ClusterEvent::Fired {
                        schedule: scheduler.entries[index].id.clone(),
                        at,
                        run,
                    });
                }
                Ok(Fired::Already) => {}
                Ok(Fired::Deposed) | Err(_) => return,
            }
            next[index] = scheduler.entries[index].schedule.next_cron(at);
        }
    }

    async fn fire(&self, entry: &Entry, at: DateTime<Utc>, epoch: i64) -> Result<Fired, CanoError> {
        let scheduler = &self.scheduler;
        let db = scheduler.store.db();
        let ms = at.timestamp_millis();
        let run = RunId::new();
        let key = format!("cron:{}:{}:{ms}", scheduler.group, entry.id);
        let row = crate::db::retry_lost(3, || async {
            let client = db.client().await?;
            client
                .query_one(
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
                .await
                .map_err(|e| db.error(&format!("firing schedule {:?} at {at}", entry.id), e))
        })
        .await?;
        Ok(match (row.get::<_, i64>(0), row.get::<_, i64>(1)) {
            (0, _) => Fired::Deposed,
            (_, 0) => Fired::Already,
            _ => Fired::Now(run),
        })
    }
}
