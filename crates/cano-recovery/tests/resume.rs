//! Resuming runs from their checkpoint logs: what runs again, what does not, and what
//! the run's durable data holds afterwards.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use cano_core::checkpoint::{DurableStore, RowKind, RunStatus};
use cano_core::{
    CanoError, CheckpointStore, Retention, RunId, RunObserver, RunOptions, Task, TaskResult,
    Workflow,
};
use cano_recovery::MemoryCheckpointStore;
use common::{Ledger, Step, pipeline};

fn options(run: RunId) -> RunOptions {
    RunOptions::new().with_run_id(run)
}

#[tokio::test]
async fn a_row_is_written_on_entering_each_state_before_its_task_runs() {
    let store = MemoryCheckpointStore::new();

    struct Peek(MemoryCheckpointStore, Arc<Mutex<Vec<(RowKind, String)>>>);
    #[async_trait::async_trait]
    impl Task<Step> for Peek {
        async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
            let last = self.0.rows().last().cloned().unwrap();
            self.1.lock().unwrap().push((last.kind, last.label));
            Ok(TaskResult::Single(Step::Done))
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let workflow = Workflow::bare()
        .register(Step::Load, Peek(store.clone(), seen.clone()))
        .add_exit_state(Step::Done)
        .with_checkpoint_store(store.clone())
        .with_retention(Retention::KeepFinished);
    workflow.orchestrate(Step::Load).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [(RowKind::Enter, "Load".to_owned())]);
    let kinds: Vec<_> = store.rows().iter().map(|r| (r.seq, r.kind)).collect();
    assert_eq!(kinds, [(0, RowKind::Enter), (1, RowKind::Finish)]);
}

#[tokio::test]
async fn a_failed_run_resumes_in_the_failed_state_and_earlier_states_do_not_run_again() {
    let ledger = Ledger::default();
    let store = MemoryCheckpointStore::new();
    let (workflow, failures) = pipeline(&ledger, "transform");
    let workflow = workflow.with_checkpoint_store(store.clone());
    failures.store(1, Ordering::SeqCst);

    let run = RunId::new();
    let err = workflow
        .orchestrate_with(Step::Start, options(run))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("transform failed"), "{err}");
    let unfinished = workflow.unfinished_runs().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].status, RunStatus::Failed);
    assert_eq!(unfinished[0].label, "Transform");

    assert_eq!(workflow.resume_from(run).await.unwrap(), Step::Done);
    assert_eq!(
        ledger.entries(),
        ["start", "fetch", "transform", "transform", "load"]
    );
    // Cleared on finishing (the default retention).
    assert!(store.is_empty());
}

#[tokio::test]
async fn durable_data_is_what_was_written_up_to_the_last_row() {
    let ledger = Ledger::default();
    let store = MemoryCheckpointStore::new();
    let (workflow, failures) = pipeline(&ledger, "load");
    let workflow = workflow
        .with_checkpoint_store(store.clone())
        .with_retention(Retention::KeepFinished);
    failures.store(2, Ordering::SeqCst);
    let run = RunId::new();
    workflow
        .orchestrate_with(Step::Start, options(run))
        .await
        .unwrap_err();
    workflow.resume_from(run).await.unwrap_err();
    assert_eq!(workflow.resume_from(run).await.unwrap(), Step::Done);

    // "load" ran three times, but its unsaved writes of the failed attempts are not in
    // the data: the log reads as one uninterrupted run.
    let rows = store.load(run).await.unwrap();
    let point = cano_core::checkpoint::replay(run, &rows, workflow.workflow_id(), 1).unwrap();
    let visited: Vec<String> = point.durable.get("visited").unwrap();
    assert_eq!(visited, ["start", "fetch", "transform", "load"]);
    assert_eq!(point.resumes, 2);
    let kinds: Vec<RowKind> = rows.iter().map(|r| r.kind).collect();
    use RowKind::{Enter, Fail, Finish, Resume};
    assert_eq!(
        kinds,
        [
            Enter, Enter, Enter, Enter, Fail, Resume, Fail, Resume, Finish
        ]
    );
    // A finished run kept for audit resumes to its exit state without running anything.
    let before = ledger.entries().len();
    assert_eq!(workflow.resume_from(run).await.unwrap(), Step::Done);
    assert_eq!(ledger.entries().len(), before);
}

