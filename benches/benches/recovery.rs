//! Checkpointing benchmarks: the 10-state linear workflow without a store, with the
//! in-memory store (the engine's own cost of writing rows), on sled flushing every row,
//! and 100 concurrent runs on sled with group commit (rows per second).
//!
//! `cargo xtask bench` runs these and prints the summary table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cano::prelude::*;
use cano::{Durability, MemoryCheckpointStore};
use cano_benches::*;
use criterion::{Criterion, Throughput, criterion_group};

/// Runs started together in the group-commit benchmark.
const CONCURRENT_RUNS: u64 = 100;

fn single_runs(c: &mut Criterion) {
    let mut group = c.benchmark_group("recovery");
    let rt = current_thread();
    let bare = checkpointed_workflow(None);
    group.bench_function("no_store", |b| {
        b.iter(|| rt.block_on(bare.orchestrate(Stage(0))).unwrap())
    });
    let memory = checkpointed_workflow(Some(Arc::new(MemoryCheckpointStore::new())));
    group.bench_function("memory_store", |b| {
        b.iter(|| rt.block_on(memory.orchestrate(Stage(0))).unwrap())
    });

    let dir = tempfile::tempdir().unwrap();
    let store = SledCheckpointStore::open_with(dir.path(), Durability::EveryRow).unwrap();
    let every_row = checkpointed_workflow(Some(Arc::new(store)));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("sled_every_row", |b| {
        b.iter(|| rt.block_on(every_row.orchestrate(Stage(0))).unwrap())
    });
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    // Rows per iteration: one per state entered, and the clear of each finished run.
    group.throughput(Throughput::Elements(
        CONCURRENT_RUNS * u64::from(LINEAR_STATES),
    ));
    let dir = tempfile::tempdir().unwrap();
    let store = SledCheckpointStore::open(dir.path()).unwrap();
    let workflow = checkpointed_workflow(Some(Arc::new(store.clone())));
    let rt = two_workers();
    group.bench_function("sled_group_commit_100_runs", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(async {
                    let start = Instant::now();
                    let runs: Vec<_> = (0..CONCURRENT_RUNS)
                        .map(|_| workflow.spawn(Stage(0)))
                        .collect();
                    for run in runs {
                        run.await.unwrap();
                    }
                    start.elapsed()
                });
            }
            total
        })
    });
    group.finish();
    let stats = store.stats();
    write_report(
        "recovery.json",
        &format!(
            "{{\"rows\":{},\"flushes\":{}}}\n",
            stats.rows, stats.flushes
        ),
    );
}

criterion_group!(benches, single_runs, group_commit);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
