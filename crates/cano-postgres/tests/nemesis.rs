//! The nemesis: three worker processes run a saga (charge, ship, refund on failure)
//! over several hundred runs while a seeded schedule SIGKILLs workers (and starts them
//! again), SIGSTOPs one past its lease and resumes it, and terminates database
//! backends. Side effects go to a ledger table keyed by (run, step), as a careful
//! user's idempotent side effects would. At the end, from the database's own records:
//! every run finished or rolled back; each run is charged and shipped, or charged and
//! refunded, or untouched, never shipped and refunded; no row was written by a claim
//! after a newer claim wrote; no run is stuck. The seed and the counts are printed so
//! a failure can be replayed (`CANO_NEMESIS_SEED=<seed>`).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cano_core::{CanoError, Resources, RunContext, Task, TaskConfig, TaskResult, Workflow};
use cano_postgres::{EnqueueOptions, PostgresCheckpointStore, QueueStatus, RunQueue, Worker};
use cano_saga::{CompensatableTask, SagaExt};
use common::children::{Children, parent_gone, say, serve_as_child};
use common::{drop_schema, options, pg_url, raw};
use tokio::sync::Mutex;

const SCHEMA_NAME: &str = "t_nemesis";
const RUNS: usize = 300;
const WORKERS: usize = 3;
const LEASE: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Order {
    Reserve,
    Charge,
    Ship,
    Done,
}

/// The ledger: a connection of the child's own, opened again when the nemesis
/// terminates it.
#[derive(Clone)]
struct Ledger {
    schema: String,
    client: Arc<Mutex<Option<tokio_postgres::Client>>>,
}

impl Ledger {
    /// Records `step` of the current run once (a repeat is a no-op).
    async fn record(&self, step: &str) -> Result<(), CanoError> {
        let run = RunContext::current()
            .map(|r| r.run_id().as_u64() as i64)
            .unwrap_or_default();
        let mut client = self.client.lock().await;
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            let (fresh, connection) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
                .await
                .map_err(|e| CanoError::task_execution(format!("ledger connect: {e}")))?;
            tokio::spawn(connection);
            *client = Some(fresh);
        }
        let Some(db) = client.as_ref() else {
            return Err(CanoError::task_execution("no ledger connection"));
        };
        let written = db
            .execute(
                &format!(
                    "INSERT INTO {}.ledger (run_id, step) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    self.schema
                ),
                &[&run, &step],
            )
            .await;
        if let Err(e) = written {
            *client = None;
            return Err(CanoError::task_execution(format!("ledger write: {e}")));
        }
        Ok(())
    }
}

/// Some work (a call to another service), so the nemesis lands inside steps too.
async fn work() {
    tokio::time::sleep(Duration::from_millis(120)).await;
}

fn retrying() -> TaskConfig {
    TaskConfig::new().with_fixed_retry(20, Duration::from_millis(50))
}

struct Reserve;

#[async_trait::async_trait]
impl Task<Order> for Reserve {
    fn config(&self) -> TaskConfig {
        retrying()
    }
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        work().await;
        Ok(TaskResult::Single(Order::Charge))
    }
}

struct Charge(Ledger);

#[async_trait::async_trait]
impl CompensatableTask<Order> for Charge {
    type Output = ();
    fn config(&self) -> TaskConfig {
        retrying()
    }
    fn compensation_config(&self) -> TaskConfig {
        retrying()
    }
    async fn run(&self, _: &Resources) -> Result<(TaskResult<Order>, ()), CanoError> {
        work().await;
        self.0.record("charge").await?;
        Ok((TaskResult::Single(Order::Ship), ()))
    }
    async fn compensate(&self, _: &Resources, (): ()) -> Result<(), CanoError> {
        work().await;
        self.0.record("refund").await
    }
}

/// Ships, except every fourth order, which the carrier refuses for good: that run
/// rolls back (refunds).
struct Ship(Ledger);

#[async_trait::async_trait]
impl Task<Order> for Ship {
    fn config(&self) -> TaskConfig {
        retrying()
    }
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        work().await;
        let run = RunContext::current()
            .map(|r| r.run_id().as_u64())
            .unwrap_or_default();
        if refused(run) {
            return Err(CanoError::task_execution("the carrier refused the parcel").permanent());
        }
        self.0.record("ship").await?;
        Ok(TaskResult::Single(Order::Done))
    }
}

