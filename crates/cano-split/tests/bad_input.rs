//! Misconfigured splits are `Configuration` errors naming the split state, from
//! `validate()` and from `orchestrate` alike, and no branch runs; run-time mistakes of a
//! dynamic fan-out are clear errors too.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use cano_core::{CanoError, MemoryStore, Resources, Workflow};
use cano_split::{JoinConfig, JoinStrategy, SplitExt};
use common::*;

fn three(probe: &std::sync::Arc<Probe>) -> Vec<Branch> {
    (0..3)
        .map(|i| Branch::new(i, 1, Outcome::Succeed, probe))
        .collect()
}

async fn assert_refused(wf: Workflow<S>, probe: &Probe, expected: &str) {
    let err = wf.validate().unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("split state Fan"), "{text}");
    assert!(text.contains(expected), "wanted {expected:?} in {text}");
    let run = wf.orchestrate(S::Fan).await.unwrap_err();
    assert_eq!(
        run.to_string(),
        text,
        "orchestrate reports what validate reports"
    );
    assert_eq!(probe.attempts.load(Ordering::SeqCst), 0, "no branch ran");
}

#[tokio::test]
async fn every_bad_join_config_is_refused_before_any_branch_runs() {
    let cases: Vec<(JoinConfig<S>, &str)> = vec![
        (
            JoinConfig::new(JoinStrategy::Quorum(0), S::Join),
            "Quorum(0)",
        ),
        (
            JoinConfig::new(JoinStrategy::Quorum(4), S::Join),
            "Quorum(4) needs more successes than the 3 branches",
        ),
        (
            JoinConfig::new(JoinStrategy::Percentage(0.0), S::Join),
            "Percentage(0) is outside (0, 1]",
        ),
        (
            JoinConfig::new(JoinStrategy::Percentage(1.5), S::Join),
            "Percentage(1.5) is outside (0, 1]",
        ),
        (
            JoinConfig::new(JoinStrategy::Percentage(f64::NAN), S::Join),
            "outside (0, 1]",
        ),
        (
            JoinConfig::new(JoinStrategy::PartialResults(0), S::Join),
            "PartialResults(0)",
        ),
        (
            JoinConfig::new(JoinStrategy::PartialResults(5), S::Join),
            "PartialResults(5) waits for more branches than the 3",
        ),
        (
            JoinConfig::new(JoinStrategy::All, S::Join).with_bulkhead(0),
            "a bulkhead of 0",
        ),
        (
            JoinConfig::new(JoinStrategy::PartialTimeout, S::Join),
            "PartialTimeout waits for the join timeout, but none is set",
        ),
        (
            JoinConfig::new(JoinStrategy::All, S::Join).with_timeout(Duration::ZERO),
            "timeout of zero",
        ),
    ];
    for (config, expected) in cases {
        let (probe, _ended) = Probe::new();
        let (wf, _) = split_workflow(three(&probe), config);
        assert_refused(wf, &probe, expected).await;
    }
}

#[tokio::test]
async fn an_empty_branch_list_is_refused() {
    let (probe, _ended) = Probe::new();
    let (wf, _) = split_workflow(Vec::new(), JoinConfig::new(JoinStrategy::All, S::Join));
    assert_refused(wf, &probe, "has no branches").await;
}

#[tokio::test]
async fn a_join_state_that_is_neither_registered_nor_an_exit_is_refused() {
    let (probe, _ended) = Probe::new();
    let wf = Workflow::bare()
        .register_split(
            S::Fan,
            three(&probe),
            JoinConfig::new(JoinStrategy::All, S::Join),
        )
        .add_exit_state(S::Done);
    assert_refused(
        wf,
        &probe,
        "moves to Join, which has no handler and is not an exit state",
    )
    .await;
}

