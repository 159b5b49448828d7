//! Tracing: a run of an order workflow printed by `tracing-subscriber`. Each line sits
//! in the spans the engine opens (`cano.run` with the run id and workflow,
//! `cano.state`, `cano.attempt`), and `TracingObserver` adds the lifecycle events: the
//! flaky charge's retry at WARN, the final failure of a second order at ERROR.
//!
//! Run it with `cargo run --example tracing_demo --features tracing`
//! (set `RUST_LOG=debug` to see state entries and attempts too).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Order {
    Validate,
    Charge,
    Done,
}

struct Validate;

#[task(state = Order)]
impl Validate {
    async fn run(&self, res: &Resources) -> Result<TaskResult<Order>, CanoError> {
        let amount: u32 = res.get::<MemoryStore, _>("store")?.get("amount")?;
        tracing::info!(amount, "order validated");
        Ok(TaskResult::Single(Order::Charge))
    }
}

/// The gateway times out on calls `0..fail_first`.
struct Charge {
    calls: AtomicU32,
    fail_first: u32,
}

#[task(state = Order)]
impl Charge {
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail_first {
            return Err(CanoError::task_execution("payment gateway timed out"));
        }
        tracing::info!("charged");
        Ok(TaskResult::Single(Order::Done))
    }

    fn config(&self) -> TaskConfig {
        TaskConfig::new().with_retry(RetryMode::fixed(1, Duration::from_millis(50)))
    }
}

fn orders(store: MemoryStore, fail_first: u32) -> Workflow<Order> {
    Workflow::new(Resources::new().insert("store", store))
        .register(Order::Validate, Validate)
        .register(
            Order::Charge,
            Charge {
                calls: AtomicU32::new(0),
                fail_first,
            },
        )
        .add_exit_state(Order::Done)
        .with_workflow_id("orders")
        .with_observer(Arc::new(TracingObserver::new()))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let store = MemoryStore::new();
    store.put("amount", 42u32).unwrap();
    // The gateway times out once; the retry goes through.
    let _ = orders(store.clone(), 1).orchestrate(Order::Validate).await;
    // The gateway is down: the retry fails too, and so does the run.
    let _ = orders(store, u32::MAX).orchestrate(Order::Validate).await;
}
