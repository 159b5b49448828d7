//! Saga benchmarks: ten compensatable steps against ten plain ones (what recording an
//! output costs per step), with the in-memory checkpoint store, and a run that fails
//! after ten steps and rolls all of them back (what one compensation costs).
//!
//! `cargo xtask bench` runs these and prints the summary table.

use std::sync::Arc;

use cano::MemoryCheckpointStore;
use cano_benches::*;
use criterion::{Criterion, criterion_group};

fn sagas(c: &mut Criterion) {
    let mut group = c.benchmark_group("saga");
    let rt = current_thread();
    let plain = checkpointed_workflow(None);
    group.bench_function("plain_steps", |b| {
        b.iter(|| rt.block_on(plain.orchestrate(Stage(0))).unwrap())
    });
    let steps = saga_workflow(false, None);
    group.bench_function("compensatable_steps", |b| {
        b.iter(|| rt.block_on(steps.orchestrate(Stage(0))).unwrap())
    });
    let stored = saga_workflow(false, Some(Arc::new(MemoryCheckpointStore::new())));
    group.bench_function("compensatable_steps_memory_store", |b| {
        b.iter(|| rt.block_on(stored.orchestrate(Stage(0))).unwrap())
    });
    let failing = saga_workflow(true, None);
    group.bench_function("rollback_10_steps", |b| {
        b.iter(|| rt.block_on(failing.orchestrate(Stage(0))).unwrap_err())
    });
    group.finish();
}

criterion_group!(benches, sagas);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
