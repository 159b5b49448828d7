//! Two workers geocode addresses through one API that allows 5 calls a second (bursts of
//! 2). They share one token bucket through their task config, so together they never
//! exceed the quota, and neither task body contains a line of pacing code. A third,
//! impatient caller that may not wait is refused with `RateLimited` and told when to
//! come back.
//!
//! Run it with `cargo run --example rate_limiter`.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cano::prelude::*;
use cano::{RateLimiter, RunId, RunObserver};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Geo {
    Lookup,
    Done,
}

/// One call to the geocoding API.
struct Lookup {
    limiter: Arc<RateLimiter>,
    may_wait: bool,
}

#[task(state = Geo)]
impl Lookup {
    fn config(&self) -> TaskConfig {
        let config = TaskConfig::minimal().with_rate_limiter(self.limiter.clone());
        if self.may_wait {
            config
        } else {
            config.with_max_throttle_wait(Duration::ZERO)
        }
    }

    async fn run_bare(&self) -> Result<TaskResult<Geo>, CanoError> {
        Ok(TaskResult::Single(Geo::Done))
    }
}

/// Prints when each call got its answer.
struct Pacing {
    worker: &'static str,
    start: Instant,
}

impl RunObserver for Pacing {
    fn task_succeeded(&self, _: RunId, _: &dyn Debug, _: &str) {
        let at = self.start.elapsed().as_millis();
        println!("{at:>5} ms  {} got an answer", self.worker);
    }
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let limiter = Arc::new(
        RateLimiter::token_bucket(5, Duration::from_secs(1), 2)?.with_name("geocoding-api"),
    );
    let start = Instant::now();
    let worker = |name: &'static str| {
        let workflow = Workflow::bare()
            .register(
                Geo::Lookup,
                Lookup {
                    limiter: limiter.clone(),
                    may_wait: true,
                },
            )
            .add_exit_state(Geo::Done)
            .with_observer(Arc::new(Pacing {
                worker: name,
                start,
            }));
        tokio::spawn(async move {
            for _ in 0..5 {
                workflow.orchestrate(Geo::Lookup).await?;
            }
            Ok::<_, CanoError>(())
        })
    };
    let (a, b) = (worker("worker A"), worker("worker B"));
    a.await.expect("worker A")?;
    b.await.expect("worker B")?;
    let elapsed = start.elapsed();
    println!(
        "10 calls in {} ms: the first 2 at once (the burst), then one every 200 ms",
        elapsed.as_millis()
    );

    let impatient = Workflow::bare()
        .register(
            Geo::Lookup,
            Lookup {
                limiter: limiter.clone(),
                may_wait: false,
            },
        )
        .add_exit_state(Geo::Done);
    match impatient.orchestrate(Geo::Lookup).await {
        Err(CanoError::RateLimited { retry_after, .. }) => {
            println!(
                "an impatient call is refused: come back in {:?}",
                *retry_after
            )
        }
        other => println!("the impatient call got {other:?}"),
    }
    Ok(())
}
