//! The documented API, exercised the way the reference documentation uses it: quick
//! start, resource-free workflows, the inherent `#[task(state = ..)]` form, the builder,
//! validation, matching on errors, and one workflow built per request.

use std::time::Duration;

use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Pipeline {
    Gather,
    Summarise,
    Finished,
}

struct BatchSettings {
    size: usize,
}
#[resource]
impl Resource for BatchSettings {}

struct Gather;
struct Summarise;

#[task]
impl Task<Pipeline> for Gather {
    async fn run(&self, res: &Resources) -> Result<TaskResult<Pipeline>, CanoError> {
        let settings = res.get::<BatchSettings, _>("settings")?;
        let store = res.get::<MemoryStore, _>("store")?;
        let items: Vec<u64> = (1..=settings.size as u64).collect();
        store.put("items", items)?;
        Ok(TaskResult::Single(Pipeline::Summarise))
    }
}

#[task]
impl Task<Pipeline> for Summarise {
    async fn run(&self, res: &Resources) -> Result<TaskResult<Pipeline>, CanoError> {
        // The explicit key type works as well as `_`.
        let store = res.get::<MemoryStore, str>("store")?;
        let items: Vec<u64> = store.get("items")?;
        store.put("sum", items.iter().sum::<u64>())?;
        Ok(TaskResult::Single(Pipeline::Finished))
    }
}

#[tokio::test]
async fn quick_start_runs_to_the_exit_and_leaves_results_in_the_store() {
    let store = MemoryStore::new();
    let resources = Resources::new()
        .insert("settings", BatchSettings { size: 5 })
        .insert("store", store.clone());
    let workflow = Workflow::new(resources)
        .register(Pipeline::Gather, Gather)
        .register(Pipeline::Summarise, Summarise)
        .add_exit_state(Pipeline::Finished);

    assert_eq!(
        workflow.orchestrate(Pipeline::Gather).await.unwrap(),
        Pipeline::Finished
    );
    assert_eq!(store.get::<u64>("sum").unwrap(), 15);
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Calc {
    Compute,
    Done,
}

struct PureCompute;

#[task]
impl Task<Calc> for PureCompute {
    async fn run_bare(&self) -> Result<TaskResult<Calc>, CanoError> {
        let triangle: u64 = (1..=10).sum();
        assert_eq!(triangle, 55);
        Ok(TaskResult::Single(Calc::Done))
    }
}

#[tokio::test]
async fn resource_free_workflow_with_bare() {
    let workflow = Workflow::bare()
        .register(Calc::Compute, PureCompute)
        .add_exit_state(Calc::Done);
    assert_eq!(
        workflow.orchestrate(Calc::Compute).await.unwrap(),
        Calc::Done
    );
    // `bare()` is `new(Resources::empty())`.
    let same = Workflow::new(Resources::empty())
        .register(Calc::Compute, PureCompute)
        .add_exit_state(Calc::Done);
    assert_eq!(same.orchestrate(Calc::Compute).await.unwrap(), Calc::Done);
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Order {
    Start,
    Validate,
    Process,
    Complete,
    Failed,
}

#[derive(Clone)]
struct Begin;
#[derive(Clone)]
struct Check;
#[derive(Clone)]
struct Fulfil;

#[task(state = Order)]
impl Begin {
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        Ok(TaskResult::Single(Order::Validate))
    }
}

#[task(state = Order)]
impl Check {
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        Ok(TaskResult::Single(Order::Process))
    }
}

#[task(state = Order)]
impl Fulfil {
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        Ok(TaskResult::Single(Order::Complete))
    }
}

fn order_workflow(store: &MemoryStore) -> Workflow<Order> {
    Workflow::new(Resources::new().insert("store", store.clone()))
        .register(Order::Start, Begin)
        .register(Order::Validate, Check)
        .register(Order::Process, Fulfil)
        .add_exit_states(vec![Order::Complete, Order::Failed])
}

#[tokio::test]
async fn linear_order_workflow_with_inherent_task_impls() {
    let workflow = order_workflow(&MemoryStore::new());
    assert_eq!(
        workflow.orchestrate(Order::Start).await.unwrap(),
        Order::Complete
    );
}

