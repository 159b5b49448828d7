//! [`Scheduler`] (the builder) and [`RunningScheduler`] (the live handle).

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cano_core::{
    CanoError, DefaultKey, ResourceKey, ResourceLifecycle, Resources, RunId, RunOptions, RunStatus,
    Workflow, WorkflowState,
};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::flow::{Command, FlowInfo, FlowSpec, Reply, RunFuture, Runner, Shared, Status, drive};
use crate::policy::{BackoffPolicy, FlowPolicy};
use crate::schedule::Schedule;

/// Sets up or tears down one workflow's resources.
type Lifecycle = Arc<dyn Fn(bool) -> BoxFuture<'static, Result<(), CanoError>> + Send + Sync>;

/// How long [`RunningScheduler::stop`] lets runs in flight finish (cano 0.13's window).
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(30);

/// Builds a set of scheduled flows; [`start`](Self::start) runs them. `S` (and `K`)
/// are the state type (and resource key) of the workflows `every`, `cron` and `manual`
/// take, as in cano 0.13; [`flow`](Self::flow) also takes workflows of other types.
///
/// Each flow is a workflow, the state its runs start in, a [`Schedule`] and a
/// [`FlowPolicy`]. Every run gets its own run id; with a checkpoint store, a run of the
/// flow that crashed (left interrupted) is resumed in place of the next fresh run.
///
/// The registration methods take `&mut self` and return `Result<(), CanoError>`, as in
/// cano 0.13: a duplicate id or a zero interval is refused at once; a workflow that
/// fails validation (or cannot start from its initial state) is reported by
/// [`start`](Self::start), before any resource is set up.
pub struct Scheduler<S, K = DefaultKey> {
    flows: Vec<FlowSpec>,
    /// The ids taken, so a duplicate is found without comparing every flow.
    ids: HashSet<String>,
    lifecycles: Vec<(usize, Lifecycle)>,
    origin: Option<DateTime<Utc>>,
    /// The first flow found unable to run; `start` reports it.
    invalid: Option<CanoError>,
    _types: PhantomData<fn() -> (S, K)>,
}

impl<S: WorkflowState, K: ResourceKey> Default for Scheduler<S, K> {
    fn default() -> Self {
        Self {
            flows: Vec::new(),
            ids: HashSet::new(),
            lifecycles: Vec::new(),
            origin: None,
            invalid: None,
            _types: PhantomData,
        }
    }
}

impl<S: WorkflowState, K: ResourceKey> Scheduler<S, K> {
    /// A scheduler with no flows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds flow `id`: runs of `workflow` from `initial`, on `schedule`, handled as
    /// `policy` says. A second flow with the same id is an error.
    ///
    /// The workflow may have a state type (and resource key) of its own: one scheduler
    /// runs flows of several workflows this way. (A scheduler filled only through
    /// `flow` names its own `S` at `Scheduler::<S>::new()`.)
    pub fn flow<S2: WorkflowState, K2: ResourceKey>(
        &mut self,
        id: impl Into<String>,
        workflow: Workflow<S2, K2>,
        initial: S2,
        schedule: Schedule,
        policy: FlowPolicy,
    ) -> Result<(), CanoError> {
        let id = id.into();
        if self.ids.contains(&id) {
            return Err(
                CanoError::configuration(format!("flow {id:?} is registered twice"))
                    .with_hint("give each flow its own id"),
            );
        }
        self.ids.insert(id.clone());
        if self.invalid.is_none()
            && let Err(e) = workflow
                .validate()
                .and_then(|()| workflow.validate_initial_state(&initial))
        {
            self.invalid =
                Some(CanoError::configuration(format!("flow {id:?}: {e}")).with_source(e));
        }
        // Resources are set up once at start and torn down once at stop, not per run.
        let workflow = workflow.with_resource_lifecycle(ResourceLifecycle::External);
        let resources = workflow.resources().clone();
        let key = Arc::as_ptr(&resources) as *const () as usize;
        if !self.lifecycles.iter().any(|(k, _)| *k == key) {
            let lifecycle: Lifecycle = Arc::new(move |up| {
                let resources: Arc<Resources<K2>> = resources.clone();
                Box::pin(async move {
                    if up {
                        resources.setup_all().await
                    } else {
                        resources.try_teardown_all().await
                    }
                })
            });
            self.lifecycles.push((key, lifecycle));
        }
        self.flows.push(FlowSpec {
            id,
            schedule,
            policy,
            runner: runner(workflow, initial),
        });
        Ok(())
    }

