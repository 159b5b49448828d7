//! Observer benchmarks (built with feature `observe`, which compiles cano's tracing
//! spans and metrics in): the linear workflow with no observer, a no-op observer,
//! `TracingObserver` without a subscriber and `MetricsObserver` without a recorder.
//!
//! `cargo xtask bench` runs these in a build of their own and prints each against the
//! bare run.

use std::sync::Arc;

use cano::RunObserver;
use cano::prelude::*;
use cano_benches::*;
use criterion::{Criterion, Throughput, criterion_group};

/// Implements every callback with its default: what an observer costs the engine.
struct Noop;
impl RunObserver for Noop {}

/// The linear workflow bare and with each observer, by bench name.
fn cases() -> Vec<(&'static str, Workflow<Step>)> {
    let observers: [(&str, Arc<dyn RunObserver>); 4] = [
        ("noop", Arc::new(Noop)),
        ("tracing_no_subscriber", Arc::new(TracingObserver::new())),
        ("metrics_no_recorder", Arc::new(MetricsObserver::new())),
        (
            "metrics_per_task_no_recorder",
            Arc::new(MetricsObserver::new().per_task()),
        ),
    ];
    let observed = observers
        .into_iter()
        .map(|(name, observer)| (name, linear_workflow().with_observer(observer)));
    std::iter::once(("bare", linear_workflow()))
        .chain(observed)
        .collect()
}

fn observers(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("observers");
    group.throughput(Throughput::Elements(u64::from(LINEAR_STATES)));
    for (name, workflow) in cases() {
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(workflow.orchestrate(Step(0))).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, observers);

/// Each observed run timed against the bare run in alternating rounds (see `paired`):
/// the ratio the target is about, without the drift between benchmarks measured
/// minutes apart.
fn paired_report() {
    let rt = current_thread();
    let mut cases = cases().into_iter();
    let (_, bare) = cases.next().expect("the bare case comes first");
    let fields: Vec<String> = cases
        .map(|(name, observed)| {
            let result = paired(
                || {
                    rt.block_on(observed.orchestrate(Step(0))).unwrap();
                },
                || {
                    rt.block_on(bare.orchestrate(Step(0))).unwrap();
                },
            );
            format!("\"{name}\":{:.3}", result.ratio)
        })
        .collect();
    write_report(
        "observers_paired.json",
        &format!("{{{}}}\n", fields.join(",")),
    );
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    paired_report();
}
