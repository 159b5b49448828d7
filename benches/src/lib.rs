//! Shared workloads of the benchmarks, so that the benches and their sanity tests
//! measure the same thing.

use cano::checkpoint::CheckpointStore;
use cano::prelude::*;
use cano::{Branches, BreakerPolicy};
use std::sync::Arc;

/// A state of the checkpointed benchmark workflow (serde, as a store requires).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Stage(pub u8);

/// A trivial task of the checkpointed workflow: moves to `Stage(self.0)`.
pub struct NextStage(pub u8);

#[task]
impl Task<Stage> for NextStage {
    async fn run_bare(&self) -> Result<TaskResult<Stage>, CanoError> {
        Ok(TaskResult::Single(Stage(self.0)))
    }
}

/// The linear workflow over [`Stage`], `LINEAR_STATES` trivial tasks, with `store`
/// attached when given.
pub fn checkpointed_workflow(store: Option<Arc<dyn CheckpointStore>>) -> Workflow<Stage> {
    let workflow = (0..LINEAR_STATES)
        .fold(Workflow::bare(), |wf, i| {
            wf.register(Stage(i), NextStage(i + 1))
        })
        .add_exit_state(Stage(LINEAR_STATES));
    match store {
        Some(store) => workflow.with_shared_checkpoint_store(store),
        None => workflow,
    }
}

/// A saga step of the benchmark: "holds" an amount, returned as its output, and gives
/// it back when compensated.
pub struct Hold(pub u8);

#[saga::task]
impl CompensatableTask<Stage> for Hold {
    type Output = u64;
    async fn run(&self, _: &Resources) -> Result<(TaskResult<Stage>, u64), CanoError> {
        Ok((TaskResult::Single(Stage(self.0)), u64::from(self.0) * 100))
    }
    async fn compensate(&self, _: &Resources, amount: u64) -> Result<(), CanoError> {
        std::hint::black_box(amount);
        Ok(())
    }
}

/// The last state of a saga that must roll back.
pub struct Refuse;

#[task]
impl Task<Stage> for Refuse {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Stage>, CanoError> {
        Err(CanoError::task_execution("refused"))
    }
}

/// `LINEAR_STATES` compensatable steps in a row; with `fail`, a last state that fails
/// so every step is compensated.
pub fn saga_workflow(fail: bool, store: Option<Arc<dyn CheckpointStore>>) -> Workflow<Stage> {
    let workflow = (0..LINEAR_STATES).fold(Workflow::bare(), |wf, i| {
        wf.register_with_compensation(Stage(i), Hold(i + 1))
    });
    let workflow = if fail {
        workflow
            .register(Stage(LINEAR_STATES), Refuse)
            .add_exit_state(Stage(LINEAR_STATES + 1))
    } else {
        workflow.add_exit_state(Stage(LINEAR_STATES))
    };
    match store {
        Some(store) => workflow.with_shared_checkpoint_store(store),
        None => workflow,
    }
}

/// A state of the linear benchmark workflow: `Step(0)` → … → `Step(LINEAR_STATES)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Step(pub u8);

/// Tasks in the linear workflow (the last state is the exit).
pub const LINEAR_STATES: u8 = 10;

/// A trivial task: moves to `Step(self.0)`.
pub struct Next(pub u8);

#[task]
impl Task<Step> for Next {
    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        Ok(TaskResult::Single(Step(self.0)))
    }
}

/// The linear workflow: `LINEAR_STATES` trivial tasks in a row.
pub fn linear_workflow() -> Workflow<Step> {
    (0..LINEAR_STATES)
        .fold(Workflow::bare(), |wf, i| wf.register(Step(i), Next(i + 1)))
        .add_exit_state(Step(LINEAR_STATES))
}

/// A trivial task whose every attempt is admitted by a shared circuit breaker.
pub struct Guarded(pub u8, pub Arc<CircuitBreaker>);

#[task]
impl Task<Step> for Guarded {
    fn config(&self) -> TaskConfig {
        TaskConfig::new().with_circuit_breaker(self.1.clone())
    }
    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        Ok(TaskResult::Single(Step(self.0)))
    }
}

/// The linear workflow with every task behind one (closed) circuit breaker.
pub fn guarded_linear_workflow(breaker: &Arc<CircuitBreaker>) -> Workflow<Step> {
    (0..LINEAR_STATES)
        .fold(Workflow::bare(), |wf, i| {
            wf.register(Step(i), Guarded(i + 1, breaker.clone()))
        })
        .add_exit_state(Step(LINEAR_STATES))
}

/// A breaker that never opens in a benchmark (nothing fails).
pub fn bench_breaker() -> Arc<CircuitBreaker> {
    Arc::new(
        CircuitBreaker::try_named(
            "bench",
            BreakerPolicy::consecutive(5, std::time::Duration::from_secs(30)),
        )
        .expect("a valid policy"),
    )
}

