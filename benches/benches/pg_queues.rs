//! Named queues on PostgreSQL under load: runs started per second with 1, 4 and 16
//! workers on one queue with limits, with 4 workers over 100 partitions, with 1, 4
//! and 16 workers whose runs wait 10 ms each (as a call to another service), and
//! with 1, 4 and 16 workers taking runs as four producers enqueue them; the
//! statements the server ran per run (pg_stat_statements, when the server loads it:
//! `.ci/postgres` does), and where the CPU went: the server's processes against this
//! one's, per run. Not a criterion bench: draining thousands of runs is one
//! measurement. `cargo bench` measures; `cargo test` runs a small smoke version.
//! Needs `CANO_PG_URL`.

use std::time::Duration;

use cano::RunId;
use cano::postgres::{
    EnqueueOptions, PgOptions, PostgresCheckpointStore, QueueSpec, RunQueue, RunningWorker, Worker,
};
use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Call {
    Start,
    Done,
}

/// A run of one state, which waits `0` (say, for another service) and ends: with no
/// wait, what a queue costs shows, not what the states do.
struct Start(Duration);

#[task]
impl Task<Call> for Start {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Call>, CanoError> {
        if !self.0.is_zero() {
            tokio::time::sleep(self.0).await;
        }
        Ok(TaskResult::Single(Call::Done))
    }
}

fn workflow(work: Duration) -> Workflow<Call> {
    Workflow::bare()
        .register(Call::Start, Start(work))
        .add_exit_state(Call::Done)
}

const SCHEMA: &str = "bench_pgq";

/// The pool each store (the enqueuer's, each worker's) keeps: `pool` connections.
fn options(url: &str, pool: usize) -> PgOptions {
    PgOptions::new(url).with_schema(SCHEMA).with_pool_size(pool)
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// CPU time (user + system) of the processes `pids`, in seconds, from /proc.
fn cpu_seconds(pids: &[u32]) -> f64 {
    // Clock ticks per second: 100 on Linux for every architecture we run.
    const TICKS: f64 = 100.0;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name (which may hold spaces) in parentheses.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split(' ').collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / TICKS)
        })
        .sum()
}

/// The server's processes: every `postgres` process on this machine (the bench's
/// server is the only one `.ci/postgres` starts).
fn server_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .collect()
}

/// Statements the server has run, if it tracks them.
async fn statements(client: &tokio_postgres::Client) -> Option<i64> {
    client
        .query_one(
            "SELECT sum(calls)::bigint FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .ok()
        .and_then(|row| row.get(0))
}

struct Drained {
    runs_per_s: f64,
    statements_per_run: Option<f64>,
    server_cpu_ms_per_run: f64,
    worker_cpu_ms_per_run: f64,
}

/// Enqueues `count` runs on the queue "calls", spread over `partitions` if any.
async fn enqueue(queue: &RunQueue, count: usize, partitions: usize) -> Vec<RunId> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let mut options = EnqueueOptions::new().on_queue("calls");
        if partitions > 0 {
            options = options.with_partition(format!("tenant-{}", i % partitions));
        }
        ids.push(
            queue
                .enqueue("calls", &Call::Start, options)
                .await
                .unwrap()
                .run,
        );
    }
    ids
}

/// How the timed runs arrive.
#[derive(Clone, Copy)]
enum Arrival {
    /// All enqueued before the workers start: they drain a backlog.
    Backlog,
    /// Enqueued while the workers run, by `PRODUCERS` tasks at once (as requests
    /// of a service would), each enqueue waiting for the last: the workers take
    /// runs as they come, and the rate is that of the whole, producers included.
    Live,
}

/// The tasks enqueueing live runs at once (the store's pool has as many
/// connections).
const PRODUCERS: usize = 4;

/// Enqueues `count` runs from `PRODUCERS` tasks at once; their ids.
async fn produce(store: &PostgresCheckpointStore, count: usize, partitions: usize) -> Vec<RunId> {
    let mut producers = tokio::task::JoinSet::new();
    for producer in 0..PRODUCERS {
        let queue = RunQueue::new(store);
        let share = count / PRODUCERS + usize::from(producer < count % PRODUCERS);
        producers.spawn(async move { enqueue(&queue, share, partitions).await });
    }
    let mut ids = Vec::with_capacity(count);
    while let Some(some) = producers.join_next().await {
        ids.extend(some.unwrap());
    }
    ids
}

