//! A worker process for cano's PostgreSQL backend: start it several times against one
//! database and watch runs spread across the copies.
//!
//! ```sh
//! export CANO_PG_URL=$(.ci/postgres start)       # or any PostgreSQL you run
//! cargo run --example worker --features postgres              # a worker (in several terminals)
//! cargo run --example worker --features postgres -- enqueue 30  # submit 30 runs, wait, tally
//! cargo run --example worker --features postgres -- demo       # all of it: 3 workers + 30 runs
//! ```
//!
//! Each run is a small report job: fetch, render, deliver. A worker prints each run it
//! claims and finishes; kill one (Ctrl-C or `kill -9`) mid-run and its runs are finished
//! by the others once its leases expire, resuming from their last checkpoint.

use std::collections::BTreeMap;
use std::time::Duration;

use cano::RunId;
use cano::postgres::{
    EnqueueOptions, PgOptions, PostgresCheckpointStore, RunQueue, Worker, WorkerEvent,
};
use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Report {
    Fetch,
    Render,
    Deliver,
    Delivered,
}

/// One step of the job; the sleep stands for the real work (a query, a render, a send).
struct Step {
    next: Report,
    work: Duration,
}

#[task]
impl Task<Report> for Step {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Report>, CanoError> {
        tokio::time::sleep(self.work).await;
        Ok(TaskResult::Single(self.next.clone()))
    }
}

fn report() -> Workflow<Report> {
    let step = |next, ms| Step {
        next,
        work: Duration::from_millis(ms),
    };
    Workflow::bare()
        .register(Report::Fetch, step(Report::Render, 150))
        .register(Report::Render, step(Report::Deliver, 300))
        .register(Report::Deliver, step(Report::Delivered, 150))
        .add_exit_state(Report::Delivered)
}

fn url() -> String {
    std::env::var("CANO_PG_URL").unwrap_or_else(|_| {
        eprintln!(
            "Set CANO_PG_URL to a PostgreSQL server, for example a throwaway one:\n    export CANO_PG_URL=$(.ci/postgres start)"
        );
        std::process::exit(2);
    })
}

async fn connect() -> Result<PostgresCheckpointStore, CanoError> {
    PostgresCheckpointStore::connect(PgOptions::new(url()).with_schema("cano_example")).await
}

/// A worker until stdin closes or Ctrl-C.
async fn work(name: String) -> Result<(), CanoError> {
    let store = connect().await?;
    let worker = Worker::new(&store)
        .named(&name)
        .register("report", report())
        .with_concurrency(4)
        .with_lease(Duration::from_secs(3));
    // Subscribed before the start: runs already waiting are claimed at once.
    let mut events = worker.subscribe();
    let worker = worker.start().await?;
    println!("[{name}] waiting for runs");
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin()
            .read_line(&mut line)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    });
    let report = async {
        while let Ok(event) = events.recv().await {
            match event {
                WorkerEvent::Claimed { run, claims, .. } if claims > 1 => {
                    println!(
                        "[{name}] took over run {run} (claim {claims}), resuming from its checkpoint"
                    )
                }
                WorkerEvent::Claimed { run, .. } => println!("[{name}] claimed run {run}"),
                WorkerEvent::Finished { run, label } => {
                    println!("[{name}] finished run {run} in {label}")
                }
                other => println!("[{name}] {other:?}"),
            }
        }
    };
    tokio::select! {
        _ = report => {}
        _ = stdin_closed => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    worker.stop(Duration::from_secs(5)).await;
    println!("[{name}] stopped");
    Ok(())
}

/// Submits `count` runs, waits for them, and tallies which worker finished each.
async fn enqueue(count: usize) -> Result<(), CanoError> {
    let store = connect().await?;
    let queue = RunQueue::new(&store);
    let batch = RunId::new();
    let mut runs = Vec::with_capacity(count);
    for i in 0..count {
        // The key makes a retried submission harmless: the same key, the same run.
        let key = format!("report-{batch}-{i}");
        runs.push(
            queue
                .enqueue(
                    "report",
                    &Report::Fetch,
                    EnqueueOptions::new().with_idempotency_key(key),
                )
                .await?
                .run,
        );
    }
    println!("enqueued {count} runs; waiting for the workers");
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for record in queue.wait_all(&runs, Duration::from_secs(300)).await? {
        let who = record.worker.clone().unwrap_or_default();
        *tally
            .entry(format!("{who} ({:?})", record.status))
            .or_default() += 1;
    }
    for (who, n) in tally {
        println!("  {who}: {n} runs");
    }
    Ok(())
}

/// Three worker processes (this program again) and 30 runs spread over them.
async fn demo() -> Result<(), CanoError> {
    let exe = std::env::current_exe().expect("the example's own path");
    let mut workers = Vec::new();
    for i in 1..=3 {
        workers.push(
            tokio::process::Command::new(&exe)
                .args(["work", &format!("worker-{i}")])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("start a worker process"),
        );
    }
    enqueue(30).await?;
    for mut worker in workers {
        drop(worker.stdin.take()); // the worker stops when its stdin closes
        let _ = worker.wait().await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("enqueue") => enqueue(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(30)).await,
        Some("demo") => demo().await,
        Some("work") => {
            work(
                args.get(1)
                    .cloned()
                    .unwrap_or_else(|| format!("worker-{}", std::process::id())),
            )
            .await
        }
        None => work(format!("worker-{}", std::process::id())).await,
        Some(other) => {
            eprintln!(
                "unknown command {other:?}: use no argument (a worker), `enqueue N` or `demo`"
            );
            std::process::exit(2);
        }
    }
}
