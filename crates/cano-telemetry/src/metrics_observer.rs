//! [`MetricsObserver`]: workflow events as `metrics` counters, gauges and histograms
//! (feature `metrics`), and [`describe`] for their help text and units.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Label, SharedString, Unit};

use cano_core::CanoError;
use cano_core::RunId;
use cano_core::hash::FastMap;
use cano_core::observer::{Interest, RunObserver};

/// Every metric the observer records, with its kind, unit and help text.
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        "cano_runs_started_total",
        "counter",
        "Runs started (resumed runs included).",
    ),
    (
        "cano_runs_finished_total",
        "counter",
        "Runs ended, by `outcome`: ok, error, cancelled, timeout, compensation_failed.",
    ),
    (
        "cano_runs_active",
        "gauge",
        "Runs started and not yet ended.",
    ),
    (
        "cano_runs_resumed_total",
        "counter",
        "Runs resumed from their checkpoints.",
    ),
    (
        "cano_run_duration_seconds",
        "histogram",
        "How long runs took, by `outcome` (with durations on).",
    ),
    ("cano_transitions_total", "counter", "States entered."),
    (
        "cano_task_attempts_total",
        "counter",
        "Task attempts started, split branches included (per `task` with per-task labels on).",
    ),
    (
        "cano_task_failures_total",
        "counter",
        "Tasks that failed for good, after their retries (per `task` with per-task labels on).",
    ),
    (
        "cano_task_retries_total",
        "counter",
        "Failed attempts that were retried (per `task` with per-task labels on).",
    ),
    (
        "cano_task_duration_seconds",
        "histogram",
        "How long a task took, all attempts included, by `task` (with durations on).",
    ),
    (
        "cano_circuit_events_total",
        "counter",
        "Circuit breaker events by `breaker` and `event`: open, half_open, close, rejected.",
    ),
    (
        "cano_throttled_total",
        "counter",
        "Attempts held back by a rate limiter, by `limiter` and `admitted`.",
    ),
    (
        "cano_throttle_wait_seconds",
        "histogram",
        "How long throttled attempts waited, by `limiter`.",
    ),
    (
        "cano_checkpoints_total",
        "counter",
        "Checkpoint rows written on entering a state.",
    ),
    (
        "cano_compensations_total",
        "counter",
        "Compensations of a rolled-back run, by `outcome`: started, ok, failed.",
    ),
];

/// Registers the help text and unit of every metric in [`METRICS`] with the installed
/// recorder. Call it once, after installing the recorder.
pub fn describe() {
    for (name, kind, help) in METRICS {
        let unit = name.ends_with("_seconds").then_some(Unit::Seconds);
        match *kind {
            "counter" => describe_counter(name, unit, help),
            "gauge" => {
                metrics::with_recorder(|r| r.describe_gauge((*name).into(), unit, (*help).into()))
            }
            _ => metrics::with_recorder(|r| {
                r.describe_histogram((*name).into(), unit, (*help).into())
            }),
        }
    }
}

fn describe_counter(name: &'static str, unit: Option<Unit>, help: &'static str) {
    metrics::with_recorder(|r| r.describe_counter(name.into(), unit, help.into()));
}

/// Registers a metric with the current recorder.
fn counter(name: &'static str, labels: Vec<Label>) -> Counter {
    metrics::with_recorder(|r| {
        r.register_counter(&metrics::Key::from_parts(name, labels), &metadata())
    })
}

fn histogram(name: &'static str, labels: Vec<Label>) -> Histogram {
    metrics::with_recorder(|r| {
        r.register_histogram(&metrics::Key::from_parts(name, labels), &metadata())
    })
}

fn gauge(name: &'static str) -> Gauge {
    metrics::with_recorder(|r| r.register_gauge(&metrics::Key::from_name(name), &metadata()))
}

fn metadata() -> metrics::Metadata<'static> {
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
}

fn label(key: &'static str, value: impl Into<SharedString>) -> Label {
    Label::new(key, value)
}

/// The `outcome` label values of run metrics, indexed by [`slot`].
const OUTCOMES: [&str; 5] = ["ok", "error", "cancelled", "timeout", "compensation_failed"];

