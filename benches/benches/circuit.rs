//! Admission benchmarks: acquire + record on a closed breaker (one thread, and 16 / 64 /
//! 256 tasks sharing it on two workers), rejection by an open breaker, a limiter's
//! `try_acquire`, and a workflow transition with a breaker attached.
//!
//! `cargo xtask bench` runs these and prints the summary table.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cano::RateLimiter;
use cano_benches::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};

/// Concurrent task counts measured (and summarised by `cargo xtask bench`).
const TASKS: [usize; 3] = [16, 64, 256];

fn closed_breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("circuit");
    let breaker = bench_breaker();
    group.bench_function("closed_acquire_record", |b| {
        b.iter(|| {
            let permit = breaker.try_acquire().unwrap();
            black_box(breaker.record_success(permit))
        })
    });

    let rt = two_workers();
    for tasks in TASKS {
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("closed_concurrent", tasks), |b| {
            b.iter_custom(|iters| {
                let per_task = iters.div_ceil(tasks as u64);
                let elapsed = rt.block_on(async {
                    let start = Instant::now();
                    let running: Vec<_> = (0..tasks)
                        .map(|_| {
                            let breaker = breaker.clone();
                            tokio::spawn(async move {
                                for _ in 0..per_task {
                                    let permit = breaker.try_acquire().unwrap();
                                    black_box(breaker.record_success(permit));
                                }
                            })
                        })
                        .collect();
                    for task in running {
                        task.await.unwrap();
                    }
                    start.elapsed()
                });
                // Per operation, scaled back to the `iters` criterion asked for.
                elapsed.mul_f64(iters as f64 / (per_task * tasks as u64) as f64)
            })
        });
    }

    let open = bench_breaker();
    for _ in 0..5 {
        let permit = open.try_acquire().unwrap();
        open.record_failure(permit);
    }
    assert!(open.state().is_open());
    group.bench_function("open_reject", |b| {
        b.iter(|| black_box(open.try_acquire().is_err()))
    });
    group.finish();
}

fn limiter(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter");
    // A rate no benchmark can exhaust: every call is granted.
    let roomy = RateLimiter::token_bucket(u32::MAX, Duration::from_millis(1), u32::MAX).unwrap();
    group.bench_function("try_acquire_granted", |b| {
        b.iter(|| black_box(roomy.try_acquire().is_ok()))
    });
    let empty = RateLimiter::token_bucket(1, Duration::from_secs(3600), 1).unwrap();
    empty.try_acquire().unwrap();
    group.bench_function("try_acquire_refused", |b| {
        b.iter(|| black_box(empty.try_acquire().is_err()))
    });
    let window = RateLimiter::windowed(u32::MAX, Duration::from_secs(3600)).unwrap();
    group.bench_function("windowed_try_acquire", |b| {
        b.iter(|| black_box(window.try_acquire().is_ok()))
    });
    group.finish();
}

fn guarded_transitions(c: &mut Criterion) {
    let rt = current_thread();
    let breaker = bench_breaker();
    let workflow = guarded_linear_workflow(&breaker);
    let mut group = c.benchmark_group("linear");
    group.throughput(Throughput::Elements(u64::from(LINEAR_STATES)));
    group.bench_function("engine_with_breaker", |b| {
        b.iter(|| rt.block_on(workflow.orchestrate(Step(0))).unwrap())
    });
    group.finish();
}

criterion_group!(benches, closed_breaker, limiter, guarded_transitions);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
