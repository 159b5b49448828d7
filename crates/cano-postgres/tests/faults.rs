//! Workers, leases and the store under faults, against a real server: a claim of a run
//! taken over inside one process, claims the worker never knew it had, a heartbeat
//! that cannot get through, a pool saturated by slow appends, deadlocks, a row the
//! server refuses in a shared statement, a lease lost or a worker stopped in the middle
//! of a saga. Each fault is injected first (by hand on the database, or with a trigger),
//! then the promise is checked from the database's own records.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cano_core::checkpoint::{CheckpointRow, DataChange, RowKind};
use cano_core::{
    CanoError, CheckpointStore, Resources, RunId, RunOptions, Task, TaskConfig, TaskResult,
    Workflow,
};
use cano_postgres::{
    EnqueueOptions, PostgresCheckpointStore, QueueStatus, RunQueue, RunningWorker, Worker,
    WorkerEvent,
};
use cano_saga::{CompensatableTask, SagaExt};
use common::{drop_schema, fresh_store, options, raw};
use tokio::sync::{Semaphore, broadcast, watch};

const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Order {
    Reserve,
    Charge,
    Ship,
    Done,
}

/// What the steps of every run did, in order.
#[derive(Clone, Default)]
struct Ledger(Arc<Mutex<Vec<String>>>);

impl Ledger {
    fn push(&self, entry: String) {
        self.0.lock().unwrap().push(entry);
    }
    fn count(&self, entry: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| *e == entry)
            .count()
    }
}

/// Counts its starts, waits for a permit of its gate when it has one, moves on.
#[derive(Clone)]
struct Step {
    name: &'static str,
    next: Order,
    ledger: Ledger,
    starts: Arc<watch::Sender<u32>>,
    gate: Option<Arc<Semaphore>>,
}

impl Step {
    fn new(name: &'static str, next: Order, ledger: &Ledger) -> Self {
        Self {
            name,
            next,
            ledger: ledger.clone(),
            starts: Arc::new(watch::channel(0).0),
            gate: None,
        }
    }

    fn gated(mut self, gate: &Arc<Semaphore>) -> Self {
        self.gate = Some(gate.clone());
        self
    }

    async fn started(&self, times: u32) {
        let mut starts = self.starts.subscribe();
        tokio::time::timeout(WAIT, starts.wait_for(|n| *n >= times))
            .await
            .unwrap_or_else(|_| panic!("{} did not start {times} times in a minute", self.name))
            .unwrap();
    }

    async fn step(&self) {
        self.starts.send_modify(|n| *n += 1);
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        let run = cano_core::RunContext::current().unwrap().run_id();
        self.ledger.push(format!("{} {run}", self.name));
    }
}

#[async_trait::async_trait]
impl Task<Order> for Step {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        self.step().await;
        Ok(TaskResult::Single(self.next.clone()))
    }
}

/// Charges, and refunds when compensated.
#[derive(Clone)]
struct Charge(Step);

#[async_trait::async_trait]
impl CompensatableTask<Order> for Charge {
    type Output = String;
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    fn compensation_config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run(&self, _: &Resources) -> Result<(TaskResult<Order>, String), CanoError> {
        self.0.step().await;
        let run = cano_core::RunContext::current().unwrap().run_id();
        Ok((TaskResult::Single(self.0.next.clone()), run.to_string()))
    }
    async fn compensate(&self, _: &Resources, charged: String) -> Result<(), CanoError> {
        self.0.ledger.push(format!("refund {charged}"));
        Ok(())
    }
}

fn saga(reserve: Step, charge: Step, ship: Step) -> Workflow<Order> {
    Workflow::bare()
        .register(Order::Reserve, reserve)
        .register_with_compensation(Order::Charge, Charge(charge))
        .register(Order::Ship, ship)
        .add_exit_state(Order::Done)
}

struct Steps {
    ledger: Ledger,
    reserve: Step,
    charge: Step,
    ship: Step,
}

