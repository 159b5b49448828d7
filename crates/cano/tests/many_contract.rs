//! Batches through the facade: a run the batch cancels is cancelled like any run, so
//! the steps it completed are compensated, and only the quota's runs keep their work.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cano::many::{Outcome, WaitStrategy};
use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Order {
    Reserve(u32),
    Ship(u32),
    Shipped,
}

type Stock = Arc<Mutex<Vec<u32>>>;

/// Reserves an item (undone by releasing it), then moves to shipping.
struct Reserve(u32, Stock);
#[saga::task]
impl CompensatableTask<Order> for Reserve {
    type Output = u32;
    async fn run(&self, _: &Resources) -> Result<(TaskResult<Order>, u32), CanoError> {
        self.1.lock().unwrap().push(self.0);
        Ok((TaskResult::Single(Order::Ship(self.0)), self.0))
    }
    async fn compensate(&self, _: &Resources, item: u32) -> Result<(), CanoError> {
        self.1.lock().unwrap().retain(|i| *i != item);
        Ok(())
    }
}

/// Ships: order `n` takes `n` seconds (on the paused clock).
struct Ship(u32);
#[task]
impl Task<Order> for Ship {
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        tokio::time::sleep(Duration::from_secs(u64::from(self.0))).await;
        Ok(TaskResult::Single(Order::Shipped))
    }
}

#[tokio::test(start_paused = true)]
async fn runs_a_batch_cancels_roll_back_what_they_did() {
    let stock: Stock = Arc::default();
    let mut workflow = Workflow::bare().add_exit_state(Order::Shipped);
    for n in 1..=5 {
        workflow = workflow
            .register_with_compensation(Order::Reserve(n), Reserve(n, stock.clone()))
            .register(Order::Ship(n), Ship(n));
    }
    // Five orders, all at once, done when two have shipped.
    let batch = workflow
        .orchestrate_many(
            (1..=5).map(Order::Reserve),
            5,
            WaitStrategy::WaitForQuota(2),
        )
        .await
        .unwrap();
    let shipped: Vec<usize> = batch.finished().map(|(i, _)| i).collect();
    assert_eq!(shipped, [0, 1]);
    for run in &batch.runs[2..] {
        assert!(matches!(run.outcome, Outcome::Cancelled), "{run:?}");
    }
    // The cancelled orders released what they had reserved.
    assert_eq!(*stock.lock().unwrap(), [1, 2]);
}
