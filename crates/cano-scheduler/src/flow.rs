//! One flow: its schedule, its runs, and the loop that drives them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cano_core::{CancellationToken, CanoError, RunId, RunOptions};
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::clock::{Clock, after, far_future};
use crate::policy::{FlowPolicy, MissedFire, Overlap};
use crate::schedule::Schedule;

/// A run of a flow's workflow, its state types erased: the exit state's `Debug` text.
pub(crate) type RunFuture = Pin<Box<dyn Future<Output = Result<String, CanoError>> + Send>>;

/// A run that ended: its id and outcome.
type Ended = (RunId, Result<String, CanoError>);

/// Starts one run of a flow (resuming a crashed one first, when there is one); it
/// records runs that can never resume in the flow's shared info.
pub(crate) type Runner = Arc<dyn Fn(RunOptions, Arc<Shared>) -> RunFuture + Send + Sync>;

/// Where a flow stands (cano 0.13's variants; more may come, so a `match` needs a
/// wildcard arm).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Waiting for its next run.
    Idle,
    /// A run is going.
    Running,
    /// Its schedule has no further run (a cron expression with no future instant).
    Completed,
    /// Its last run failed with this error and it has no backoff: the next run comes
    /// on schedule.
    Failed(String),
    /// Its last `streak` runs failed; no run starts before `until`.
    Backoff {
        /// When the backoff ends.
        until: DateTime<Utc>,
        /// Failures in a row.
        streak: u32,
        /// The last run's error.
        last_error: String,
    },
    /// Stopped after `streak` failures in a row; `reset_flow` starts it again.
    Tripped {
        /// Failures in a row.
        streak: u32,
        /// The last run's error.
        last_error: String,
    },
}

/// A flow as [`RunningScheduler::status`](crate::RunningScheduler::status) reports it:
/// cano 0.13's fields, then what this scheduler adds.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowInfo {
    /// The flow's id.
    pub id: String,
    /// Where it stands.
    pub status: Status,
    /// Runs started so far.
    pub run_count: u64,
    /// When the last run started.
    pub last_run: Option<DateTime<Utc>>,
    /// Failures in a row (0 after a success).
    pub failure_streak: u32,
    /// While backing off: no run starts before this.
    pub next_eligible: Option<DateTime<Utc>>,
    /// When the next run is due, if scheduled.
    pub next_run: Option<DateTime<Utc>>,
    /// The last run's error, if it failed.
    pub last_error: Option<String>,
    /// Interrupted runs of the flow's workflow that can never be resumed (written by
    /// another version, a damaged log, a state this build cannot read), each reported
    /// once here and then left alone: they are not retried on every tick. Inspect,
    /// resume with the right build, or clear them.
    pub set_aside: Vec<SetAside>,
}

/// An interrupted run a flow found it can never resume (see [`FlowInfo::set_aside`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// The run.
    pub run: RunId,
    /// Why it cannot be resumed.
    pub reason: String,
}

/// The flow's answer to a command, sent once the command has taken effect (and the
/// flow's info shows it).
pub(crate) type Reply = oneshot::Sender<Result<(), CanoError>>;

/// What the scheduler's handle asks of a flow.
pub(crate) enum Command {
    Trigger(Reply),
    Cancel(Reply),
    Reset(Reply),
    Stop { deadline: Instant },
}

/// A registered flow, before the scheduler starts.
pub(crate) struct FlowSpec {
    pub(crate) id: String,
    pub(crate) schedule: Schedule,
    pub(crate) policy: FlowPolicy,
    pub(crate) runner: Runner,
}

/// What a flow's handle shares with its loop.
pub(crate) struct Shared {
    info: Mutex<FlowInfo>,
}

impl Shared {
    pub(crate) fn new(id: &str) -> Arc<Self> {
        Arc::new(Self {
            info: Mutex::new(FlowInfo {
                id: id.to_owned(),
                status: Status::Idle,
                run_count: 0,
                last_run: None,
                failure_streak: 0,
                next_eligible: None,
                next_run: None,
                last_error: None,
                set_aside: Vec::new(),
            }),
        })
    }

    /// Whether `run` was set aside as unresumable.
    pub(crate) fn is_set_aside(&self, run: RunId) -> bool {
        self.info().set_aside.iter().any(|s| s.run == run)
    }

    /// Sets `run` aside: it cannot be resumed, for `reason`.
    pub(crate) fn set_aside(&self, run: RunId, reason: String) {
        let mut info = self.info();
        if !info.set_aside.iter().any(|s| s.run == run) {
            info.set_aside.push(SetAside { run, reason });
        }
    }