impl Steps {
    fn new() -> Self {
        let ledger = Ledger::default();
        Self {
            reserve: Step::new("reserve", Order::Charge, &ledger),
            charge: Step::new("charge", Order::Ship, &ledger),
            ship: Step::new("ship", Order::Done, &ledger),
            ledger,
        }
    }

    fn workflow(&self) -> Workflow<Order> {
        saga(self.reserve.clone(), self.charge.clone(), self.ship.clone())
    }

    /// The saga with Ship waiting for permits of `gate` (`self.ship` counts its starts).
    fn gated(&self, gate: &Arc<Semaphore>) -> Workflow<Order> {
        saga(
            self.reserve.clone(),
            self.charge.clone(),
            self.ship.clone().gated(gate),
        )
    }
}

/// A worker running `workflow` as "orders" with `lease` and `poll`.
async fn start_worker(
    store: &PostgresCheckpointStore,
    workflow: Workflow<Order>,
    lease: Duration,
    poll: Duration,
) -> RunningWorker {
    Worker::new(store)
        .register("orders", workflow)
        .with_lease(lease)
        .with_poll_interval(poll)
        .start()
        .await
        .unwrap()
}

async fn enqueue(queue: &RunQueue) -> RunId {
    queue
        .enqueue("orders", &Order::Reserve, EnqueueOptions::new())
        .await
        .unwrap()
        .run
}

async fn next_event(
    events: &mut broadcast::Receiver<WorkerEvent>,
    want: impl Fn(&WorkerEvent) -> bool,
) -> WorkerEvent {
    loop {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("the worker said nothing for a minute")
            .unwrap();
        if want(&event) {
            return event;
        }
    }
}

