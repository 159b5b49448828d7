//! The test kit used the way a test suite would: faults injected into a checkpointed
//! run and healed, concurrent runs told apart by the recorder, flaky tasks on the
//! paused clock.

use std::time::Duration;

use cano_core::{
    CanoError, CheckpointStore, RetryMode, RowKind, RunId, RunOptions, TaskConfig, Workflow,
};
use cano_testing::{Event, FaultyStore, FlakyTask, RecordingObserver, run_paused, timed};

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum S {
    A,
    B,
    C,
    Done,
}

fn three_steps(
    store: std::sync::Arc<FaultyStore>,
    recorder: std::sync::Arc<RecordingObserver>,
) -> Workflow<S> {
    Workflow::bare()
        .register(S::A, FlakyTask::new(S::B))
        .register(S::B, FlakyTask::new(S::C))
        .register(S::C, FlakyTask::new(S::Done))
        .add_exit_state(S::Done)
        .with_shared_checkpoint_store(store)
        .with_observer(recorder)
}

#[tokio::test]
async fn a_failed_append_fails_the_run_and_a_healed_store_resumes_it() {
    let store = FaultyStore::new();
    let recorder = RecordingObserver::new();
    store.fail_appends_from(1); // row 0 (entering A) is written, row 1 is not
    let workflow = three_steps(store.clone(), recorder.clone());
    let run = RunId::new();
    let err = workflow
        .orchestrate_with(S::A, RunOptions::new().with_run_id(run))
        .await
        .unwrap_err();
    assert!(matches!(err, CanoError::Store(_)), "{err}");
    assert!(err.to_string().contains("injected fault"), "{err}");
    assert_eq!(store.appended().len(), 1);

    store.heal();
    assert_eq!(workflow.resume_from(run).await.unwrap(), S::Done);
    let resumed = recorder.runs()[1];
    assert_eq!(resumed, run);
    // Only entering A was saved, so the resumed run starts over in A.
    assert!(
        recorder
            .events_of(run)
            .iter()
            .any(|e| matches!(e, Event::Resume { state, .. } if state == "A"))
    );
    assert!(
        store.load(run).await.unwrap().is_empty(),
        "finished: cleared"
    );
}

#[tokio::test]
async fn one_failed_append_is_one_failure() {
    let store = FaultyStore::new();
    store.fail_append(0);
    let workflow = three_steps(store.clone(), RecordingObserver::new());
    assert!(workflow.orchestrate(S::A).await.is_err());
    assert_eq!(workflow.orchestrate(S::A).await.unwrap(), S::Done);
    // The failed run's refused row, the `Fail` row it still recorded, then three.
    assert_eq!(store.append_attempts(), 2 + 3);
}

#[tokio::test]
async fn failing_loads_make_resuming_a_clear_error() {
    let store = FaultyStore::new();
    store.fail_loads(true);
    let workflow = three_steps(store.clone(), RecordingObserver::new());
    let err = workflow.resume_from(RunId::new()).await.unwrap_err();
    assert!(err.to_string().contains("injected fault: load"), "{err}");
    assert!(workflow.unfinished_runs().await.is_err());
}

