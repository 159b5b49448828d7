//! The run queue and workers in one process against a real server: enqueueing,
//! idempotency, leases taken over and fenced, poison runs, stopping, dropped
//! connections.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cano_core::{CanoError, RunId, Task, TaskConfig, TaskResult, Workflow};
use cano_postgres::{EnqueueOptions, QueueStatus, RunQueue, Worker, WorkerEvent};
use common::{expire_leases, fresh_store, raw};
use tokio::sync::{Semaphore, broadcast, watch};

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Order {
    Reserve,
    Charge,
    Ship,
    Shipped,
}

/// One step of an order: counts its runs, optionally waits for a permit of `gate`
/// (so a test decides when it ends), then moves to `next`.
#[derive(Clone)]
struct Step {
    next: Order,
    runs: Arc<watch::Sender<u32>>,
    gate: Option<Arc<Semaphore>>,
}

impl Step {
    fn to(next: Order) -> Self {
        Self {
            next,
            runs: Arc::new(watch::channel(0).0),
            gate: None,
        }
    }
    /// How many times the step has started.
    fn runs(&self) -> u32 {
        *self.runs.borrow()
    }

    /// Resolves once the step has started `times` times.
    async fn entered(&self, times: u32) {
        let mut runs = self.runs.subscribe();
        runs.wait_for(|n| *n >= times).await.unwrap();
    }

    fn gated(next: Order, gate: &Arc<Semaphore>) -> Self {
        Self {
            gate: Some(gate.clone()),
            ..Self::to(next)
        }
    }
}

#[async_trait::async_trait]
impl Task<Order> for Step {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        self.runs.send_modify(|n| *n += 1);
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        Ok(TaskResult::Single(self.next.clone()))
    }
}

fn orders(reserve: Step, charge: Step, ship: Step) -> Workflow<Order> {
    Workflow::bare()
        .register(Order::Reserve, reserve)
        .register(Order::Charge, charge)
        .register(Order::Ship, ship)
        .add_exit_state(Order::Shipped)
}

fn plain() -> Workflow<Order> {
    orders(
        Step::to(Order::Charge),
        Step::to(Order::Ship),
        Step::to(Order::Shipped),
    )
}

async fn next_event(
    events: &mut broadcast::Receiver<WorkerEvent>,
    want: impl Fn(&WorkerEvent) -> bool,
) -> WorkerEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("the worker said nothing for 30 s")
            .unwrap();
        if want(&event) {
            return event;
        }
    }
}

/// Enqueues an order starting in Reserve; its run id.
async fn enqueue_order(queue: &RunQueue) -> RunId {
    queue
        .enqueue("orders", &Order::Reserve, EnqueueOptions::new())
        .await
        .unwrap()
        .run
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn an_enqueued_run_is_claimed_driven_and_its_final_state_recorded() {
    pg_or_skip!();
    let store = fresh_store("t_queue_basic").await;
    let queue = RunQueue::new(&store);
    let worker = Worker::new(&store)
        .named("w1")
        .register("orders", plain())
        .start()
        .await
        .unwrap();

    let first = queue
        .enqueue(
            "orders",
            &Order::Reserve,
            EnqueueOptions::new().with_idempotency_key("order-17"),
        )
        .await
        .unwrap();
    assert!(first.created);
    let again = queue
        .enqueue(
            "orders",
            &Order::Reserve,
            EnqueueOptions::new().with_idempotency_key("order-17"),
        )
        .await
        .unwrap();
    assert_eq!((again.run, again.created), (first.run, false));

    let record = queue.wait(first.run, WAIT).await.unwrap();
    assert_eq!(record.status, QueueStatus::Finished);
    assert_eq!(record.final_state::<Order>().unwrap(), Some(Order::Shipped));
    assert_eq!(record.final_label.as_deref(), Some("Shipped"));
    assert_eq!((record.claims, record.worker.as_deref()), (1, Some("w1")));
    // The finished run's checkpoint rows were cleared once the queue had its outcome.
    let left: i64 = raw()
        .await
        .query_one("SELECT count(*) FROM t_queue_basic.cano_rows", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);

    // A run id enqueued twice, and a key reused for another workflow, are refused.
    let err = queue
        .enqueue(
            "orders",
            &Order::Reserve,
            EnqueueOptions::new().with_run_id(first.run),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("run {} is already enqueued", first.run)) && err.contains("Finished"),
        "{err}"
    );
    let err = queue
        .enqueue(
            "invoices",
            &Order::Reserve,
            EnqueueOptions::new().with_idempotency_key("order-17"),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("was used for run") && err.contains("\"orders\""),
        "{err}"
    );
    let err = queue
        .wait(RunId::new(), WAIT)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("was never enqueued"), "{err}");
    assert!(queue.status(RunId::new()).await.unwrap().is_none());

    // A run of a workflow no worker registered is left queued, not failed.
    let orphan = queue
        .enqueue("refunds", &Order::Reserve, EnqueueOptions::new())
        .await
        .unwrap();
    assert_eq!(
        queue.status(orphan.run).await.unwrap().unwrap().status,
        QueueStatus::Queued
    );
    worker.stop(Duration::from_secs(5)).await;
}

