//! A payment saga: reserve stock, charge the card, ship. When shipping fails, the
//! charge is refunded and the stock released, in that order, and the shop's books are
//! as if the order never happened.
//!
//! Four orders run at once against one shop. One ships; one finds no carrier and is
//! rolled back; one is rolled back through a refund service that fails twice before it
//! answers (the refund's own retry policy gets it through); and one hits a refund
//! service that is down: the run fails with `CompensationFailed`, its log (on sled)
//! keeps the refund still owed, and once the service is back `resume_from` finishes
//! the rollback.
//!
//! Run it with `cargo run --example saga_payment`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cano::prelude::*;
use cano::{RunId, RunObserver};

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Order {
    Reserve,
    Charge,
    Ship,
    Shipped,
}

/// The systems the saga changes: stock, card balances, the shop's till.
#[derive(Default)]
struct Shop {
    stock: Mutex<u32>,
    cards: Mutex<HashMap<String, i64>>,
    till: Mutex<i64>,
    /// Refund calls still to fail, per card: a flaky or a dead refund service.
    refund_failures: Mutex<HashMap<String, usize>>,
}

/// One order: who pays, how much, how many items, and whether a carrier is available.
#[derive(Clone)]
struct Ticket {
    card: String,
    amount: i64,
    items: u32,
    carrier: bool,
}

struct Reserve(Arc<Shop>, Ticket);
#[saga::task]
impl CompensatableTask<Order> for Reserve {
    type Output = u32;
    async fn run(&self, _: &Resources) -> Result<(TaskResult<Order>, u32), CanoError> {
        let mut stock = self.0.stock.lock().unwrap();
        if *stock < self.1.items {
            return Err(CanoError::task_execution("out of stock").permanent());
        }
        *stock -= self.1.items;
        Ok((TaskResult::Single(Order::Charge), self.1.items))
    }
    async fn compensate(&self, _: &Resources, items: u32) -> Result<(), CanoError> {
        *self.0.stock.lock().unwrap() += items;
        Ok(())
    }
}

/// What a charge leaves behind: enough to refund exactly it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Receipt {
    card: String,
    amount: i64,
}

struct Charge(Arc<Shop>, Ticket);
#[saga::task]
impl CompensatableTask<Order> for Charge {
    type Output = Receipt;
    async fn run(&self, _: &Resources) -> Result<(TaskResult<Order>, Receipt), CanoError> {
        let Ticket { card, amount, .. } = &self.1;
        *self
            .0
            .cards
            .lock()
            .unwrap()
            .entry(card.clone())
            .or_default() -= amount;
        *self.0.till.lock().unwrap() += amount;
        let receipt = Receipt {
            card: card.clone(),
            amount: *amount,
        };
        Ok((TaskResult::Single(Order::Ship), receipt))
    }
    async fn compensate(&self, _: &Resources, receipt: Receipt) -> Result<(), CanoError> {
        if let Some(left) = self
            .0
            .refund_failures
            .lock()
            .unwrap()
            .get_mut(&receipt.card)
            && *left > 0
        {
            *left -= 1;
            return Err(CanoError::task_execution(
                "refund service unavailable (503)",
            ));
        }
        *self
            .0
            .cards
            .lock()
            .unwrap()
            .entry(receipt.card)
            .or_default() += receipt.amount;
        *self.0.till.lock().unwrap() -= receipt.amount;
        Ok(())
    }
    fn compensation_config(&self) -> TaskConfig {
        // Three tries, quickly, for the example; the default tries six times over
        // several seconds.
        TaskConfig::minimal().with_fixed_retry(2, Duration::from_millis(20))
    }
}

struct Ship(Ticket);
#[task]
impl Task<Order> for Ship {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        if self.0.carrier {
            Ok(TaskResult::Single(Order::Shipped))
        } else {
            Err(CanoError::task_execution(
                "no carrier can take the parcel today",
            ))
        }
    }
}

