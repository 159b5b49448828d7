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