/// A worker on each store, up to 32 runs at once, each waiting `work`.
async fn start_workers(stores: &[PostgresCheckpointStore], work: Duration) -> Vec<RunningWorker> {
    let mut started = Vec::with_capacity(stores.len());
    for store in stores {
        started.push(
            Worker::new(store)
                .register("calls", workflow(work))
                .with_concurrency(32)
                .start()
                .await
                .unwrap(),
        );
    }
    started
}

/// Starts a worker on each of `stores`, waits until `ids` have ended, and stops them.
async fn serve(
    stores: &[PostgresCheckpointStore],
    work: Duration,
    queue: &RunQueue,
    ids: &[RunId],
) {
    let workers = start_workers(stores, work).await;
    queue.wait_all(ids, Duration::from_secs(600)).await.unwrap();
    for worker in workers {
        worker.stop(Duration::from_secs(5)).await;
    }
}

/// Enqueues `runs` runs on a fresh queue (over `partitions` partitions, 0 for none),
/// as `arrival` says, and has `workers` workers run them (each with its own pool of
/// `pool` connections, like separate processes, warmed by a first drain of as many
/// runs), each run waiting `work`, timing from the first run's start to the last's
/// as the claims record has them (the server's clock). Timed from the client, the
/// drain ended when `wait_all` next looked, and it reads its runs every 200 ms while
/// many are left: a drain of under a second came out a quarter slower or not.
async fn drain(
    url: &str,
    workers: usize,
    pool: usize,
    runs: usize,
    partitions: usize,
    work: Duration,
    arrival: Arrival,
) -> Drained {
    let admin = admin(url).await;
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .await
        .unwrap();
    let store = PostgresCheckpointStore::connect(options(url, 4))
        .await
        .unwrap();
    let queue = RunQueue::new(&store);
    let mut spec = QueueSpec::new("calls")
        .with_concurrency(256)
        .with_worker_concurrency(32);
    if partitions > 0 {
        spec = spec.with_partition_concurrency(2);
    }
    queue.declare(&spec).await.unwrap();
    // Each worker's store connects (and checks the schema) before the clock starts,
    // as separate processes would have done, each on its own and not one after
    // another: what is timed is the workers starting and draining the queue.
    let mut stores = Vec::with_capacity(workers);
    for _ in 0..workers {
        stores.push(
            PostgresCheckpointStore::connect(options(url, pool))
                .await
                .unwrap(),
        );
    }
    // Then they serve two drains first, as workers that have run a while have. The
    // server plans a kept statement afresh for its first five runs on each
    // connection before it settles on one plan, and makes that plan for the tables
    // as they are then: plans made while the tables were a few pages read them
    // whole, and stay until the statistics change (autovacuum analyses a table
    // once a tenth of it has changed, within a minute; a drain here takes a second
    // or two). So the first drain fills the tables with as many runs as the timed
    // one, an ANALYZE takes their statistics as autovacuum would, and a second,
    // short drain lets every connection settle its plans on them. The timed drain
    // starts new workers on these warm stores (their claim connections are new,
    // and plan each statement once).
    let first = enqueue(&queue, runs, partitions).await;
    serve(&stores, work, &queue, &first).await;
    admin
        .batch_execute(&format!(
            "ANALYZE {SCHEMA}.cano_runs, {SCHEMA}.cano_claims, {SCHEMA}.cano_logs, \
             {SCHEMA}.cano_rows, {SCHEMA}.cano_partitions"
        ))
        .await
        .unwrap();
    let second = enqueue(&queue, 100 * workers, partitions).await;
    serve(&stores, work, &queue, &second).await;
    // A backlog is enqueued before the workers start; live runs while they run.
    let waiting = match arrival {
        Arrival::Backlog => enqueue(&queue, runs, partitions).await,
        Arrival::Live => Vec::new(),
    };
    let tracked = admin
        .batch_execute(
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()",
        )
        .await
        .is_ok();
    let pids = server_pids();
    let (server_before, worker_before) = (cpu_seconds(&pids), cpu_seconds(&[std::process::id()]));
    let before = if tracked {
        statements(&admin).await
    } else {
        None
    };
    let started = start_workers(&stores, work).await;
    let ids = match arrival {
        Arrival::Backlog => waiting,
        Arrival::Live => produce(&store, runs, partitions).await,
    };
    queue
        .wait_all(&ids, Duration::from_secs(600))
        .await
        .unwrap();
    let after = if tracked {
        statements(&admin).await
    } else {
        None
    };
    // The server's processes now include the workers' backends, started meanwhile.
    let server = cpu_seconds(&server_pids()) - server_before;
    let worker = cpu_seconds(&[std::process::id()]) - worker_before;
    for worker in started {
        worker.stop(Duration::from_secs(5)).await;
    }
    let keys: Vec<i64> = ids.iter().map(|id| id.as_u64() as i64).collect();
    let span: f64 = admin
        .query_one(
            &format!(
                "SELECT extract(epoch FROM max(claimed_at) - min(claimed_at))::float8
                 FROM {SCHEMA}.cano_claims WHERE run_id = ANY($1)"
            ),
            &[&keys],
        )
        .await
        .unwrap()
        .get(0);
    let per_run = |seconds: f64| seconds * 1000.0 / runs as f64;
    Drained {
        // Starts per second between the first and the last.
        runs_per_s: (runs - 1) as f64 / span.max(1e-6),
        statements_per_run: before.zip(after).map(|(b, a)| (a - b) as f64 / runs as f64),
        server_cpu_ms_per_run: per_run(server),
        worker_cpu_ms_per_run: per_run(worker),
    }
}

