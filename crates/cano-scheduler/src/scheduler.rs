//! [`Scheduler`] (the builder) and [`RunningScheduler`] (the live handle).

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cano_core::{
    CanoError, ResourceKey, ResourceLifecycle, Resources, RunId, RunOptions, RunStatus, Workflow,
    WorkflowState,
};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::flow::{Command, FlowInfo, FlowSpec, RunFuture, Runner, Shared, Status, drive};
use crate::policy::FlowPolicy;
use crate::schedule::Schedule;

/// Sets up or tears down one workflow's resources.
type Lifecycle = Arc<dyn Fn(bool) -> BoxFuture<'static, Result<(), CanoError>> + Send + Sync>;

/// Builds a set of scheduled flows; [`start`](Self::start) runs them.
///
/// Each flow is a workflow, the state its runs start in, a [`Schedule`] and a
/// [`FlowPolicy`]. Flows of different state types live in one scheduler. Every run
/// gets its own run id; with a checkpoint store, a run of the flow that crashed (left
/// interrupted) is resumed in place of the next fresh run.
#[derive(Default)]
pub struct Scheduler {
    flows: Vec<FlowSpec>,
    /// The ids taken, so a duplicate is found without comparing every flow.
    ids: std::collections::HashSet<String>,
    lifecycles: Vec<(usize, Lifecycle)>,
    origin: Option<DateTime<Utc>>,
}

