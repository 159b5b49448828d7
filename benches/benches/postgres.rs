//! The PostgreSQL backend under load: transitions per second with 1, 4 and 16 workers
//! draining one queue, and the latency from enqueue to a run's first state with an idle
//! worker (woken by LISTEN/NOTIFY), and from a signal to the next state of a parked run
//! (woken the same way). Not a criterion bench: a throughput run of
//! thousands of runs is one measurement. `cargo bench` measures; `cargo test` (no
//! `--bench` argument) runs a small smoke version. Needs `CANO_PG_URL`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cano::postgres::{
    EnqueueOptions, PgOptions, PostgresCheckpointStore, RunQueue, Worker, WorkerEvent,
};
use cano::prelude::*;
use cano::wait::Wait;
use futures::StreamExt;
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Step {
    S(u8),
    Done,
}

/// Moves to the next state; the first state reports when it started.
struct Next {
    to: Step,
    started: Option<mpsc::UnboundedSender<Instant>>,
}

#[task]
impl Task<Step> for Next {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        if let Some(started) = &self.started {
            let _ = started.send(Instant::now());
        }
        Ok(TaskResult::Single(self.to.clone()))
    }
}

const STATES: u8 = 10;

fn workflow(started: Option<mpsc::UnboundedSender<Instant>>) -> Workflow<Step> {
    let mut workflow = Workflow::bare().add_exit_state(Step::Done);
    for i in 0..STATES {
        let to = if i + 1 == STATES {
            Step::Done
        } else {
            Step::S(i + 1)
        };
        let started = if i == 0 { started.clone() } else { None };
        workflow = workflow.register(Step::S(i), Next { to, started });
    }
    workflow
}

fn options(url: &str) -> PgOptions {
    PgOptions::new(url).with_schema("bench_pg")
}

async fn fresh(url: &str) -> PostgresCheckpointStore {
    let (client, connection) = tokio_postgres_connect(url).await;
    tokio::spawn(connection);
    client
        .batch_execute("DROP SCHEMA IF EXISTS bench_pg CASCADE")
        .await
        .unwrap();
    PostgresCheckpointStore::connect(options(url))
        .await
        .unwrap()
}

async fn tokio_postgres_connect(
    url: &str,
) -> (
    tokio_postgres::Client,
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
) {
    tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap()
}

/// Runs `runs` enqueued runs through `workers` workers (each with its own pool, like
/// separate processes); transitions per second, counting each state entered, from
/// the first run's start to the last run's end as the queue records them (the
/// server's clock). Timed from the client, the drain ended when `wait_all` next
/// looked, which it does every 200 ms while many runs are left.
async fn throughput(url: &str, workers: usize, runs: usize) -> f64 {
    let store = fresh(url).await;
    let queue = RunQueue::new(&store);
    // Enqueued 64 at a time (not timed: the span below starts at the first run's
    // start), in order, so that the wait below is given them as enqueued.
    let ids: Vec<_> = futures::stream::iter(0..runs)
        .map(|_| {
            let queue = &queue;
            async move {
                queue
                    .enqueue("steps", &Step::S(0), EnqueueOptions::new())
                    .await
                    .unwrap()
                    .run
            }
        })
        .buffered(64)
        .collect()
        .await;
    // Every worker's store connects (and checks the schema) before the first
    // worker starts, as separate processes would have done, each on its own: the
    // timing starts at the first run's start, and connecting the sixteenth store
    // after the first worker had started put fifteen connects inside it.
    let mut stores = Vec::with_capacity(workers);
    for _ in 0..workers {
        stores.push(
            PostgresCheckpointStore::connect(options(url))
                .await
                .unwrap(),
        );
    }
    let mut started = Vec::with_capacity(workers);
    for store in &stores {
        started.push(
            Worker::new(store)
                .register("steps", workflow(None))
                .with_concurrency(32)
                .start()
                .await
                .unwrap(),
        );
    }
    queue
        .wait_all(&ids, Duration::from_secs(600))
        .await
        .unwrap();
    let (admin, connection) = tokio_postgres_connect(url).await;
    tokio::spawn(connection);
    let keys: Vec<i64> = ids.iter().map(|id| id.as_u64() as i64).collect();
    let span: f64 = admin
        .query_one(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8
             FROM bench_pg.cano_runs WHERE run_id = ANY($1)",
            &[&keys],
        )
        .await
        .unwrap()
        .get(0);
    for worker in started {
        worker.stop(Duration::from_secs(5)).await;
    }
    let (rows, statements) = stores.iter().fold((0, 0), |(r, s), store| {
        (r + store.stats().rows, s + store.stats().statements)
    });
    println!(
        "postgres: {workers:>2} workers: {:.1} checkpoint rows per append statement",
        rows as f64 / statements.max(1) as f64
    );
    (runs * STATES as usize) as f64 / span.max(1e-6)
}

