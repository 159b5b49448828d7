//! `Resources` with a key enum of the user's own, `MemoryStore` and its `StoreError`,
//! health checks, and the lifecycle order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cano::prelude::*;
use cano::store::{StoreError, StoreResult};

/// A key enum as a 0.13 program declares it: no `Clone`, no `Debug`.
#[derive(Hash, PartialEq, Eq)]
enum Key {
    Db,
    Cache,
    Ledger,
}

struct Db {
    log: Arc<Mutex<Vec<&'static str>>>,
}

#[resource]
impl Resource for Db {
    async fn setup(&self) -> Result<(), CanoError> {
        self.log.lock().unwrap().push("db up");
        Ok(())
    }
    async fn teardown(&self) -> Result<(), CanoError> {
        self.log.lock().unwrap().push("db down");
        Ok(())
    }
    async fn health(&self) -> HealthStatus {
        HealthStatus::Degraded("replica lag".into())
    }
}

#[derive(Resource)]
struct Cache {
    entries: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Count,
    Done,
}

struct Count;

#[task(state = Step, key = Key)]
impl Count {
    async fn run(&self, res: &Resources<Key>) -> Result<TaskResult<Step>, CanoError> {
        let cache = res.get::<Cache, _>(&Key::Cache)?;
        let ledger = res.get::<MemoryStore, _>(&Key::Ledger)?;
        ledger.put("entries", cache.entries)?;
        ledger.append("seen", "count")?;
        Ok(TaskResult::Single(Step::Done))
    }
}

#[tokio::test]
async fn an_enum_keyed_workflow_sets_up_runs_and_tears_down_in_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let ledger = MemoryStore::new();
    let resources = Resources::<Key>::with_capacity(3)
        .insert(Key::Db, Db { log: log.clone() })
        .insert(Key::Cache, Cache { entries: 3 })
        .insert(Key::Ledger, ledger.clone());
    let workflow: Workflow<Step, Key> = Workflow::new(resources)
        .register(Step::Count, Count)
        .add_exit_state(Step::Done);
    assert_eq!(workflow.orchestrate(Step::Count).await.unwrap(), Step::Done);
    assert_eq!(*log.lock().unwrap(), ["db up", "db down"]);
    assert_eq!(ledger.get::<usize>("entries").unwrap(), 3);
    assert_eq!(ledger.get::<Vec<&str>>("seen").unwrap(), ["count"]);
}

#[tokio::test]
async fn lookups_fail_with_0_13_variants() {
    let res: Resources = Resources::new().insert("cache", Cache { entries: 1 });
    assert!(matches!(
        res.get::<MemoryStore, str>("missing"),
        Err(CanoError::ResourceNotFound(_))
    ));
    assert!(matches!(
        res.get::<MemoryStore, str>("cache"),
        Err(CanoError::ResourceTypeMismatch(_))
    ));
    let again = res.try_insert("cache", Cache { entries: 2 });
    assert!(matches!(again, Err(CanoError::ResourceDuplicateKey(_))));
    let empty: Resources = Resources::empty();
    empty.setup_all().await.unwrap();
    empty.teardown_all().await;
}

#[tokio::test]
async fn health_is_keyed_and_aggregated() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let res: Resources = Resources::new()
        .insert("db", Db { log })
        .insert("cache", Cache { entries: 0 });
    let report: HashMap<_, _> = res.check_all_health().await;
    assert_eq!(report.len(), 2);
    assert!(report[&std::borrow::Cow::Borrowed("cache")].is_healthy());
    assert_eq!(
        res.aggregate_health().await,
        HealthStatus::Degraded("replica lag".into())
    );
}

fn read_total(store: &MemoryStore) -> StoreResult<u64> {
    let parts: Vec<u64> = store.get("parts")?;
    Ok(parts.iter().sum())
}

#[test]
fn memory_store_calls_return_store_results() -> Result<(), CanoError> {
    let store = MemoryStore::new();
    assert!(store.is_empty()?);
    store.put("parts", vec![1u64, 2])?;
    store.append("parts", 3u64)?;
    assert_eq!(read_total(&store)?, 6);
    assert!(store.contains_key("parts")?);
    assert_eq!(store.len()?, 1);
    let keys: Vec<Arc<str>> = store.keys()?;
    assert_eq!(&*keys[0], "parts");

    match store.get::<String>("absent") {
        Err(StoreError::KeyNotFound(msg)) => assert!(msg.contains("absent")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.get::<String>("parts"),
        Err(StoreError::TypeMismatch(_))
    ));
    assert!(matches!(
        store.append("parts", "text"),
        Err(StoreError::AppendTypeMismatch(_))
    ));
    // Converted by `?` in a task: a Store error with the same text.
    let err: CanoError = store.get::<u8>("absent").unwrap_err().into();
    assert!(matches!(&err, CanoError::Store(m) if m.contains("absent")));

    store.remove("parts")?;
    store.remove("parts")?;
    store.clear()?;
    assert_eq!(store.len()?, 0);
    Ok(())
}
