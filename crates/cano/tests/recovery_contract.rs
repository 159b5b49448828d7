//! Crash recovery through the facade: `use cano::prelude::*` is all a user needs.

use std::sync::atomic::{AtomicBool, Ordering};

use cano::prelude::*;
use cano::{DurableStore, RunId, RunOptions};

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Payment {
    Reserve { amount_cents: u64 },
    Charge,
    Done,
}

struct Reserve;
#[task]
impl Task<Payment> for Reserve {
    async fn run_bare(&self) -> Result<TaskResult<Payment>, CanoError> {
        DurableStore::current()?.put("reservation", &"res-17")?;
        Ok(TaskResult::Single(Payment::Charge))
    }
}

static GATEWAY_UP: AtomicBool = AtomicBool::new(false);

struct Charge;
#[task]
impl Task<Payment> for Charge {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Payment>, CanoError> {
        if !GATEWAY_UP.load(Ordering::SeqCst) {
            return Err(CanoError::task_execution("gateway down"));
        }
        let reservation: String = DurableStore::current()?.get("reservation")?;
        assert_eq!(reservation, "res-17");
        Ok(TaskResult::Single(Payment::Done))
    }
}

#[tokio::test]
async fn a_failed_run_on_sled_resumes_through_the_prelude() {
    let dir = tempfile::tempdir().unwrap();
    let start = Payment::Reserve {
        amount_cents: 1_999,
    };
    let workflow = Workflow::bare()
        .register(start.clone(), Reserve)
        .register(Payment::Charge, Charge)
        .add_exit_state(Payment::Done)
        .with_checkpoint_store(SledCheckpointStore::open(dir.path()).unwrap())
        .with_workflow_id("payments")
        .with_workflow_version(3);
    let run = RunId::new();
    let err = workflow
        .orchestrate_with(start, RunOptions::new().with_run_id(run))
        .await
        .unwrap_err();
    assert!(matches!(err, CanoError::TaskExecution(_)), "{err}");
    let waiting = workflow.unfinished_runs().await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].version, 3);
    GATEWAY_UP.store(true, Ordering::SeqCst);
    assert_eq!(workflow.resume_from(run).await.unwrap(), Payment::Done);
    assert!(workflow.unfinished_runs().await.unwrap().is_empty());
}