#[tokio::test]
async fn the_rows_written_can_be_awaited() {
    let store = FaultyStore::new();
    let workflow = three_steps(store.clone(), RecordingObserver::new());
    let run = tokio::spawn({
        let workflow = workflow.clone();
        async move { workflow.orchestrate(S::A).await }
    });
    store
        .wait_for(|rows| rows.iter().filter(|r| r.kind == RowKind::Enter).count() == 3)
        .await;
    assert_eq!(run.await.unwrap().unwrap(), S::Done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_are_told_apart() {
    let recorder = RecordingObserver::new();
    let workflow = Workflow::bare()
        .register(S::A, FlakyTask::new(S::B))
        .register(S::B, FlakyTask::new(S::Done).failing_on([3]))
        .add_exit_state(S::Done)
        .with_observer(recorder.clone());
    let handles: Vec<_> = (0..8).map(|_| workflow.spawn(S::A)).collect();
    let mut failed = 0;
    for handle in handles {
        let run = handle.run_id();
        match handle.await {
            Ok(_) => {
                recorder.assert_path(run, &["A", "B"]);
                assert_eq!(recorder.outcome(run), Some(Ok("Done".to_owned())));
            }
            Err(_) => {
                failed += 1;
                assert!(
                    recorder
                        .outcome(run)
                        .unwrap()
                        .unwrap_err()
                        .contains("attempt 3")
                );
            }
        }
    }
    assert_eq!(
        (
            failed,
            recorder.runs().len(),
            recorder.attempts("FlakyTask")
        ),
        (1, 8, 16)
    );
}

#[test]
#[should_panic(expected = "took the path [\"A\", \"B\"], expected [\"A\", \"C\"]")]
fn a_wrong_path_fails_with_both_paths() {
    let recorder = RecordingObserver::new();
    let workflow = Workflow::bare()
        .register(S::A, FlakyTask::new(S::B))
        .register(S::B, FlakyTask::new(S::Done))
        .add_exit_state(S::Done)
        .with_observer(recorder.clone());
    run_paused(workflow.orchestrate(S::A)).0.unwrap();
    recorder.assert_path(recorder.runs()[0], &["A", "C"]);
}

#[tokio::test(start_paused = true)]
async fn retries_take_exact_virtual_time() {
    let recorder = RecordingObserver::new();
    let flaky = FlakyTask::new(S::Done)
        .failing_on([1, 2])
        .with_config(TaskConfig::new().with_retry(RetryMode::fixed(5, Duration::from_secs(60))));
    let workflow = Workflow::bare()
        .register(S::A, flaky.clone())
        .add_exit_state(S::Done)
        .with_observer(recorder.clone());
    let (result, took) = timed(workflow.orchestrate(S::A)).await;
    assert_eq!(result.unwrap(), S::Done);
    assert_eq!(took, Duration::from_secs(120));
    assert_eq!((flaky.attempts(), recorder.retries("FlakyTask")), (3, 2));
}

#[tokio::test]
async fn observed_runs_draw_the_paths_they_took() {
    let recorder = RecordingObserver::new();
    let workflow = Workflow::bare()
        .register(S::A, FlakyTask::new(S::B))
        .register(S::B, FlakyTask::new(S::Done))
        .add_exit_state(S::Done)
        .with_observer(recorder.clone());
    for _ in 0..3 {
        workflow.orchestrate(S::A).await.unwrap();
    }
    assert_eq!(
        recorder.to_mermaid(),
        "flowchart TD\n    s0[\"A ×3\"]\n    s1[\"B ×3\"]\n    s2[\"Done ×3\"]\n    s0 -- \"3\" --> s1\n    s1 -- \"3\" --> s2\n"
    );
}

/// The workflow's graph is kept before its first run writes; a store that fails to
/// keep it fails no run, and the next run keeps it.
#[tokio::test]
async fn a_graph_the_store_failed_to_keep_is_kept_by_the_next_run() {
    use cano_core::checkpoint::RunCatalog;
    let memory = cano_recovery::MemoryCheckpointStore::new();
    let store = FaultyStore::wrapping(std::sync::Arc::new(memory.clone()));
    store.fail_graphs(1);
    let workflow = three_steps(store.clone(), RecordingObserver::new())
        .with_workflow_id("steps")
        .with_workflow_version(7);
    assert_eq!(workflow.orchestrate(S::A).await.unwrap(), S::Done);
    assert_eq!(memory.graph("steps", 7).await.unwrap(), None);
    assert_eq!(workflow.orchestrate(S::A).await.unwrap(), S::Done);
    let drawing = memory
        .graph("steps", 7)
        .await
        .unwrap()
        .expect("kept by the second run");
    assert_eq!(drawing, workflow.to_mermaid());
    // Version 0 asks for the highest version kept.
    assert_eq!(memory.graph("steps", 0).await.unwrap(), Some(drawing));
    assert_eq!(memory.graph("steps", 6).await.unwrap(), None);
}
