//! The task models as users write them: `use cano::prelude::*`, `#[task::router]`,
//! `#[task::poll]`, `#[task::batch]`, `#[task::timer]`, `#[task::stream]`, in the trait
//! form and the inherent `state = S` form, registered in one workflow.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cano::checkpoint::CheckpointStore;
use cano::prelude::*;
use cano::{
    Deadline, ItemStream, MemoryCheckpointStore, Retention, RunId, RunOptions, StreamConfig,
    StreamSummary, WindowOutcome,
};
use futures::stream;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Step {
    Route,
    Poll,
    Batch,
    Timer,
    Stream,
    Done,
    Small,
}

struct Triage;

#[task::router]
impl RouterTask<Step> for Triage {
    async fn route(&self, res: &Resources) -> Result<TaskResult<Step>, CanoError> {
        let size: u32 = res.get::<MemoryStore, _>("store")?.get("size")?;
        Ok(TaskResult::Single(if size > 2 {
            Step::Poll
        } else {
            Step::Small
        }))
    }

    fn targets(&self) -> Option<Vec<Step>> {
        Some(vec![Step::Poll, Step::Small])
    }
}

struct Ready(AtomicU32);

#[task::poll(state = Step)]
impl Ready {
    async fn poll(&self, _res: &Resources) -> Result<PollOutcome<Step>, CanoError> {
        Ok(if self.0.fetch_add(1, Ordering::SeqCst) < 2 {
            PollOutcome::pending(Duration::from_secs(1))
        } else {
            PollOutcome::ready(Step::Batch)
        })
    }

    fn max_wait(&self) -> Option<Duration> {
        Some(Duration::from_secs(60))
    }
}

#[derive(Clone)]
struct Square;

#[task::batch]
impl BatchTask<Step> for Square {
    type Item = u64;
    type ItemOutput = u64;

    async fn load(&self, res: &Resources) -> Result<Vec<u64>, CanoError> {
        let size: u32 = res.get::<MemoryStore, _>("store")?.get("size")?;
        Ok((1..=u64::from(size)).collect())
    }

    async fn process_item(&self, _res: &Resources, item: &u64) -> Result<u64, CanoError> {
        Ok(item * item)
    }

    async fn finish(
        &self,
        res: &Resources,
        results: Vec<ItemResult<u64>>,
    ) -> Result<TaskResult<Step>, CanoError> {
        let squares = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        res.get::<MemoryStore, _>("store")?
            .put("squares", squares)?;
        Ok(TaskResult::Single(Step::Timer))
    }
}

struct Cooldown;

#[task::timer(state = Step)]
impl Cooldown {
    async fn deadline(&self, _res: &Resources) -> Result<Deadline, CanoError> {
        Ok(Deadline::After(Duration::from_secs(30)))
    }

    async fn fire(&self, _res: &Resources) -> Result<TaskResult<Step>, CanoError> {
        Ok(TaskResult::Single(Step::Stream))
    }
}

struct Totals;

#[task::stream(state = Step)]
impl Totals {
    type Item = u64;
    type Cursor = u64;

    async fn open(
        &self,
        res: &Resources,
        cursor: Option<u64>,
    ) -> Result<ItemStream<u64>, CanoError> {
        let squares: Vec<u64> = res.get::<MemoryStore, _>("store")?.get("squares")?;
        let skip = cursor.unwrap_or(0) as usize;
        Ok(Box::pin(stream::iter(
            squares.into_iter().skip(skip).map(Ok),
        )))
    }

    async fn flush(
        &self,
        res: &Resources,
        window: Vec<u64>,
    ) -> Result<WindowOutcome<u64, Step>, CanoError> {
        let store = res.get::<MemoryStore, _>("store")?;
        let seen = store.get::<u64>("seen").unwrap_or(0) + window.len() as u64;
        let sum = store.get::<u64>("sum").unwrap_or(0) + window.iter().sum::<u64>();
        store.put("seen", seen)?;
        store.put("sum", sum)?;
        Ok(WindowOutcome::Continue(seen))
    }

    async fn finish(
        &self,
        _res: &Resources,
        summary: StreamSummary<u64>,
    ) -> Result<TaskResult<Step>, CanoError> {
        assert_eq!(summary.windows, 2);
        Ok(TaskResult::Single(Step::Done))
    }

    fn stream_config(&self) -> StreamConfig {
        StreamConfig::new().with_max_items(3)
    }
}

fn workflow(store: MemoryStore) -> Workflow<Step> {
    Workflow::new(Resources::new().insert("store", store))
        .register_router(Step::Route, Triage)
        .register(Step::Poll, Ready(AtomicU32::new(0)))
        .register(Step::Batch, Square)
        .register(Step::Timer, Cooldown)
        .register(Step::Stream, Totals)
        .add_exit_states([Step::Done, Step::Small])
}