fn refused(run: u64) -> bool {
    run.is_multiple_of(4)
}

async fn worker_child(schema: &str, name: &str) {
    let store = PostgresCheckpointStore::connect(options(schema).with_application_name(name))
        .await
        .unwrap();
    let ledger = Ledger {
        schema: schema.to_owned(),
        client: Arc::default(),
    };
    let workflow = Workflow::bare()
        .register(Order::Reserve, Reserve)
        .register_with_compensation(Order::Charge, Charge(ledger.clone()))
        .register(Order::Ship, Ship(ledger))
        .add_exit_state(Order::Done);
    let worker = Worker::new(&store)
        .named(name)
        .register("orders", workflow)
        .with_concurrency(6)
        .with_lease(LEASE)
        .with_max_claims(1_000)
        .with_poll_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    say("ready");
    // The fenced writes this process saw refused, as they happen.
    let report = async {
        let mut fenced = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = store.stats().fenced;
            if now != fenced {
                fenced = now;
                say(&format!("fenced {fenced}"));
            }
        }
    };
    tokio::select! {
        () = report => {}
        () = parent_gone() => {}
    }
    worker.stop(Duration::from_secs(5)).await;
}

#[test]
fn child_entry() {
    serve_as_child(|mode, schema, name| async move {
        match mode.as_str() {
            "nemesis-worker" => worker_child(&schema, &name).await,
            other => panic!("unknown child mode {other}"),
        }
    });
}

/// A small seeded generator (xorshift64*), so a schedule can be replayed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