/// Handles by the name of the breaker or limiter they label.
type ByName<T> = HashMap<Box<str>, T>;

/// The handles of one task's metrics (per-task labels).
struct TaskMetrics {
    attempts: Counter,
    failures: Counter,
    retries: Counter,
    duration: Histogram,
}

impl TaskMetrics {
    fn register(task: &str) -> Self {
        let task: SharedString = task.to_owned().into();
        let labels = || vec![label("task", task.clone())];
        Self {
            attempts: counter("cano_task_attempts_total", labels()),
            failures: counter("cano_task_failures_total", labels()),
            retries: counter("cano_task_retries_total", labels()),
            duration: histogram("cano_task_duration_seconds", labels()),
        }
    }
}

/// Records workflow events as metrics through the `metrics` facade. See [`METRICS`] for
/// what it records; call [`describe`] once for help text and units.
///
/// Handles are registered when the observer is created, so create it after installing
/// the recorder. Label values are `'static` or interned: by default no label names a
/// task (a transition costs one counter increment and no allocation, and nothing
/// measurable without a recorder); [`per_task`](Self::per_task) labels task metrics by
/// task name (interned on first sight), and [`with_durations`](Self::with_durations)
/// adds run and task duration histograms (two clock reads per run and per task).
///
/// ```
/// use std::sync::Arc;
/// use cano_core::Workflow;
/// use cano_telemetry::MetricsObserver;
///
/// #[derive(Debug, Clone, PartialEq, Eq, Hash)]
/// enum S { Start, Done }
///
/// cano_telemetry::describe();
/// let observer = MetricsObserver::new().per_task().with_durations();
/// let workflow = Workflow::<S>::bare()
///     .add_exit_state(S::Done)
///     .with_observer(Arc::new(observer));
/// ```
pub struct MetricsObserver {
    runs_started: Counter,
    runs_finished: [Counter; 5],
    runs_active: Gauge,
    runs_resumed: Counter,
    run_duration: [Histogram; 5],
    transitions: Counter,
    attempts: Counter,
    failures: Counter,
    retries: Counter,
    checkpoints: Counter,
    compensations: [Counter; 3],
    per_task: bool,
    tasks: RwLock<FastMap<Box<str>, TaskMetrics>>,
    /// Other interned handles (breakers, limiters), registered on first sight.
    /// Keyed by metric and static label value, then by the breaker or limiter name
    /// (looked up by `&str`: nothing is allocated once a name has been seen).
    named: Mutex<HashMap<(&'static str, &'static str), ByName<Counter>>>,
    /// Throttle wait histograms, by limiter name.
    waits: Mutex<ByName<Histogram>>,
    durations: bool,
    started: Mutex<HashMap<(RunId, Box<str>), Instant>>,
}

impl MetricsObserver {
    /// An observer with the aggregate metrics: no task labels, no durations.
    pub fn new() -> Self {
        let by_outcome = |name| OUTCOMES.map(|o| counter(name, vec![label("outcome", o)]));
        Self {
            runs_started: counter("cano_runs_started_total", Vec::new()),
            runs_finished: by_outcome("cano_runs_finished_total"),
            runs_active: gauge("cano_runs_active"),
            runs_resumed: counter("cano_runs_resumed_total", Vec::new()),
            run_duration: OUTCOMES
                .map(|o| histogram("cano_run_duration_seconds", vec![label("outcome", o)])),
            transitions: counter("cano_transitions_total", Vec::new()),
            attempts: counter("cano_task_attempts_total", Vec::new()),
            failures: counter("cano_task_failures_total", Vec::new()),
            retries: counter("cano_task_retries_total", Vec::new()),
            checkpoints: counter("cano_checkpoints_total", Vec::new()),
            compensations: ["started", "ok", "failed"]
                .map(|o| counter("cano_compensations_total", vec![label("outcome", o)])),
            per_task: false,
            tasks: RwLock::default(),
            named: Mutex::default(),
            waits: Mutex::default(),
            durations: false,
            started: Mutex::default(),
        }
    }

    /// Labels task metrics with the task's name (each name is interned once).
    pub fn per_task(mut self) -> Self {
        self.per_task = true;
        self
    }

