//! With feature `tracing`: the spans of a run, its states and attempts, and the events
//! of `TracingObserver` at the documented levels, as a `fmt` subscriber prints them.
#![cfg(feature = "tracing")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cano_core::{CanoError, RetryMode, Task, TaskConfig, TaskResult, Workflow};
use cano_telemetry::TracingObserver;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum S {
    Fetch,
    Store,
    Done,
}

/// Fails its first attempt, then moves on.
struct Fetch(Mutex<u32>);

#[async_trait::async_trait]
impl Task<S> for Fetch {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        tracing::info!("fetching");
        let mut calls = self.0.lock().unwrap();
        *calls += 1;
        if *calls == 1 {
            return Err(CanoError::task_execution("upstream answered 502"));
        }
        Ok(TaskResult::Single(S::Store))
    }
    fn config(&self) -> TaskConfig {
        TaskConfig::new().with_retry(RetryMode::fixed(1, Duration::from_millis(1)))
    }
}

struct Store;

#[async_trait::async_trait]
impl Task<S> for Store {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        Err(CanoError::task_execution("disk full"))
    }
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One test at a time. Whether a `tracing` call site is enabled is cached for the
/// whole process, from every subscriber alive when it is first hit; with the tests'
/// subscribers of different levels coming and going side by side, a DEBUG call site
/// was once cached as off for the DEBUG test ("state entered" missing, one CI run
/// in many).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A `fmt` subscriber recording up to `level` into the returned capture.
fn capturing(level: tracing::Level) -> (Capture, impl tracing::Subscriber + Send + Sync) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let capture = capture.clone();
            move || capture.clone()
        })
        .with_ansi(false)
        .with_max_level(level)
        .finish();
    (capture, subscriber)
}

#[test]
fn a_run_is_traced_in_spans_with_levels() {
    let _one = one_at_a_time();
    let (capture, subscriber) = capturing(tracing::Level::DEBUG);
    let workflow = Workflow::bare()
        .register(S::Fetch, Fetch(Mutex::new(0)))
        .register(S::Store, Store)
        .add_exit_state(S::Done)
        .with_workflow_id("ingest")
        .with_observer(Arc::new(TracingObserver::new()));
    let err = tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(workflow.orchestrate(S::Fetch)).unwrap_err()
    });
    assert!(err.to_string().contains("disk full"));
    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{log}"))
            .to_owned()
    };
    // The task's own event sits in the run, state and attempt spans.
    let fetching = line("fetching");
    assert!(
        fetching.contains("cano.run{run_id=") && fetching.contains("workflow=\"ingest\""),
        "{fetching}"
    );
    assert!(
        fetching.contains("cano.state{state=Fetch}")
            && fetching.contains("cano.attempt{task=\"Fetch\" attempt=1}"),
        "{fetching}"
    );
    assert!(
        log.contains("cano.attempt{task=\"Fetch\" attempt=2}"),
        "{log}"
    );
    // A retry at WARN, the final failure and the failed run at ERROR.
    assert!(line("attempt failed, retrying").contains("WARN"));
    let failed = line("task failed");
    assert!(
        failed.contains("ERROR")
            && failed.contains("disk full")
            && failed.contains("cano.state{state=Store}"),
        "{failed}"
    );
    assert!(line("run failed").contains("ERROR"));
    assert!(line("run started").contains(" INFO"));
    assert!(line("state entered").contains("DEBUG"));
}

#[test]
fn the_observer_asks_for_what_the_subscriber_records() {
    let _one = one_at_a_time();
    use cano_core::{Interest, RunObserver};

    let observer = TracingObserver::new();
    let at = |level| {
        tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .with_max_level(level)
            .finish()
    };
    // No subscriber on this thread: nothing is recorded, so nothing is asked for.
    assert_eq!(observer.interest(), Interest::NONE);
    tracing::subscriber::with_default(at(tracing::Level::INFO), || {
        assert_eq!(observer.interest(), Interest::RUNS);
    });
    tracing::subscriber::with_default(at(tracing::Level::DEBUG), || {
        assert_eq!(observer.interest(), Interest::ALL);
    });
}

#[test]
fn an_info_subscriber_still_hears_of_runs_and_failures() {
    let _one = one_at_a_time();
    let (capture, subscriber) = capturing(tracing::Level::INFO);
    let workflow = Workflow::bare()
        .register(S::Store, Store)
        .add_exit_state(S::Done)
        .with_observer(Arc::new(TracingObserver::new()));
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(workflow.orchestrate(S::Store)).unwrap_err();
    });
    let out = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(out.contains("run started"), "{out}");
    assert!(out.contains("task failed"), "{out}");
    assert!(out.contains("run failed"), "{out}");
    assert!(!out.contains("state entered"), "{out}");
    assert!(!out.contains("DEBUG"), "{out}");
}
