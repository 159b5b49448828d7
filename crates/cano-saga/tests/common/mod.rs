//! Fixtures shared by the saga tests: an order workflow whose steps log what they do
//! and undo, with compensations that behave as each test needs.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use cano_core::{CanoError, Resources, RunId, RunObserver, Task, TaskConfig, TaskResult, Workflow};
use cano_saga::CompensatableTask;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Order {
    Reserve,
    Charge,
    Ship,
    Done,
}

/// What happened, in order: "do Reserve", "undo Charge", ...
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, line: impl Into<String>) {
        self.0.lock().unwrap().push(line.into());
    }
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn count(&self, line: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|l| *l == line).count()
    }
}

/// How a compensation behaves.
#[derive(Clone, Copy, Debug)]
pub enum Undo {
    Works,
    /// Fails this many attempts, then works.
    FailsFirst(usize),
    FailsAlways,
    Panics,
    Hangs,
}

/// A compensatable step: logs `do <name>`, returns `<name>-output` and moves to `next`;
/// its compensation logs `undo <name> <output>` when it works.
pub struct Step {
    pub name: &'static str,
    pub next: Order,
    pub log: Log,
    pub undo: Undo,
    pub undo_attempts: Arc<AtomicUsize>,
    pub undo_config: TaskConfig,
    /// When set, the next compensation signals it and never ends (a crash is then
    /// simulated by dropping the run).
    pub hang_once: Mutex<Option<Arc<Notify>>>,
}

impl Step {
    pub fn new(name: &'static str, next: Order, log: &Log) -> Self {
        Self {
            name,
            next,
            log: log.clone(),
            undo: Undo::Works,
            undo_attempts: Arc::default(),
            undo_config: TaskConfig::minimal(),
            hang_once: Mutex::new(None),
        }
    }

    pub fn hang_undo_once(self, signal: &Arc<Notify>) -> Self {
        *self.hang_once.lock().unwrap() = Some(signal.clone());
        self
    }

    pub fn undo(mut self, undo: Undo) -> Self {
        self.undo = undo;
        self
    }

    pub fn undo_config(mut self, config: TaskConfig) -> Self {
        self.undo_config = config;
        self
    }
}

#[async_trait::async_trait]
impl CompensatableTask<Order> for Step {
    type Output = String;

    async fn run(&self, _: &Resources) -> Result<(TaskResult<Order>, String), CanoError> {
        self.log.push(format!("do {}", self.name));
        Ok((
            TaskResult::Single(self.next.clone()),
            format!("{}-output", self.name),
        ))
    }

    async fn compensate(&self, _: &Resources, output: String) -> Result<(), CanoError> {
        let attempt = self.undo_attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let gate = self.hang_once.lock().unwrap().take();
        if let Some(signal) = gate {
            self.log.push(format!("undo {} started", self.name));
            signal.notify_one();
            std::future::pending::<()>().await;
        }
        match self.undo {
            Undo::Works => {}
            Undo::FailsFirst(n) if attempt > n => {}
            Undo::FailsFirst(_) | Undo::FailsAlways => {
                return Err(CanoError::task_execution(format!(
                    "{} cannot be undone (attempt {attempt})",
                    self.name
                )));
            }
            Undo::Panics => panic!("{} compensation panicked", self.name),
            Undo::Hangs => std::future::pending::<()>().await,
        }
        self.log.push(format!("undo {} {output}", self.name));
        Ok(())
    }

    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }

    fn compensation_config(&self) -> TaskConfig {
        self.undo_config.clone()
    }

    fn name(&self) -> std::borrow::Cow<'static, str> {
        self.name.into()
    }
}

/// The last step, which fails (or succeeds) as the test says.
pub struct Ship {
    pub log: Log,
    pub fails: bool,
}

/// The last step, failing or not.
pub fn ship(log: &Log, fails: bool) -> Ship {
    Ship {
        log: log.clone(),
        fails,
    }
}

/// The two saga steps of the order, with compensations that work.
pub fn steps(log: &Log) -> (Step, Step) {
    (
        Step::new("Reserve", Order::Charge, log),
        Step::new("Charge", Order::Ship, log),
    )
}

/// Reserve → Charge (both compensatable) → `ship` → Done.
pub fn order(reserve: Step, charge: Step, ship: impl Task<Order> + 'static) -> Workflow<Order> {
    use cano_saga::SagaExt;
    Workflow::bare()
        .register_with_compensation(Order::Reserve, reserve)
        .register_with_compensation(Order::Charge, charge)
        .register(Order::Ship, ship)
        .add_exit_state(Order::Done)
}

/// A last step that signals it started and never ends.
pub struct Stuck(pub Arc<Notify>);

#[async_trait::async_trait]
impl Task<Order> for Stuck {
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        self.0.notify_one();
        std::future::pending().await
    }
}

/// Drives `run` until `signal` fires, then drops it: the process "crashed" there.
pub async fn crash_when<F: std::future::Future>(run: F, signal: &Notify)
where
    F::Output: std::fmt::Debug,
{
    tokio::select! {
        outcome = run => panic!("the run ended before the crash point: {outcome:?}"),
        () = signal.notified() => {}
    }
}

#[async_trait::async_trait]
impl Task<Order> for Ship {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        if self.fails {
            self.log.push("ship failed");
            return Err(CanoError::task_execution("the carrier refused the parcel"));
        }
        self.log.push("do Ship");
        Ok(TaskResult::Single(Order::Done))
    }
}

/// Records compensation events with their run ids.
#[derive(Default)]
pub struct Events(pub Mutex<Vec<(RunId, String)>>);

impl Events {
    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }
}

impl RunObserver for Events {
    fn compensation_started(&self, run: RunId, state: &dyn std::fmt::Debug, task: &str) {
        self.0
            .lock()
            .unwrap()
            .push((run, format!("start {state:?} {task}")));
    }
    fn compensation_succeeded(&self, run: RunId, state: &dyn std::fmt::Debug, task: &str) {
        self.0
            .lock()
            .unwrap()
            .push((run, format!("undone {state:?} {task}")));
    }
    fn compensation_failed(
        &self,
        run: RunId,
        state: &dyn std::fmt::Debug,
        task: &str,
        _: &CanoError,
    ) {
        self.0
            .lock()
            .unwrap()
            .push((run, format!("failed {state:?} {task}")));
    }
}

/// Long enough that a test on the paused clock never reaches it by accident.
pub const LONG: Duration = Duration::from_secs(3600);