fn main() {
    let measuring = cano_benches::measuring();
    let url = cano_benches::pg_url_or_exit();
    let runtime = cano_benches::two_workers();
    let runs = std::env::var("CANO_PGQ_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if measuring { 4_000 } else { 60 });
    let mut json = Vec::new();
    runtime.block_on(async {
        // Each worker's pool: the default 2 connections, and 4 in one case, because
        // the server's cost per run grows with the connections it serves (each warms
        // its own plans and caches, and more statements in flight make smaller
        // batches): 16 workers of 4 are 16 × 6 = 96 connections.
        // The last three cases' runs wait 10 ms each, as runs that call another
        // service do: one worker's 32 slots then cap it, and adding workers adds
        // capacity until the server is the limit.
        // The l cases have the runs enqueued while the workers run, by four tasks
        // at once: idle workers are woken by every run enqueued.
        let waiting = Duration::from_millis(10);
        let (backlog, live) = (Arrival::Backlog, Arrival::Live);
        for (name, workers, pool, partitions, work, arrival) in [
            ("w1", 1, 2, 0, Duration::ZERO, backlog),
            ("w4", 4, 2, 0, Duration::ZERO, backlog),
            ("w16", 16, 2, 0, Duration::ZERO, backlog),
            ("w16p4", 16, 4, 0, Duration::ZERO, backlog),
            ("p100", 4, 2, 100, Duration::ZERO, backlog),
            ("t1", 1, 2, 0, waiting, backlog),
            ("t4", 4, 2, 0, waiting, backlog),
            ("t16", 16, 2, 0, waiting, backlog),
            ("l1", 1, 2, 0, Duration::ZERO, live),
            ("l4", 4, 2, 0, Duration::ZERO, live),
            ("l16", 16, 2, 0, Duration::ZERO, live),
        ] {
            // CANO_PGQ_ONLY=w16 (say) runs one case, to study it with the server's tools.
            if std::env::var("CANO_PGQ_ONLY").is_ok_and(|only| only != name) {
                continue;
            }
            let d = drain(&url, workers, pool, runs, partitions, work, arrival).await;
            let arrived = match arrival {
                Arrival::Backlog => "waiting",
                Arrival::Live => "enqueued live",
            };
            let statements = d
                .statements_per_run
                .map(|s| format!("{s:.1}"))
                .unwrap_or_else(|| "n/a (no pg_stat_statements)".into());
            println!(
                "pg queues: {workers:>2} workers (pools of {pool}), {partitions:>3} partitions, {runs} runs of {work:?} {arrived}: {:.0} runs started/s, {statements} statements/run, CPU per run: server {:.3} ms, workers {:.3} ms",
                d.runs_per_s, d.server_cpu_ms_per_run, d.worker_cpu_ms_per_run
            );
            json.push(format!(
                "\"{name}\":{:.1},\"{name}_statements\":{},\"{name}_server_cpu_ms\":{:.4},\"{name}_worker_cpu_ms\":{:.4}",
                d.runs_per_s,
                d.statements_per_run.map_or("null".into(), |s| format!("{s:.2}")),
                d.server_cpu_ms_per_run,
                d.worker_cpu_ms_per_run
            ));
        }
    });
    cano_benches::write_report("pg_queues.json", &format!("{{{}}}\n", json.join(",")));
}