#[tokio::test]
async fn states_with_payloads_round_trip_through_the_log() {
    let ledger = Ledger::default();
    let store = MemoryCheckpointStore::new();
    let (workflow, failures) = pipeline(&ledger, "fetch");
    let workflow = workflow.with_checkpoint_store(store.clone());
    failures.store(1, Ordering::SeqCst);
    let run = RunId::new();
    workflow
        .orchestrate_with(Step::Start, options(run))
        .await
        .unwrap_err();
    let unfinished = workflow.unfinished_runs().await.unwrap();
    assert_eq!(unfinished[0].label, r#"Fetch { page: 2, source: "api" }"#);
    assert_eq!(workflow.resume_from(run).await.unwrap(), Step::Done);
    assert_eq!(ledger.entries()[2..], ["fetch", "transform", "load"]);
}

#[tokio::test]
async fn one_workflow_value_serves_many_concurrent_runs() {
    let ledger = Ledger::default();
    let store = MemoryCheckpointStore::new();
    let (workflow, _) = pipeline(&ledger, "");
    let workflow = workflow
        .with_checkpoint_store(store.clone())
        .with_retention(Retention::KeepFinished);
    let handles: Vec<_> = (0..50).map(|_| workflow.spawn(Step::Start)).collect();
    let mut runs = Vec::new();
    for handle in handles {
        runs.push(handle.run_id());
        assert_eq!(handle.await.unwrap(), Step::Done);
    }
    for run in runs {
        let rows = store.load(run).await.unwrap();
        assert_eq!(rows.len(), 5, "four states and the finish");
        assert!(
            rows.iter()
                .enumerate()
                .all(|(i, r)| r.seq == i as u64 && r.run == run)
        );
    }
}

#[tokio::test]
async fn observers_hear_of_checkpoints_and_resumes() {
    #[derive(Default)]
    struct Events(Mutex<Vec<String>>);
    impl RunObserver for Events {
        fn checkpointed(&self, _: RunId, _workflow: &str, state: &dyn std::fmt::Debug, seq: u64) {
            self.0.lock().unwrap().push(format!("row {seq} {state:?}"));
        }
        fn resumed(&self, _: RunId, _workflow: &str, state: &dyn std::fmt::Debug, seq: u64) {
            self.0
                .lock()
                .unwrap()
                .push(format!("resume {seq} {state:?}"));
        }
    }
    let events = Arc::new(Events::default());
    let ledger = Ledger::default();
    let (workflow, failures) = pipeline(&ledger, "load");
    let workflow = workflow
        .with_checkpoint_store(MemoryCheckpointStore::new())
        .with_observer(events.clone());
    failures.store(1, Ordering::SeqCst);
    let run = RunId::new();
    workflow
        .orchestrate_with(Step::Transform, options(run))
        .await
        .unwrap_err();
    workflow.resume_from(run).await.unwrap();
    assert_eq!(
        *events.0.lock().unwrap(),
        ["row 0 Transform", "row 1 Load", "resume 3 Load"]
    );
}

#[tokio::test]
async fn a_looping_run_keeps_its_log_bounded_and_its_data_whole() {
    #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
    enum Loop {
        Tick,
        Done,
    }
    struct Tick;
    #[async_trait::async_trait]
    impl Task<Loop> for Tick {
        async fn run_bare(&self) -> Result<TaskResult<Loop>, CanoError> {
            let durable = DurableStore::current()?;
            let n = durable.update("n", |n: Option<u32>| n.unwrap_or(0) + 1)?;
            durable.put(format!("key{}", n % 3), &n)?;
            Ok(TaskResult::Single(if n == 1_000 {
                Loop::Done
            } else {
                Loop::Tick
            }))
        }
    }
    let store = MemoryCheckpointStore::new();
    let workflow = Workflow::bare()
        .register(Loop::Tick, Tick)
        .add_exit_state(Loop::Done)
        .with_checkpoint_store(store.clone())
        .with_retention(Retention::KeepFinished)
        .with_compaction(16);
    workflow.orchestrate(Loop::Tick).await.unwrap();
    let rows = store.rows();
    assert!(rows.len() <= 18, "{} rows kept of 1001 written", rows.len());
    assert_eq!(rows.last().unwrap().seq, 1_000);
    let run = rows[0].run;
    let point = cano_core::checkpoint::replay(run, &rows, workflow.workflow_id(), 1).unwrap();
    assert_eq!(point.durable.get::<u32>("n").unwrap(), 1_000);
    assert_eq!(point.durable.keys(), ["key0", "key1", "key2", "n"]);
}

#[tokio::test]
async fn resume_interrupted_continues_only_runs_whose_process_stopped() {
    let ledger = Ledger::default();
    let store = MemoryCheckpointStore::new();
    let (workflow, failures) = pipeline(&ledger, "transform");
    let workflow = workflow.with_checkpoint_store(store.clone());
    // A run cut off in Load (its rows end with Load's Enter), as a crash leaves it.
    let cut = RunId::new();
    {
        // Record a whole run elsewhere and copy its first four rows.
        let (recorder, _) = pipeline(&Ledger::default(), "");
        let keep = MemoryCheckpointStore::new();
        recorder
            .with_checkpoint_store(keep.clone())
            .with_retention(Retention::KeepFinished)
            .orchestrate_with(Step::Start, options(cut))
            .await
            .unwrap();
        for row in keep.rows().into_iter().take(4) {
            store.append(row).await.unwrap();
        }
    }
    failures.store(1, Ordering::SeqCst);
    let failed = RunId::new();
    workflow
        .orchestrate_with(Step::Start, options(failed))
        .await
        .unwrap_err();
    ledger.clear();

    let resumed = workflow.resume_interrupted().await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].0, cut);
    assert_eq!(resumed[0].1.as_ref().unwrap(), &Step::Done);
    assert_eq!(ledger.entries(), ["load"]);
    let left = workflow.unfinished_runs().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].run, left[0].status), (failed, RunStatus::Failed));
}
