//! Logs and stores that cannot be trusted: each is a clear error naming the run and the
//! row, nothing already written is lost, and no run silently starts over.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cano_core::{CanoError, CheckpointStore, RunId, RunOptions, Task, TaskResult, Workflow};
use cano_recovery::MemoryCheckpointStore;
use common::{Ledger, Step, pipeline};

async fn failed_run(store: &MemoryCheckpointStore, fail_at: &str) -> RunId {
    common::failed_run(&Ledger::default(), fail_at, store.clone(), Some("orders")).await
}

fn orders(ledger: &Ledger) -> Workflow<Step> {
    pipeline(ledger, "").0.with_workflow_id("orders")
}

#[tokio::test]
async fn another_version_is_refused_with_a_version_mismatch() {
    let store = MemoryCheckpointStore::new();
    let run = failed_run(&store, "load").await;
    let ledger = Ledger::default();
    let err = orders(&ledger)
        .with_checkpoint_store(store.clone())
        .with_workflow_version(2)
        .resume_from(run)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CanoError::WorkflowVersionMismatch(_)),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("version 1") && text.contains("version 2"),
        "{text}"
    );
    assert!(ledger.entries().is_empty(), "nothing ran");
    assert_eq!(store.load(run).await.unwrap().len(), 5, "no row lost");
}

#[tokio::test]
async fn rows_of_another_workflow_are_refused() {
    let store = MemoryCheckpointStore::new();
    let run = failed_run(&store, "load").await;
    let err = orders(&Ledger::default())
        .with_workflow_id("invoices")
        .with_checkpoint_store(store)
        .resume_from(run)
        .await
        .unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)), "{err}");
    assert!(err.to_string().contains("\"orders\""), "{err}");
}

#[tokio::test]
async fn a_state_that_no_longer_exists_is_a_clear_error() {
    #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
    enum Renamed {
        Start,
        Done,
    }
    struct Go;
    #[async_trait::async_trait]
    impl Task<Renamed> for Go {
        async fn run_bare(&self) -> Result<TaskResult<Renamed>, CanoError> {
            Ok(TaskResult::Single(Renamed::Done))
        }
    }
    let store = MemoryCheckpointStore::new();
    // Failed in Load, the fourth variant: the new type has only two.
    let run = failed_run(&store, "load").await;
    let err = Workflow::bare()
        .register(Renamed::Start, Go)
        .add_exit_state(Renamed::Done)
        .with_workflow_id("orders")
        .with_checkpoint_store(store.clone())
        .resume_from(run)
        .await
        .unwrap_err();
    let text = err.to_string();
    // The state type changed under the run: refused like another version's run.
    assert!(
        matches!(err, CanoError::WorkflowVersionMismatch(_)),
        "{text}"
    );
    assert!(
        text.contains("row 4") && text.contains("`Load`") && text.contains(&run.to_string()),
        "{text}"
    );

    // Decodes, but has no handler any more.
    let ledger = Ledger::default();
    let start_only = common::Hop {
        name: "start",
        next: Step::Done,
        ledger: ledger.clone(),
        failures: Arc::new(AtomicUsize::new(0)),
    };
    let err = Workflow::bare()
        .register(Step::Start, start_only)
        .add_exit_state(Step::Done)
        .with_workflow_id("orders")
        .with_checkpoint_store(store.clone())
        .resume_from(run)
        .await
        .unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)), "{err}");
    assert!(err.to_string().contains("re-enters state Load"), "{err}");
    assert!(ledger.entries().is_empty());
}

#[tokio::test]
async fn an_unknown_run_is_an_error_not_a_fresh_start() {
    let ledger = Ledger::default();
    let err = orders(&ledger)
        .with_checkpoint_store(MemoryCheckpointStore::new())
        .resume_from(RunId::from(77))
        .await
        .unwrap_err();
    assert!(matches!(err, CanoError::Store(_)));
    assert!(err.to_string().contains("000000000000004d"), "{err}");
    assert!(ledger.entries().is_empty());

    let err = orders(&ledger)
        .resume_from(RunId::from(77))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CanoError::Configuration(_)),
        "no store: {err}"
    );
}

#[tokio::test]
async fn gaps_foreign_rows_and_missing_snapshots_are_refused() {
    let store = MemoryCheckpointStore::new();
    let run = failed_run(&store, "load").await;
    let rows = store.load(run).await.unwrap();
    let workflow = orders(&Ledger::default());
    let id = workflow.workflow_id().to_owned();

    let mut gap = rows.clone();
    gap.remove(2);
    let err = cano_core::checkpoint::replay(run, &gap, &id, 1).unwrap_err();
    assert!(
        err.to_string().contains("row 3") && err.to_string().contains("follows row 1"),
        "{err}"
    );

    let mut foreign = rows.clone();
    foreign[1].run = RunId::from(5);
    let err = cano_core::checkpoint::replay(run, &foreign, &id, 1).unwrap_err();
    assert!(err.to_string().contains("belongs to run"), "{err}");

    let headless = rows[1..].to_vec();
    let err = cano_core::checkpoint::replay(run, &headless, &id, 1).unwrap_err();
    assert!(err.to_string().contains("without a snapshot"), "{err}");
}

