//! Observer benchmarks (built with feature `observe`, which compiles cano's tracing
//! spans and metrics in): the linear workflow with no observer, a no-op observer,
//! `TracingObserver` without a subscriber and `MetricsObserver` without a recorder.
//!
//! `cargo xtask bench` runs these in a build of their own and prints each against the
//! bare run.

use std::sync::Arc;

use cano::prelude::*;
use cano_benches::*;
use criterion::{Criterion, Throughput, criterion_group};

/// Implements every callback with its default: what an observer costs the engine.
struct Noop;
impl WorkflowObserver for Noop {}

fn observers(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("observers");
    group.throughput(Throughput::Elements(u64::from(LINEAR_STATES)));
    let cases: [(&str, Option<Arc<dyn WorkflowObserver>>); 5] = [
        ("bare", None),
        ("noop", Some(Arc::new(Noop))),
        (
            "tracing_no_subscriber",
            Some(Arc::new(TracingObserver::new())),
        ),
        (
            "metrics_no_recorder",
            Some(Arc::new(MetricsObserver::new())),
        ),
        (
            "metrics_per_task_no_recorder",
            Some(Arc::new(MetricsObserver::new().per_task())),
        ),
    ];
    for (name, observer) in cases {
        let workflow = match observer {
            Some(observer) => linear_workflow().with_observer(observer),
            None => linear_workflow(),
        };
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(workflow.orchestrate(Step(0))).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, observers);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