/// The (seq, epoch) of every row of `run`, as the database holds them.
async fn row_epochs(schema: &str, run: RunId) -> Vec<(i64, i64)> {
    raw()
        .await
        .query(
            &format!("SELECT seq, epoch FROM {schema}.cano_rows WHERE run_id = $1 ORDER BY seq"),
            &[&(run.as_u64() as i64)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Every row of a log was written under a lease at least as new as the row before it:
/// nothing was written by a claim after a newer claim wrote.
fn epochs_never_go_back(rows: &[(i64, i64)]) {
    assert!(
        rows.windows(2).all(|w| w[0].1 <= w[1].1),
        "a row of an older claim after a newer one: {rows:?}"
    );
}

#[tokio::test]
async fn a_claim_taken_over_inside_one_process_cannot_write_or_unfence_the_new_one() {
    pg_or_skip!();
    let schema = "t_fault_same_process";
    let store = fresh_store(schema).await;
    let queue = RunQueue::new(&store);
    let admin = raw().await;
    let steps = Steps::new();
    let gate = Arc::new(Semaphore::new(0));
    let ship = steps.ship.clone().gated(&gate);
    // One worker, long leases (no heartbeat within the test), quick polling: it claims
    // the run again itself once its lease is made to expire.
    let worker = Worker::new(&store)
        .register(
            "orders",
            saga(steps.reserve.clone(), steps.charge.clone(), ship.clone()),
        )
        .with_lease(Duration::from_secs(120))
        .with_poll_interval(Duration::from_millis(20))
        .keep_finished_rows(true)
        .start()
        .await
        .unwrap();
    let mut events = worker.subscribe();
    let run = enqueue(&queue).await;
    ship.started(1).await;
    // The first claim's driver is stuck in Ship; its lease expires (a heartbeat that
    // starved), and the same worker claims the run again, in the same process.
    common::expire_leases(&admin, schema).await;
    let second = next_event(&mut events, |e| {
        matches!(e, WorkerEvent::Claimed { epoch: 2, .. })
    })
    .await;
    assert!(matches!(second, WorkerEvent::Claimed { run: r, .. } if r == run));
    // The stale driver goes on: its writes carry its own epoch and are refused. Then
    // the new claim resumes the run where the log says, and finishes it.
    gate.add_permits(2);
    let record = queue.wait(run, WAIT).await.unwrap();
    assert_eq!(record.status, QueueStatus::Finished, "{record:?}");
    let rows = row_epochs(schema, run).await;
    epochs_never_go_back(&rows);
    assert!(rows.iter().any(|(_, e)| *e == 2), "{rows:?}");
    assert!(store.stats().fenced >= 1);
    // Charged once, never refunded: the stale driver rolled nothing back.
    assert_eq!(steps.ledger.count(&format!("charge {run}")), 1);
    assert_eq!(steps.ledger.count(&format!("refund {run}")), 0);
    assert_eq!(worker.in_flight(), 0, "no claim left behind");
    worker.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn heartbeats_renew_only_the_claims_this_worker_drives() {
    pg_or_skip!();
    let schema = "t_fault_renew";
    let store = fresh_store(schema).await;
    let queue = RunQueue::new(&store);
    let admin = raw().await;
    let steps = Steps::new();
    let worker = Worker::new(&store)
        .named("twin")
        .register("orders", steps.workflow())
        .with_lease(Duration::from_millis(900))
        .with_poll_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    // A run marked as claimed by a worker of the same name (a dead twin, or a claim
    // whose reply never reached this worker): this worker does not drive it.
    let run = queue
        .enqueue("orders", &Order::Reserve, EnqueueOptions::new())
        .await
        .unwrap()
        .run;
    admin
        .execute(
            &format!(
                "UPDATE {schema}.cano_runs SET status = 'running', epoch = 7, claims = 1,
                     worker = 'twin', lease_until = clock_timestamp() + interval '2 seconds'
                 WHERE run_id = $1"
            ),
            &[&(run.as_u64() as i64)],
        )
        .await
        .unwrap();
    // Renewed by name, it would stay running for ever; renewed by claim, it expires
    // and is claimed and finished.
    let record = queue.wait(run, WAIT).await.unwrap();
    assert_eq!(record.status, QueueStatus::Finished, "{record:?}");
    assert_eq!(record.claims, 2);
    worker.stop(Duration::from_secs(5)).await;
}

/// A claim round that hangs (a migration holds the queues' table, so the look for
/// runs waits on its lock) is given up at the worker's statement limit: the worker
/// says so and drops the connection (its new ones wait on the same lock while it
/// lasts), and once the table is free it takes the run enqueued meanwhile.
#[tokio::test]
async fn a_claim_round_that_hangs_is_given_up_and_the_worker_recovers() {
    pg_or_skip!();
    let schema = "t_fault_hung_round";
    let store = fresh_store(schema).await;
    let queue = RunQueue::new(&store);
    let steps = Steps::new();
    let worker = start_worker(
        &store,
        steps.workflow(),
        Duration::from_secs(1),
        Duration::from_millis(50),
    )
    .await;
    let mut events = worker.subscribe();
    // A first run, so that the worker's claim connection is open and claiming.
    let first = enqueue(&queue).await;
    queue.wait(first, WAIT).await.unwrap();
    let migration = raw().await;
    migration
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {schema}.cano_queues IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
    // The default queue's enqueue does not read the queues' table.
    let run = enqueue(&queue).await;
    let said = next_event(
        &mut events,
        |e| matches!(e, WorkerEvent::ClaimFailed { error } if error.contains("took longer than")),
    )
    .await;
    let WorkerEvent::ClaimFailed { error } = said else {
        unreachable!()
    };
    assert!(error.contains("taken for dead"), "{error}");
    assert_eq!(
        queue.status(run).await.unwrap().unwrap().status,
        QueueStatus::Queued,
        "nothing was claimed while the round hung"
    );
    migration.batch_execute("ROLLBACK").await.unwrap();
    let record = queue.wait(run, WAIT).await.unwrap();
    assert_eq!(record.status, QueueStatus::Finished, "{record:?}");
    for run in [first, run] {
        assert_eq!(steps.ledger.count(&format!("ship {run}")), 1, "run {run}");
    }
    worker.stop(Duration::from_secs(5)).await;
    drop_schema(schema).await;
}

#[tokio::test]
async fn a_worker_that_cannot_renew_hands_its_run_back_before_the_lease_ends() {
    pg_or_skip!();
    let schema = "t_fault_unrenewed";
    let store = fresh_store(schema).await;
    let queue = RunQueue::new(&store);
    let admin = raw().await;
    let steps = Steps::new();
    let gate = Arc::new(Semaphore::new(0));
    let ship = steps.ship.clone();
    let worker = start_worker(
        &store,
        steps.gated(&gate),
        Duration::from_secs(3),
        Duration::from_millis(50),
    )
    .await;
    let mut events = worker.subscribe();
    let run = enqueue(&queue).await;
    ship.started(1).await;
    // From now on every renewal fails (the database refuses it), and the moment the
    // run is handed back is recorded with the lease it still had.
    admin
        .batch_execute(&format!(
            "CREATE TABLE {schema}.handbacks (at timestamptz, lease_until timestamptz);
             CREATE FUNCTION {schema}.no_renewals() RETURNS trigger AS $$
             BEGIN
                 IF OLD.status = 'running' AND NEW.status = 'running' AND NEW.epoch = OLD.epoch
                    AND NEW.lease_until IS DISTINCT FROM OLD.lease_until THEN
                     RAISE EXCEPTION 'renewals are blocked by the test';
                 END IF;
                 IF OLD.status = 'running' AND NEW.status = 'queued' THEN
                     INSERT INTO {schema}.handbacks VALUES (clock_timestamp(), OLD.lease_until);
                 END IF;
                 RETURN NEW;
             END $$ LANGUAGE plpgsql;
             CREATE TRIGGER no_renewals BEFORE UPDATE ON {schema}.cano_runs
                 FOR EACH ROW EXECUTE FUNCTION {schema}.no_renewals();"
        ))
        .await
        .unwrap();
    let unrenewed = next_event(&mut events, |e| {
        matches!(
            e,
            WorkerEvent::Unrenewed { .. } | WorkerEvent::LeaseLost { .. }
        )
    })
    .await;
    assert!(
        matches!(unrenewed, WorkerEvent::Unrenewed { run: r, .. } if r == run),
        "{unrenewed:?}"
    );
    next_event(&mut events, |e| matches!(e, WorkerEvent::Released { .. })).await;
    // Handed back while its lease still held, by the database's own clock.
    let row = admin
        .query_one(
            &format!("SELECT at < lease_until FROM {schema}.handbacks"),
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "handed back after the lease ended");
    // Nothing was undone, and the hand-back did not count toward the poison limit
    // (the worker may have claimed the run again already: one claim counted then).
    assert_eq!(steps.ledger.count(&format!("refund {run}")), 0);
    let record = queue.status(run).await.unwrap().unwrap();
    assert!(record.claims <= 1, "{record:?}");
    // Renewals work again: the run is claimed, resumed in Ship, and finished.
    admin
        .batch_execute(&format!("DROP TRIGGER no_renewals ON {schema}.cano_runs"))
        .await
        .unwrap();
    gate.add_permits(1);
    let record = queue.wait(run, WAIT).await.unwrap();
    assert_eq!(record.status, QueueStatus::Finished, "{record:?}");
    assert_eq!(steps.ledger.count(&format!("charge {run}")), 1);
    assert_eq!(steps.ledger.count(&format!("refund {run}")), 0);
    worker.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_lost_lease_or_a_stop_never_rolls_a_saga_back() {
    pg_or_skip!();
    let schema = "t_fault_no_rollback";
    let store = fresh_store(schema).await;
    let queue = RunQueue::new(&store);
    let admin = raw().await;
    let steps = Steps::new();
    let gate = Arc::new(Semaphore::new(0));
    let ship = steps.ship.clone();
    let first = start_worker(
        &store,
        steps.gated(&gate),
        Duration::from_millis(900),
        Duration::from_secs(60),
    )
    .await;
    let mut events = first.subscribe();
    let stopped = enqueue(&queue).await;
    let taken = enqueue(&queue).await;
    ship.started(2).await;
    // One run's lease is taken over by another machine (by hand: its claim bumps the
    // epoch); the heartbeat finds out and the worker lets go of the run.
    admin
        .execute(
            &format!(
                "UPDATE {schema}.cano_runs SET epoch = epoch + 1, worker = 'elsewhere',
                     lease_until = clock_timestamp() + interval '1 hour' WHERE run_id = $1"
            ),
            &[&(taken.as_u64() as i64)],
        )
        .await
        .unwrap();
    next_event(
        &mut events,
        |e| matches!(e, WorkerEvent::LeaseLost { run, .. } if *run == taken),
    )
    .await;
    // The worker is stopped with the other run in flight: it is handed back.
    first.stop(Duration::ZERO).await;
    assert_eq!(steps.ledger.count(&format!("refund {taken}")), 0);
    assert_eq!(steps.ledger.count(&format!("refund {stopped}")), 0);
    let record = queue.status(stopped).await.unwrap().unwrap();
    // Handed back: queued again, and the claim did not count toward the poison limit.
    assert_eq!((record.status, record.claims), (QueueStatus::Queued, 0));

    // The other machine gives its run back; a new worker finishes both, forward.
    admin
        .execute(
            &format!(
                "UPDATE {schema}.cano_runs SET lease_until = now() - interval '1 second' WHERE run_id = $1"
            ),
            &[&(taken.as_u64() as i64)],
        )
        .await
        .unwrap();
    gate.add_permits(4);
    let second = Worker::new(&store)
        .register(
            "orders",
            saga(steps.reserve.clone(), steps.charge.clone(), ship.clone()),
        )
        .with_poll_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    for run in [stopped, taken] {
        let record = queue.wait(run, WAIT).await.unwrap();
        assert_eq!(record.status, QueueStatus::Finished, "{record:?}");
        assert_eq!(steps.ledger.count(&format!("charge {run}")), 1);
        assert_eq!(steps.ledger.count(&format!("refund {run}")), 0);
        epochs_never_go_back(&row_epochs(schema, run).await);
    }
    second.stop(Duration::from_secs(5)).await;
}

/// A row with `size` bytes of durable data.
fn row(run: RunId, seq: u64, label: &str, size: usize) -> CheckpointRow {
    CheckpointRow {
        run,
        seq,
        kind: RowKind::Enter,
        workflow: "faults".into(),
        version: 1,
        state: vec![1],
        label: label.into(),
        data: DataChange {
            full: true,
            entries: vec![("blob".into(), Some(vec![7; size]))],
        },
        cursor: None,
        message: String::new(),
        written_at_ms: 1_700_000_000_000,
    }
}

#[tokio::test]
async fn a_row_the_server_refuses_fails_its_own_run_only() {
    pg_or_skip!();
    let store = fresh_store("t_fault_bad_row").await;
    // Rows of many runs at once, one of them with a label PostgreSQL cannot store
    // (a NUL character in a text column).
    let appends: Vec<_> = (0..32u64)
        .map(|i| {
            let store = store.clone();
            let label = if i == 13 { "Bad\0State" } else { "Good" };
            tokio::spawn(async move {
                store
                    .append(row(RunId::from(1_000 + i), 0, label, 64))
                    .await
            })
        })
        .collect();
    let mut failed = Vec::new();
    for (i, append) in appends.into_iter().enumerate() {
        if let Err(e) = append.await.unwrap() {
            failed.push((i, e.to_string()));
        }
    }
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, 13, "{failed:?}");
    for i in (0..32).filter(|i| *i != 13) {
        assert_eq!(store.load(RunId::from(1_000 + i)).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn statements_are_capped_by_bytes_as_well_as_rows() {
    pg_or_skip!();
    let schema = "t_fault_bytes";
    drop_schema(schema).await;
    // One connection: every row that arrives while a statement is in flight waits for
    // the next one, so without a byte cap the next statement would carry them all.
    let store = PostgresCheckpointStore::connect(options(schema).with_pool_size(1))
        .await
        .unwrap();
    let appends: Vec<_> = (0..24u64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(row(RunId::from(2_000 + i), 0, "Big", 1 << 20))
                    .await
            })
        })
        .collect();
    for append in appends {
        append.await.unwrap().unwrap();
    }
    // 24 MiB of rows, at most 8 MiB per statement (a row over the cap goes alone).
    let stats = store.stats();
    assert_eq!(stats.rows, 24);
    assert!(stats.statements >= 3, "{stats:?}");
}

#[tokio::test]
async fn deadlocks_and_serialization_failures_are_retried() {
    pg_or_skip!();
    let schema = "t_fault_deadlock";
    let store = fresh_store(schema).await;
    let admin = raw().await;
    // The next two appends fail, with a deadlock and then a serialization failure, as
    // the server reports them.
    admin
        .batch_execute(&format!(
            "CREATE SEQUENCE {schema}.faults;
             CREATE FUNCTION {schema}.fail_once() RETURNS trigger AS $$
             DECLARE n bigint := nextval('{schema}.faults');
             BEGIN
                 -- A sequence is not rolled back with the failed statement.
                 IF n = 1 THEN RAISE EXCEPTION 'injected deadlock' USING ERRCODE = '40P01'; END IF;
                 IF n = 2 THEN RAISE EXCEPTION 'injected conflict' USING ERRCODE = '40001'; END IF;
                 RETURN NEW;
             END $$ LANGUAGE plpgsql;
             CREATE TRIGGER fail_once BEFORE INSERT ON {schema}.cano_rows
                 FOR EACH ROW EXECUTE FUNCTION {schema}.fail_once();"
        ))
        .await
        .unwrap();
    let run = RunId::new();
    store.append(row(run, 0, "S0", 8)).await.unwrap();
    store.append(row(run, 1, "S1", 8)).await.unwrap();
    let tries: i64 = admin
        .query_one(&format!("SELECT last_value FROM {schema}.faults"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        tries, 4,
        "both faults were injected, and each append then went through"
    );
    assert_eq!(store.load(run).await.unwrap().len(), 2);
}

#[tokio::test]
async fn the_heartbeat_has_its_own_connection_when_appends_fill_the_pool() {
    pg_or_skip!();
    let schema = "t_fault_pool";
    drop_schema(schema).await;
    let store = PostgresCheckpointStore::connect(options(schema).with_pool_size(1))
        .await
        .unwrap();
    let queue = RunQueue::new(&store);
    let admin = raw().await;
    let steps = Steps::new();
    let gate = Arc::new(Semaphore::new(0));
    let ship = steps.ship.clone();
    let worker = start_worker(
        &store,
        steps.gated(&gate),
        Duration::from_millis(900),
        Duration::from_millis(50),
    )
    .await;
    let mut events = worker.subscribe();
    let run = enqueue(&queue).await;
    ship.started(1).await;
    // Appends of another run hold the pool's one connection for three leases.
    let hog = RunId::new();
    admin
        .batch_execute(&format!(
            "CREATE FUNCTION {schema}.slow() RETURNS trigger AS $$
             BEGIN
                 IF NEW.run_id = {} THEN PERFORM pg_sleep(3); END IF;
                 RETURN NEW;
             END $$ LANGUAGE plpgsql;
             CREATE TRIGGER slow BEFORE INSERT ON {schema}.cano_rows
                 FOR EACH ROW EXECUTE FUNCTION {schema}.slow();",
            hog.as_u64() as i64
        ))
        .await
        .unwrap();
    let hogging = {
        let store = store.clone();
        tokio::spawn(async move { store.append(row(hog, 0, "Hog", 8)).await })
    };
    hogging.await.unwrap().unwrap();
    gate.add_permits(1);
    let record = queue.wait(run, WAIT).await.unwrap();
    assert_eq!(record.status, QueueStatus::Finished, "{record:?}");
    // The lease held all along: one claim, none lost or handed back.
    assert_eq!(record.claims, 1);
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(
                event,
                WorkerEvent::LeaseLost { .. } | WorkerEvent::Unrenewed { .. }
            ),
            "{event:?}"
        );
    }
    worker.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn pruning_measures_age_on_the_database_clock() {
    pg_or_skip!();
    let store = fresh_store("t_fault_prune_clock").await;
    let run = RunId::new();
    // A row stamped by a node whose clock reads 1970.
    let mut stale_clock = row(run, 0, "S0", 8);
    stale_clock.written_at_ms = 0;
    store.append(stale_clock).await.unwrap();
    // Written just now by the database's clock: not an hour old.
    let hour_ago = SystemTime::now() - Duration::from_secs(3_600);
    assert_eq!(store.prune(hour_ago).await.unwrap(), 0);
    assert_eq!(store.load(run).await.unwrap().len(), 1);
    let hour_on = SystemTime::now() + Duration::from_secs(3_600);
    assert_eq!(store.prune(hour_on).await.unwrap(), 1);
}

#[tokio::test]
async fn a_run_a_worker_holds_is_neither_listed_nor_written_from_outside() {
    pg_or_skip!();
    let schema = "t_fault_outside";
    let store = fresh_store(schema).await;
    let queue = RunQueue::new(&store);
    let steps = Steps::new();
    let gate = Arc::new(Semaphore::new(0));
    let ship = steps.ship.clone().gated(&gate);
    let worker = Worker::new(&store)
        .register(
            "orders",
            saga(steps.reserve.clone(), steps.charge.clone(), ship.clone()),
        )
        .start()
        .await
        .unwrap();
    let run = enqueue(&queue).await;
    ship.started(1).await;
    // A resumer on the same store with the same workflow id (a local scheduler, say)
    // sees no interrupted run to take, and cannot write one if it tries.
    let outside = steps
        .workflow()
        .with_checkpoint_store(store.clone())
        .with_workflow_id("orders");
    assert!(outside.unfinished_runs().await.unwrap().is_empty());
    let err = store.append(row(run, 99, "Intruder", 8)).await.unwrap_err();
    assert!(
        err.to_string().contains("holds the run under a lease"),
        "{err}"
    );
    gate.add_permits(1);
    assert_eq!(
        queue.wait(run, WAIT).await.unwrap().status,
        QueueStatus::Finished
    );
    worker.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn postgres_limits_take_duration_max() {
    pg_or_skip!();
    let schema = "t_fault_limits";
    drop_schema(schema).await;
    let store =
        PostgresCheckpointStore::connect(options(schema).with_connect_timeout(Duration::MAX))
            .await
            .unwrap();
    let queue = RunQueue::new(&store);
    let steps = Steps::new();
    let worker = Worker::new(&store)
        .register("orders", steps.workflow())
        .with_lease(Duration::MAX)
        .with_poll_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let run = enqueue(&queue).await;
    let record = queue.wait(run, Duration::MAX).await.unwrap();
    assert_eq!(record.status, QueueStatus::Finished);
    worker.stop(Duration::MAX).await;
    // A resumed workflow on the store outside a worker, for good measure.
    let outside = steps
        .workflow()
        .with_checkpoint_store(store.clone())
        .with_workflow_id("direct")
        .with_timeout(Duration::MAX);
    let direct = RunId::new();
    outside
        .orchestrate_with(Order::Reserve, RunOptions::new().with_run_id(direct))
        .await
        .unwrap();
    let err = Worker::new(&store)
        .register("orders", steps.workflow())
        .with_lease(Duration::from_millis(10))
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("with_lease"), "{err}");
}
