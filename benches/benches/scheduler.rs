//! Scheduler benchmarks: 10,000 interval flows firing every second for 60 simulated
//! seconds on tokio's paused clock (what the scheduler costs per fire, beside a bare run
//! of the same one-state workflow), and, on the real clock, how late 100 flows on a
//! 50 ms grid wake up (p50 and p99, written for `cargo xtask bench`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cano::FlowPolicy;
use cano::prelude::*;
use cano_benches::current_thread;
use criterion::{Criterion, criterion_group};

/// Flows in the simulated run.
const FLOWS: usize = 10_000;
/// Simulated seconds.
const SECONDS: u64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Tick {
    Work,
    Done,
}

struct Work;

#[task(state = Tick)]
impl Work {
    async fn run_bare(&self) -> Result<TaskResult<Tick>, CanoError> {
        Ok(TaskResult::Single(Tick::Done))
    }
}

fn workflow() -> Workflow<Tick> {
    Workflow::bare()
        .register(Tick::Work, Work)
        .add_exit_state(Tick::Done)
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

fn simulated(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler");
    group.sample_size(10);
    group.bench_function("10k_flows_60s", |b| {
        b.iter(|| {
            paused_runtime().block_on(async {
                let mut scheduler = Scheduler::<Tick>::new();
                let workflow = workflow();
                for i in 0..FLOWS {
                    scheduler
                        .flow(
                            format!("flow-{i}"),
                            workflow.clone(),
                            Tick::Work,
                            Schedule::every_fixed_rate(Duration::from_secs(1)).unwrap(),
                            FlowPolicy::new(),
                        )
                        .unwrap();
                }
                let running = scheduler.start().await.unwrap();
                tokio::time::sleep(Duration::from_millis(SECONDS * 1_000 + 500)).await;
                running
                    .stop_with_grace(Duration::from_secs(1))
                    .await
                    .unwrap();
                let runs: u64 = running.list().await.iter().map(|f| f.run_count).sum();
                assert_eq!(runs, FLOWS as u64 * SECONDS);
            })
        })
    });
    let rt = current_thread();
    let bare = workflow();
    group.bench_function("bare_run", |b| {
        b.iter(|| rt.block_on(bare.orchestrate(Tick::Work)).unwrap())
    });
    group.finish();
}

/// Records how late each run starts against its flow's 50 ms grid.
struct Late {
    origin: Instant,
    lateness: Arc<Mutex<Vec<Duration>>>,
}

#[task(state = Tick)]
impl Late {
    async fn run_bare(&self) -> Result<TaskResult<Tick>, CanoError> {
        let since = self.origin.elapsed().as_micros() as u64;
        let period = 50_000;
        let late = since % period;
        // A wake-up just before a grid point (timer granularity) counts as on time.
        let late = if late > period / 2 { 0 } else { late };
        self.lateness
            .lock()
            .unwrap()
            .push(Duration::from_micros(late));
        Ok(TaskResult::Single(Tick::Done))
    }
}

fn lateness() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let lateness = Arc::new(Mutex::new(Vec::new()));
    rt.block_on(async {
        let mut scheduler = Scheduler::<Tick>::new();
        let origin = Instant::now();
        for i in 0..100 {
            let late = Late {
                origin,
                lateness: lateness.clone(),
            };
            let workflow = Workflow::bare()
                .register(Tick::Work, late)
                .add_exit_state(Tick::Done);
            scheduler
                .flow(
                    format!("flow-{i}"),
                    workflow,
                    Tick::Work,
                    Schedule::every_fixed_rate(Duration::from_millis(50)).unwrap(),
                    FlowPolicy::new(),
                )
                .unwrap();
        }
        let running = scheduler.start().await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        running
            .stop_with_grace(Duration::from_secs(1))
            .await
            .unwrap();
    });
    let mut all = lateness.lock().unwrap().clone();
    all.sort();
    let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    let (p50, p99) = (at(0.50), at(0.99));
    println!(
        "scheduler lateness over {} wake-ups: p50 {p50:.0} us, p99 {p99:.0} us",
        all.len()
    );
    cano_benches::write_report(
        "scheduler.json",
        &format!(
            "{{\"p50_us\":{p50:.1},\"p99_us\":{p99:.1},\"wakeups\":{}}}\n",
            all.len()
        ),
    );
}

criterion_group!(benches, simulated);

fn main() {
    benches();
    lateness();
    Criterion::default().configure_from_args().final_summary();
}