    /// Adds a flow on cron expression `expr` (UTC), backing off after failures
    /// ([`FlowPolicy::backing_off`]).
    pub fn cron(
        &mut self,
        id: impl Into<String>,
        workflow: Workflow<S, K>,
        initial: S,
        expr: &str,
    ) -> Result<(), CanoError> {
        let schedule = Schedule::cron(expr)?;
        self.flow(id, workflow, initial, schedule, FlowPolicy::backing_off())
    }

    /// Adds a flow run every `interval` (fixed delay: counted from the end of the
    /// previous run), backing off after failures. A zero interval is refused.
    pub fn every(
        &mut self,
        id: impl Into<String>,
        workflow: Workflow<S, K>,
        initial: S,
        interval: Duration,
    ) -> Result<(), CanoError> {
        let schedule = Schedule::every(interval)?;
        self.flow(id, workflow, initial, schedule, FlowPolicy::backing_off())
    }

    /// [`every`](Self::every) `seconds` seconds.
    pub fn every_seconds(
        &mut self,
        id: impl Into<String>,
        workflow: Workflow<S, K>,
        initial: S,
        seconds: u64,
    ) -> Result<(), CanoError> {
        self.every(id, workflow, initial, Duration::from_secs(seconds))
    }

    /// [`every`](Self::every) `minutes` minutes (past `u64` seconds: never).
    pub fn every_minutes(
        &mut self,
        id: impl Into<String>,
        workflow: Workflow<S, K>,
        initial: S,
        minutes: u64,
    ) -> Result<(), CanoError> {
        self.every(id, workflow, initial, seconds_of(minutes, 60))
    }

    /// [`every`](Self::every) `hours` hours (past `u64` seconds: never).
    pub fn every_hours(
        &mut self,
        id: impl Into<String>,
        workflow: Workflow<S, K>,
        initial: S,
        hours: u64,
    ) -> Result<(), CanoError> {
        self.every(id, workflow, initial, seconds_of(hours, 3600))
    }

    /// Adds a flow that runs only when triggered.
    pub fn manual(
        &mut self,
        id: impl Into<String>,
        workflow: Workflow<S, K>,
        initial: S,
    ) -> Result<(), CanoError> {
        let policy = FlowPolicy::backing_off();
        self.flow(id, workflow, initial, Schedule::manual(), policy)
    }

    /// Replaces flow `id`'s backoff (and trip, from its `streak_limit`).
    pub fn set_backoff(&mut self, id: &str, policy: BackoffPolicy) -> Result<(), CanoError> {
        let flow = self.flows.iter_mut().find(|f| f.id == id).ok_or_else(|| {
            CanoError::configuration(format!(
                "no flow is called {id:?}, so it has no backoff to set"
            ))
            .with_hint("register the flow before setting its backoff")
        })?;
        flow.policy.backoff = Some(policy);
        flow.policy.trip_after = policy.streak_limit.map(|n| n.max(1));
        Ok(())
    }

    /// How many flows are registered.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is registered.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Whether a flow called `id` is registered.
    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Reads the wall clock as `now` when the scheduler starts, and from there as
    /// tokio's clock advances: for tests on a paused clock and for simulations. By
    /// default the system clock is read anew for every cron computation, so a clock
    /// step or a suspend of the machine moves no later tick.
    pub fn with_clock_origin(mut self, now: DateTime<Utc>) -> Self {
        self.origin = Some(now);
        self
    }

    /// Checks every flow, sets every flow's resources up (once each) and starts the
    /// flows. Must be called from within a tokio runtime. A flow that cannot run (its
    /// workflow fails validation, its initial state is not registered) fails the start
    /// before any setup; a resource that fails to set up fails it after tearing down
    /// the ones already set up.
    pub async fn start(self) -> Result<RunningScheduler<S, K>, CanoError> {
        if let Some(invalid) = self.invalid {
            return Err(invalid);
        }
        let mut set_up: Vec<Lifecycle> = Vec::new();
        for (_, lifecycle) in &self.lifecycles {
            if let Err(e) = lifecycle(true).await {
                for done in set_up.iter().rev() {
                    let _ = done(false).await;
                }
                return Err(e);
            }
            set_up.push(lifecycle.clone());
        }
        let clock = match self.origin {
            Some(origin) => Clock::starting_at(origin),
            None => Clock::system(),
        };
        let mut flows = HashMap::new();
        let mut order = Vec::new();
        let mut joins = Vec::new();
        for spec in self.flows {
            let (tx, rx) = mpsc::unbounded_channel();
            let shared = Shared::new(&spec.id);
            order.push(spec.id.clone());
            flows.insert(
                spec.id.clone(),
                FlowHandle {
                    commands: tx,
                    shared: shared.clone(),
                },
            );
            joins.push(tokio::spawn(drive(spec, shared, clock, rx)));
        }
        let (stopped, _) = watch::channel(None);
        Ok(RunningScheduler {
            inner: Arc::new(Inner {
                flows,
                order,
                joins: std::sync::Mutex::new(joins),
                lifecycles: set_up,
                stopped,
            }),
            _types: PhantomData,
        })
    }
}

