//! Durable waits: what a parked run costs, and how long a signal takes to move it.
//!
//! - Heap bytes per parked run, with the in-memory store (its rows are the heap) and
//!   with sled (its page cache), beside the same number of runs held open the way a
//!   poll or timer task holds them: a live tokio task each, waiting on a channel.
//!   Bytes are counted by a global allocator, so the figures are exact.
//! - Rows per parked run.
//! - From `Workflow::signal` to the next state's task starting, on sled with group
//!   commit and a process serving the waits: p50 and p99.
//!
//! Writes `waits.json` where `cargo xtask bench` finds it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cano::checkpoint::CheckpointStore;
use cano::wait::Wait;
use cano::{
    CancellationToken, CanoError, MemoryCheckpointStore, RunId, RunOptions, SledCheckpointStore,
    Task, TaskResult, Workflow,
};
use cano_benches::{measuring, two_workers, write_report};

#[global_allocator]
static GLOBAL: cano_benches::CountingAllocator = cano_benches::CountingAllocator;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Step {
    Ask,
    Go,
    Done,
}

/// Tells the bench when the state after the wait starts.
struct Went(tokio::sync::mpsc::UnboundedSender<Instant>);

#[cano::task]
impl Task<Step> for Went {
    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        let _ = self.0.send(Instant::now());
        Ok(TaskResult::Single(Step::Done))
    }
}

fn workflow(store: impl CheckpointStore, went: Went) -> Workflow<Step> {
    Workflow::bare()
        .register_wait(
            Step::Ask,
            Wait::new()
                .on("go", |(): ()| Step::Go)
                .timeout(Duration::from_secs(24 * 3600), Step::Done),
        )
        .register(Step::Go, went)
        .add_exit_state(Step::Done)
        .with_checkpoint_store(store)
}

/// Parks `runs` runs, a thousand at a time (so sled's group commit shares its syncs);
/// returns the heap bytes live afterwards beyond those live before.
async fn park(workflow: &Workflow<Step>, runs: u64) -> isize {
    let before = cano_benches::live_bytes();
    for chunk in (0..runs).collect::<Vec<_>>().chunks(1000) {
        let parks = chunk.iter().map(|&n| {
            workflow.orchestrate_with(Step::Ask, RunOptions::new().with_run_id(RunId::from(n)))
        });
        for parked in futures::future::join_all(parks).await {
            assert!(parked.unwrap_err().is_parked());
        }
    }
    cano_benches::live_bytes() - before
}

/// Waits at a gate, as a poll or timer task holds its run open today.
struct Held {
    arrived: Arc<tokio::sync::Semaphore>,
    gate: Arc<tokio::sync::Semaphore>,
}

#[cano::task]
impl Task<Step> for Held {
    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        self.arrived.add_permits(1);
        let _ = self.gate.acquire().await;
        Ok(TaskResult::Single(Step::Done))
    }
}

/// The same number of runs held open without a store: each a spawned run whose task
/// waits for its answer.
async fn held(runs: u64) -> isize {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let arrived = Arc::new(tokio::sync::Semaphore::new(0));
    let workflow = Workflow::bare()
        .register(
            Step::Ask,
            Held {
                arrived: arrived.clone(),
                gate: gate.clone(),
            },
        )
        .add_exit_state(Step::Done);
    let before = cano_benches::live_bytes();
    let handles: Vec<_> = (0..runs).map(|_| workflow.spawn(Step::Ask)).collect();
    arrived.acquire_many(runs as u32).await.unwrap().forget();
    let during = cano_benches::live_bytes() - before;
    gate.add_permits(runs as usize);
    for handle in handles {
        handle.await.unwrap();
    }
    during
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at].as_secs_f64() * 1e6
}

fn main() {
    let (runs, samples) = if measuring() {
        (100_000, 500)
    } else {
        (1_000, 20)
    };
    let rt = two_workers();
    let report = rt.block_on(async {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let memory = MemoryCheckpointStore::new();
        let in_memory = workflow(memory.clone(), Went(tx.clone()));
        let memory_bytes = park(&in_memory, runs).await;
        let rows_per_run = memory.len() as f64 / runs as f64;
        drop(in_memory);
        drop(memory);

        let dir = tempfile::tempdir().unwrap();
        let sled = SledCheckpointStore::open(dir.path().join("parked")).unwrap();
        let on_sled = workflow(sled.clone(), Went(tx.clone()));
        let sled_bytes = park(&on_sled, runs).await;
        drop(on_sled);
        sled.close().await.unwrap();

        let held_bytes = held(runs).await;

        // Signal to next state, one run at a time, with a server of the waits running.
        let dir = tempfile::tempdir().unwrap();
        let sled = SledCheckpointStore::open(dir.path().join("latency")).unwrap();
        let (went, mut started) = tokio::sync::mpsc::unbounded_channel();
        let wf = workflow(sled.clone(), Went(went));
        let token = CancellationToken::new();
        let serving = tokio::spawn({
            let (wf, token) = (wf.clone(), token.clone());
            async move { wf.serve_waits(token).await }
        });
        let mut latencies = Vec::with_capacity(samples);
        for n in 0..samples as u64 {
            let run = RunId::from(1_000_000 + n);
            let parked = wf
                .orchestrate_with(Step::Ask, RunOptions::new().with_run_id(run))
                .await;
            assert!(parked.unwrap_err().is_parked());
            let sent = Instant::now();
            wf.signal(run, "go", &()).await.unwrap();
            let entered = started.recv().await.unwrap();
            latencies.push(entered - sent);
        }
        token.cancel();
        serving.await.unwrap().unwrap();
        latencies.sort();
        format!(
            "{{\"runs\":{runs},\"rows_per_parked_run\":{rows_per_run},\"memory_store_bytes\":{memory_bytes},\"sled_bytes\":{sled_bytes},\"held_task_bytes\":{held_bytes},\"signal_p50_us\":{:.1},\"signal_p99_us\":{:.1},\"samples\":{samples}}}\n",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        )
    });
    write_report("waits.json", &report);
}
