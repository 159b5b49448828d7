//! Heap allocations per transition, counted by a global allocator: the engine adds
//! nothing to the task's own boxed future. A count, not a timing, so it is exact.

use cano::prelude::*;
use cano_testing::alloc::{CountingAllocator, allocations};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Step(u8);

struct Next(u8);
#[task]
impl Task<Step> for Next {
    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        Ok(TaskResult::Single(Step(self.0)))
    }
}

#[test]
fn at_most_one_allocation_per_transition() {
    const STATES: u8 = 10;
    let mut wf = Workflow::bare().add_exit_state(Step(STATES));
    for i in 0..STATES {
        wf = wf.register(Step(i), Next(i + 1));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Warm up: first-use allocations of the runtime and thread-locals are not the engine's.
    rt.block_on(wf.orchestrate(Step(0))).unwrap();

    let runs = 100;
    let before = allocations();
    for _ in 0..runs {
        assert_eq!(rt.block_on(wf.orchestrate(Step(0))).unwrap(), Step(STATES));
    }
    let per_run = (allocations() - before) as f64 / runs as f64;
    let transitions = f64::from(STATES);
    assert!(
        per_run <= transitions,
        "{per_run} allocations per run of {transitions} transitions"
    );
    println!("{per_run} allocations per run of {transitions} transitions");
}

#[test]
fn a_light_runs_future_is_small_and_a_full_run_still_completes() {
    // A run with nothing around its states (no resources, timeout, token or saga)
    // is the state loop alone; callers move its future (block_on, join!, select!),
    // so its size is paid on every run. A full run is boxed.
    let light = Workflow::bare()
        .register(Step(0), Next(1))
        .add_exit_state(Step(1));
    // 240 bytes, 288 with the tracing feature (a state's span around non-plain tasks).
    let size = std::mem::size_of_val(&light.orchestrate(Step(0)));
    assert!(
        size <= 288,
        "a light run's future is {size} bytes; keep it <= 288 (the size comes from rustc's layout: after a toolchain upgrade moves it, re-measure with `cargo xtask bench` and either win the bytes back or raise the bound, saying why in the commit)"
    );

    let full = light
        .clone()
        .with_timeout(std::time::Duration::from_secs(60));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(light.orchestrate(Step(0))).unwrap(), Step(1));
    assert_eq!(rt.block_on(full.orchestrate(Step(0))).unwrap(), Step(1));
    assert!(std::mem::size_of_val(&full.orchestrate(Step(0))) <= size);
}