#[tokio::test]
async fn several_mistakes_are_reported_together() {
    let (probe, _ended) = Probe::new();
    let wf = Workflow::bare()
        .register_split(
            S::Fan,
            three(&probe),
            JoinConfig::new(JoinStrategy::PartialTimeout, S::Join).with_bulkhead(0),
        )
        .add_exit_state(S::Done);
    let text = wf.validate().unwrap_err().to_string();
    for expected in ["bulkhead of 0", "PartialTimeout", "moves to Join"] {
        assert!(text.contains(expected), "wanted {expected:?} in {text}");
    }
}

/// One branch per number an earlier state stored.
fn planned(probe: std::sync::Arc<Probe>, join: JoinConfig<S>) -> (Workflow<S>, MemoryStore, Seen) {
    let store = MemoryStore::new();
    let seen: Seen = Default::default();
    let wf = Workflow::new(Resources::new().insert("store", store.clone()))
        .register_dynamic_split(
            S::Fan,
            move |res: &Resources| {
                let latencies: Vec<u64> = res.get::<MemoryStore, _>("store")?.get("latencies")?;
                Ok(latencies
                    .iter()
                    .enumerate()
                    .map(|(i, &ms)| Branch::new(i, ms, Outcome::Succeed, &probe))
                    .collect::<Vec<_>>())
            },
            join,
        )
        .register(S::Join, Collect(seen.clone()))
        .add_exit_state(S::Done);
    (wf, store, seen)
}

#[tokio::test(start_paused = true)]
async fn a_dynamic_fan_out_runs_one_branch_per_item() {
    let (probe, _ended) = Probe::new();
    let (wf, store, seen) = planned(probe.clone(), JoinConfig::new(JoinStrategy::All, S::Join));
    wf.validate().unwrap();
    for n in [5usize, 2] {
        store.put("latencies", vec![10u64; n]).unwrap();
        wf.orchestrate(S::Fan).await.unwrap();
        assert_eq!(taken(&seen).succeeded().count(), n);
    }
    // An empty fan-out under All has nothing to wait for.
    store.put("latencies", Vec::<u64>::new()).unwrap();
    assert_eq!(wf.orchestrate(S::Fan).await.unwrap(), S::Done);
    assert!(taken(&seen).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_dynamic_fan_out_too_small_for_its_quorum_is_a_configuration_error() {
    let (probe, _ended) = Probe::new();
    let (wf, store, _) = planned(
        probe.clone(),
        JoinConfig::new(JoinStrategy::Quorum(3), S::Join),
    );
    store.put("latencies", vec![10u64; 2]).unwrap();
    let err = wf.orchestrate(S::Fan).await.unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("split state Fan: Quorum(3) needs more successes than the 2 branches"),
        "{err}"
    );
    assert_eq!(probe.attempts.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_failing_or_panicking_planner_fails_the_run_clearly() {
    let (probe, _ended) = Probe::new();
    let (wf, _store, _) = planned(probe, JoinConfig::new(JoinStrategy::All, S::Join));
    // Nothing stored under "latencies": the planner's own error, naming the state.
    let err = wf.orchestrate(S::Fan).await.unwrap_err();
    assert!(matches!(err, CanoError::Store(_)), "{err:?}");
    assert_eq!(err.state(), Some("Fan"));
    assert!(err.to_string().contains("latencies"), "{err}");

    let wf = Workflow::bare()
        .register_dynamic_split(
            S::Fan,
            |_: &Resources| -> Result<Vec<Branch>, CanoError> { panic!("no items table") },
            JoinConfig::new(JoinStrategy::All, S::Done),
        )
        .add_exit_state(S::Done);
    let err = wf.orchestrate(S::Fan).await.unwrap_err();
    assert!(matches!(err, CanoError::TaskExecution(_)), "{err:?}");
    assert!(err.message().starts_with("panic: no items table"), "{err}");
    assert_eq!(err.task_name(), Some("split planner"));
}

#[tokio::test]
async fn reading_a_split_result_that_does_not_exist_is_a_clear_error() {
    let err = cano_split::SplitResult::<S>::of(&S::Fan).unwrap_err();
    assert!(err.to_string().contains("outside a run"), "{err}");
}