/// Enqueue-to-first-state latency with one idle worker: (p50, p99) in milliseconds.
async fn latency(url: &str, samples: usize) -> (f64, f64) {
    let store = fresh(url).await;
    let queue = RunQueue::new(&store);
    let (sender, mut started) = mpsc::unbounded_channel();
    let worker = Worker::new(&store)
        .register("steps", workflow(Some(sender)))
        .start()
        .await
        .unwrap();
    let mut all = Vec::with_capacity(samples);
    for _ in 0..samples {
        let sent = Instant::now();
        let run = queue
            .enqueue("steps", &Step::S(0), EnqueueOptions::new())
            .await
            .unwrap()
            .run;
        let first = started.recv().await.unwrap();
        all.push(first.duration_since(sent).as_secs_f64() * 1e3);
        queue.wait(run, Duration::from_secs(30)).await.unwrap();
    }
    worker.stop(Duration::from_secs(5)).await;
    all.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

/// A run that parks at `Ask` until its `go` signal; `Go` reports when it started.
fn parking(started: mpsc::UnboundedSender<Instant>) -> Workflow<Step> {
    Workflow::bare()
        .register_wait(
            Step::S(0),
            Wait::new()
                .on("go", |(): ()| Step::S(1))
                .timeout(Duration::from_secs(3600), Step::Done),
        )
        .register(
            Step::S(1),
            Next {
                to: Step::Done,
                started: Some(started),
            },
        )
        .add_exit_state(Step::Done)
}

/// Signal-to-next-state latency of a parked run with one idle worker: (p50, p99) in
/// milliseconds.
async fn signal_latency(url: &str, samples: usize) -> (f64, f64) {
    let store = fresh(url).await;
    let queue = RunQueue::new(&store);
    let (sender, mut started) = mpsc::unbounded_channel();
    let worker = Worker::new(&store)
        .register("parking", parking(sender.clone()))
        .start()
        .await
        .unwrap();
    let mut events = worker.subscribe();
    let signals = parking(sender)
        .with_shared_checkpoint_store(Arc::new(store.clone()))
        .with_workflow_id("parking");
    let mut all = Vec::with_capacity(samples);
    for _ in 0..samples {
        let run = queue
            .enqueue("parking", &Step::S(0), EnqueueOptions::new())
            .await
            .unwrap()
            .run;
        while !matches!(events.recv().await.unwrap(), WorkerEvent::Parked { run: r } if r == run) {}
        let sent = Instant::now();
        signals.signal(run, "go", &()).await.unwrap();
        let entered = started.recv().await.unwrap();
        all.push(entered.duration_since(sent).as_secs_f64() * 1e3);
        queue.wait(run, Duration::from_secs(30)).await.unwrap();
    }
    worker.stop(Duration::from_secs(5)).await;
    all.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

fn main() {
    let measuring = cano_benches::measuring();
    let url = cano_benches::pg_url_or_exit();
    let runtime = cano_benches::two_workers();
    let (runs, samples) = if measuring { (2_000, 100) } else { (40, 5) };
    let report = runtime.block_on(async {
        let mut rates = Vec::new();
        for workers in [1, 4, 16] {
            let rate = throughput(&url, workers, runs).await;
            println!("postgres: {workers:>2} workers, {runs} runs of {STATES} states: {rate:.0} transitions/s");
            rates.push(rate);
        }
        // A backlog ten times as long, drained by 4 workers: a claim reads the head
        // of the backlog and a wait the first of its runs, so the rate holds (a
        // claim that sorted every waiting run, and a wait that read them all five
        // times a second, once made it a fifth of the short backlog's).
        let backlog = throughput(&url, 4, runs * 10).await;
        println!(
            "postgres:  4 workers, backlog of {} runs of {STATES} states: {backlog:.0} transitions/s",
            runs * 10
        );
        rates.push(backlog);
        let (p50, p99) = latency(&url, samples).await;
        println!("postgres: enqueue to first state, idle worker: p50 {p50:.2} ms, p99 {p99:.2} ms");
        let (s50, s99) = signal_latency(&url, samples).await;
        println!("postgres: signal to next state, parked run: p50 {s50:.2} ms, p99 {s99:.2} ms");
        Arc::new((rates, p50, p99, s50, s99))
    });
    let (rates, p50, p99, s50, s99) = &*report;
    cano_benches::write_report(
        "postgres.json",
        &format!(
            "{{\"w1\":{:.0},\"w4\":{:.0},\"w16\":{:.0},\"w4_backlog\":{:.0},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"signal_p50_ms\":{s50:.3},\"signal_p99_ms\":{s99:.3}}}\n",
            rates[0], rates[1], rates[2], rates[3]
        ),
    );
}
