//! Heap memory per in-flight split branch, beside a bare `tokio::task::JoinSet` holding
//! the same task futures. Bytes are counted by a global allocator, so the figure is
//! exact and independent of what the process freed earlier (unlike resident memory).
//!
//! Writes `split_memory.json` where `cargo xtask bench` finds it.

use std::sync::Arc;

use cano::Task;
use cano_benches::*;

#[global_allocator]
static GLOBAL: cano_benches::CountingAllocator = cano_benches::CountingAllocator;

const IN_FLIGHT: usize = 10_000;

/// Starts the measured work; what it needs (a built workflow) is made before counting.
type Start = Box<dyn FnOnce() -> tokio::task::JoinHandle<()>>;

/// Heap bytes live while `IN_FLIGHT` branches wait at a gate, beyond those live before
/// they were started (building the workflow is not counted: it is not per run).
fn in_flight_bytes(
    rt: &tokio::runtime::Runtime,
    prepare: impl FnOnce(Arc<Gated>) -> Start,
) -> isize {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let arrived = Arc::new(tokio::sync::Semaphore::new(0));
    let gated = Arc::new(Gated {
        arrived: arrived.clone(),
        gate: gate.clone(),
    });
    let start = prepare(gated);
    rt.block_on(async {
        let before = cano_benches::live_bytes();
        let done = start();
        arrived
            .acquire_many(IN_FLIGHT as u32)
            .await
            .unwrap()
            .forget();
        let during = cano_benches::live_bytes();
        gate.add_permits(IN_FLIGHT);
        done.await.unwrap();
        during - before
    })
}

fn engine(gated: Arc<Gated>) -> Start {
    let workflow = gated_split(IN_FLIGHT, gated);
    Box::new(move || {
        tokio::spawn(async move {
            workflow.orchestrate(Step(0)).await.unwrap();
        })
    })
}

fn joinset(gated: Arc<Gated>) -> Start {
    Box::new(move || {
        tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..IN_FLIGHT {
                let gated = gated.clone();
                set.spawn(async move { gated.run_bare().await });
            }
            while let Some(joined) = set.join_next().await {
                joined.unwrap().unwrap();
            }
        })
    })
}

fn main() {
    // Criterion passes its own arguments (`--bench`); there is nothing to configure.
    let rt = two_workers();
    let _guard = rt.enter();
    // Warm the runtime (worker threads, timer wheels) once before measuring.
    in_flight_bytes(&rt, engine);
    let engine_bytes = in_flight_bytes(&rt, engine);
    let joinset_bytes = in_flight_bytes(&rt, joinset);
    let future_bytes = std::mem::size_of_val(&split_workflow(1).orchestrate(Step(0)));
    let report = format!(
        "{{\"branches\":{IN_FLIGHT},\"engine_bytes\":{engine_bytes},\"joinset_bytes\":{joinset_bytes},\"orchestrate_future_bytes\":{future_bytes}}}\n"
    );
    write_report("split_memory.json", &report);
}
