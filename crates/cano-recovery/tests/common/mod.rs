//! A small checkpointed pipeline shared by the recovery tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cano_core::checkpoint::DurableStore;
use cano_core::{CanoError, Task, TaskConfig, TaskResult, Workflow};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Step {
    Start,
    Fetch { page: u32, source: String },
    Transform,
    Load,
    Done,
}

/// What ran, in order, across every run and resume of a test.
#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<Vec<String>>>);

impl Ledger {
    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A task that records itself in the ledger and the run's durable data, then moves on;
/// it fails while `failures` is above zero (counting down).
pub struct Hop {
    pub name: &'static str,
    pub next: Step,
    pub ledger: Ledger,
    pub failures: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Task<Step> for Hop {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        self.ledger.push(self.name);
        let durable = DurableStore::current()?;
        durable.update("visited", |v: Option<Vec<String>>| {
            let mut v = v.unwrap_or_default();
            v.push(self.name.to_owned());
            v
        })?;
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(CanoError::task_execution(format!(
                "{} failed on purpose",
                self.name
            )));
        }
        Ok(TaskResult::Single(self.next.clone()))
    }
}

/// Start → Fetch{page 2} → Transform → Load → Done. `fail_at` names the task that fails
/// (once per unit in the returned counter).
pub fn pipeline(ledger: &Ledger, fail_at: &str) -> (Workflow<Step>, Arc<AtomicUsize>) {
    let failures = Arc::new(AtomicUsize::new(0));
    let hop = |name: &'static str, next: Step| Hop {
        name,
        next,
        ledger: ledger.clone(),
        failures: if name == fail_at {
            failures.clone()
        } else {
            Arc::new(AtomicUsize::new(0))
        },
    };
    let workflow = Workflow::bare()
        .register(
            Step::Start,
            hop(
                "start",
                Step::Fetch {
                    page: 2,
                    source: "api".into(),
                },
            ),
        )
        .register(
            Step::Fetch {
                page: 2,
                source: "api".into(),
            },
            hop("fetch", Step::Transform),
        )
        .register(Step::Transform, hop("transform", Step::Load))
        .register(Step::Load, hop("load", Step::Done))
        .add_exit_state(Step::Done);
    (workflow, failures)
}

/// A memory store with faults: appends that fail once `appends_left` runs out (a full
/// disk), a `load` that returns an older log (a second process that read first), and
/// truncation ignored (so a test keeps every row written).
#[derive(Default)]
pub struct FaultyStore {
    pub inner: cano_recovery::MemoryCheckpointStore,
    pub appends_left: Mutex<Option<usize>>,
    pub stale_rows: Option<Vec<cano_core::CheckpointRow>>,
    pub keep_truncated: bool,
}

#[async_trait::async_trait]
impl cano_core::CheckpointStore for FaultyStore {
    async fn append(&self, row: cano_core::CheckpointRow) -> Result<(), CanoError> {
        if let Some(left) = self.appends_left.lock().unwrap().as_mut() {
            if *left == 0 {
                return Err(CanoError::store("No space left on device (os error 28)"));
            }
            *left -= 1;
        }
        self.inner.append(row).await
    }
    async fn load(
        &self,
        run: cano_core::RunId,
    ) -> Result<Vec<cano_core::CheckpointRow>, CanoError> {
        match &self.stale_rows {
            Some(rows) => Ok(rows.clone()),
            None => self.inner.load(run).await,
        }
    }
    async fn truncate(&self, run: cano_core::RunId, before: u64) -> Result<(), CanoError> {
        if self.keep_truncated {
            return Ok(());
        }
        self.inner.truncate(run, before).await
    }
    async fn clear(&self, run: cano_core::RunId) -> Result<(), CanoError> {
        self.inner.clear(run).await
    }
    async fn unfinished(&self) -> Result<Vec<cano_core::RunSummary>, CanoError> {
        self.inner.unfinished().await
    }
    async fn prune(&self, older_than: std::time::SystemTime) -> Result<usize, CanoError> {
        self.inner.prune(older_than).await
    }
}

/// Runs the pipeline once on `store` with the task `fail_at` failing once, so the run
/// stops there with a `Fail` row; returns its id. `workflow_id` replaces the default.
pub async fn failed_run(
    ledger: &Ledger,
    fail_at: &str,
    store: impl cano_core::CheckpointStore,
    workflow_id: Option<&str>,
) -> cano_core::RunId {
    let (workflow, failures) = pipeline(ledger, fail_at);
    failures.store(1, Ordering::SeqCst);
    let workflow = match workflow_id {
        Some(id) => workflow.with_workflow_id(id),
        None => workflow,
    };
    let run = cano_core::RunId::new();
    workflow
        .with_checkpoint_store(store)
        .orchestrate_with(Step::Start, cano_core::RunOptions::new().with_run_id(run))
        .await
        .unwrap_err();
    run
}
