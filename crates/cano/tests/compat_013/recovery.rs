//! Crash recovery as cano 0.13 programs write it: a store of their own with
//! `#[checkpoint_store]` (three methods keyed by workflow id), attached as an `Arc`,
//! the run named by `with_workflow_id`, states without serde, and
//! `resume_from("the id")` in a new process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use cano::prelude::*;
use cano::recovery::{CheckpointRow, CheckpointStore, RowKind};
use tokio::sync::Notify;

/// 0.13's documented in-memory store: refuses a sequence it already has.
#[derive(Default)]
struct InMemoryStore(Mutex<HashMap<String, Vec<CheckpointRow>>>);

#[cano::checkpoint_store]
impl InMemoryStore {
    async fn append(&self, workflow_id: &str, row: CheckpointRow) -> Result<(), CanoError> {
        let mut runs = self.0.lock().unwrap();
        let rows = runs.entry(workflow_id.to_string()).or_default();
        if rows.iter().any(|r| r.sequence == row.sequence) {
            return Err(CanoError::checkpoint_store(format!(
                "checkpoint conflict: {workflow_id:?} already has sequence {}",
                row.sequence
            )));
        }
        rows.push(row);
        Ok(())
    }

    async fn load_run(&self, workflow_id: &str) -> Result<Vec<CheckpointRow>, CanoError> {
        let mut rows = self
            .0
            .lock()
            .unwrap()
            .get(workflow_id)
            .cloned()
            .unwrap_or_default();
        rows.sort_by_key(|r| r.sequence);
        Ok(rows)
    }

    async fn clear(&self, workflow_id: &str) -> Result<(), CanoError> {
        self.0.lock().unwrap().remove(workflow_id);
        Ok(())
    }
}

/// No serde: 0.13 stored states by their `Debug` text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Order {
    Reserve,
    Charge,
    Ship,
    Done,
}

#[derive(Clone, Default)]
struct Counts {
    reserve: Arc<AtomicU32>,
    charge: Arc<AtomicU32>,
    ship: Arc<AtomicU32>,
}

struct Step {
    next: Order,
    count: Arc<AtomicU32>,
}

#[task(state = Order)]
impl Step {
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        self.count.fetch_add(1, Ordering::SeqCst);
        Ok(TaskResult::Single(self.next.clone()))
    }
}

/// How shipping behaves in this "process".
#[derive(Clone)]
enum Carrier {
    Works,
    /// Signals it started, then never returns: the process dies here.
    Hangs(Arc<Notify>),
    /// Fails once.
    Down,
}

struct Ship {
    carrier: Carrier,
    count: Arc<AtomicU32>,
}

#[task(state = Order)]
impl Ship {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }

    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        self.count.fetch_add(1, Ordering::SeqCst);
        match &self.carrier {
            Carrier::Works => Ok(TaskResult::Single(Order::Done)),
            Carrier::Hangs(started) => {
                started.notify_one();
                std::future::pending().await
            }
            Carrier::Down => Err(CanoError::TaskExecution("the carrier is down".into())),
        }
    }
}

fn workflow(counts: &Counts, carrier: Carrier, store: Arc<dyn CheckpointStore>) -> Workflow<Order> {
    Workflow::bare()
        .register(
            Order::Reserve,
            Step {
                next: Order::Charge,
                count: counts.reserve.clone(),
            },
        )
        .register(
            Order::Charge,
            Step {
                next: Order::Ship,
                count: counts.charge.clone(),
            },
        )
        .register(
            Order::Ship,
            Ship {
                carrier,
                count: counts.ship.clone(),
            },
        )
        .add_exit_state(Order::Done)
        .with_checkpoint_store(store)
}