/// Every run of `schema` is claimed by a worker "elsewhere" (the claim the workers
/// make, written by hand so that nothing drives it): the claims held till now are stale.
async fn take_over_by_hand(admin: &tokio_postgres::Client, schema: &str) {
    admin
        .execute(
            &format!(
                "UPDATE {schema}.cano_runs SET epoch = epoch + 1, claims = claims + 1,
                     worker = 'elsewhere', lease_until = now() + interval '1 minute'"
            ),
            &[],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_lease_taken_over_fences_the_old_worker_and_the_run_finishes_once() {
    pg_or_skip!();
    let store = fresh_store("t_queue_fence").await;
    let queue = RunQueue::new(&store);
    let admin = raw().await;

    // Worker A gets the run stuck in Charge.
    let gate = Arc::new(Semaphore::new(0));
    let charge_a = Step::gated(Order::Ship, &gate);
    let a = Worker::new(&store)
        .named("a")
        .register(
            "orders",
            orders(
                Step::to(Order::Charge),
                charge_a.clone(),
                Step::to(Order::Shipped),
            ),
        )
        .with_lease(Duration::from_secs(60)) // no heartbeat during the test: the takeover is forced
        .keep_finished_rows(true)
        .start()
        .await
        .unwrap();
    let mut a_events = a.subscribe();
    let run = enqueue_order(&queue).await;
    next_event(&mut a_events, |e| matches!(e, WorkerEvent::Claimed { .. })).await;
    charge_a.entered(1).await;

    // A stalls past its lease, and a worker on another machine claims the run (the
    // claim the workers make, written by hand so it is not driven yet).
    take_over_by_hand(&admin, "t_queue_fence").await;
    // A wakes up and goes on: its next checkpoint write is fenced off.
    gate.add_permits(1);
    let lost = next_event(&mut a_events, |e| !matches!(e, WorkerEvent::Claimed { .. })).await;
    assert!(
        matches!(lost, WorkerEvent::LeaseLost { run: r, .. } if r == run),
        "{lost:?}"
    );
    // Refused: its Enter row for Ship, then the Fail row of the run it had to stop.
    assert_eq!(store.stats().fenced, 2);
    a.stop(Duration::from_secs(5)).await;

    // The other machine dies too; worker B takes the run over from its checkpoint.
    expire_leases(&admin, "t_queue_fence").await;
    let reserve_b = Step::to(Order::Charge);
    let charge_b = Step::to(Order::Ship);
    let b = Worker::new(&store)
        .named("b")
        .register(
            "orders",
            orders(
                reserve_b.clone(),
                charge_b.clone(),
                Step::to(Order::Shipped),
            ),
        )
        .keep_finished_rows(true)
        .start()
        .await
        .unwrap();
    let done = queue.wait(run, WAIT).await.unwrap();
    assert_eq!(
        (done.status, done.claims, done.worker.as_deref()),
        (QueueStatus::Finished, 3, Some("b"))
    );
    assert_eq!(
        reserve_b.runs(),
        0,
        "B resumed from the checkpoint, not the start"
    );
    assert_eq!(charge_b.runs(), 1);

    // The log: A's rows (epoch 1), then B's (epoch 3); nothing of A's after its lease.
    let rows = admin
        .query(
            "SELECT seq, epoch FROM t_queue_fence.cano_rows WHERE run_id = $1 ORDER BY seq",
            &[&(run.as_u64() as i64)],
        )
        .await
        .unwrap();
    let epochs: Vec<(i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    // Enter Reserve, Enter Charge | Resume Charge, Enter Ship, Finish.
    assert_eq!(epochs, [(0, 1), (1, 1), (2, 3), (3, 3), (4, 3)]);
    b.stop(Duration::from_secs(5)).await;
}

/// How many checkpoint rows of run `key` the fenced-finish test's schema holds.
async fn log_rows(admin: &tokio_postgres::Client, key: i64) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM t_queue_fenced_finish.cano_rows WHERE run_id = $1",
            &[&key],
        )
        .await
        .unwrap()
        .get(0)
}

/// A worker that keeps no finished rows ends a claim with its run's `Finish` row, in
/// one statement. A claim that lost its lease while in its last state reaches the
/// exit state and is refused there: the run is not finished by it, its log is not
/// deleted, and the worker that takes the run over resumes it from that log.
#[tokio::test]
async fn a_claim_that_lost_its_lease_cannot_end_the_run_with_its_finish_row() {
    pg_or_skip!();
    let store = fresh_store("t_queue_fenced_finish").await;
    let queue = RunQueue::new(&store);
    let admin = raw().await;
    let gate = Arc::new(Semaphore::new(0));
    let ship_a = Step::gated(Order::Shipped, &gate);
    let a = Worker::new(&store)
        .named("a")
        .register(
            "orders",
            orders(
                Step::to(Order::Charge),
                Step::to(Order::Ship),
                ship_a.clone(),
            ),
        )
        .with_lease(Duration::from_secs(60)); // no heartbeat during the test: the takeover is forced
    let mut a_events = a.subscribe();
    let a = a.start().await.unwrap();
    let run = enqueue_order(&queue).await;
    let key = run.as_u64() as i64;
    ship_a.entered(1).await;
    // Enter Reserve, Enter Charge, Enter Ship.
    assert_eq!(log_rows(&admin, key).await, 3);

    // A stalls past its lease in its last state; another machine claims the run.
    take_over_by_hand(&admin, "t_queue_fenced_finish").await;
    // A wakes up and reaches the exit state: its end is refused.
    gate.add_permits(1);
    let lost = next_event(&mut a_events, |e| !matches!(e, WorkerEvent::Claimed { .. })).await;
    assert!(
        matches!(lost, WorkerEvent::LeaseLost { run: r, epoch: 1 } if r == run),
        "{lost:?}"
    );
    let held = queue.status(run).await.unwrap().unwrap();
    assert_eq!(
        (held.status, held.worker.as_deref(), held.final_label),
        (QueueStatus::Running, Some("elsewhere"), None),
        "the stale claim finished nothing"
    );
    assert_eq!(log_rows(&admin, key).await, 3, "nor deleted the log");
    a.stop(Duration::from_secs(5)).await;

    // The other machine dies too; B takes the run over from the log A left.
    expire_leases(&admin, "t_queue_fenced_finish").await;
    let (reserve_b, ship_b) = (Step::to(Order::Charge), Step::to(Order::Shipped));
    let b = Worker::new(&store)
        .named("b")
        .register(
            "orders",
            orders(reserve_b.clone(), Step::to(Order::Ship), ship_b.clone()),
        )
        .start()
        .await
        .unwrap();
    let done = queue.wait(run, WAIT).await.unwrap();
    assert_eq!(
        (
            done.status,
            done.worker.as_deref(),
            done.final_label.as_deref()
        ),
        (QueueStatus::Finished, Some("b"), Some("Shipped"))
    );
    assert_eq!(
        (reserve_b.runs(), ship_b.runs()),
        (0, 1),
        "B resumed in Ship"
    );
    assert_eq!(
        log_rows(&admin, key).await,
        0,
        "the finished run's log is gone"
    );
    let outcomes: Vec<(i64, Option<String>)> = admin
        .query(
            "SELECT epoch, outcome FROM t_queue_fenced_finish.cano_claims WHERE run_id = $1 ORDER BY epoch",
            &[&key],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        outcomes,
        [
            (1, Some("lease expired".to_owned())),
            (3, Some("finished".to_owned()))
        ],
        "A's claim ended with its lease, B's with the run"
    );
    b.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_run_claimed_too_often_is_failed_as_poison() {
    pg_or_skip!();
    let store = fresh_store("t_queue_poison").await;
    let queue = RunQueue::new(&store);
    let run = enqueue_order(&queue).await;
    // Two workers already took it and died (their leases lapsed).
    raw()
        .await
        .execute(
            "UPDATE t_queue_poison.cano_runs SET status = 'running', claims = 2, epoch = 2, lease_until = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let reserve = Step::to(Order::Charge);
    let worker = Worker::new(&store)
        .register(
            "orders",
            orders(
                reserve.clone(),
                Step::to(Order::Ship),
                Step::to(Order::Shipped),
            ),
        )
        .with_max_claims(2)
        .start()
        .await
        .unwrap();
    let record = queue.wait(run, WAIT).await.unwrap();
    assert_eq!(record.status, QueueStatus::Failed);
    let error = record.error.unwrap();
    assert!(
        error.contains("claimed 2 times without finishing") && error.contains("poison"),
        "{error}"
    );
    assert_eq!(reserve.runs(), 0);
    worker.stop(Duration::from_secs(5)).await;

    let err = Worker::new(&store).start().await.unwrap_err().to_string();
    assert!(err.contains("has no workflow registered"), "{err}");
    let err = Worker::new(&store)
        .register("orders", plain())
        .with_lease(Duration::from_millis(10))
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("lease under 300 ms"), "{err}");
}

#[tokio::test]
async fn a_stopping_worker_hands_its_runs_back_and_another_resumes_them() {
    pg_or_skip!();
    let store = fresh_store("t_queue_stop").await;
    let queue = RunQueue::new(&store);
    let gate = Arc::new(Semaphore::new(0));
    let ship = Step::gated(Order::Shipped, &gate);
    let first = Worker::new(&store)
        .named("first")
        .register(
            "orders",
            orders(Step::to(Order::Charge), Step::to(Order::Ship), ship.clone()),
        )
        .start()
        .await
        .unwrap();
    let mut events = first.subscribe();
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(enqueue_order(&queue).await);
    }
    ship.entered(3).await;
    first.stop(Duration::from_millis(50)).await;
    for _ in 0..3 {
        assert!(matches!(
            next_event(&mut events, |e| matches!(e, WorkerEvent::Released { .. })).await,
            WorkerEvent::Released { .. }
        ));
    }
    for &run in &runs {
        assert_eq!(
            queue.status(run).await.unwrap().unwrap().status,
            QueueStatus::Queued
        );
    }

    let charge = Step::to(Order::Ship);
    let second = Worker::new(&store)
        .named("second")
        .register(
            "orders",
            orders(
                Step::to(Order::Charge),
                charge.clone(),
                Step::to(Order::Shipped),
            ),
        )
        .start()
        .await
        .unwrap();
    for &run in &runs {
        let record = queue.wait(run, WAIT).await.unwrap();
        // The hand-back did not count toward the poison limit: one claim counted.
        assert_eq!((record.status, record.claims), (QueueStatus::Finished, 1));
    }
    assert_eq!(charge.runs(), 0, "resumed in Ship, where they stopped");
    second.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn runs_finish_with_whole_logs_when_connections_drop_mid_run() {
    pg_or_skip!();
    let store = fresh_store("t_queue_drop").await;
    let queue = RunQueue::new(&store);
    let gate = Arc::new(Semaphore::new(0));
    let charge = Step::gated(Order::Ship, &gate);
    let worker = Worker::new(&store)
        .register(
            "orders",
            orders(
                Step::to(Order::Charge),
                charge.clone(),
                Step::to(Order::Shipped),
            ),
        )
        .with_concurrency(40)
        .keep_finished_rows(true)
        .start()
        .await
        .unwrap();
    let mut runs = Vec::new();
    for _ in 0..40 {
        runs.push(enqueue_order(&queue).await);
    }
    // Every run waits in Charge (its Enter row written before the step started);
    // every connection of the store is then dropped.
    charge.entered(40).await;
    let admin = raw().await;
    let dropped: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 't_queue_drop'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(dropped > 0);
    gate.add_permits(40);
    let mut outcomes = HashMap::new();
    for &run in &runs {
        let record = queue.wait(run, WAIT).await.unwrap();
        *outcomes.entry(record.status).or_insert(0) += 1;
        let rows = admin
            .query(
                "SELECT seq FROM t_queue_drop.cano_rows WHERE run_id = $1 ORDER BY seq",
                &[&(run.as_u64() as i64)],
            )
            .await
            .unwrap();
        let seqs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(
            seqs,
            [0, 1, 2, 3],
            "run {run}: Enter Reserve, Charge, Ship, Finish, none lost or doubled"
        );
    }
    assert_eq!(outcomes, HashMap::from([(QueueStatus::Finished, 40)]));
    worker.stop(Duration::from_secs(5)).await;
}

/// Runs already queued are claimed in the worker's first round, before a subscription
/// taken after `start` could hear of it; one taken on the builder sees every event
/// from the first, in order: each run claimed once, then finished, nothing lost.
#[tokio::test]
async fn a_subscription_taken_before_the_start_sees_every_event_from_the_first() {
    pg_or_skip!();
    let schema = "t_queue_subscribe_early";
    let store = fresh_store(schema).await;
    let queue = RunQueue::new(&store);
    let mut runs = Vec::new();
    for _ in 0..20 {
        runs.push(enqueue_order(&queue).await);
    }
    let worker = Worker::new(&store)
        .register("orders", plain())
        .with_concurrency(20);
    let mut events = worker.subscribe();
    let worker = worker.start().await.unwrap();
    let mut claimed = std::collections::HashSet::new();
    let mut finished = Vec::new();
    while finished.len() < runs.len() {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("every run is claimed and finished in time")
            .expect("no event is missed or dropped");
        match event {
            WorkerEvent::Claimed { run, claims, .. } => {
                assert_eq!(claims, 1, "run {run} is claimed once");
                assert!(claimed.insert(run), "run {run} claimed twice");
            }
            WorkerEvent::Finished { run, label } => {
                assert!(
                    claimed.contains(&run),
                    "run {run} finished before it was claimed"
                );
                assert_eq!(label, "Shipped");
                finished.push(run);
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    finished.sort();
    runs.sort();
    assert_eq!(
        finished, runs,
        "every run queued before the start, once each"
    );
    worker.stop(Duration::from_secs(5)).await;
}

/// A claim loop whose statements cannot be prepared (a table the worker needs was
/// renamed away while its connections were cut) says why, as an event, instead of
/// retrying in silence; once the table is back it claims again.
#[tokio::test]
async fn a_claim_loop_that_cannot_prepare_says_why_and_recovers() {
    pg_or_skip!();
    let schema = "t_queue_unprepared";
    let store = fresh_store(schema).await;
    let queue = RunQueue::new(&store);
    let worker_store = cano_postgres::PostgresCheckpointStore::connect(
        common::options(schema).with_application_name("t_queue_unprepared_worker"),
    )
    .await
    .unwrap();
    let worker = Worker::new(&worker_store)
        .named("blind")
        .register("orders", plain())
        .start()
        .await
        .unwrap();
    let mut events = worker.subscribe();
    let admin = raw().await;
    admin
        .batch_execute(&format!(
            "ALTER TABLE {schema}.cano_queues RENAME TO cano_queues_away;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 't_queue_unprepared_worker'"
        ))
        .await
        .unwrap();
    // (The cut connections are reported too, first: waited past.)
    let said = next_event(
        &mut events,
        |e| matches!(e, WorkerEvent::ClaimFailed { error } if error.contains("cano_queues")),
    )
    .await;
    let WorkerEvent::ClaimFailed { error } = said else {
        unreachable!()
    };
    assert!(
        error.contains("preparing the claim loop's connection") && error.contains("does not exist"),
        "{error}"
    );
    admin
        .batch_execute(&format!(
            "ALTER TABLE {schema}.cano_queues_away RENAME TO cano_queues"
        ))
        .await
        .unwrap();
    let run = enqueue_order(&queue).await;
    assert_eq!(
        queue.wait(run, WAIT).await.unwrap().status,
        QueueStatus::Finished
    );
    worker.stop(Duration::from_secs(5)).await;
}

/// A connection listening on `channel`; its notifications' payloads, in the order the
/// server delivered them.
async fn listener(
    channel: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (client, mut connection) =
        tokio_postgres::connect(&common::pg_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures::StreamExt::next(&mut messages).await {
            if let tokio_postgres::AsyncMessage::Notification(note) = message {
                let _ = tx.send(note.payload().to_owned());
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .unwrap();
    (client, rx)
}

async fn next_note(notes: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(WAIT, notes.recv())
        .await
        .expect("no notification for 30 s")
        .expect("the listening connection closed")
}

#[tokio::test]
async fn only_the_ends_someone_waits_for_are_announced() {
    pg_or_skip!();
    // Every announcing commit takes one lock for the whole server, so the workers
    // announce the end of a run only when a waiter asked for it.
    const SCHEMA: &str = "t_queue_watch";
    let store = fresh_store(SCHEMA).await;
    let queue = RunQueue::new(&store);
    let (announcer, mut notes) = listener(&format!("cano_done_{SCHEMA}")).await;
    let gate = Arc::new(Semaphore::new(0));
    let worker = Worker::new(&store)
        .register(
            "orders",
            orders(
                Step::gated(Order::Charge, &gate),
                Step::to(Order::Ship),
                Step::to(Order::Shipped),
            ),
        )
        .register("quick", plain())
        .start()
        .await
        .unwrap();
    let mut events = worker.subscribe();
    let (unwatched, watched) = (enqueue_order(&queue).await, enqueue_order(&queue).await);

    // Nobody waits for the first: its end is not announced. (Notifications arrive in
    // commit order, so the marker sent after it ended comes first.)
    gate.add_permits(1);
    let first = next_event(&mut events, |e| matches!(e, WorkerEvent::Finished { .. })).await;
    let WorkerEvent::Finished { run: ended, .. } = first else {
        unreachable!()
    };
    announcer
        .batch_execute(&format!("NOTIFY cano_done_{SCHEMA}, 'marker-1'"))
        .await
        .unwrap();
    assert_eq!(next_note(&mut notes).await, "marker-1");

    // The other has a waiter: its end is announced, and the waiter hears of it.
    let other = if ended == unwatched {
        watched
    } else {
        unwatched
    };
    // A wait asks for the announcement before it first reads the run: even one that
    // gives up at once (a zero timeout) leaves the run watched.
    let gave_up = queue.wait(other, Duration::ZERO).await.unwrap_err();
    assert!(gave_up.to_string().contains("not over"), "{gave_up}");
    let key: i64 = raw()
        .await
        .query_one(
            &format!("SELECT run_id FROM {SCHEMA}.cano_runs WHERE watched"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let waiting = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.wait(other, WAIT).await })
    };
    gate.add_permits(1);
    assert_eq!(next_note(&mut notes).await, key.to_string());
    let record = waiting.await.unwrap().unwrap();
    assert_eq!(record.status, QueueStatus::Finished);

    // A wait for more runs than are announced at once still sees every one end.
    let mut many = Vec::new();
    for _ in 0..70 {
        many.push(
            queue
                .enqueue("quick", &Order::Reserve, EnqueueOptions::new())
                .await
                .unwrap()
                .run,
        );
    }
    let records = queue.wait_all(&many, WAIT).await.unwrap();
    assert!(records.iter().all(|r| r.status == QueueStatus::Finished));
    assert_eq!(
        records.iter().map(|r| r.run).collect::<Vec<_>>(),
        many,
        "records come back in the order asked"
    );
    worker.stop(Duration::from_secs(5)).await;
}

/// A wait for more runs than one read looks at (1,024) reads the first still
/// pending, and the next ones at once when those are all over: whatever order the
/// runs end in, it returns every record, in the order asked, once the last ends.
#[tokio::test]
async fn a_wait_for_thousands_returns_every_run_whatever_order_they_end_in() {
    pg_or_skip!();
    const SCHEMA: &str = "t_queue_wait_many";
    let store = fresh_store(SCHEMA).await;
    let queue = RunQueue::new(&store);
    let mut runs = Vec::new();
    for _ in 0..2_500 {
        runs.push(
            queue
                .enqueue("nobody", &Order::Reserve, EnqueueOptions::new())
                .await
                .unwrap()
                .run,
        );
    }
    // Asked twice, as a caller may: each run is one of the records, once a place.
    runs.push(runs[0]);
    let waiting = {
        let (queue, runs) = (queue.clone(), runs.clone());
        tokio::spawn(async move { queue.wait_all(&runs, WAIT).await })
    };
    // No worker runs them: they end by hand, the last asked first, in batches, so
    // the first runs of the wait are the last to end.
    let admin = raw().await;
    let keys: Vec<i64> = runs.iter().rev().map(|r| r.as_u64() as i64).collect();
    for batch in keys.chunks(400) {
        admin
            .execute(
                &format!(
                    "UPDATE {SCHEMA}.cano_runs SET status = 'finished', finished_at = clock_timestamp(),
                         final_label = 'Shipped' WHERE run_id = ANY($1)"
                ),
                &[&batch],
            )
            .await
            .unwrap();
        assert!(!waiting.is_finished() || batch.contains(&keys[keys.len() - 1]));
        tokio::task::yield_now().await;
    }
    let records = waiting.await.unwrap().unwrap();
    assert_eq!(
        records.iter().map(|r| r.run).collect::<Vec<_>>(),
        runs,
        "records come back in the order asked"
    );
    assert!(records.iter().all(|r| r.status == QueueStatus::Finished));
}

/// A migration may change a column's type while processes run with statements kept
/// prepared from before it; the server then refuses them ("cached plan must not
/// change result type"). The pool prepares them again and the call goes through.
#[tokio::test]
async fn statements_kept_from_before_a_schema_change_are_prepared_again() {
    pg_or_skip!();
    let schema = "t_queue_stale_plans";
    common::drop_schema(schema).await;
    // One connection: the second read runs on the connection that kept the first.
    let store =
        cano_postgres::PostgresCheckpointStore::connect(common::options(schema).with_pool_size(1))
            .await
            .unwrap();
    let queue = RunQueue::new(&store);
    let run = enqueue_order(&queue).await;
    let before = queue.status(run).await.unwrap().unwrap();
    raw()
        .await
        .batch_execute(&format!(
            "ALTER TABLE {schema}.cano_runs ALTER COLUMN workflow TYPE varchar(200)"
        ))
        .await
        .unwrap();
    let after = queue.status(run).await.unwrap().unwrap();
    assert_eq!(after.workflow, before.workflow);
    assert_eq!(after.status, QueueStatus::Queued);
}
