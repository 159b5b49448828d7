//! The showcase: an order pipeline with shared resources, a flaky payment gateway that
//! is retried with backoff behind a shared circuit breaker and rate limiter, a
//! prep/exec/post node, shipping quotes asked of four carriers in parallel (the first two answers win, a carrier that is down does not
//! matter), an observer printing what happens, many orders run concurrently through one
//! workflow, and the errors you get when an order is invalid, too slow, or cancelled.
//! The charge is a saga step: an order stopped after it was charged (by the workflow
//! timeout, or a cancellation) is rolled back and its payment refunded. Every run is
//! checkpointed in an embedded sled database (group commit: concurrent orders share
//! their flushes), with the charge's receipt saved so a crashed run would still refund.
//!
//! Run it with `cargo run --example order_pipeline`.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cano::node;
use cano::prelude::*;
use cano::{BreakerPolicy, Node, RateLimiter, RunId, RunObserver};

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Order {
    Validate,
    Price,
    Charge,
    Quote,
    PickCarrier,
    Ship,
    Delivered,
    Rejected,
}

/// Pricing rules, shared by every run.
#[derive(Resource)]
struct Catalog {
    unit_price_cents: u64,
    free_shipping_from_cents: u64,
}

/// A payment gateway that declines every third charge with a transient error.
struct PaymentGateway {
    calls: AtomicU32,
    refunds: AtomicU32,
}

#[resource]
impl Resource for PaymentGateway {
    async fn health(&self) -> HealthStatus {
        HealthStatus::Healthy
    }
}

impl PaymentGateway {
    async fn charge(&self, cents: u64) -> Result<String, CanoError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n % 3 == 1 {
            return Err(CanoError::task_execution("gateway busy (HTTP 503)"));
        }
        Ok(format!("txn-{n:04}-{cents}"))
    }

    async fn refund(&self, receipt: &str) -> Result<(), CanoError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.refunds.fetch_add(1, Ordering::SeqCst);
        println!("  refunded {receipt}");
        Ok(())
    }
}

struct Validate;
#[task]
impl Task<Order> for Validate {
    async fn run(&self, res: &Resources) -> Result<TaskResult<Order>, CanoError> {
        let store = res.get::<MemoryStore, _>("order")?;
        let quantity: u32 = store.get("quantity")?;
        Ok(TaskResult::Single(if quantity == 0 {
            Order::Rejected
        } else {
            Order::Price
        }))
    }
}

/// Pricing as a node: read the inputs, compute (cannot fail), write the result.
struct Price;
#[node]
impl Node<Order> for Price {
    type PrepResult = (u32, Arc<Catalog>);
    type ExecResult = u64;

    async fn prep(&self, res: &Resources) -> Result<Self::PrepResult, CanoError> {
        let quantity = res.get::<MemoryStore, _>("order")?.get("quantity")?;
        Ok((quantity, res.get::<Catalog, _>("catalog")?))
    }
    async fn exec(&self, (quantity, catalog): Self::PrepResult) -> u64 {
        let goods = u64::from(quantity) * catalog.unit_price_cents;
        if goods >= catalog.free_shipping_from_cents {
            goods
        } else {
            goods + 499
        }
    }
    async fn post(&self, res: &Resources, total: u64) -> Result<Order, CanoError> {
        res.get::<MemoryStore, _>("order")?
            .put("total_cents", total)?;
        Ok(Order::Charge)
    }
}

/// Charges the order; every attempt passes the gateway's circuit breaker and rate
/// limiter, shared by all runs. If a later state fails, the charge is refunded.
struct Charge {
    breaker: Arc<CircuitBreaker>,
    limiter: Arc<RateLimiter>,
}
#[saga::task]
impl CompensatableTask<Order> for Charge {
    /// The receipt: what a refund needs.
    type Output = String;
    async fn run(&self, res: &Resources) -> Result<(TaskResult<Order>, String), CanoError> {
        let store = res.get::<MemoryStore, _>("order")?;
        let total: u64 = store.get("total_cents")?;
        let receipt = res
            .get::<PaymentGateway, _>("payments")?
            .charge(total)
            .await?;
        store.put("receipt", receipt.clone())?;
        Ok((TaskResult::Single(Order::Quote), receipt))
    }
    async fn compensate(&self, res: &Resources, receipt: String) -> Result<(), CanoError> {
        res.get::<PaymentGateway, _>("payments")?
            .refund(&receipt)
            .await
    }
    fn config(&self) -> TaskConfig {
        // Transient gateway errors are retried quickly, a hung call is cut off, a
        // gateway that keeps failing is left alone, and the gateway's quota is kept.
        TaskConfig::new()
            .with_retry(RetryMode::exponential(4).with_base_delay(Duration::from_millis(2)))
            .with_attempt_timeout(Duration::from_millis(200))
            .with_circuit_breaker(self.breaker.clone())
            .with_rate_limiter(self.limiter.clone())
    }
}

