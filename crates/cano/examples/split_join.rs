//! Every join strategy on the same five branches, so you can see what each one waits
//! for. The branches answer after 40, 80, 120, 160 and 200 ms; the one at 120 ms fails.
//!
//! Run it with `cargo run --example split_join`.

use std::time::{Duration, Instant};

use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Query,
    Summarise,
    Done,
}

/// A replica answering after `delay`; replica 2 is broken.
struct Replica {
    id: u64,
}

#[task(state = Step)]
impl Replica {
    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        tokio::time::sleep(Duration::from_millis(40 * (self.id + 1))).await;
        if self.id == 2 {
            return Err(CanoError::task_execution(format!(
                "replica {} is down",
                self.id
            )));
        }
        Ok(TaskResult::Single(Step::Summarise))
    }

    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
}

/// Prints what the split came back with.
struct Summarise;

#[task(state = Step)]
impl Summarise {
    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        let result = SplitResult::<Step>::of(&Step::Query)?;
        let list = |ids: Vec<usize>| format!("{ids:?}");
        println!(
            "    answered {:<12} failed {:<6} cancelled {:<12}{}",
            list(result.succeeded().map(|(i, _)| i).collect()),
            list(result.failed().map(|(i, _)| i).collect()),
            list(result.cancelled().collect()),
            if result.timed_out() {
                " (timed out)"
            } else {
                ""
            },
        );
        Ok(TaskResult::Single(Step::Done))
    }
}

fn workflow(join: JoinConfig<Step>) -> Workflow<Step> {
    let replicas: Vec<Replica> = (0..5).map(|id| Replica { id }).collect();
    Workflow::bare()
        .register_split(Step::Query, replicas, join)
        .register(Step::Summarise, Summarise)
        .add_exit_state(Step::Done)
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let strategies = [
        (JoinStrategy::All, None, "every replica must answer"),
        (JoinStrategy::Any, None, "the first answer is enough"),
        (JoinStrategy::Quorum(3), None, "three answers"),
        (
            JoinStrategy::Percentage(0.5),
            None,
            "half of five, rounded up",
        ),
        (
            JoinStrategy::PartialResults(3),
            None,
            "three answers; the failures seen on the way are kept",
        ),
        (
            JoinStrategy::PartialTimeout,
            Some(130),
            "whatever is done at 130 ms",
        ),
        (
            JoinStrategy::Quorum(4),
            Some(130),
            "four answers within 130 ms",
        ),
    ];
    for (strategy, timeout_ms, meaning) in strategies {
        let mut join = JoinConfig::new(strategy, Step::Summarise);
        if let Some(ms) = timeout_ms {
            join = join.with_timeout(Duration::from_millis(ms));
        }
        println!("{strategy} — {meaning}");
        let start = Instant::now();
        let outcome = workflow(join).orchestrate(Step::Query).await;
        let waited = start.elapsed().as_millis();
        match outcome {
            Ok(_) => println!("    proceeded after ~{waited} ms"),
            Err(error) => println!("    failed after ~{waited} ms: {error}"),
        }
    }
    Ok(())
}
