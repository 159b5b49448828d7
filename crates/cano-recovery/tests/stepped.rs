//! Stepped tasks: the cursor is saved after each step and a resumed run continues
//! from the last one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cano_core::checkpoint::DurableStore;
use cano_core::{CanoError, Resources, RunId, RunOptions, TaskConfig, Workflow};
use cano_recovery::{MemoryCheckpointStore, StepOutcome, SteppedTask, SteppedWorkflow};

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Sync {
    Copy,
    Done,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Page {
    number: u32,
    token: String,
}

/// Copies ten pages; fails once when it reaches `fail_at`.
struct CopyPages {
    seen: Arc<Mutex<Vec<Option<u32>>>>,
    fail_at: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl SteppedTask<Sync> for CopyPages {
    type Cursor = Page;

    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }

    async fn step(
        &self,
        _: &Resources,
        cursor: Option<Page>,
    ) -> Result<StepOutcome<Page, Sync>, CanoError> {
        self.seen
            .lock()
            .unwrap()
            .push(cursor.as_ref().map(|c| c.number));
        let number = cursor.map_or(0, |c| c.number + 1);
        if number as usize == self.fail_at.load(Ordering::SeqCst) {
            self.fail_at.store(usize::MAX, Ordering::SeqCst);
            return Err(CanoError::task_execution("the source went away"));
        }
        DurableStore::current()?.update("copied", |n: Option<u32>| n.unwrap_or(0) + 1)?;
        if number == 9 {
            return Ok(StepOutcome::done(Sync::Done));
        }
        Ok(StepOutcome::More(Page {
            number,
            token: format!("after-{number}"),
        }))
    }
}

#[tokio::test]
async fn a_resumed_stepped_state_continues_from_its_last_cursor() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fail_at = Arc::new(AtomicUsize::new(6));
    let store = MemoryCheckpointStore::new();
    let workflow = Workflow::bare()
        .register_stepped(
            Sync::Copy,
            CopyPages {
                seen: seen.clone(),
                fail_at: fail_at.clone(),
            },
        )
        .add_exit_state(Sync::Done)
        .with_checkpoint_store(store.clone())
        .with_retention(cano_core::Retention::KeepFinished);
    let run = RunId::new();
    workflow
        .orchestrate_with(Sync::Copy, RunOptions::new().with_run_id(run))
        .await
        .unwrap_err();
    assert_eq!(workflow.resume_from(run).await.unwrap(), Sync::Done);
    let seen = seen.lock().unwrap().clone();
    // Steps 0..=5 done, step 6 failed; the resume starts from page 5's cursor.
    let expected: Vec<Option<u32>> = [None]
        .into_iter()
        .chain((0..6).map(Some))
        .chain((5..9).map(Some))
        .collect();
    assert_eq!(seen, expected);
    let rows = store.rows();
    let point = cano_core::checkpoint::replay(run, &rows, workflow.workflow_id(), 1).unwrap();
    assert_eq!(
        point.durable.get::<u32>("copied").unwrap(),
        10,
        "each page counted once"
    );
}

#[tokio::test]
async fn a_stepped_task_runs_without_a_store_too() {
    struct Count;
    #[async_trait::async_trait]
    impl SteppedTask<Sync> for Count {
        type Cursor = u32;
        async fn step(
            &self,
            _: &Resources,
            n: Option<u32>,
        ) -> Result<StepOutcome<u32, Sync>, CanoError> {
            let n = n.unwrap_or(0) + 1;
            Ok(if n == 1_000 {
                StepOutcome::done(Sync::Done)
            } else {
                StepOutcome::More(n)
            })
        }
    }
    let workflow = Workflow::bare()
        .register_stepped(Sync::Copy, Count)
        .add_exit_state(Sync::Done);
    assert_eq!(workflow.orchestrate(Sync::Copy).await.unwrap(), Sync::Done);
    let states = workflow.states();
    assert_eq!(states[0].1.kind, "stepped");
}

#[tokio::test]
async fn a_cursor_of_another_type_is_a_clear_error() {
    let store = MemoryCheckpointStore::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let workflow = Workflow::bare()
        .register_stepped(
            Sync::Copy,
            CopyPages {
                seen: seen.clone(),
                fail_at: Arc::new(AtomicUsize::new(2)),
            },
        )
        .add_exit_state(Sync::Done)
        .with_checkpoint_store(store.clone());
    let run = RunId::new();
    workflow
        .orchestrate_with(Sync::Copy, RunOptions::new().with_run_id(run))
        .await
        .unwrap_err();

    struct Numbers;
    #[async_trait::async_trait]
    impl SteppedTask<Sync> for Numbers {
        type Cursor = (u64, u64, u64);
        async fn step(
            &self,
            _: &Resources,
            _: Option<Self::Cursor>,
        ) -> Result<StepOutcome<Self::Cursor, Sync>, CanoError> {
            Ok(StepOutcome::done(Sync::Done))
        }
    }
    let err = Workflow::bare()
        .register_stepped(Sync::Copy, Numbers)
        .add_exit_state(Sync::Done)
        .with_checkpoint_store(store)
        .resume_from(run)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("saved cursor of stepped task `Numbers`"),
        "{err}"
    );
}