/// A carrier asked for a shipping quote; one of them is down.
struct Carrier {
    name: &'static str,
    answers_after: Duration,
    quote_cents: Option<u64>,
}
#[task]
impl Task<Order> for Carrier {
    async fn run(&self, res: &Resources) -> Result<TaskResult<Order>, CanoError> {
        tokio::time::sleep(self.answers_after).await;
        let cents = self.quote_cents.ok_or_else(|| {
            CanoError::task_execution(format!("{} is not answering (HTTP 502)", self.name))
        })?;
        res.get::<MemoryStore, _>("order")?
            .put(format!("quote:{}", self.name), cents)?;
        Ok(TaskResult::Single(Order::PickCarrier))
    }
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    // Each carrier is named after itself, so the split's result says who answered.
    fn name(&self) -> std::borrow::Cow<'static, str> {
        self.name.into()
    }
}

fn carriers() -> Vec<Carrier> {
    let carrier = |name, ms, quote_cents| Carrier {
        name,
        answers_after: Duration::from_millis(ms),
        quote_cents,
    };
    vec![
        carrier("swiftpost", 30, Some(690)),
        carrier("parcelco", 5, None),
        carrier("cargoline", 15, Some(540)),
        carrier("slowfreight", 900, Some(90)),
    ]
}

/// Takes the cheapest of the quotes that arrived.
struct PickCarrier;
#[task]
impl Task<Order> for PickCarrier {
    async fn run(&self, res: &Resources) -> Result<TaskResult<Order>, CanoError> {
        let store = res.get::<MemoryStore, _>("order")?;
        let quotes = SplitResult::<Order>::of(&Order::Quote)?;
        let mut best: Option<(u64, String)> = None;
        for (index, _) in quotes.succeeded() {
            let carrier = quotes.branches()[index].task.to_string();
            let cents: u64 = store.get(&format!("quote:{carrier}"))?;
            if best.as_ref().is_none_or(|(b, _)| cents < *b) {
                best = Some((cents, carrier));
            }
        }
        let (_, carrier) = best.ok_or_else(|| CanoError::workflow("no carrier quoted"))?;
        store.put("carrier", carrier)?;
        Ok(TaskResult::Single(Order::Ship))
    }
}

struct Ship {
    delay: Duration,
}
#[task]
impl Task<Order> for Ship {
    async fn run(&self, res: &Resources) -> Result<TaskResult<Order>, CanoError> {
        tokio::time::sleep(self.delay).await;
        res.get::<MemoryStore, _>("order")?
            .put("tracking", "PARCEL-7")?;
        Ok(TaskResult::Single(Order::Delivered))
    }
}

/// Prints retries and failures as they happen.
struct Console;
impl RunObserver for Console {
    fn task_retrying(
        &self,
        run: RunId,
        state: &dyn Debug,
        task: &str,
        attempt: usize,
        error: &CanoError,
        delay: Duration,
    ) {
        println!(
            "  [{run}] {state:?}: `{task}` attempt {attempt} failed ({}), retrying in {delay:?}",
            error.message()
        );
    }
    fn task_failed(&self, run: RunId, state: &dyn Debug, task: &str, error: &CanoError) {
        println!("  [{run}] {state:?}: `{task}` gave up: {error}");
    }
}

/// What every run shares: the gateway, and what guards calls to it.
#[derive(Clone)]
struct Gateway {
    payments: Arc<PaymentGateway>,
    breaker: Arc<CircuitBreaker>,
    limiter: Arc<RateLimiter>,
    checkpoints: SledCheckpointStore,
}

