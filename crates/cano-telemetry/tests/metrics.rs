//! With feature `metrics`: what `MetricsObserver` records, read back from a debugging
//! recorder installed for the test's thread.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cano_core::{CanoError, RetryMode, Task, TaskConfig, TaskResult, Workflow};
use cano_telemetry::MetricsObserver;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum S {
    Fetch,
    Store,
    Done,
}

/// Fails on the calls listed, moves to `next` otherwise.
struct Step {
    next: S,
    fail: Vec<u32>,
    calls: Mutex<u32>,
}

#[async_trait::async_trait]
impl Task<S> for Step {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        let mut calls = self.calls.lock().unwrap();
        *calls += 1;
        if self.fail.contains(&calls) {
            return Err(CanoError::task_execution("flaked"));
        }
        Ok(TaskResult::Single(self.next.clone()))
    }
    fn config(&self) -> TaskConfig {
        TaskConfig::new().with_retry(RetryMode::fixed(1, Duration::ZERO))
    }
}

fn step(next: S, fail: &[u32]) -> Step {
    Step {
        next,
        fail: fail.to_vec(),
        calls: Mutex::new(0),
    }
}

/// Each metric's value by name and labels (`name{k=v,...}`).
fn recorded(
    observer: impl FnOnce() -> MetricsObserver,
    runs: usize,
) -> HashMap<String, DebugValue> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        cano_telemetry::describe();
        let workflow = Workflow::bare()
            // Fetch flakes on its first call (retried), Store on its 2nd and 3rd
            // (the second run fails for good).
            .register(S::Fetch, step(S::Store, &[1]))
            .register(S::Store, step(S::Done, &[2, 3]))
            .add_exit_state(S::Done)
            .with_observer(Arc::new(observer()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for _ in 0..runs {
            let _ = rt.block_on(workflow.orchestrate(S::Fetch));
        }
    });
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .collect()
}

fn count(metrics: &HashMap<String, DebugValue>, key: &str) -> u64 {
    match metrics.get(key) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!(
            "{key}: {other:?} in {:?}",
            metrics.keys().collect::<Vec<_>>()
        ),
    }
}

#[test]
fn aggregate_metrics_count_runs_transitions_attempts_and_retries() {
    let metrics = recorded(MetricsObserver::new, 2);
    assert_eq!(count(&metrics, "cano_runs_started_total{}"), 2);
    assert_eq!(count(&metrics, "cano_runs_finished_total{outcome=ok}"), 1);
    assert_eq!(
        count(&metrics, "cano_runs_finished_total{outcome=error}"),
        1
    );
    assert_eq!(count(&metrics, "cano_transitions_total{}"), 4);
    // Run 1: Fetch twice (a retry), Store once. Run 2: Fetch once, Store twice.
    assert_eq!(count(&metrics, "cano_task_attempts_total{}"), 6);
    assert_eq!(count(&metrics, "cano_task_retries_total{}"), 2);
    assert_eq!(count(&metrics, "cano_task_failures_total{}"), 1);
    assert!(
        matches!(metrics.get("cano_runs_active{}"), Some(DebugValue::Gauge(g)) if g.into_inner() == 0.0)
    );
    assert!(
        !metrics.keys().any(|k| k.contains("task=")),
        "no task labels by default"
    );
}

#[test]
fn per_task_labels_and_durations_when_asked() {
    let metrics = recorded(|| MetricsObserver::new().per_task().with_durations(), 2);
    assert_eq!(count(&metrics, "cano_task_attempts_total{task=Step}"), 6);
    assert_eq!(count(&metrics, "cano_task_retries_total{task=Step}"), 2);
    assert_eq!(count(&metrics, "cano_task_failures_total{task=Step}"), 1);
    let durations = |key: &str| match metrics.get(key) {
        Some(DebugValue::Histogram(values)) => values.len(),
        other => panic!("{key}: {other:?}"),
    };
    assert_eq!(durations("cano_run_duration_seconds{outcome=ok}"), 1);
    assert_eq!(durations("cano_run_duration_seconds{outcome=error}"), 1);
    assert_eq!(durations("cano_task_duration_seconds{task=Step}"), 4);
}

#[test]
fn per_task_labels_alone_still_hear_of_every_success() {
    // Per-task attempts are counted as attempts end, so this observer asks for the
    // success events the aggregate one leaves out.
    let metrics = recorded(|| MetricsObserver::new().per_task(), 2);
    assert_eq!(count(&metrics, "cano_task_attempts_total{task=Step}"), 6);
    assert_eq!(count(&metrics, "cano_task_attempts_total{}"), 6);
    assert_eq!(count(&metrics, "cano_transitions_total{}"), 4);
}

#[test]
fn every_metric_is_described() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, cano_telemetry::describe);
    // Descriptions show once a metric exists: register each, then read them back.
    metrics::with_local_recorder(&recorder, || {
        for (name, kind, _) in cano_telemetry::METRICS {
            match *kind {
                "counter" => metrics::counter!(*name).increment(0),
                "gauge" => metrics::gauge!(*name).set(0.0),
                _ => metrics::histogram!(*name).record(0.0),
            }
        }
    });
    let described: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(_, _, help, _)| help.is_some())
        .collect();
    assert_eq!(described.len(), cano_telemetry::METRICS.len());
    assert!(described.iter().any(|(key, unit, _, _)| key.key().name()
        == "cano_run_duration_seconds"
        && *unit == Some(metrics::Unit::Seconds)));
}