    /// Adds run and task duration histograms.
    pub fn with_durations(mut self) -> Self {
        self.durations = true;
        self
    }

    /// Calls `f` with `task`'s handles when metrics are labelled per task, registering
    /// them on first sight. A known task costs a read lock and a lookup by `&str`.
    fn with_task(&self, task: &str, f: impl FnOnce(&TaskMetrics)) {
        if !self.per_task {
            return;
        }
        {
            let tasks = self.tasks.read().unwrap_or_else(|p| p.into_inner());
            if let Some(metrics) = tasks.get(task) {
                return f(metrics);
            }
        }
        let mut tasks = self.tasks.write().unwrap_or_else(|p| p.into_inner());
        f(tasks
            .entry(task.into())
            .or_insert_with(|| TaskMetrics::register(task)));
    }

    fn named(
        &self,
        name: &'static str,
        key: (&'static str, &str),
        extra: (&'static str, &'static str),
    ) {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        let by_name = named.entry((name, extra.1)).or_default();
        match by_name.get(key.1) {
            Some(counter) => counter.increment(1),
            None => {
                let labels = vec![label(key.0, key.1.to_owned()), label(extra.0, extra.1)];
                let registered = counter(name, labels);
                registered.increment(1);
                by_name.insert(key.1.into(), registered);
            }
        }
    }

    // The durations check is inlined into the callbacks, so that without durations
    // they end in a tail call to a counter instead of a call out.
    #[inline]
    fn timing_start(&self, run: RunId, what: &str) {
        if self.durations {
            self.started_now(run, what);
        }
    }

    #[inline]
    fn timing_end(&self, run: RunId, what: &str) -> Option<Duration> {
        if self.durations {
            self.took_since_start(run, what)
        } else {
            None
        }
    }

    fn started_now(&self, run: RunId, what: &str) {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        started.insert((run, what.into()), Instant::now());
    }

    fn took_since_start(&self, run: RunId, what: &str) -> Option<Duration> {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        started.remove(&(run, what.into())).map(|t| t.elapsed())
    }

    /// A task's last attempt ended. Per-task attempts are counted here and at each
    /// retry (every attempt ends in one or the other), so a transition looks its task's
    /// handles up once.
    fn task_ended(&self, run: RunId, task: &str, failed: bool) {
        if failed {
            self.failures.increment(1);
        }
        let took = self.timing_end(run, task);
        self.with_task(task, |metrics| {
            metrics.attempts.increment(1);
            if failed {
                metrics.failures.increment(1);
            }
            if let Some(took) = took {
                metrics.duration.record(took.as_secs_f64());
            }
        });
    }
}

impl Default for MetricsObserver {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MetricsObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsObserver")
            .field("per_task", &self.per_task)
            .field("durations", &self.durations)
            .finish_non_exhaustive()
    }
}

/// The index in [`OUTCOMES`] of how a run ended.
fn slot(result: Result<(), &CanoError>) -> usize {
    match result {
        Ok(()) => 0,
        Err(CanoError::Cancelled(_)) => 2,
        Err(CanoError::Timeout(_)) => 3,
        Err(CanoError::CompensationFailed { .. }) => 4,
        Err(_) => 1,
    }
}

impl RunObserver for MetricsObserver {
    fn interest(&self) -> Interest {
        // A success is recorded only by per-task labels and durations.
        if self.per_task || self.durations {
            Interest::ALL
        } else {
            Interest::ALL.without(Interest::TASK_SUCCESSES)
        }
    }

    fn run_started(&self, run: RunId, _initial: &dyn Debug) {
        self.runs_started.increment(1);
        self.runs_active.increment(1.0);
        self.timing_start(run, "");
    }

    fn run_ended(&self, run: RunId, result: Result<&dyn Debug, &CanoError>) {
        let slot = slot(result.map(drop));
        self.runs_finished[slot].increment(1);
        self.runs_active.decrement(1.0);
        if let Some(took) = self.timing_end(run, "") {
            self.run_duration[slot].record(took.as_secs_f64());
        }
    }

    fn state_entered(&self, _run: RunId, _state: &dyn Debug) {
        self.transitions.increment(1);
    }

