//! With feature `metrics`: 0.13's `MetricsObserver::new()` attached with
//! `with_observer(Arc::new(..))`, and `cano::metrics::describe()` at startup.

use std::sync::Arc;

use cano::prelude::*;
use metrics_util::debugging::DebuggingRecorder;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Job {
    Work,
    Done,
}

struct Work;

#[task(state = Job)]
impl Work {
    async fn run_bare(&self) -> Result<TaskResult<Job>, CanoError> {
        Ok(TaskResult::Single(Job::Done))
    }
}

#[test]
fn a_metrics_observer_counts_a_run() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        cano::metrics::describe();
        let workflow = Workflow::bare()
            .register(Job::Work, Work)
            .add_exit_state(Job::Done)
            .with_observer(Arc::new(MetricsObserver::new()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            runtime.block_on(workflow.orchestrate(Job::Work)).unwrap(),
            Job::Done
        );
    });
    let names: Vec<String> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, _)| key.key().name().to_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("cano_")),
        "the run was counted: {names:?}"
    );
}
