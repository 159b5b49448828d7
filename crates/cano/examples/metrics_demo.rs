//! Metrics: 20 orders through a workflow whose charge step flakes, recorded by
//! `MetricsObserver` into a debugging recorder, then printed as a table: runs by
//! outcome, transitions, attempts and retries per task, and run and task durations.
//!
//! Run it with `cargo run --example metrics_demo --features metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cano::prelude::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Order {
    Validate,
    Charge,
    Done,
}

struct Validate;

#[task(state = Order)]
impl Validate {
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        Ok(TaskResult::Single(Order::Charge))
    }
}

/// Every third call times out; every seventh order is declined for good.
struct Charge(AtomicU32);

#[task(state = Order)]
impl Charge {
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        let call = self.0.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await;
        if call % 7 == 6 {
            return Err(CanoError::task_execution("card declined").permanent());
        }
        if call % 3 == 2 {
            return Err(CanoError::task_execution("gateway timed out"));
        }
        Ok(TaskResult::Single(Order::Done))
    }

    fn config(&self) -> TaskConfig {
        TaskConfig::new().with_retry(RetryMode::fixed(2, Duration::from_millis(5)))
    }
}

#[tokio::main]
async fn main() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("no other recorder is installed");
    cano::metrics::describe();

    let observer = MetricsObserver::new().per_task().with_durations();
    let workflow = Workflow::bare()
        .register(Order::Validate, Validate)
        .register(Order::Charge, Charge(AtomicU32::new(0)))
        .add_exit_state(Order::Done)
        .with_observer(Arc::new(observer));
    for _ in 0..20 {
        let _ = workflow.orchestrate(Order::Validate).await;
    }

    let mut rows: Vec<(String, String)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let value = match value {
                DebugValue::Counter(n) => n.to_string(),
                DebugValue::Gauge(g) => g.into_inner().to_string(),
                DebugValue::Histogram(values) if values.is_empty() => "no samples".to_owned(),
                DebugValue::Histogram(values) => {
                    let mean =
                        values.iter().map(|v| v.into_inner()).sum::<f64>() / values.len() as f64;
                    format!("{} samples, mean {:.1} ms", values.len(), mean * 1e3)
                }
            };
            (name, value)
        })
        .collect();
    rows.sort();
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (name, value) in rows {
        println!("{name:<width$}  {value}");
    }
}
