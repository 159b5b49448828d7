//! Engine benchmarks: per-transition overhead against a hand-written loop, building and
//! running a workflow, and many concurrent runs of one workflow.
//!
//! After criterion, the engine and the hand-written loop are also timed in alternating
//! rounds ([`paired`]), so that their ratio is taken under the same conditions; that is
//! the ratio `cargo xtask bench` checks, with the ratio of criterion's means beside it.
//!
//! `cargo xtask bench` runs these and prints the summary table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cano_benches::*;
use criterion::{Criterion, Throughput, criterion_group};

fn linear(c: &mut Criterion) {
    let rt = current_thread();
    let workflow = linear_workflow();
    let tasks = hand_written_tasks();
    let dyn_tasks = dyn_dispatch_tasks();
    let mut group = c.benchmark_group("linear");
    group.throughput(Throughput::Elements(u64::from(LINEAR_STATES)));
    group.bench_function("engine", |b| {
        b.iter(|| rt.block_on(workflow.orchestrate(Step(0))).unwrap())
    });
    group.bench_function("baseline", |b| b.iter(|| rt.block_on(hand_written(&tasks))));
    group.bench_function("dyn_dispatch", |b| {
        b.iter(|| rt.block_on(dyn_dispatch(&dyn_tasks)))
    });
    group.finish();
}

fn build_and_run(c: &mut Criterion) {
    let rt = current_thread();
    c.bench_function("build_and_run", |b| {
        b.iter(|| rt.block_on(linear_workflow().orchestrate(Step(0))).unwrap())
    });
}

const CONCURRENT_RUNS: usize = 10_000;

fn concurrent(c: &mut Criterion) {
    let rt = two_workers();
    let workflow = linear_workflow();
    let mut group = c.benchmark_group("concurrent");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(CONCURRENT_RUNS as u64));
    group.bench_function("10k_runs", |b| {
        b.iter(|| {
            rt.block_on(async {
                let runs: Vec<_> = (0..CONCURRENT_RUNS)
                    .map(|_| workflow.spawn(Step(0)))
                    .collect();
                for run in runs {
                    run.await.unwrap();
                }
            })
        })
    });
    group.finish();
}

/// Holds 10,000 runs in flight at once (each parked in a task) and records how much
/// resident memory they take; written where `cargo xtask bench` finds it.
fn memory_report() {
    let rt = two_workers();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let arrived = Arc::new(tokio::sync::Semaphore::new(0));
    let workflow = gated_workflow(Gated {
        arrived: arrived.clone(),
        gate: gate.clone(),
    });
    let before = resident_bytes().unwrap_or(0);
    let started = Instant::now();
    let in_flight = rt.block_on(async {
        let runs: Vec<_> = (0..CONCURRENT_RUNS)
            .map(|_| workflow.spawn(Step(0)))
            .collect();
        // Once every run has signalled its arrival, all of them are parked at the gate.
        let all = u32::try_from(CONCURRENT_RUNS).unwrap();
        arrived.acquire_many(all).await.unwrap().forget();
        let in_flight = resident_bytes().unwrap_or(0);
        gate.add_permits(CONCURRENT_RUNS);
        for run in runs {
            run.await.unwrap();
        }
        in_flight
    });
    let elapsed = started.elapsed();
    let future_bytes = std::mem::size_of_val(&workflow.orchestrate(Step(0)));
    let delta = in_flight.saturating_sub(before);
    let report = format!(
        "{{\"runs\":{CONCURRENT_RUNS},\"rss_before\":{before},\"rss_in_flight\":{in_flight},\"rss_delta\":{delta},\"peak_rss\":{},\"orchestrate_future_bytes\":{future_bytes},\"elapsed_ms\":{}}}\n",
        peak_resident_bytes().unwrap_or(0),
        elapsed.as_millis()
    );
    write_report("memory.json", &report);
}

criterion_group!(benches, linear, build_and_run, concurrent);

/// The linear engine and the hand-written loop timed in alternating rounds (see
/// [`paired`]), per run; written as `linear_paired.json`.
fn linear_paired_report() {
    let rt = current_thread();
    let workflow = linear_workflow();
    let tasks = hand_written_tasks();
    let engine = || {
        rt.block_on(workflow.orchestrate(Step(0))).unwrap();
    };
    let baseline = || {
        rt.block_on(hand_written(&tasks));
    };
    let result = paired(engine, baseline);
    write_report(
        "linear_paired.json",
        &format!(
            "{{\"engine_ns\":{:.1},\"baseline_ns\":{:.1},\"ratio\":{:.3}}}\n",
            result.a_ns, result.b_ns, result.ratio
        ),
    );
}

fn main() {
    memory_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
    linear_paired_report();
}
