//! Batch benchmarks: a `BatchTask` over 1,000 items, 16 at a time, against a plain
//! `futures::stream::iter(..).buffer_unordered(16)` doing the same work per item (one
//! yield to the scheduler, as an item waiting on I/O would, and a little arithmetic).
//!
//! After criterion, the `BatchTask` and `buffer_unordered` are also timed in alternating
//! rounds ([`paired`](cano_benches::paired)); `cargo xtask bench` checks that ratio and
//! prints the ratio of criterion's separate means beside it.
//!
//! `cargo xtask bench` runs these and prints the per-item overhead and the ratio.

use std::hint::black_box;

use cano::BatchConfig;
use cano::prelude::*;
use cano_benches::{current_thread, paired, write_report};
use criterion::{Criterion, criterion_group};
use futures::StreamExt;

/// Items per batch.
const ITEMS: u64 = 1_000;
/// Items in flight at once.
const CONCURRENCY: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Stage {
    Batch,
    Done,
}

/// The work of one item, the same on both sides.
async fn work(item: u64) -> u64 {
    tokio::task::yield_now().await;
    black_box(item.wrapping_mul(2_654_435_761) >> 7)
}

#[derive(Clone)]
struct Hash {
    config: BatchConfig,
}

#[task::batch(state = Stage)]
impl Hash {
    type Item = u64;
    type ItemOutput = u64;

    async fn load(&self, _res: &Resources) -> Result<Vec<u64>, CanoError> {
        Ok((0..ITEMS).collect())
    }

    async fn process_item(&self, _res: &Resources, item: &u64) -> Result<u64, CanoError> {
        Ok(work(*item).await)
    }

    async fn finish(
        &self,
        _res: &Resources,
        results: Vec<ItemResult<u64>>,
    ) -> Result<TaskResult<Stage>, CanoError> {
        black_box(results);
        Ok(TaskResult::Single(Stage::Done))
    }

    fn batch_config(&self) -> BatchConfig {
        self.config
    }
}

/// The same work without cano: `ITEMS` items through `buffer_unordered`.
async fn buffer_unordered() -> Vec<u64> {
    let items: Vec<u64> = (0..ITEMS).collect();
    futures::stream::iter(items)
        .map(work)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

fn workflow(config: BatchConfig) -> Workflow<Stage> {
    Workflow::bare()
        .register(Stage::Batch, Hash { config })
        .add_exit_state(Stage::Done)
}

fn batches(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch");
    let rt = current_thread();
    group.bench_function("buffer_unordered_1000", |b| {
        b.iter(|| black_box(rt.block_on(buffer_unordered())))
    });
    let in_task = workflow(BatchConfig::new().with_concurrency(CONCURRENCY));
    group.bench_function("batch_task_1000", |b| {
        b.iter(|| rt.block_on(in_task.orchestrate(Stage::Batch)).unwrap())
    });
    let spawned = workflow(
        BatchConfig::new()
            .with_concurrency(CONCURRENCY)
            .on_worker_threads(),
    );
    group.bench_function("batch_task_1000_worker_threads", |b| {
        b.iter(|| rt.block_on(spawned.orchestrate(Stage::Batch)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, batches);

/// The `BatchTask` and `buffer_unordered` timed in alternating rounds, per item;
/// written as `batch_paired.json`.
fn paired_report() {
    let rt = current_thread();
    let in_task = workflow(BatchConfig::new().with_concurrency(CONCURRENCY));
    let batch = || {
        rt.block_on(in_task.orchestrate(Stage::Batch)).unwrap();
    };
    let plain = || {
        black_box(rt.block_on(buffer_unordered()));
    };
    let result = paired(batch, plain);
    let items = ITEMS as f64;
    write_report(
        "batch_paired.json",
        &format!(
            "{{\"batch_ns\":{:.1},\"plain_ns\":{:.1},\"ratio\":{:.3}}}\n",
            result.a_ns / items,
            result.b_ns / items,
            result.ratio
        ),
    );
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    paired_report();
}
