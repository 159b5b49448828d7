//! Split/join benchmarks: a split of N trivial branches under `All` beside a plain
//! `tokio::task::JoinSet` over the same task futures. (Memory per branch is measured by
//! the `split_memory` bench, which needs a counting allocator of its own.)
//!
//! Criterion measures each side on its own. After it, the two sides are also timed in
//! alternating rounds (see [`paired`]): on a small machine a split's three threads
//! (the caller and two workers) share two cores, and a background spell while one side
//! is measured, but not the other, can move their ratio by half. The paired ratio is
//! what `cargo xtask bench` checks against the target; it prints both.
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

/// Engine and JoinSet timed in alternating rounds at each size, per branch; written as
/// `split_paired.json`.
fn paired_report() {
    let rt = two_workers();
    let mut fields = Vec::new();
    for n in SIZES {
        let workflow = split_workflow(n);
        let tasks: Vec<Arc<Next>> = (0..n).map(|_| Arc::new(Next(1))).collect();
        let engine = || {
            rt.block_on(workflow.orchestrate(Step(0))).unwrap();
        };
        let joinset = || rt.block_on(join_set(&tasks)).unwrap();
        let result = paired(engine, joinset);
        fields.push(format!(
            "\"engine_{n}\":{:.1},\"joinset_{n}\":{:.1},\"ratio_{n}\":{:.3}",
            result.a_ns / n as f64,
            result.b_ns / n as f64,
            result.ratio
        ));
    }
    write_report("split_paired.json", &format!("{{{}}}\n", fields.join(",")));
}

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    paired_report();
}
