//! The documented split/join usage: several sources fetched in parallel into the shared
//! store under `JoinStrategy::All` with a timeout, and a fan-out state whose join state
//! is a registered aggregation task.

use std::time::Duration;

use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Fetch {
    Begin,
    Finished,
}

#[derive(Clone)]
struct Download {
    mirror: u32,
}

#[task]
impl Task<Fetch> for Download {
    async fn run(&self, res: &Resources) -> Result<TaskResult<Fetch>, CanoError> {
        let store = res.get::<MemoryStore, str>("store")?;
        tokio::time::sleep(Duration::from_millis(20 * u64::from(self.mirror))).await;
        store.put(
            format!("mirror_{}", self.mirror),
            format!("payload from mirror {}", self.mirror),
        )?;
        Ok(TaskResult::Single(Fetch::Finished))
    }
}

#[tokio::test(start_paused = true)]
async fn parallel_sources_join_under_all_with_a_timeout() {
    let store = MemoryStore::new();
    let resources = Resources::new().insert("store", store.clone());
    let mirrors = vec![
        Download { mirror: 1 },
        Download { mirror: 2 },
        Download { mirror: 3 },
    ];
    let join_config =
        JoinConfig::new(JoinStrategy::All, Fetch::Finished).with_timeout(Duration::from_secs(5));
    let workflow = Workflow::new(resources)
        .register_split(Fetch::Begin, mirrors, join_config)
        .add_exit_state(Fetch::Finished);

    let start = tokio::time::Instant::now();
    let result = workflow.orchestrate(Fetch::Begin).await.unwrap();
    assert_eq!(result, Fetch::Finished);
    // The mirrors ran side by side: the slowest one sets the pace.
    assert_eq!(start.elapsed(), Duration::from_millis(60));
    for mirror in 1..=3 {
        let text: String = store.get(&format!("mirror_{mirror}")).unwrap();
        assert_eq!(text, format!("payload from mirror {mirror}"));
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Stage {
    Fanout,
    Aggregate,
    Complete,
}

struct Worker {
    id: u32,
}

#[task]
impl Task<Stage> for Worker {
    async fn run(&self, res: &Resources) -> Result<TaskResult<Stage>, CanoError> {
        let store = res.get::<MemoryStore, _>("store")?;
        store.append("squares", self.id * self.id)?;
        Ok(TaskResult::Single(Stage::Aggregate))
    }
}

struct Aggregator;

#[task]
impl Task<Stage> for Aggregator {
    async fn run(&self, res: &Resources) -> Result<TaskResult<Stage>, CanoError> {
        let store = res.get::<MemoryStore, _>("store")?;
        let squares: Vec<u32> = store.get("squares")?;
        store.put("total", squares.iter().sum::<u32>())?;
        Ok(TaskResult::Single(Stage::Complete))
    }
}

#[tokio::test]
async fn fanout_then_aggregate() {
    let store = MemoryStore::new();
    let join_config =
        JoinConfig::new(JoinStrategy::All, Stage::Aggregate).with_timeout(Duration::from_secs(5));
    let workflow = Workflow::new(Resources::new().insert("store", store.clone()))
        .register_split(
            Stage::Fanout,
            vec![Worker { id: 1 }, Worker { id: 2 }],
            join_config,
        )
        .register(Stage::Aggregate, Aggregator)
        .add_exit_state(Stage::Complete);
    workflow.validate().unwrap();
    assert_eq!(
        workflow.orchestrate(Stage::Fanout).await.unwrap(),
        Stage::Complete
    );
    assert_eq!(store.get::<u32>("total").unwrap(), 5);
}

#[tokio::test]
async fn a_bulkhead_is_one_more_builder_call() {
    let store = MemoryStore::new();
    let workers = (1..=6).map(|id| Worker { id }).collect::<Vec<_>>();
    let workflow = Workflow::new(Resources::new().insert("store", store.clone()))
        .register_split(
            Stage::Fanout,
            workers,
            JoinConfig::new(JoinStrategy::All, Stage::Aggregate).with_bulkhead(2),
        )
        .register(Stage::Aggregate, Aggregator)
        .add_exit_state(Stage::Complete);
    workflow.orchestrate(Stage::Fanout).await.unwrap();
    assert_eq!(store.get::<u32>("total").unwrap(), 91);
}