/// `count` units of `unit` seconds, or the longest interval when that overflows.
fn seconds_of(count: u64, unit: u64) -> Duration {
    count
        .checked_mul(unit)
        .map_or(Duration::MAX, Duration::from_secs)
}

/// Starts one run of a flow: an interrupted run of its workflow first, when there is
/// one it can resume, else a fresh run from `initial`.
fn runner<S: WorkflowState, K: ResourceKey>(workflow: Workflow<S, K>, initial: S) -> Runner {
    // Interrupted runs this flow is resuming now: each is resumed once at a time.
    let resuming: Arc<Mutex<HashSet<RunId>>> = Arc::default();
    Arc::new(move |options: RunOptions, shared: Arc<Shared>| {
        let (workflow, initial) = (workflow.clone(), initial.clone());
        let resuming = resuming.clone();
        let future: RunFuture = Box::pin(async move {
            let describe = |state: S| format!("{state:?}");
            if workflow.checkpoint_store().is_some() {
                for crashed in workflow.unfinished_runs().await? {
                    let run = crashed.run;
                    if crashed.status != RunStatus::Interrupted
                        || shared.is_set_aside(run)
                        || !lock(&resuming).insert(run)
                    {
                        continue;
                    }
                    let _resumed = Resuming(resuming.clone(), run);
                    match workflow.check_resume(run).await {
                        Ok(()) => {
                            let token = options.cancellation_token().cloned();
                            return workflow.resume_from_with(run, token).await.map(describe);
                        }
                        // It can never resume: report it once, and go on.
                        Err(e) if cannot_resume(&e) => shared.set_aside(run, e.to_string()),
                        // The store is away: this tick fails, the next tries again.
                        Err(e) => return Err(e),
                    }
                }
            }
            workflow
                .orchestrate_with(initial, options)
                .await
                .map(describe)
        });
        future
    })
}

impl<S, K> Debug for Scheduler<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flows: Vec<String> = self
            .flows
            .iter()
            .map(|flow| format!("{}: {:?}", flow.id, flow.schedule))
            .collect();
        f.debug_struct("Scheduler").field("flows", &flows).finish()
    }
}

struct FlowHandle {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

struct Inner {
    flows: HashMap<String, FlowHandle>,
    order: Vec<String>,
    joins: std::sync::Mutex<Vec<JoinHandle<()>>>,
    lifecycles: Vec<Lifecycle>,
    /// `Some(result of the teardown)` once stopped.
    stopped: watch::Sender<Option<Result<(), CanoError>>>,
}

/// A started scheduler. Clones share it: one can [`wait`](Self::wait) while another
/// [`stop`](Self::stop)s it. Dropping every handle without stopping stops scheduling
/// and lets runs in flight finish, but tears no resource down: call `stop`.
pub struct RunningScheduler<S, K = DefaultKey> {
    inner: Arc<Inner>,
    _types: PhantomData<fn() -> (S, K)>,
}

impl<S, K> Clone for RunningScheduler<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _types: PhantomData,
        }
    }
}

impl<S, K> RunningScheduler<S, K> {
    fn flow(&self, id: &str) -> Result<&FlowHandle, CanoError> {
        self.inner.flows.get(id).ok_or_else(|| {
            let known = self.inner.order.join(", ");
            CanoError::configuration(format!("no flow is called {id:?} (flows: {known})"))
                .with_hint("use the id the flow was registered with")
        })
    }