    pub(crate) fn info(&self) -> MutexGuard<'_, FlowInfo> {
        self.info.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The loop's own state.
struct Driver {
    spec: FlowSpec,
    shared: Arc<Shared>,
    clock: Clock,
    running: JoinSet<Ended>,
    tokens: HashMap<RunId, CancellationToken>,
    /// Each run's tokio task, so a run whose task panicked is still known by its id.
    tasks: HashMap<tokio::task::Id, RunId>,
    /// The next scheduled tick.
    next_tick: Option<Instant>,
    /// No run before this (backing off after a failure).
    backoff_until: Option<Instant>,
    queued: bool,
    tripped: bool,
    /// Runs cancelled by `cancel_flow`: their `Cancelled` error is not a failure.
    cancelled: Vec<RunId>,
    stopping: Option<Instant>,
    jitter_seed: u64,
}

/// Drives one flow until it is stopped and its runs have ended.
pub(crate) async fn drive(
    spec: FlowSpec,
    shared: Arc<Shared>,
    clock: Clock,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    // Ticks count from the scheduler's start, not from when this task first runs.
    let started = clock.started();
    let mut driver = Driver {
        next_tick: None,
        spec,
        shared,
        clock,
        running: JoinSet::new(),
        tokens: HashMap::new(),
        tasks: HashMap::new(),
        backoff_until: None,
        queued: false,
        tripped: false,
        cancelled: Vec::new(),
        stopping: None,
        jitter_seed: 0x9E37_79B9_7F4A_7C15,
    };
    driver.next_tick = driver.first_tick(started);
    loop {
        driver.publish();
        if driver.stopping.is_some() && driver.running.is_empty() {
            break;
        }
        let wake = driver.wake_at();
        let stop_deadline = driver.stopping;
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => {
                    if let Some((reply, answer)) = driver.command(command) {
                        driver.publish();
                        let _ = reply.send(answer);
                    }
                }
                // Every handle is gone: stop now, letting runs finish.
                None => driver.stopping = driver.stopping.or(Some(far_future())),
            },
            () = sleep_until(wake) => driver.tick(),
            Some(ended) = driver.running.join_next_with_id(), if !driver.running.is_empty() => driver.ended(ended),
            () = sleep_until(stop_deadline), if stop_deadline.is_some() => {
                // The grace period is over: cancel what is still running, then wait for it.
                for token in driver.tokens.values() {
                    token.cancel();
                }
                driver.stopping = Some(far_future());
            }
        }
    }
    driver.publish();
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    fn period(&self) -> Option<(Duration, bool)> {
        match self.spec.schedule {
            Schedule::Every { period, fixed_rate } => Some((period, fixed_rate)),
            _ => None,
        }
    }

    fn first_tick(&self, now: Instant) -> Option<Instant> {
        match &self.spec.schedule {
            // An interval past what the clock can name (`Duration::MAX`) never ticks.
            Schedule::Every { period, .. } => now.checked_add(*period),
            Schedule::Cron { .. } => self.cron_after(now),
            Schedule::Manual => None,
        }
    }

    fn cron_after(&self, at: Instant) -> Option<Instant> {
        let next = self.spec.schedule.next_cron(self.clock.wall(at))?;
        self.clock.instant(next)
    }

    /// When the loop must wake for a tick: the tick, but not before the backoff ends.
    fn wake_at(&self) -> Option<Instant> {
        if self.tripped || self.stopping.is_some() {
            return None;
        }
        let tick = self.next_tick?;
        Some(match self.backoff_until {
            Some(until) if until > tick => until,
            _ => tick,
        })
    }

    /// The tick after `tick` for a schedule on a grid (fixed rate, cron).
    fn following(&self, tick: Instant) -> Option<Instant> {
        match &self.spec.schedule {
            Schedule::Every {
                period,
                fixed_rate: true,
            } => tick.checked_add(*period),
            Schedule::Cron { .. } => self.cron_after(tick),
            _ => None,
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let Some(tick) = self.next_tick else { return };
        // Ticks that passed while the loop was not awake (or was backing off).
        let mut next = self.following(tick);
        let mut missed = false;
        while let Some(n) = next.filter(|n| *n <= now) {
            missed = true;
            next = self.following(n);
        }
        self.next_tick = match self.period() {
            // Fixed delay: the next tick is set when this run ends.
            Some((_, false)) => None,
            _ => next,
        };
        let backing_off = self.backoff_until.is_some_and(|until| until > tick);
        self.backoff_until = None;
        if missed && !backing_off && self.spec.policy.missed_fire == MissedFire::Skip {
            if self.next_tick.is_none() {
                // A fixed-delay flow that skips still needs a next tick.
                self.next_tick = self.period().map(|(p, _)| now + p);
            }
            return;
        }
        self.fire();
    }

    /// A tick or a trigger: start a run, as the overlap policy allows.
    fn fire(&mut self) {
        if self.tripped || self.stopping.is_some() {
            return;
        }
        if !self.running.is_empty() {
            match self.spec.policy.overlap {
                Overlap::Skip => {
                    if let Some((period, false)) = self.period() {
                        self.next_tick = self.next_tick.or(Instant::now().checked_add(period));
                    }
                    return;
                }
                Overlap::QueueOne => {
                    self.queued = true;
                    return;
                }
                Overlap::Allow => {}
            }
        }
        self.start();
    }

    fn start(&mut self) {
        let run = RunId::new();
        let token = CancellationToken::new();
        let options = RunOptions::new()
            .with_run_id(run)
            .with_cancellation(token.clone());
        let future = (self.spec.runner)(options, self.shared.clone());
        self.tokens.insert(run, token);
        let task = self.running.spawn(async move { (run, future.await) });
        self.tasks.insert(task.id(), run);
        let mut info = self.shared.info();
        info.run_count += 1;
        info.last_run = Some(self.clock.wall(Instant::now()));
    }

    fn ended(&mut self, joined: Result<(tokio::task::Id, Ended), tokio::task::JoinError>) {
        let now = Instant::now();
        let sample = self.sample();
        let (task, run, outcome) = match joined {
            Ok((task, (run, outcome))) => (task, run, outcome),
            // A run's task only ends in error if it panicked outside the engine.
            Err(e) => {
                let task = e.id();
                let run = self.tasks.get(&task).copied().unwrap_or_default();
                let outcome = Err(CanoError::from_panic(Box::new(e.to_string())));
                (task, run, outcome)
            }
        };
        self.tasks.remove(&task);
        self.tokens.remove(&run);
        let cancelled_by_us = match self.cancelled.iter().position(|r| *r == run) {
            Some(i) => {
                self.cancelled.swap_remove(i);
                true
            }
            None => false,
        };
        {
            let mut info = self.shared.info();
            match &outcome {
                Ok(_) => {
                    info.failure_streak = 0;
                    info.last_error = None;
                }
                Err(e) if cancelled_by_us || self.stopping.is_some() => {
                    info.last_error = Some(e.to_string());
                }
                Err(e) => {
                    info.failure_streak += 1;
                    info.last_error = Some(e.to_string());
                    let streak = info.failure_streak;
                    if self.spec.policy.trip_after.is_some_and(|n| streak >= n) {
                        self.tripped = true;
                        self.queued = false;
                    } else if let Some(backoff) = self.spec.policy.backoff {
                        self.backoff_until = Some(after(now, backoff.delay(streak, sample)));
                    }
                }
            }
        }
        if let Some((period, false)) = self.period()
            && self.running.is_empty()
            && self.next_tick.is_none()
        {
            self.next_tick = now.checked_add(period);
        }
        if std::mem::take(&mut self.queued) && !self.tripped {
            self.fire();
        }
    }

    /// Carries out `command`; returns where to send the answer, and the answer.
    fn command(&mut self, command: Command) -> Option<(Reply, Result<(), CanoError>)> {
        match command {
            Command::Trigger(reply) => {
                if self.tripped {
                    let streak = self.shared.info().failure_streak;
                    let refused = CanoError::workflow(format!(
                        "flow {:?} is tripped after {streak} failures in a row",
                        self.spec.id
                    ))
                    .with_hint("fix the cause, then RunningScheduler::reset_flow");
                    return Some((reply, Err(refused)));
                }
                self.fire();
                Some((reply, Ok(())))
            }
            Command::Cancel(reply) => {
                self.queued = false;
                for (run, token) in &self.tokens {
                    token.cancel();
                    self.cancelled.push(*run);
                }
                Some((reply, Ok(())))
            }
            Command::Reset(reply) => {
                self.tripped = false;
                self.backoff_until = None;
                let mut info = self.shared.info();
                info.failure_streak = 0;
                info.last_error = None;
                drop(info);
                // Ticks that fell due while tripped are not made up for.
                let now = Instant::now();
                if self.next_tick.is_none_or(|tick| tick <= now) {
                    self.next_tick = self.first_tick(now);
                }
                Some((reply, Ok(())))
            }
            Command::Stop { deadline } => {
                self.queued = false;
                self.stopping = Some(self.stopping.map_or(deadline, |d| d.min(deadline)));
                None
            }
        }
    }

    /// A pseudo-random sample in `[0, 1)` for backoff jitter (xorshift).
    fn sample(&mut self) -> f64 {
        let mut x = self.jitter_seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter_seed = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Publishes where the flow stands for `status()`.
    fn publish(&self) {
        let now = Instant::now();
        let mut info = self.shared.info();
        let last_error = |info: &FlowInfo| info.last_error.clone().unwrap_or_default();
        let backoff = self
            .backoff_until
            .filter(|until| *until > now)
            .map(|until| self.clock.wall(until));
        info.status = if self.tripped {
            Status::Tripped {
                streak: info.failure_streak,
                last_error: last_error(&info),
            }
        } else if !self.running.is_empty() {
            Status::Running
        } else if let Some(until) = backoff {
            Status::Backoff {
                until,
                streak: info.failure_streak,
                last_error: last_error(&info),
            }
        } else if self.next_tick.is_none() && matches!(self.spec.schedule, Schedule::Cron { .. }) {
            Status::Completed
        } else if info.failure_streak > 0 {
            Status::Failed(last_error(&info))
        } else {
            Status::Idle
        };
        info.next_eligible = backoff;
        info.next_run = self.wake_at().map(|at| self.clock.wall(at));
    }
}