#[tokio::test]
async fn two_resumers_of_one_run_never_both_drive_it() {
    // In one process: the second is refused while the first runs.
    let store = MemoryCheckpointStore::new();
    let run = failed_run(&store, "transform").await;
    let started = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::new(tokio::sync::Notify::new());
    struct Wait(Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>);
    #[async_trait::async_trait]
    impl Task<Step> for Wait {
        async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
            self.0.notify_one();
            self.1.notified().await;
            Ok(TaskResult::Single(Step::Done))
        }
    }
    let workflow = Workflow::bare()
        .register(Step::Transform, Wait(started.clone(), gate.clone()))
        .add_exit_state(Step::Done)
        .with_workflow_id("orders")
        .with_checkpoint_store(store.clone());
    let first = workflow.spawn_resume(run);
    started.notified().await;
    let err = workflow.resume_from(run).await.unwrap_err();
    assert!(
        err.to_string().contains("already running in this process"),
        "{err}"
    );
    gate.notify_one();
    assert_eq!(first.await.unwrap(), Step::Done);

    // From two places that both read the log before either wrote (two processes on a
    // shared store): the store's append rule lets one claim through.
    let run = failed_run(&store, "transform").await;
    let rows = store.load(run).await.unwrap();
    let mut claim = rows.last().unwrap().clone();
    claim.seq += 1;
    claim.kind = cano_core::RowKind::Resume;
    store.append(claim).await.unwrap();
    let err = orders(&Ledger::default())
        .with_checkpoint_store(common::FaultyStore {
            inner: store.clone(),
            stale_rows: Some(rows),
            ..Default::default()
        })
        .resume_from(run)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("another process or task is driving this run"),
        "{err}"
    );
}

#[tokio::test]
async fn a_store_failing_mid_run_stops_the_run_and_keeps_every_row_written() {
    let inner = MemoryCheckpointStore::new();
    let store = Arc::new(common::FaultyStore {
        inner: inner.clone(),
        appends_left: Mutex::new(Some(2)),
        ..Default::default()
    });
    let ledger = Ledger::default();
    let workflow = orders(&ledger).with_shared_checkpoint_store(store.clone());
    let run = RunId::new();
    let err = workflow
        .orchestrate_with(Step::Start, RunOptions::new().with_run_id(run))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CanoError::Store(_)), "{text}");
    assert!(
        text.contains("row 2") && text.contains("No space left") && text.contains(&run.to_string()),
        "{text}"
    );
    assert_eq!(err.state(), Some("Transform"));
    // The state whose row could not be written did not run.
    assert_eq!(ledger.entries(), ["start", "fetch"]);
    assert_eq!(inner.load(run).await.unwrap().len(), 2);

    // Disk freed: the run goes on from its last row, not from the start.
    *store.appends_left.lock().unwrap() = None;
    assert_eq!(workflow.resume_from(run).await.unwrap(), Step::Done);
    assert_eq!(
        ledger.entries(),
        ["start", "fetch", "fetch", "transform", "load"]
    );
}

#[tokio::test]
async fn a_new_run_cannot_reuse_the_id_of_a_run_with_rows() {
    let store = MemoryCheckpointStore::new();
    let run = failed_run(&store, "load").await;
    let ledger = Ledger::default();
    let err = orders(&ledger)
        .with_checkpoint_store(store)
        .orchestrate_with(Step::Start, RunOptions::new().with_run_id(run))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("already has checkpoint rows"),
        "{err}"
    );
    assert!(ledger.entries().is_empty());
}

#[tokio::test]
async fn a_state_that_cannot_be_encoded_fails_the_run_before_its_task() {
    #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize)]
    enum Odd {
        Fine,
        Broken,
        Done,
    }
    impl serde::Serialize for Odd {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                Odd::Broken => Err(serde::ser::Error::custom("cannot encode Broken")),
                Odd::Fine => s.serialize_unit_variant("Odd", 0, "Fine"),
                Odd::Done => s.serialize_unit_variant("Odd", 2, "Done"),
            }
        }
    }
    let ran = Arc::new(AtomicUsize::new(0));
    struct To(Odd, Arc<AtomicUsize>);
    #[async_trait::async_trait]
    impl Task<Odd> for To {
        async fn run_bare(&self) -> Result<TaskResult<Odd>, CanoError> {
            self.1.fetch_add(1, Ordering::SeqCst);
            Ok(TaskResult::Single(self.0.clone()))
        }
    }
    let err = Workflow::bare()
        .register(Odd::Fine, To(Odd::Broken, ran.clone()))
        .register(Odd::Broken, To(Odd::Done, ran.clone()))
        .add_exit_state(Odd::Done)
        .with_checkpoint_store(MemoryCheckpointStore::new())
        .orchestrate(Odd::Fine)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("could not encode state Broken"),
        "{err}"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}
