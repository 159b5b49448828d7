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