    // Both at once, as the engine tells them before most tasks: one body instead of
    // the default's call to `task_started`.
    fn state_and_task_started(&self, run: RunId, _state: &dyn Debug, task: &str) {
        self.transitions.increment(1);
        self.timing_start(run, task);
        self.attempts.increment(1);
    }

    fn task_started(&self, run: RunId, _state: &dyn Debug, task: &str, attempt: usize) {
        if attempt == 1 {
            self.timing_start(run, task);
        }
        self.attempts.increment(1);
    }

    fn task_succeeded(&self, run: RunId, _state: &dyn Debug, task: &str) {
        if self.per_task || self.durations {
            self.task_ended(run, task, false);
        }
    }

    fn task_failed(&self, run: RunId, _state: &dyn Debug, task: &str, _error: &CanoError) {
        self.task_ended(run, task, true);
    }

    fn task_retrying(
        &self,
        _run: RunId,
        _state: &dyn Debug,
        task: &str,
        _attempt: usize,
        _error: &CanoError,
        _delay: Duration,
    ) {
        self.retries.increment(1);
        self.with_task(task, |metrics| {
            metrics.retries.increment(1);
            metrics.attempts.increment(1);
        });
    }

    fn circuit_opened(&self, _run: RunId, _state: &dyn Debug, _task: &str, breaker: &str) {
        self.named(
            "cano_circuit_events_total",
            ("breaker", breaker),
            ("event", "open"),
        );
    }

    fn circuit_half_opened(&self, _run: RunId, _state: &dyn Debug, _task: &str, breaker: &str) {
        self.named(
            "cano_circuit_events_total",
            ("breaker", breaker),
            ("event", "half_open"),
        );
    }

    fn circuit_closed(&self, _run: RunId, _state: &dyn Debug, _task: &str, breaker: &str) {
        self.named(
            "cano_circuit_events_total",
            ("breaker", breaker),
            ("event", "close"),
        );
    }

    fn circuit_rejected(&self, _run: RunId, _state: &dyn Debug, _task: &str, breaker: &str) {
        self.named(
            "cano_circuit_events_total",
            ("breaker", breaker),
            ("event", "rejected"),
        );
    }

    fn throttled(
        &self,
        _run: RunId,
        _state: &dyn Debug,
        _task: &str,
        limiter: &str,
        waited: Duration,
        admitted: bool,
    ) {
        let admitted = if admitted { "true" } else { "false" };
        self.named(
            "cano_throttled_total",
            ("limiter", limiter),
            ("admitted", admitted),
        );
        let mut waits = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        if !waits.contains_key(limiter) {
            let labels = vec![label("limiter", limiter.to_owned())];
            waits.insert(
                limiter.into(),
                histogram("cano_throttle_wait_seconds", labels),
            );
        }
        if let Some(wait) = waits.get(limiter) {
            wait.record(waited.as_secs_f64());
        }
    }

    fn checkpointed(&self, _run: RunId, _workflow: &str, _state: &dyn Debug, _seq: u64) {
        self.checkpoints.increment(1);
    }

    fn resumed(&self, _run: RunId, _workflow: &str, _state: &dyn Debug, _seq: u64) {
        self.runs_resumed.increment(1);
    }

    fn compensation_started(&self, _run: RunId, _state: &dyn Debug, _task: &str) {
        self.compensations[0].increment(1);
    }

    fn compensation_succeeded(&self, _run: RunId, _state: &dyn Debug, _task: &str) {
        self.compensations[1].increment(1);
    }

    fn compensation_failed(
        &self,
        _run: RunId,
        _state: &dyn Debug,
        _task: &str,
        _error: &CanoError,
    ) {
        self.compensations[2].increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ending_is_labelled_by_its_outcome() {
        fn label(result: Result<(), &CanoError>) -> &'static str {
            OUTCOMES[slot(result)]
        }
        assert_eq!(label(Ok(())), "ok");
        assert_eq!(label(Err(&CanoError::task_execution("boom"))), "error");
        assert_eq!(label(Err(&CanoError::cancelled("stop"))), "cancelled");
        assert_eq!(label(Err(&CanoError::timeout("slow"))), "timeout");
    }
}
