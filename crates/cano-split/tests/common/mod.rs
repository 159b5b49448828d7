//! Test branches with scripted latency and outcome that report how they ended, and a
//! join task that keeps the split's result for the test to inspect.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cano_core::{CanoError, Task, TaskConfig, TaskResult, Workflow};
use cano_split::{JoinConfig, SplitExt, SplitResult};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum S {
    Fan,
    Join,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeed,
    Fail,
    Panic,
}

/// How a branch's future ended: it ran to the end, or was dropped (cancelled) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Finished(usize),
    Cancelled(usize),
}

/// What the branches of one test report.
pub struct Probe {
    running: AtomicUsize,
    pub max_running: AtomicUsize,
    /// The most tokio tasks alive in the runtime when a branch started.
    pub max_alive: AtomicUsize,
    pub attempts: AtomicUsize,
    /// Gains a permit each time a branch starts running.
    pub started: tokio::sync::Semaphore,
    ended: mpsc::UnboundedSender<Ended>,
}

impl Probe {
    pub fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Ended>) {
        quiet_branch_panics();
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(Self {
                running: AtomicUsize::new(0),
                max_running: AtomicUsize::new(0),
                max_alive: AtomicUsize::new(0),
                attempts: AtomicUsize::new(0),
                started: tokio::sync::Semaphore::new(0),
                ended: tx,
            }),
            rx,
        )
    }
}

/// Keeps the scripted branch panics out of the test output; every other panic (a
/// failing assertion) is reported as usual.
pub fn quiet_branch_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let scripted = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with("branch ") && m.ends_with(" panicked"));
            if !scripted {
                default(info);
            }
        }));
    });
}

/// Waits for `count` branch futures to end and returns the ids of those cancelled, sorted.
pub async fn cancelled_of(rx: &mut mpsc::UnboundedReceiver<Ended>, count: usize) -> Vec<usize> {
    let mut cancelled = Vec::new();
    for _ in 0..count {
        if let Ended::Cancelled(id) = rx.recv().await.expect("probe dropped") {
            cancelled.push(id);
        }
    }
    cancelled.sort();
    cancelled
}

struct Guard {
    id: usize,
    probe: Arc<Probe>,
    finished: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.probe.running.fetch_sub(1, Ordering::SeqCst);
        let ended = if self.finished {
            Ended::Finished(self.id)
        } else {
            Ended::Cancelled(self.id)
        };
        let _ = self.probe.ended.send(ended);
    }
}

/// A branch that waits `latency`, then ends as `outcome`.
pub struct Branch {
    pub id: usize,
    pub latency: Duration,
    pub outcome: Outcome,
    pub probe: Arc<Probe>,
    pub config: TaskConfig,
}

impl Branch {
    pub fn new(id: usize, latency_ms: u64, outcome: Outcome, probe: &Arc<Probe>) -> Self {
        Self {
            id,
            latency: Duration::from_millis(latency_ms),
            outcome,
            probe: probe.clone(),
            config: TaskConfig::minimal(),
        }
    }
}

#[async_trait]
impl Task<S> for Branch {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        self.probe.attempts.fetch_add(1, Ordering::SeqCst);
        let now = self.probe.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.probe.max_running.fetch_max(now, Ordering::SeqCst);
        let alive = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        self.probe.max_alive.fetch_max(alive, Ordering::SeqCst);
        self.probe.started.add_permits(1);
        let mut guard = Guard {
            id: self.id,
            probe: self.probe.clone(),
            finished: false,
        };
        tokio::time::sleep(self.latency).await;
        guard.finished = true;
        drop(guard);
        match self.outcome {
            Outcome::Succeed => Ok(TaskResult::Single(S::Join)),
            Outcome::Fail => Err(CanoError::task_execution(format!(
                "branch {} failed",
                self.id
            ))),
            Outcome::Panic => panic!("branch {} panicked", self.id),
        }
    }

    fn config(&self) -> TaskConfig {
        self.config.clone()
    }
}

pub type Seen = Arc<Mutex<Option<Arc<SplitResult<S>>>>>;

/// The join state's task: keeps the split's result.
pub struct Collect(pub Seen);

#[async_trait]
impl Task<S> for Collect {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        let result = SplitResult::<S>::of(&S::Fan)?;
        *self.0.lock().unwrap() = Some(result);
        Ok(TaskResult::Single(S::Done))
    }
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
}

/// Fan → (split) → Join → Done, with the split's result kept in the returned slot.
pub fn split_workflow(branches: Vec<Branch>, join: JoinConfig<S>) -> (Workflow<S>, Seen) {
    let seen: Seen = Arc::default();
    let workflow = Workflow::bare()
        .register_split(S::Fan, branches, join)
        .register(S::Join, Collect(seen.clone()))
        .add_exit_state(S::Done);
    (workflow, seen)
}

pub fn taken(seen: &Seen) -> Arc<SplitResult<S>> {
    seen.lock().unwrap().clone().expect("the join state ran")
}

pub fn ids<'a>(it: impl Iterator<Item = (usize, impl Sized + 'a)>) -> Vec<usize> {
    it.map(|(i, _)| i).collect()
}