fn order_workflow(order: MemoryStore, gateway: &Gateway, ship_delay: Duration) -> Workflow<Order> {
    let resources = Resources::new()
        .insert(
            "catalog",
            Catalog {
                unit_price_cents: 1_250,
                free_shipping_from_cents: 5_000,
            },
        )
        .insert_shared("payments", gateway.payments.clone())
        .insert("order", order);
    Workflow::new(resources)
        .register(Order::Validate, Validate)
        .register(Order::Price, Price)
        .register_with_compensation(
            Order::Charge,
            Charge {
                breaker: gateway.breaker.clone(),
                limiter: gateway.limiter.clone(),
            },
        )
        // Two quotes are enough: the carrier that is down and the slow one are not
        // waited for.
        .register_split(
            Order::Quote,
            carriers(),
            JoinConfig::new(JoinStrategy::Quorum(2), Order::PickCarrier)
                .with_timeout(Duration::from_millis(500)),
        )
        .register(Order::PickCarrier, PickCarrier)
        .register(Order::Ship, Ship { delay: ship_delay })
        .add_exit_states([Order::Delivered, Order::Rejected])
        .with_timeout(Duration::from_secs(2))
        .with_observer(Arc::new(Console))
        .with_checkpoint_store(gateway.checkpoints.clone())
        .with_workflow_id("order-pipeline")
        // Finished runs keep their rows, so the inspector can show every run.
        .with_retention(cano::Retention::KeepFinished)
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    // In the workspace's target directory, so `cano serve` can open it afterwards
    // (CANO_SHOWCASE_STORE puts it elsewhere).
    let dir = std::env::var_os("CANO_SHOWCASE_STORE").map_or_else(
        || {
            std::path::PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../target/showcase-store"
            ))
        },
        std::path::PathBuf::from,
    );
    let gateway = Gateway {
        checkpoints: SledCheckpointStore::open(&dir)?,
        payments: Arc::new(PaymentGateway {
            calls: AtomicU32::new(0),
            refunds: AtomicU32::new(0),
        }),
        // Five failures in a row would open it; one in three never does.
        breaker: Arc::new(CircuitBreaker::try_named(
            "payment-gateway",
            BreakerPolicy::consecutive(5, Duration::from_secs(5)),
        )?),
        // The gateway allows 100 calls a second, 4 at once.
        limiter: Arc::new(
            RateLimiter::token_bucket(100, Duration::from_secs(1), 4)?.with_name("payment-gateway"),
        ),
    };

    println!("== Six orders, one workflow each, run concurrently ==");
    let mut runs = Vec::new();
    for quantity in [3u32, 0, 5, 1, 8, 2] {
        let order = MemoryStore::new();
        order.put("quantity", quantity)?;
        let workflow = order_workflow(order.clone(), &gateway, Duration::from_millis(10));
        runs.push((quantity, order, workflow.spawn(Order::Validate)));
    }
    for (quantity, order, run) in runs {
        let end = run.await?;
        let receipt = order
            .get::<String>("receipt")
            .unwrap_or_else(|_| "-".into());
        let total = order
            .get::<u64>("total_cents")
            .map(|c| format!("{}.{:02}", c / 100, c % 100));
        let carrier = order
            .get::<String>("carrier")
            .unwrap_or_else(|_| "-".into());
        println!(
            "quantity {quantity}: {end:?}, total {}, receipt {receipt}, carrier {carrier}",
            total.unwrap_or_else(|_| "-".into())
        );
    }

    println!("\n== A shipment slower than the 2 s workflow timeout ==");
    let order = MemoryStore::new();
    order.put("quantity", 2u32)?;
    let slow = order_workflow(order, &gateway, Duration::from_secs(30));
    match slow.orchestrate(Order::Validate).await {
        Err(CanoError::Workflow(detail)) => println!("stopped, charge refunded: {detail}"),
        other => println!("unexpected: {other:?}"),
    }

    println!("\n== An order cancelled while it ships ==");
    let order = MemoryStore::new();
    order.put("quantity", 4u32)?;
    let run = order_workflow(order, &gateway, Duration::from_secs(30)).spawn(Order::Validate);
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.cancel();
    match run.await {
        Err(CanoError::Cancelled(detail)) => println!("stopped, charge refunded: {detail}"),
        other => println!("unexpected: {other:?}"),
    }
    println!(
        "\npayment gateway: {} calls, {} refunds, breaker {}",
        gateway.payments.calls.load(Ordering::SeqCst),
        gateway.payments.refunds.load(Ordering::SeqCst),
        gateway.breaker.state()
    );
    let stats = gateway.checkpoints.stats();
    println!(
        "checkpoints: {} rows written with {} flushes",
        stats.rows, stats.flushes
    );
    let probe = order_workflow(MemoryStore::new(), &gateway, Duration::ZERO);
    for run in probe.unfinished_runs().await? {
        println!(
            "  left to resume: run {} ({:?} in {})",
            run.run, run.status, run.label
        );
    }
    // Put every row on disk and let go of the directory before the inspector opens it.
    drop(probe);
    drop(slow);
    gateway.checkpoints.clone().close().await?;
    println!(
        "\nInspect these runs in the web console:\n  cargo run -p cano-inspect -- --store sled:{} serve",
        std::fs::canonicalize(&dir).unwrap_or(dir).display()
    );
    Ok(())
}