#[derive(Debug, Default)]
struct Counts {
    kills: u32,
    pauses: u32,
    terminated: u64,
    fenced: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_kills_pauses_and_cuts_connections_and_every_saga_stays_whole() {
    pg_or_skip!();
    let seed: u64 = std::env::var("CANO_NEMESIS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x4E4D_4553_4953_0001);
    eprintln!("nemesis seed {seed} (replay with CANO_NEMESIS_SEED={seed})");
    let schema = SCHEMA_NAME;
    drop_schema(schema).await;
    let store = PostgresCheckpointStore::connect(options(schema))
        .await
        .unwrap();
    let admin = raw().await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE {schema}.ledger (run_id bigint, step text, PRIMARY KEY (run_id, step))"
        ))
        .await
        .unwrap();
    let queue = RunQueue::new(&store);
    let mut children = Children::spawn("nemesis-worker", schema, WORKERS);
    let mut ready = 0;
    while ready < WORKERS {
        if children.next().1 == "ready" {
            ready += 1;
        }
    }
    let mut runs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        runs.push(
            queue
                .enqueue("orders", &Order::Reserve, EnqueueOptions::new())
                .await
                .unwrap()
                .run,
        );
    }

    // The schedule: every 100 to 300 ms one fault, until the runs are over (or the
    // budget is spent, which fails the test).
    let mut rng = Rng(seed);
    let mut counts = Counts::default();
    let mut fenced: HashMap<usize, u64> = HashMap::new();
    let mut fenced_before_restart = 0;
    let mut paused: Option<(usize, Instant)> = None;
    let started = Instant::now();
    let budget = Duration::from_secs(240);
    let over = |status: QueueStatus| status.is_over();
    loop {
        // Drain the children's reports.
        while let Ok((index, event)) = children.events.try_recv() {
            if let Some(("fenced", n)) = event.split_once(' ') {
                fenced.insert(index, n.parse().unwrap());
            }
        }
        let left = admin
            .query_one(
                &format!(
                    "SELECT count(*) FROM {schema}.cano_runs WHERE status NOT IN ('finished', 'failed')"
                ),
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < budget,
            "{left} runs not over after {budget:?} (seed {seed}, {counts:?})"
        );
        tokio::time::sleep(Duration::from_millis(100 + rng.below(200))).await;
        // A paused worker is resumed after twice its lease.
        if let Some((index, since)) = paused
            && since.elapsed() >= LEASE * 2
        {
            children.signal(index, "CONT");
            paused = None;
        }
        match rng.below(10) {
            0..=2 => {
                let index = rng.below(WORKERS as u64) as usize;
                if paused.is_some_and(|(p, _)| p == index) {
                    continue;
                }
                fenced_before_restart += fenced.remove(&index).unwrap_or(0);
                children.kill(index);
                children.respawn(index);
                counts.kills += 1;
            }
            3..=4 if paused.is_none() => {
                let index = rng.below(WORKERS as u64) as usize;
                children.signal(index, "STOP");
                paused = Some((index, Instant::now()));
                counts.pauses += 1;
            }
            _ => {
                // Terminate one or two of the workers' backends.
                let cut = admin
                    .query_one(
                        &format!(
                            "SELECT count(pg_terminate_backend(pid)) FROM (
                                 SELECT pid FROM pg_stat_activity
                                 WHERE application_name LIKE '{schema}_%' ORDER BY random() LIMIT 2) t"
                        ),
                        &[],
                    )
                    .await
                    .unwrap()
                    .get::<_, i64>(0);
                counts.terminated += cut as u64;
            }
        }
    }
    if let Some((index, _)) = paused {
        children.signal(index, "CONT");
    }
    while let Ok((index, event)) = children.events.recv_timeout(Duration::from_millis(300)) {
        if let Some(("fenced", n)) = event.split_once(' ') {
            fenced.insert(index, n.parse().unwrap());
        }
    }
    children.finish();
    counts.fenced = fenced_before_restart + fenced.values().sum::<u64>();

    // Every run finished or rolled back (the queue records the roll-back as failed).
    let records = queue.wait_all(&runs, Duration::from_secs(5)).await.unwrap();
    let mut finished = 0;
    let mut rolled_back = 0;
    for record in &records {
        assert!(over(record.status), "{record:?}");
        if refused(record.run.as_u64()) {
            assert_eq!(record.status, QueueStatus::Failed, "{record:?}");
            assert!(
                record
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains("carrier refused")),
                "{record:?}"
            );
            rolled_back += 1;
        } else {
            assert_eq!(record.status, QueueStatus::Finished, "{record:?}");
            finished += 1;
        }
    }
    // The ledger: charged and shipped, or charged and refunded, or untouched.
    let rows = admin
        .query(
            &format!("SELECT run_id, string_agg(step, ',' ORDER BY step) FROM {schema}.ledger GROUP BY run_id"),
            &[],
        )
        .await
        .unwrap();
    let ledger: HashMap<u64, String> = rows
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
        .collect();
    for run in &runs {
        let steps = ledger.get(&run.as_u64()).map(String::as_str).unwrap_or("");
        let expected = if refused(run.as_u64()) {
            "charge,refund"
        } else {
            "charge,ship"
        };
        assert_eq!(steps, expected, "run {run} (seed {seed})");
    }
    // No checkpoint row of a claim landed after a newer claim's, and no run is stuck.
    let check = admin
        .query_one(
            &format!(
                "SELECT
                    (SELECT count(*) FROM (SELECT epoch < lag(epoch) OVER (PARTITION BY run_id ORDER BY seq) AS back
                        FROM {schema}.cano_rows) t WHERE back),
                    (SELECT count(*) FROM {schema}.cano_runs WHERE status = 'running'),
                    (SELECT max(claims) FROM {schema}.cano_runs)"
            ),
            &[],
        )
        .await
        .unwrap();
    let (backwards, running, max_claims): (i64, i64, i32) =
        (check.get(0), check.get(1), check.get(2));
    assert_eq!(
        backwards, 0,
        "a fenced epoch wrote after its successor (seed {seed})"
    );
    assert_eq!(running, 0);
    eprintln!(
        "nemesis seed {seed}: {} runs ({finished} finished, {rolled_back} rolled back), {} kills, {} pauses past the lease, {} backends terminated, {} fenced writes refused, at most {max_claims} claims of one run, {:?}",
        runs.len(),
        counts.kills,
        counts.pauses,
        counts.terminated,
        counts.fenced,
        started.elapsed()
    );
    assert!(
        counts.kills > 0 && counts.pauses > 0 && counts.terminated > 0,
        "{counts:?}"
    );
}
