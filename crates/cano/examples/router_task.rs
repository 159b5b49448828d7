//! A router: after validation, an order is sent down one of three lanes depending on
//! its amount and destination. The router only reads; it changes nothing, so its state
//! writes no checkpoint row, and `validate()` checks every lane it declares is wired.
//!
//! Run it with `cargo run --example router_task`.

use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Order {
    Validate,
    Triage,
    Express,
    Standard,
    ManualReview,
    Shipped,
    Held,
}

#[derive(Debug, Clone)]
struct Details {
    amount_cents: u64,
    country: &'static str,
}

struct Validate;

#[task(state = Order)]
impl Validate {
    async fn run(&self, res: &Resources) -> Result<TaskResult<Order>, CanoError> {
        let order: Details = res.get::<MemoryStore, _>("store")?.get("order")?;
        if order.amount_cents == 0 {
            return Err(CanoError::task_execution("an order of 0 cents cannot ship"));
        }
        Ok(TaskResult::Single(Order::Triage))
    }
}

/// Picks the lane: large orders and sanctioned destinations go to a person.
struct Triage;

#[task::router(state = Order)]
impl Triage {
    async fn route(&self, res: &Resources) -> Result<TaskResult<Order>, CanoError> {
        let order: Details = res.get::<MemoryStore, _>("store")?.get("order")?;
        Ok(TaskResult::Single(
            match (order.amount_cents, order.country) {
                (_, "XX") | (1_000_000.., _) => Order::ManualReview,
                (50_000.., _) => Order::Express,
                _ => Order::Standard,
            },
        ))
    }

    fn targets(&self) -> Option<Vec<Order>> {
        Some(vec![Order::Express, Order::Standard, Order::ManualReview])
    }
}

struct Ship(&'static str);

#[task(state = Order)]
impl Ship {
    async fn run(&self, res: &Resources) -> Result<TaskResult<Order>, CanoError> {
        res.get::<MemoryStore, _>("store")?.put("carrier", self.0)?;
        Ok(TaskResult::Single(Order::Shipped))
    }
}

struct Hold;

#[task(state = Order)]
impl Hold {
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        Ok(TaskResult::Single(Order::Held))
    }
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let orders = [
        Details {
            amount_cents: 4_999,
            country: "NL",
        },
        Details {
            amount_cents: 120_000,
            country: "DE",
        },
        Details {
            amount_cents: 2_000_000,
            country: "FR",
        },
        Details {
            amount_cents: 900,
            country: "XX",
        },
    ];
    for order in orders {
        let store = MemoryStore::new();
        store.put("order", order.clone())?;
        let workflow = Workflow::new(Resources::new().insert("store", store.clone()))
            .register(Order::Validate, Validate)
            .register_router(Order::Triage, Triage)
            .register(Order::Express, Ship("courier"))
            .register(Order::Standard, Ship("post"))
            .register(Order::ManualReview, Hold)
            .add_exit_states([Order::Shipped, Order::Held]);
        workflow.validate()?;
        let end = workflow.orchestrate(Order::Validate).await?;
        let carrier = store.get::<&str>("carrier").unwrap_or("-");
        println!(
            "{:>9} cents to {}: {end:?} (carrier: {carrier})",
            order.amount_cents, order.country
        );
    }

    // A lane declared by the router but never registered is caught before any run.
    let broken = Workflow::<Order>::bare()
        .register_router(Order::Triage, Triage)
        .register(Order::Express, Ship("courier"))
        .add_exit_states([Order::Shipped, Order::Standard]);
    println!(
        "\nvalidate() on a workflow missing a lane:\n  {}",
        broken.validate().unwrap_err()
    );
    Ok(())
}