impl Scheduler {
    /// A scheduler with no flows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds flow `id`: runs of `workflow` from `initial`, on `schedule`, handled as
    /// `policy` says. A second flow with the same id is an error.
    pub fn flow<S, K>(
        mut self,
        id: impl Into<String>,
        workflow: Workflow<S, K>,
        initial: S,
        schedule: Schedule,
        policy: FlowPolicy,
    ) -> Result<Self, CanoError>
    where
        S: WorkflowState,
        K: ResourceKey,
    {
        let id = id.into();
        if !self.ids.insert(id.clone()) {
            return Err(
                CanoError::configuration(format!("flow {id:?} is registered twice"))
                    .with_hint("give each flow its own id"),
            );
        }
        workflow
            .validate()
            .map_err(|e| CanoError::configuration(format!("flow {id:?}: {e}")).with_source(e))?;
        // Resources are set up once at start and torn down once at stop, not per run.
        let workflow = workflow.with_resource_lifecycle(ResourceLifecycle::External);
        let resources = workflow.resources().clone();
        let key = Arc::as_ptr(&resources) as *const () as usize;
        if !self.lifecycles.iter().any(|(k, _)| *k == key) {
            let lifecycle: Lifecycle = Arc::new(move |up| {
                let resources: Arc<Resources<K>> = resources.clone();
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
        // Interrupted runs this flow is resuming now: each is resumed once at a time.
        let resuming: Arc<Mutex<HashSet<RunId>>> = Arc::default();
        let runner: Runner = Arc::new(move |options: RunOptions, shared: Arc<Shared>| {
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
        });
        self.flows.push(FlowSpec {
            id,
            schedule,
            policy,
            runner,
        });
        Ok(self)
    }

    /// Adds a flow on cron expression `expr` (UTC), with the default policy.
    pub fn cron<S: WorkflowState, K: ResourceKey>(
        self,
        id: impl Into<String>,
        workflow: Workflow<S, K>,
        initial: S,
        expr: &str,
    ) -> Result<Self, CanoError> {
        let schedule = Schedule::cron(expr)?;
        self.flow(id, workflow, initial, schedule, FlowPolicy::default())
    }

    /// Adds a flow run every `period` (fixed delay), with the default policy.
    pub fn every<S: WorkflowState, K: ResourceKey>(
        self,
        id: impl Into<String>,
        workflow: Workflow<S, K>,
        initial: S,
        period: Duration,
    ) -> Result<Self, CanoError> {
        let schedule = Schedule::every(period)?;
        self.flow(id, workflow, initial, schedule, FlowPolicy::default())
    }

    /// Adds a flow that runs only when triggered.
    pub fn manual<S: WorkflowState, K: ResourceKey>(
        self,
        id: impl Into<String>,
        workflow: Workflow<S, K>,
        initial: S,
    ) -> Result<Self, CanoError> {
        self.flow(
            id,
            workflow,
            initial,
            Schedule::manual(),
            FlowPolicy::default(),
        )
    }

    /// Reads the wall clock as `now` when the scheduler starts, and from there as
    /// tokio's clock advances: for tests on a paused clock and for simulations. By
    /// default the system clock is read anew for every cron computation, so a clock
    /// step or a suspend of the machine moves no later tick.
    pub fn with_clock_origin(mut self, now: DateTime<Utc>) -> Self {
        self.origin = Some(now);
        self
    }

    /// Sets every flow's resources up (once each) and starts the flows. Must be called
    /// from within a tokio runtime. A resource that fails to set up fails the start,
    /// after tearing down the ones already set up.
    pub async fn start(self) -> Result<RunningScheduler, CanoError> {
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
        let (stopped, _) = watch::channel(false);
        Ok(RunningScheduler {
            inner: Arc::new(Inner {
                flows,
                order,
                joins: std::sync::Mutex::new(joins),
                lifecycles: set_up,
                stopped,
            }),
        })
    }
}

impl Debug for Scheduler {
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
    stopped: watch::Sender<bool>,
}

/// A started scheduler. Clones share it: one can [`wait`](Self::wait) while another
/// [`stop`](Self::stop)s it. Dropping every handle without stopping stops scheduling
/// and lets runs in flight finish, but tears no resource down: call `stop`.
#[derive(Clone)]
pub struct RunningScheduler {
    inner: Arc<Inner>,
}

impl RunningScheduler {
    fn flow(&self, id: &str) -> Result<&FlowHandle, CanoError> {
        self.inner.flows.get(id).ok_or_else(|| {
            let known = self.inner.order.join(", ");
            CanoError::configuration(format!("no flow is called {id:?} (flows: {known})"))
                .with_hint("use the id the flow was registered with")
        })
    }

    fn send(&self, id: &str, command: Command) -> Result<(), CanoError> {
        let flow = self.flow(id)?;
        flow.commands.send(command).map_err(|_| {
            CanoError::workflow(format!("flow {id:?} has stopped"))
                .with_hint("the scheduler was stopped; start a new one")
        })
    }

    /// Starts a run of flow `id` now (as its overlap policy allows). A tripped flow
    /// refuses until it is reset.
    pub fn trigger(&self, id: &str) -> Result<(), CanoError> {
        if self.flow(id)?.shared.info().status == Status::Tripped {
            return Err(CanoError::workflow(format!(
                "flow {id:?} is tripped after too many failures in a row"
            ))
            .with_hint("fix the cause, then RunningScheduler::reset_flow"));
        }
        self.send(id, Command::Trigger)
    }

    /// Cancels flow `id`'s runs in flight (its schedule goes on). A cancelled run does
    /// not count as a failure.
    pub fn cancel_flow(&self, id: &str) -> Result<(), CanoError> {
        self.send(id, Command::Cancel)
    }

    /// Clears flow `id`'s failure streak, backoff and trip.
    pub fn reset_flow(&self, id: &str) -> Result<(), CanoError> {
        self.send(id, Command::Reset)
    }

    /// Where flow `id` stands.
    pub fn status(&self, id: &str) -> Result<FlowInfo, CanoError> {
        Ok(self.flow(id)?.shared.info().clone())
    }

    /// Every flow, in the order they were added.
    pub fn list(&self) -> Vec<FlowInfo> {
        self.inner
            .order
            .iter()
            .map(|id| self.inner.flows[id].shared.info().clone())
            .collect()
    }

    /// Stops scheduling, lets runs in flight finish for up to `grace`, cancels those
    /// still going after it, waits for them, and tears the flows' resources down once.
    pub async fn stop(&self, grace: Duration) -> Result<(), CanoError> {
        // A grace past what the clock can name (`Duration::MAX`): runs finish on their own.
        let deadline = crate::clock::after(Instant::now(), grace);
        for flow in self.inner.flows.values() {
            let _ = flow.commands.send(Command::Stop { deadline });
        }
        let joins =
            std::mem::take(&mut *self.inner.joins.lock().unwrap_or_else(|p| p.into_inner()));
        if joins.is_empty() {
            // Stopped already (by another handle): wait for that to finish.
            self.wait().await;
            return Ok(());
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
        self.inner.stopped.send_replace(true);
        teardown
    }

    /// Waits until the scheduler has been stopped (by [`stop`](Self::stop) on any
    /// handle) and its resources torn down.
    pub async fn wait(&self) {
        let mut stopped = self.inner.stopped.subscribe();
        let _ = stopped.wait_for(|s| *s).await;
    }
}

impl Debug for RunningScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningScheduler")
            .field("flows", &self.list())
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