    /// Sends flow `id` a command and waits for its answer.
    async fn ask(&self, id: &str, command: fn(Reply) -> Command) -> Result<(), CanoError> {
        let flow = self.flow(id)?;
        let stopped = || {
            CanoError::workflow(format!("flow {id:?} has stopped"))
                .with_hint("the scheduler was stopped; start a new one")
        };
        let (reply, answer) = oneshot::channel();
        flow.commands.send(command(reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Starts a run of flow `id` now (as its overlap policy allows; a backoff does not
    /// hold it back), and returns once the flow has taken the trigger. A tripped flow
    /// refuses until it is reset.
    pub async fn trigger(&self, id: &str) -> Result<(), CanoError> {
        self.ask(id, Command::Trigger).await
    }

    /// Cancels flow `id`'s runs in flight (its schedule goes on). A cancelled run does
    /// not count as a failure.
    pub async fn cancel_flow(&self, id: &str) -> Result<(), CanoError> {
        self.ask(id, Command::Cancel).await
    }

    /// Clears flow `id`'s failure streak, backoff and trip; when it returns, the
    /// flow's status shows it.
    pub async fn reset_flow(&self, id: &str) -> Result<(), CanoError> {
        self.ask(id, Command::Reset).await
    }

    /// Where flow `id` stands; `None` for an id no flow has.
    pub async fn status(&self, id: &str) -> Option<FlowInfo> {
        Some(self.inner.flows.get(id)?.shared.info().clone())
    }

    /// Every flow, in the order they were added.
    pub async fn list(&self) -> Vec<FlowInfo> {
        self.snapshot()
    }

    /// Whether any flow has a run going.
    pub async fn has_running_flows(&self) -> bool {
        self.inner
            .flows
            .values()
            .any(|flow| flow.shared.info().status == Status::Running)
    }

    fn snapshot(&self) -> Vec<FlowInfo> {
        self.inner
            .order
            .iter()
            .map(|id| self.inner.flows[id].shared.info().clone())
            .collect()
    }

    /// Stops scheduling, lets runs in flight finish for up to
    /// [`DEFAULT_STOP_GRACE`] (30 s, as cano 0.13), cancels those still going after
    /// it, waits for them, and tears the flows' resources down once.
    pub async fn stop(&self) -> Result<(), CanoError> {
        self.stop_with_grace(DEFAULT_STOP_GRACE).await
    }

    /// [`stop`](Self::stop) with a grace period of `grace` (`Duration::MAX`: runs
    /// finish on their own; zero: cancelled at once). Stopping again, from any handle,
    /// waits for the first stop and returns its result.
    pub async fn stop_with_grace(&self, grace: Duration) -> Result<(), CanoError> {
        // A grace past what the clock can name (`Duration::MAX`): runs finish on their own.
        let deadline = crate::clock::after(Instant::now(), grace);
        for flow in self.inner.flows.values() {
            let _ = flow.commands.send(Command::Stop { deadline });
        }
        let joins =
            std::mem::take(&mut *self.inner.joins.lock().unwrap_or_else(|p| p.into_inner()));
        if joins.is_empty() {
            // Stopped already (by another handle): wait for that to finish.
            return self.wait().await;
        }
        for join in joins {
            let _ = join.await;
        }
        let mut teardown = Ok(());
        for lifecycle in self.inner.lifecycles.iter().rev() {
            if let Err(e) = lifecycle(false).await {
                teardown = teardown.and(Err(e));
            }
        }
        self.inner.stopped.send_replace(Some(teardown.clone()));
        teardown
    }

    /// Waits until the scheduler has been stopped (by [`stop`](Self::stop) on any
    /// handle) and its resources torn down; returns what the stop returned.
    pub async fn wait(&self) -> Result<(), CanoError> {
        let mut stopped = self.inner.stopped.subscribe();
        match stopped.wait_for(Option::is_some).await {
            Ok(result) => result.clone().unwrap_or(Ok(())),
            // The sender lives in `inner`, which `self` holds: it cannot be gone.
            Err(_) => Ok(()),
        }
    }
}

impl<S, K> Debug for RunningScheduler<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningScheduler")
            .field("flows", &self.snapshot())
            .finish()
    }
}

/// Whether a resume check's error means the run can never be resumed by this build.
fn cannot_resume(error: &CanoError) -> bool {
    error.is_permanent()
        || matches!(
            error,
            CanoError::Configuration(_) | CanoError::WorkflowVersionMismatch(_)
        )
}

fn lock(set: &Mutex<HashSet<RunId>>) -> std::sync::MutexGuard<'_, HashSet<RunId>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

/// A run a flow is resuming; it may be resumed again once this is dropped.
struct Resuming(Arc<Mutex<HashSet<RunId>>>, RunId);

impl Drop for Resuming {
    fn drop(&mut self) {
        lock(&self.0).remove(&self.1);
    }
}