#[tokio::test]
async fn builder_steps_can_be_captured_one_by_one_or_chained() {
    let store = MemoryStore::new();
    let step_by_step = Workflow::new(Resources::new().insert("store", store.clone()));
    let step_by_step = step_by_step.register(Order::Start, Begin);
    let step_by_step = step_by_step
        .register(Order::Validate, Check)
        .register(Order::Process, Fulfil)
        .add_exit_state(Order::Complete);
    assert_eq!(
        step_by_step.orchestrate(Order::Start).await.unwrap(),
        Order::Complete
    );

    let chained = order_workflow(&store);
    assert!(chained.validate().is_ok());
}

#[tokio::test]
async fn validation_accepts_a_sound_workflow_and_names_what_is_missing() {
    let workflow = order_workflow(&MemoryStore::new());
    workflow.validate().unwrap();
    workflow.validate_initial_state(&Order::Start).unwrap();

    let no_exit = Workflow::<Order>::bare().register(Order::Start, Begin);
    let err = no_exit.validate().unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)));
    assert!(err.to_string().contains("no exit state"), "{err}");

    let nothing = Workflow::<Order>::bare();
    let err = nothing.validate().unwrap_err();
    assert!(err.to_string().contains("no state has a handler"), "{err}");

    // An exit state is a valid (if trivial) start; a state nobody handles is not.
    workflow.validate_initial_state(&Order::Failed).unwrap();
    let partial = Workflow::bare()
        .register(Order::Start, Begin)
        .add_exit_state(Order::Complete);
    let err = partial
        .validate_initial_state(&Order::Validate)
        .unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)));
    assert!(err.to_string().contains("Validate"), "{err}");
}

#[tokio::test]
async fn errors_can_be_matched_by_variant() {
    // Validate is never registered, so the run stops there.
    let workflow = Workflow::bare()
        .register(Order::Start, Begin)
        .add_exit_state(Order::Complete);
    let outcome = match workflow.orchestrate(Order::Start).await {
        Ok(state) => format!("completed in {state:?}"),
        Err(CanoError::Workflow(msg)) => format!("workflow: {msg}"),
        Err(CanoError::Configuration(msg)) => format!("config: {msg}"),
        Err(CanoError::Timeout(msg)) => format!("timeout: {msg}"),
        Err(CanoError::RetryExhausted(msg)) => format!("retries: {msg}"),
        Err(e) => format!("other: {e}"),
    };
    assert!(outcome.starts_with("workflow: state Validate"), "{outcome}");
    assert!(outcome.contains("reached from task `Begin`"), "{outcome}");
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Text {
    Parse,
    Count,
    Done,
}

struct ParseText;
#[task]
impl Task<Text> for ParseText {
    async fn run(&self, res: &Resources) -> Result<TaskResult<Text>, CanoError> {
        let store = res.get::<MemoryStore, _>("store")?;
        let text: String = store.get("input")?;
        let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
        store.put("words", words)?;
        Ok(TaskResult::Single(Text::Count))
    }
}

struct CountWords;
#[task]
impl Task<Text> for CountWords {
    async fn run(&self, res: &Resources) -> Result<TaskResult<Text>, CanoError> {
        let store = res.get::<MemoryStore, _>("store")?;
        let words: Vec<String> = store.get("words")?;
        store.put("count", words.len())?;
        Ok(TaskResult::Single(Text::Done))
    }
}

fn per_request(store: MemoryStore) -> Workflow<Text> {
    Workflow::new(Resources::new().insert("store", store))
        .register(Text::Parse, ParseText)
        .register(Text::Count, CountWords)
        .add_exit_state(Text::Done)
        .with_timeout(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_per_request_keeps_requests_isolated() {
    let requests: Vec<String> = (0..64).map(|i| "word ".repeat(i)).collect();
    let mut handles = Vec::new();
    for text in requests {
        handles.push(tokio::spawn(async move {
            let store = MemoryStore::new();
            store.put("input", text.clone())?;
            let end = per_request(store.clone()).orchestrate(Text::Parse).await?;
            Ok::<_, CanoError>((
                end,
                text.split_whitespace().count(),
                store.get::<usize>("count")?,
            ))
        }));
    }
    for handle in handles {
        let (end, expected, counted) = handle.await.unwrap().unwrap();
        assert_eq!(end, Text::Done);
        assert_eq!(counted, expected);
    }
}
