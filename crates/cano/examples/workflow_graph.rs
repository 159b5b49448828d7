//! The workflow graph: an order workflow whose states declare where they may go, checked
//! as a whole from its initial state and drawn as a Mermaid diagram (paste the output
//! into any Mermaid viewer), then a split/join workflow drawn the same way, and the
//! paths that real runs took, drawn from a recording observer.
//!
//! Run it with `cargo run --example workflow_graph --features testing`.

use cano::prelude::*;
use cano::testing::RecordingObserver;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Order {
    Validate,
    Triage,
    Express,
    Standard,
    Shipped,
    Rejected,
}

/// Moves to a fixed state.
struct Step(Order);

#[task]
impl Task<Order> for Step {
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        Ok(TaskResult::Single(self.0.clone()))
    }
}

/// Sends every third order express.
struct ByPriority(std::sync::atomic::AtomicU32);

#[task::router]
impl RouterTask<Order> for ByPriority {
    async fn route(&self, _res: &Resources) -> Result<TaskResult<Order>, CanoError> {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(TaskResult::Single(if n.is_multiple_of(3) {
            Order::Express
        } else {
            Order::Standard
        }))
    }
    fn targets(&self) -> Option<Vec<Order>> {
        Some(vec![Order::Express, Order::Standard])
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Quote {
    Ask,
    Compare,
    Booked,
}

/// One carrier's quote.
struct Carrier;

#[task]
impl Task<Quote> for Carrier {
    async fn run_bare(&self) -> Result<TaskResult<Quote>, CanoError> {
        Ok(TaskResult::Single(Quote::Compare))
    }
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let recorder = RecordingObserver::new();
    let orders = Workflow::bare()
        .register(Order::Validate, Step(Order::Triage))
        .transitions(Order::Validate, [Order::Triage, Order::Rejected])
        .register_router(Order::Triage, ByPriority(0.into()))
        .register(Order::Express, Step(Order::Shipped))
        .transitions(Order::Express, [Order::Shipped])
        .register(Order::Standard, Step(Order::Shipped))
        .transitions(Order::Standard, [Order::Shipped])
        .add_exit_states([Order::Shipped, Order::Rejected])
        .with_observer(recorder.clone());
    orders.validate_from(&Order::Validate)?;
    println!(
        "The order workflow, as declared:\n\n{}",
        orders.to_mermaid()
    );

    let quotes = Workflow::bare()
        .register_split(
            Quote::Ask,
            vec![Carrier, Carrier, Carrier],
            JoinConfig::new(JoinStrategy::Quorum(2), Quote::Compare),
        )
        .register(Quote::Compare, Cheapest)
        .transitions(Quote::Compare, [Quote::Booked])
        .add_exit_state(Quote::Booked);
    quotes.validate_from(&Quote::Ask)?;
    println!(
        "The quote workflow (a split and its join):\n\n{}",
        quotes.to_mermaid()
    );

    for _ in 0..6 {
        orders.orchestrate(Order::Validate).await?;
    }
    println!("Six orders, as they ran:\n\n{}", recorder.to_mermaid());
    Ok(())
}

/// Picks the cheapest quote.
struct Cheapest;

#[task]
impl Task<Quote> for Cheapest {
    async fn run_bare(&self) -> Result<TaskResult<Quote>, CanoError> {
        Ok(TaskResult::Single(Quote::Booked))
    }
}