/// The same ten transitions written by hand: a `match` on the state awaiting the same
/// boxed futures, with no engine around them.
pub async fn hand_written(tasks: &[Next; LINEAR_STATES as usize]) -> Step {
    let mut state = Step(0);
    loop {
        let next = match state.0 {
            n if n < LINEAR_STATES => tasks[n as usize].run_bare().await,
            _ => return state,
        };
        state = match next {
            Ok(TaskResult::Single(s)) => s,
            _ => unreachable!("trivial tasks always succeed"),
        };
    }
}

/// The loop the project's design measures against: a hash lookup of the state's task
/// and one boxed, dynamically dispatched future per state, nothing else.
pub async fn dyn_dispatch(tasks: &std::collections::HashMap<Step, Box<dyn Task<Step>>>) -> Step {
    let mut state = Step(0);
    while let Some(task) = tasks.get(&state) {
        state = match task.run_bare().await {
            Ok(TaskResult::Single(s)) => s,
            _ => unreachable!("trivial tasks always succeed"),
        };
    }
    state
}

/// The tasks of [`dyn_dispatch`].
pub fn dyn_dispatch_tasks() -> std::collections::HashMap<Step, Box<dyn Task<Step>>> {
    (0..LINEAR_STATES)
        .map(|i| (Step(i), Box::new(Next(i + 1)) as Box<dyn Task<Step>>))
        .collect()
}

/// The tasks of [`hand_written`].
pub fn hand_written_tasks() -> [Next; LINEAR_STATES as usize] {
    std::array::from_fn(|i| Next(i as u8 + 1))
}

/// A task that signals its arrival, then waits for a gate to open, so many runs can be
/// held in flight at once.
pub struct Gated {
    /// Gains one permit per run that reached the gate.
    pub arrived: Arc<tokio::sync::Semaphore>,
    /// Opened by the caller.
    pub gate: Arc<tokio::sync::Semaphore>,
}

#[task]
impl Task<Step> for Gated {
    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        self.arrived.add_permits(1);
        let _permit = self.gate.acquire().await.map_err(CanoError::task)?;
        Ok(TaskResult::Single(Step(2)))
    }
}

/// `Step(0)` (trivial) → `Step(1)` (waits at the gate) → `Step(2)` (exit).
pub fn gated_workflow(gated: Gated) -> Workflow<Step> {
    Workflow::bare()
        .register(Step(0), Next(1))
        .register(Step(1), gated)
        .add_exit_state(Step(2))
}

/// A split of `branches` trivial tasks under `JoinStrategy::All`:
/// `Step(0)` (split) → `Step(1)` (exit).
pub fn split_workflow(branches: usize) -> Workflow<Step> {
    let tasks: Vec<Next> = (0..branches).map(|_| Next(1)).collect();
    Workflow::bare()
        .register_split(Step(0), tasks, JoinConfig::new(JoinStrategy::All, Step(1)))
        .add_exit_state(Step(1))
}

/// The same branches with a plain `tokio::task::JoinSet`: spawn every task's future,
/// wait for all of them, stop at the first error.
pub async fn join_set(tasks: &[Arc<Next>]) -> Result<(), CanoError> {
    let mut set = tokio::task::JoinSet::new();
    for task in tasks {
        let task = task.clone();
        set.spawn(async move { task.run_bare().await });
    }
    while let Some(joined) = set.join_next().await {
        joined.map_err(CanoError::task)??;
    }
    Ok(())
}

/// A split whose `branches` branches all wait at `gated`'s gate.
pub fn gated_split(branches: usize, gated: Arc<Gated>) -> Workflow<Step> {
    let tasks: Vec<Arc<dyn Task<Step>>> = (0..branches)
        .map(|_| gated.clone() as Arc<dyn Task<Step>>)
        .collect();
    Workflow::bare()
        .register_split(
            Step(0),
            Branches::from(tasks),
            JoinConfig::new(JoinStrategy::All, Step(1)),
        )
        .add_exit_state(Step(1))
}

/// A current-thread runtime, for measuring one run without cross-thread wake-ups.
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The PostgreSQL server the benches use (`CANO_PG_URL`). Without one, a measuring run
/// fails and a `cargo test` pass of the bench ends quietly, saying how to get one.
pub fn pg_url_or_exit() -> String {
    std::env::var("CANO_PG_URL").unwrap_or_else(|_| {
        eprintln!(
            "CANO_PG_URL is not set: start a server with `export CANO_PG_URL=$(.ci/postgres start)`, or run `cargo xtask bench`"
        );
        std::process::exit(if measuring() { 1 } else { 0 });
    })
}

