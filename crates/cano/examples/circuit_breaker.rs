//! A payment gateway goes down and comes back. One circuit breaker, shared by every
//! charge, stops calling it after three failed attempts in a row (the first order's
//! attempt and its two retries), fails the next charges at once (no retries spent, no
//! waiting on a dead gateway), then lets a probe through after its reset timeout and
//! closes again once two probes succeeded.
//!
//! Run it with `cargo run --example circuit_breaker`.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cano::prelude::*;
use cano::{BreakerPolicy, RunId, RunObserver};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Payment {
    Charge,
    Paid,
}

/// Charges a card through the gateway; fails while the gateway is down.
struct Charge {
    gateway_down: Arc<AtomicBool>,
    breaker: Arc<CircuitBreaker>,
}

#[task(state = Payment)]
impl Charge {
    fn config(&self) -> TaskConfig {
        // Transient errors get two quick retries; an open breaker gets none.
        TaskConfig::minimal()
            .with_fixed_retry(2, Duration::from_millis(20))
            .with_attempt_timeout(Duration::from_millis(200))
            .with_circuit_breaker(self.breaker.clone())
    }

    async fn run_bare(&self) -> Result<TaskResult<Payment>, CanoError> {
        tokio::time::sleep(Duration::from_millis(30)).await; // the network round trip
        if self.gateway_down.load(Ordering::SeqCst) {
            return Err(CanoError::task_execution("gateway answered 503"));
        }
        Ok(TaskResult::Single(Payment::Paid))
    }
}

/// Prints the breaker's moves as they happen.
struct BreakerLog;

impl RunObserver for BreakerLog {
    fn circuit_opened(&self, _: RunId, _: &dyn Debug, task: &str, breaker: &str) {
        println!("    ! `{breaker}` opened by a failure of {task}");
    }
    fn circuit_half_opened(&self, _: RunId, _: &dyn Debug, _: &str, breaker: &str) {
        println!("    ? `{breaker}` half-open: this charge is a probe");
    }
    fn circuit_closed(&self, _: RunId, _: &dyn Debug, _: &str, breaker: &str) {
        println!("    + `{breaker}` closed again");
    }
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let breaker = Arc::new(CircuitBreaker::try_named(
        "payment-gateway",
        BreakerPolicy::consecutive(3, Duration::from_millis(500)).with_successes_to_close(2),
    )?);
    let gateway_down = Arc::new(AtomicBool::new(true));
    let workflow = Workflow::bare()
        .register(
            Payment::Charge,
            Charge {
                gateway_down: gateway_down.clone(),
                breaker: breaker.clone(),
            },
        )
        .add_exit_state(Payment::Paid)
        .with_observer(Arc::new(BreakerLog));

    let start = Instant::now();
    for order in 1..=8 {
        if order == 4 {
            println!("-- the gateway recovers; waiting out the reset timeout");
            gateway_down.store(false, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let began = Instant::now();
        let outcome = match workflow.orchestrate(Payment::Charge).await {
            Ok(state) => format!("{state:?}"),
            Err(CanoError::CircuitOpen(_)) => "refused at once: circuit open".to_string(),
            Err(CanoError::RetryExhausted(_)) => "failed after 3 attempts (503)".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        println!(
            "order {order}: {outcome:<40} took {:>4} ms, breaker {}",
            began.elapsed().as_millis(),
            breaker.state()
        );
    }
    println!("done in {} ms", start.elapsed().as_millis());
    assert_eq!(breaker.state(), CircuitState::Closed);
    Ok(())
}
