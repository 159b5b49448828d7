//! Timer tasks on tokio's paused clock: a duration, a wall-clock moment, one already
//! past, a failing deadline.

mod common;

use std::time::{Duration, SystemTime};

use cano_core::{CanoError, Resources, TaskResult, Workflow};
use cano_task_models::{Deadline, TimerTask, run_timer};
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum S {
    Wait,
    Done,
}

struct Timer(Result<Deadline, &'static str>);

#[async_trait::async_trait]
impl TimerTask<S> for Timer {
    async fn deadline(&self, _res: &Resources) -> Result<Deadline, CanoError> {
        self.0.map_err(CanoError::configuration)
    }
    async fn fire(&self, _res: &Resources) -> Result<TaskResult<S>, CanoError> {
        Ok(TaskResult::Single(S::Done))
    }
}
as_task!(Timer, TimerTask, run_timer, S);

async fn waited(timer: Timer) -> Result<Duration, CanoError> {
    let workflow = Workflow::bare()
        .register(S::Wait, timer)
        .add_exit_state(S::Done);
    let started = Instant::now();
    workflow.orchestrate(S::Wait).await?;
    Ok(started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn waits_for_a_duration() {
    let wait = waited(Timer(Ok(Deadline::After(Duration::from_secs(90))))).await;
    assert_eq!(wait.unwrap(), Duration::from_secs(90));
}

#[tokio::test(start_paused = true)]
async fn waits_until_a_wall_clock_moment() {
    let at = SystemTime::now() + Duration::from_secs(3_600);
    let wait = waited(Timer(Ok(Deadline::At(at)))).await.unwrap();
    // The wall clock moved on a little while the test set up.
    assert!(
        wait <= Duration::from_secs(3_600) && wait > Duration::from_secs(3_590),
        "{wait:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_moment_already_past_fires_at_once() {
    let at = SystemTime::now() - Duration::from_secs(60);
    assert_eq!(
        waited(Timer(Ok(Deadline::At(at)))).await.unwrap(),
        Duration::ZERO
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_cannot_be_computed_fails_clearly() {
    let err = waited(Timer(Err("no reminder date on the invoice")))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("no reminder date") && text.contains("Timer") && text.contains("Wait"),
        "{text}"
    );
}
