//! `WorkflowObserver`: 0.13's name-only callbacks, in 0.13's order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Fetch,
    Save,
    Done,
}

#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl WorkflowObserver for Log {
    fn on_state_enter(&self, state: &str) {
        self.push(format!("enter {state}"));
    }
    fn on_task_start(&self, task_id: &str) {
        self.push(format!("start {task_id}"));
    }
    fn on_task_success(&self, task_id: &str) {
        self.push(format!("ok {task_id}"));
    }
    fn on_task_failure(&self, task_id: &str, err: &CanoError) {
        self.push(format!("fail {task_id}: {}", err.message()));
    }
    fn on_retry(&self, task_id: &str, attempt: u32) {
        self.push(format!("retry {task_id} #{attempt}"));
    }
}

struct Fetch {
    failures_left: Mutex<u32>,
}

#[task(state = Step)]
impl Fetch {
    fn config(&self) -> TaskConfig {
        TaskConfig::new().with_fixed_retry(2, Duration::from_millis(1))
    }

    fn name(&self) -> std::borrow::Cow<'static, str> {
        "fetch".into()
    }

    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        let mut left = self.failures_left.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return Err(CanoError::task_execution("flaky"));
        }
        Ok(TaskResult::Single(Step::Save))
    }
}

struct Save;

#[task(state = Step)]
impl Save {
    fn name(&self) -> std::borrow::Cow<'static, str> {
        "save".into()
    }

    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        Ok(TaskResult::Single(Step::Done))
    }
}

#[tokio::test]
async fn callbacks_arrive_by_name_in_order() {
    let log = Arc::new(Log::default());
    let workflow = Workflow::bare()
        .register(
            Step::Fetch,
            Fetch {
                failures_left: Mutex::new(1),
            },
        )
        .register(Step::Save, Save)
        .add_exit_state(Step::Done)
        .with_observer(log.clone());
    assert_eq!(workflow.orchestrate(Step::Fetch).await.unwrap(), Step::Done);
    assert_eq!(
        log.lines(),
        [
            "enter Fetch",
            "start fetch",
            "retry fetch #1",
            "ok fetch",
            "enter Save",
            "start save",
            "ok save",
            "enter Done",
        ]
    );
}
