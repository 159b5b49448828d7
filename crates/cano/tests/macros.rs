//! The macros as users write them: trait and inherent forms, derives, enum keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cano::node;
use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Flow {
    Load,
    Save,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Db,
    Settings,
}

#[derive(Resource)]
struct Settings {
    prefix: &'static str,
}

struct Db {
    open: AtomicBool,
}

#[resource]
impl Resource for Db {
    async fn setup(&self) -> Result<(), CanoError> {
        self.open.store(true, Ordering::SeqCst);
        Ok(())
    }
    async fn teardown(&self) -> Result<(), CanoError> {
        self.open.store(false, Ordering::SeqCst);
        Ok(())
    }
    async fn health(&self) -> HealthStatus {
        if self.open.load(Ordering::SeqCst) {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy("closed".into())
        }
    }
}

#[derive(FromResources)]
struct Deps {
    #[res(Key::Db)]
    db: Arc<Db>,
    #[res(Key::Settings)]
    settings: Arc<Settings>,
}

/// A task over enum-keyed resources, using `from_resources`.
struct Load;
#[task]
impl Task<Flow, Key> for Load {
    async fn run(&self, res: &Resources<Key>) -> Result<TaskResult<Flow>, CanoError> {
        let deps = Deps::from_resources(res)?;
        assert!(
            deps.db.open.load(Ordering::SeqCst),
            "set up before the first state"
        );
        assert_eq!(deps.settings.prefix, "v1");
        Ok(TaskResult::Single(Flow::Save))
    }
}

/// The inherent form with a key type; `label` stays an inherent helper.
struct Save;
#[task(state = Flow, key = Key)]
impl Save {
    async fn run(&self, res: &Resources<Key>) -> Result<TaskResult<Flow>, CanoError> {
        let settings = res.get::<Settings, _>(&Key::Settings)?;
        assert_eq!(self.label(&settings), "v1:saved");
        Ok(TaskResult::Single(Flow::Done))
    }

    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }

    fn label(&self, settings: &Settings) -> String {
        format!("{}:saved", settings.prefix)
    }
}

#[tokio::test]
async fn enum_keyed_resources_with_from_resources_and_lifecycle() {
    let db = Arc::new(Db {
        open: AtomicBool::new(false),
    });
    let resources = Resources::<Key>::default()
        .insert_shared(Key::Db, db.clone())
        .insert(Key::Settings, Settings { prefix: "v1" });
    let workflow = Workflow::new(resources)
        .register(Flow::Load, Load)
        .register(Flow::Save, Save)
        .add_exit_state(Flow::Done);
    assert_eq!(workflow.orchestrate(Flow::Load).await.unwrap(), Flow::Done);
    assert!(!db.open.load(Ordering::SeqCst), "torn down after the run");
    assert_eq!(Save.config(), TaskConfig::minimal());
    assert_eq!(
        workflow.resources().overall_health().await,
        HealthStatus::Unhealthy("`Db`: closed".into())
    );
}

#[derive(FromResources)]
struct StringDeps {
    #[res("settings")]
    settings: Arc<Settings>,
}

#[test]
fn from_resources_reports_a_missing_key_and_a_wrong_type() {
    let missing = Resources::new();
    let err = StringDeps::from_resources(&missing)
        .err()
        .expect("missing key");
    assert!(err.to_string().contains("\"settings\""), "{err}");

    let wrong = Resources::new().insert("settings", MemoryStore::new());
    let err = StringDeps::from_resources(&wrong)
        .err()
        .expect("wrong type");
    assert!(
        err.to_string().contains("MemoryStore") && err.to_string().contains("Settings"),
        "{err}"
    );

    let right = Resources::new().insert("settings", Settings { prefix: "p" });
    assert_eq!(
        StringDeps::from_resources(&right).unwrap().settings.prefix,
        "p"
    );
}

#[test]
fn try_insert_refuses_a_taken_key() {
    let res: Resources = Resources::new().insert("a", Settings { prefix: "x" });
    let err = res
        .try_insert("a", Settings { prefix: "y" })
        .expect_err("duplicate");
    assert!(matches!(err, CanoError::ResourceDuplicateKey(_)));
    assert!(err.to_string().contains("\"a\""), "{err}");
}

/// The inherent `#[node]` form.
struct Double;
#[node(state = Flow)]
impl Double {
    type PrepResult = u32;
    type ExecResult = u32;

    async fn prep(&self, res: &Resources) -> Result<u32, CanoError> {
        Ok(res.get::<MemoryStore, _>("store")?.get("n")?)
    }
    async fn exec(&self, n: u32) -> u32 {
        n * 2
    }
    async fn post(&self, res: &Resources, n: u32) -> Result<Flow, CanoError> {
        res.get::<MemoryStore, _>("store")?.put("n", n)?;
        Ok(Flow::Done)
    }
}

#[tokio::test]
async fn inherent_node_form_registers_like_a_task() {
    let store = MemoryStore::new();
    store.put("n", 21u32).unwrap();
    let workflow = Workflow::new(Resources::new().insert("store", store.clone()))
        .register(Flow::Load, Double)
        .add_exit_state(Flow::Done);
    workflow.orchestrate(Flow::Load).await.unwrap();
    assert_eq!(store.get::<u32>("n").unwrap(), 42);
}

struct Nothing;
#[task]
impl Task<Flow> for Nothing {}

#[tokio::test]
async fn a_task_with_neither_method_is_a_configuration_error() {
    let err = Workflow::bare()
        .register(Flow::Load, Nothing)
        .add_exit_state(Flow::Done)
        .orchestrate(Flow::Load)
        .await
        .unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)));
    assert!(
        err.to_string().contains("neither `run` nor `run_bare`"),
        "{err}"
    );
}