/// Prints each compensation as it happens.
struct Narrator {
    attempts: AtomicUsize,
}
impl RunObserver for Narrator {
    fn compensation_started(&self, run: RunId, state: &dyn Debug, task: &str) {
        println!("    [{run}] undoing {state:?} ({task})");
    }
    fn compensation_failed(&self, run: RunId, state: &dyn Debug, _: &str, e: &CanoError) {
        println!("    [{run}] could not undo {state:?}: {}", e.message());
    }
    fn task_retrying(
        &self,
        run: RunId,
        _: &dyn Debug,
        task: &str,
        attempt: usize,
        _: &CanoError,
        _: Duration,
    ) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        println!("    [{run}] {task}: attempt {attempt} failed, retrying");
    }
}

fn order(
    shop: &Arc<Shop>,
    ticket: &Ticket,
    store: &SledCheckpointStore,
    narrator: &Arc<Narrator>,
) -> Workflow<Order> {
    Workflow::bare()
        .register_with_compensation(Order::Reserve, Reserve(shop.clone(), ticket.clone()))
        .register_with_compensation(Order::Charge, Charge(shop.clone(), ticket.clone()))
        .register(Order::Ship, Ship(ticket.clone()))
        .add_exit_state(Order::Shipped)
        .with_checkpoint_store(store.clone())
        .with_workflow_id(format!("order-{}", ticket.card))
        .with_observer(narrator.clone())
}

fn books(shop: &Shop) -> String {
    let mut cards: Vec<_> = shop.cards.lock().unwrap().clone().into_iter().collect();
    cards.sort();
    format!(
        "stock {}, till {}, cards {cards:?}",
        shop.stock.lock().unwrap(),
        shop.till.lock().unwrap()
    )
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let dir = std::env::temp_dir().join(format!("cano-saga-payment-{}", std::process::id()));
    let store = SledCheckpointStore::open(&dir)?;
    let shop = Arc::new(Shop::default());
    *shop.stock.lock().unwrap() = 10;
    let narrator = Arc::new(Narrator {
        attempts: AtomicUsize::new(0),
    });
    let tickets = [
        ("ada", 120, 2, true),
        ("bob", 80, 1, false),
        ("cyd", 45, 3, false),
        ("dan", 60, 1, false),
    ]
    .map(|(card, amount, items, carrier)| Ticket {
        card: card.into(),
        amount,
        items,
        carrier,
    });
    for t in &tickets {
        shop.cards.lock().unwrap().insert(t.card.clone(), 500);
    }
    // cyd's refund fails twice, then works; dan's refund service is down.
    shop.refund_failures.lock().unwrap().insert("cyd".into(), 2);
    shop.refund_failures
        .lock()
        .unwrap()
        .insert("dan".into(), usize::MAX);
    println!("before: {}", books(&shop));

    println!("\nfour orders at once:");
    let runs: Vec<_> = tickets
        .iter()
        .map(|t| {
            let workflow = order(&shop, t, &store, &narrator);
            let run = workflow.spawn(Order::Reserve);
            (t.card.clone(), workflow, run)
        })
        .collect();
    let mut stranded = None;
    for (card, workflow, run) in runs {
        let id = run.run_id();
        match run.await {
            Ok(end) => println!("  {card}: {end:?}"),
            Err(CanoError::CompensationFailed { errors }) => {
                println!(
                    "  {card}: failed ({}), and the rollback could not finish:",
                    errors[0].message()
                );
                for e in errors.compensations() {
                    println!("      - {e}");
                }
                stranded = Some((card, workflow, id));
            }
            Err(e) => println!("  {card}: rolled back after: {}", e.message()),
        }
    }
    println!("\nafter: {}", books(&shop));

    if let Some((card, workflow, id)) = stranded {
        let left = workflow.unfinished_runs().await?;
        println!(
            "\n{card}'s run {id} is kept in the checkpoint log ({:?}); the refund service comes back...",
            left.iter().map(|r| r.status).collect::<Vec<_>>()
        );
        shop.refund_failures.lock().unwrap().remove(&card);
        let outcome = workflow.resume_from(id).await;
        println!("  resume_from: {}", outcome.unwrap_err().message());
        println!(
            "  runs left to resume: {}",
            workflow.unfinished_runs().await?.len()
        );
    }
    println!("\nfinally: {}", books(&shop));
    println!(
        "(retried attempts seen by the observer: {})",
        narrator.attempts.load(Ordering::Relaxed)
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