/// A runtime with two worker threads, the machine the project's figures are quoted for.
pub fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Two workloads timed against each other: each one's median time per iteration, and
/// the median of the per-round ratios `a / b`.
#[derive(Debug, Clone, Copy)]
pub struct Paired {
    /// `a`'s median time per iteration, in nanoseconds.
    pub a_ns: f64,
    /// `b`'s median time per iteration, in nanoseconds.
    pub b_ns: f64,
    /// The median over rounds of `a`'s time divided by `b`'s in the same round.
    pub ratio: f64,
}

/// Times `a` and `b` in 15 back-to-back rounds, alternating which goes first, each side
/// running about 60 ms per round (one iteration of each under `cargo test`). Both see
/// the same machine at the same moment, so a slow spell (another process, disk
/// writeback, a throttled core) moves both and cancels out of the ratio, where two
/// benchmarks measured minutes apart would not.
pub fn paired(mut a: impl FnMut(), mut b: impl FnMut()) -> Paired {
    if !measuring() {
        return rounds(1, 1, &mut a, &mut b);
    }
    const ROUND: f64 = 60e6;
    let warm = rounds(1, 3, &mut a, &mut b);
    let iters = (ROUND / warm.a_ns.max(1.0)).ceil().max(1.0) as usize;
    rounds(15, iters, &mut a, &mut b)
}

/// `rounds` rounds of `iters` iterations of each of `a` and `b` (see [`paired`]).
fn rounds(rounds: usize, iters: usize, a: &mut dyn FnMut(), b: &mut dyn FnMut()) -> Paired {
    let time = |f: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        for _ in 0..iters {
            f();
        }
        start.elapsed().as_secs_f64() * 1e9 / iters as f64
    };
    let (mut a_ns, mut b_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        let (ta, tb) = if round % 2 == 0 {
            let ta = time(a);
            (ta, time(b))
        } else {
            let tb = time(b);
            (time(a), tb)
        };
        a_ns.push(ta);
        b_ns.push(tb);
        ratios.push(ta / tb);
    }
    Paired {
        a_ns: median(a_ns),
        b_ns: median(b_ns),
        ratio: median(ratios),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Whether this bench binary was started by `cargo bench` (criterion's `--bench`), not
/// by `cargo test --benches`, which runs everything once to check it works.
pub fn measuring() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// Echoes `report` (JSON) and, when [`measuring`], writes it as `name` in
/// `CANO_BENCH_OUT` (default `target/cano-bench`), where `cargo xtask bench` reads it.
/// A `cargo test` pass leaves the figures of the last real run alone.
pub fn write_report(name: &str, report: &str) {
    eprintln!("{name}: {report}");
    if measuring() {
        let dir = std::env::var("CANO_BENCH_OUT").unwrap_or_else(|_| "../target/cano-bench".into());
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(format!("{dir}/{name}"), report);
    }
}

/// Resident memory of this process in bytes (Linux), read from `/proc/self/statm`.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`).
pub fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Live heap bytes, as [`CountingAllocator`] counts them (0 unless a bench installs it).
static LIVE_BYTES: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

/// The system allocator with a running count of live heap bytes, for the memory
/// benches: install it with `#[global_allocator]` and read [`live_bytes`]. The count is
/// exact and independent of what the process freed earlier (unlike resident memory).
pub struct CountingAllocator;

#[allow(unsafe_code)]
// SAFETY: forwards to the system allocator and only keeps a running byte count.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

/// The live heap bytes [`CountingAllocator`] has counted so far.
pub fn live_bytes() -> isize {
    LIVE_BYTES.load(std::sync::atomic::Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_linear_variants_end_in_the_same_state() {
        assert_eq!(
            linear_workflow().orchestrate(Step(0)).await.unwrap(),
            Step(LINEAR_STATES)
        );
        assert_eq!(
            hand_written(&hand_written_tasks()).await,
            Step(LINEAR_STATES)
        );
    }

    #[tokio::test]
    async fn the_saga_workload_completes_or_rolls_back_with_the_original_error() {
        assert_eq!(
            saga_workflow(false, None)
                .orchestrate(Stage(0))
                .await
                .unwrap(),
            Stage(LINEAR_STATES)
        );
        let err = saga_workflow(true, None)
            .orchestrate(Stage(0))
            .await
            .unwrap_err();
        assert!(matches!(err, CanoError::TaskExecution(_)), "{err:?}");
    }

    #[tokio::test]
    async fn both_split_variants_run_every_branch() {
        assert_eq!(
            split_workflow(100).orchestrate(Step(0)).await.unwrap(),
            Step(1)
        );
        let tasks: Vec<Arc<Next>> = (0..100).map(|_| Arc::new(Next(1))).collect();
        join_set(&tasks).await.unwrap();
    }
}
