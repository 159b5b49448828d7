//! Split/join benchmarks: a split of N trivial branches under `All` beside a plain
//! `tokio::task::JoinSet` over the same task futures. (Memory per branch is measured by
//! the `split_memory` bench, which needs a counting allocator of its own.)
//!
//! `cargo xtask bench` runs these and prints the summary table.

use std::sync::Arc;
use std::time::Duration;

use cano_benches::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};

/// The branch counts measured (and summarised by `cargo xtask bench`).
const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

fn split_all(c: &mut Criterion) {
    let rt = two_workers();
    let mut group = c.benchmark_group("split_all");
    group.measurement_time(Duration::from_secs(4));
    for n in SIZES {
        if n >= 10_000 {
            group.sample_size(20);
        }
        group.throughput(Throughput::Elements(n as u64));
        let workflow = split_workflow(n);
        group.bench_with_input(BenchmarkId::new("engine", n), &n, |b, _| {
            b.iter(|| rt.block_on(workflow.orchestrate(Step(0))).unwrap())
        });
        let tasks: Vec<Arc<Next>> = (0..n).map(|_| Arc::new(Next(1))).collect();
        group.bench_with_input(BenchmarkId::new("joinset", n), &n, |b, _| {
            b.iter(|| rt.block_on(join_set(&tasks)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, split_all);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