#[tokio::test]
async fn a_run_killed_in_a_state_resumes_there_by_its_workflow_id() -> CanoResult<()> {
    let store = Arc::new(InMemoryStore::default());
    let counts = Counts::default();
    let started = Arc::new(Notify::new());
    let first = workflow(&counts, Carrier::Hangs(started.clone()), store.clone())
        .with_workflow_id("order-42");
    // The process dies while shipping: the run's future is dropped mid-state.
    tokio::select! {
        _ = first.orchestrate(Order::Reserve) => panic!("shipping never returns"),
        () = started.notified() => {}
    }
    drop(first);

    let rows = store.load_run("order-42").await?;
    let states: Vec<(u64, &str, RowKind)> = rows
        .iter()
        .map(|r| (r.sequence, r.state.as_str(), r.kind))
        .collect();
    assert_eq!(
        states,
        [
            (0, "Reserve", RowKind::StateEntry),
            (1, "Charge", RowKind::StateEntry),
            (2, "Ship", RowKind::StateEntry),
        ]
    );
    assert!(rows.iter().all(|r| r.output_blob.is_none()));

    // A new process: same store, no workflow id needed to resume.
    let second = workflow(&counts, Carrier::Works, store.clone());
    assert_eq!(second.resume_from("order-42").await?, Order::Done);
    assert_eq!(counts.reserve.load(Ordering::SeqCst), 1, "not run again");
    assert_eq!(counts.charge.load(Ordering::SeqCst), 1, "not run again");
    assert_eq!(
        counts.ship.load(Ordering::SeqCst),
        2,
        "the state it died in runs again"
    );
    // A run that finished leaves no log.
    assert!(store.load_run("order-42").await?.is_empty());
    // Resuming it again: nothing to resume, as 0.13 said.
    match second.resume_from("order-42").await {
        Err(CanoError::CheckpointStore(msg)) => {
            assert!(msg.contains("no checkpoint rows"), "{msg}")
        }
        other => panic!("an unknown id is a checkpoint store error: {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_failed_run_resumes_in_the_state_that_failed() -> CanoResult<()> {
    let store: Arc<dyn CheckpointStore> = Arc::new(InMemoryStore::default());
    let counts = Counts::default();
    let failing = workflow(&counts, Carrier::Down, store.clone()).with_workflow_id("order-7");
    match failing.orchestrate(Order::Reserve).await {
        Err(CanoError::TaskExecution(msg)) => assert!(msg.contains("carrier is down"), "{msg}"),
        other => panic!("the carrier is down: {other:?}"),
    }
    // Its log names every state it entered, in order.
    let rows = store.load_run("order-7").await?;
    let labels: Vec<&str> = rows.iter().map(|r| r.state.as_str()).collect();
    assert_eq!(&labels[..3], ["Reserve", "Charge", "Ship"]);

    let fixed = workflow(&counts, Carrier::Works, store.clone()).with_workflow_id("order-7");
    assert_eq!(
        fixed.resume_from(String::from("order-7")).await?,
        Order::Done
    );
    assert_eq!(counts.charge.load(Ordering::SeqCst), 1);
    assert_eq!(counts.ship.load(Ordering::SeqCst), 2);
    assert!(store.load_run("order-7").await?.is_empty());

    // Two runs cannot share an id: the second is refused, the first's rows untouched.
    let store = Arc::new(InMemoryStore::default());
    let once = workflow(&counts, Carrier::Down, store.clone()).with_workflow_id("dup");
    assert!(once.orchestrate(Order::Reserve).await.is_err());
    let before = store.load_run("dup").await?;
    assert!(once.orchestrate(Order::Reserve).await.is_err());
    assert_eq!(store.load_run("dup").await?, before);
    Ok(())
}

#[tokio::test]
async fn a_simple_store_needs_a_workflow_id() {
    let store = Arc::new(InMemoryStore::default());
    let unnamed = workflow(&Counts::default(), Carrier::Works, store.clone());
    match unnamed.orchestrate(Order::Reserve).await {
        Err(CanoError::Configuration(msg)) => assert!(msg.contains("workflow id"), "{msg}"),
        other => panic!("a run with no id cannot be checkpointed: {other:?}"),
    }
    assert!(store.0.lock().unwrap().is_empty());
}

#[test]
fn rows_build_as_in_0_13() {
    let bare = CheckpointRow::new(3, "Process", "worker");
    assert_eq!(
        (bare.sequence, bare.state.as_str(), bare.task_id.as_str()),
        (3, "Process", "worker")
    );
    assert_eq!((bare.output_blob, bare.kind), (None, RowKind::StateEntry));
    let carried = CheckpointRow::new(4, "Done", "worker").with_output(vec![1, 2, 3]);
    assert_eq!(carried.kind, RowKind::CompensationCompletion);
    let cursor = CheckpointRow::new(5, "Step", "stepper").with_cursor(vec![9]);
    assert_eq!(cursor.kind, RowKind::StepCursor);
    let _erased: Arc<dyn CheckpointStore> = Arc::new(InMemoryStore::default());
}

/// Charges a card; refunds it on compensation.
struct ChargeCard {
    refunds: Arc<Mutex<Vec<String>>>,
}

#[saga::task(state = Order)]
impl ChargeCard {
    type Output = String;

    async fn run(&self, _res: &Resources) -> Result<(TaskResult<Order>, String), CanoError> {
        Ok((TaskResult::Single(Order::Ship), "charge-991".to_string()))
    }

    async fn compensate(&self, _res: &Resources, charge: String) -> Result<(), CanoError> {
        self.refunds.lock().unwrap().push(charge);
        Ok(())
    }
}

#[tokio::test]
async fn a_resumed_run_still_compensates_what_it_did_before_the_crash() -> CanoResult<()> {
    let store = Arc::new(InMemoryStore::default());
    let refunds = Arc::new(Mutex::new(Vec::new()));
    let counts = Counts::default();
    let saga = |carrier: Carrier| {
        Workflow::bare()
            .register(
                Order::Reserve,
                Step {
                    next: Order::Charge,
                    count: counts.reserve.clone(),
                },
            )
            .register_with_compensation(
                Order::Charge,
                ChargeCard {
                    refunds: refunds.clone(),
                },
            )
            .register(
                Order::Ship,
                Ship {
                    carrier,
                    count: counts.ship.clone(),
                },
            )
            .add_exit_state(Order::Done)
            .with_checkpoint_store(store.clone())
    };
    let started = Arc::new(Notify::new());
    let first = saga(Carrier::Hangs(started.clone())).with_workflow_id("order-9");
    tokio::select! {
        _ = first.orchestrate(Order::Reserve) => panic!("shipping never returns"),
        () = started.notified() => {}
    }
    drop(first);
    // The charge's record rides in its row.
    let rows = store.load_run("order-9").await?;
    assert!(
        rows.iter()
            .any(|r| r.kind == RowKind::CompensationCompletion && r.output_blob.is_some()),
        "{rows:?}"
    );
    assert!(refunds.lock().unwrap().is_empty());

    // The new process finds the carrier down for good: the charge made before the
    // crash is refunded.
    let second = saga(Carrier::Down);
    let err = second.resume_from("order-9").await.unwrap_err();
    assert!(err.to_string().contains("carrier is down"), "{err}");
    assert_eq!(*refunds.lock().unwrap(), ["charge-991"]);
    assert!(
        store.load_run("order-9").await?.is_empty(),
        "a clean rollback clears the log"
    );
    Ok(())
}