#[tokio::test(start_paused = true)]
async fn every_model_runs_in_one_workflow() {
    let store = MemoryStore::new();
    store.put("size", 5u32).unwrap();
    let workflow = workflow(store.clone());
    workflow.validate().unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(workflow.orchestrate(Step::Route).await.unwrap(), Step::Done);
    // Two poll pauses of 1 s, then the 30 s timer.
    assert_eq!(started.elapsed(), Duration::from_secs(32));
    assert_eq!(store.get::<Vec<u64>>("squares").unwrap(), [1, 4, 9, 16, 25]);
    assert_eq!(store.get::<u64>("sum").unwrap(), 55);
    assert_eq!(store.get::<u64>("seen").unwrap(), 5);
}

#[tokio::test]
async fn a_router_picks_the_other_branch_and_the_kind_is_reported() {
    let store = MemoryStore::new();
    store.put("size", 1u32).unwrap();
    let workflow = workflow(store);
    assert_eq!(
        workflow.orchestrate(Step::Route).await.unwrap(),
        Step::Small
    );
    let kinds: std::collections::HashMap<Step, &str> = workflow
        .states()
        .into_iter()
        .map(|(s, info)| (s, info.kind))
        .collect();
    assert_eq!(kinds[&Step::Route], "router");
    assert_eq!(kinds[&Step::Poll], "task");
}

#[tokio::test]
async fn a_router_is_also_a_task() {
    let store = MemoryStore::new();
    store.put("size", 1u32).unwrap();
    let workflow = Workflow::new(Resources::new().insert("store", store))
        .register(Step::Route, Triage)
        .add_exit_states([Step::Poll, Step::Small]);
    assert_eq!(
        workflow.orchestrate(Step::Route).await.unwrap(),
        Step::Small
    );
    assert_eq!(Task::<Step>::name(&Triage), "Triage");
    assert_eq!(Task::<Step>::config(&Triage), TaskConfig::minimal());
}

#[test]
fn models_are_also_tasks_for_split_branches() {
    fn is_task<T: Task<Step> + 'static>(_: &T) {}
    is_task(&Ready(AtomicU32::new(0)));
    is_task(&Square);
    is_task(&Cooldown);
    is_task(&Totals);
    let _shared: Arc<dyn Task<Step>> = Arc::new(Square);
}

/// Routes to whatever the store says, declaring only `Poll` and `Small`.
struct Declared;

#[task::router]
impl RouterTask<Step> for Declared {
    async fn route(&self, res: &Resources) -> Result<TaskResult<Step>, CanoError> {
        let to: String = res.get::<MemoryStore, _>("store")?.get("to")?;
        match to.as_str() {
            "small" => Ok(TaskResult::Single(Step::Small)),
            "done" => Ok(TaskResult::Single(Step::Done)),
            _ => panic!("unknown route {to}"),
        }
    }

    fn targets(&self) -> Option<Vec<Step>> {
        Some(vec![Step::Small, Step::Poll])
    }
}

fn routed(to: &str) -> (Workflow<Step>, MemoryCheckpointStore) {
    let store = MemoryStore::new();
    store.put("to", to.to_owned()).unwrap();
    let rows = MemoryCheckpointStore::new();
    let workflow = Workflow::new(Resources::new().insert("store", store))
        .register_router(Step::Route, Declared)
        .register(Step::Poll, Ready(AtomicU32::new(0)))
        .add_exit_states([Step::Small, Step::Done, Step::Batch])
        .with_checkpoint_store(rows.clone())
        .with_retention(Retention::KeepFinished);
    (workflow, rows)
}

#[tokio::test]
async fn a_router_state_writes_no_checkpoint_row() {
    let (workflow, rows) = routed("small");
    let run = RunId::new();
    let end = workflow
        .orchestrate_with(Step::Route, RunOptions::new().with_run_id(run))
        .await
        .unwrap();
    assert_eq!(end, Step::Small);
    let written: Vec<String> = rows
        .load(run)
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{:?} {}", r.kind, r.label))
        .collect();
    assert_eq!(written, ["Finish Small"]);
}

#[tokio::test]
async fn a_route_outside_the_declared_states_fails_the_run() {
    let (workflow, _) = routed("done");
    let err = workflow.orchestrate(Step::Route).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CanoError::Workflow(_)), "{text}");
    assert!(
        text.contains("router `Declared` picked Done") && text.contains("Route"),
        "{text}"
    );
}

#[tokio::test]
async fn a_panicking_router_is_an_error() {
    let (workflow, _) = routed("nowhere");
    let err = workflow.orchestrate(Step::Route).await.unwrap_err();
    assert!(err.to_string().contains("unknown route nowhere"), "{err}");
}

#[test]
fn validate_checks_the_states_a_router_declares() {
    let workflow = Workflow::<Step>::bare()
        .register_router(Step::Route, Declared)
        .add_exit_state(Step::Small);
    let err = workflow.validate().unwrap_err().to_string();
    assert!(err.contains("router state Route moves to Poll"), "{err}");
}
