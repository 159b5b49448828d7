//! Durable waits on PostgreSQL: three worker processes park 1,000 runs, this process
//! (a fourth) sends their signals, and every run goes on exactly once on some worker,
//! with no lease held while parked; in one process, a signal kept for a run that has
//! not parked yet, deadlines that wake runs without any signal, and a send racing the
//! park.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cano_core::checkpoint::Sent;
use cano_core::wait::{self, Wait};
use cano_core::{CanoError, CheckpointStore, RowKind, RunId, Task, TaskResult, Workflow};
use cano_postgres::{
    EnqueueOptions, PostgresCheckpointStore, QueueStatus, RunQueue, Worker, WorkerEvent,
};
use common::children::{Children, parent_gone, say, serve_as_child};
use common::{drop_schema, options, raw};
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Ask {
    Start,
    Wait,
    Yes,
    No,
    Expired,
}

/// Asks: moves to the wait. With `short`, runs with an odd id get a 300 ms deadline
/// instead of the wait's hour (so they expire with no signal); with a `gate`, run 8
/// stops at it first (tells the test, waits to be let go).
#[derive(Clone, Default)]
struct Begin {
    short: bool,
    gate: Option<Arc<(Notify, Notify)>>,
}

#[async_trait::async_trait]
impl Task<Ask> for Begin {
    async fn run_bare(&self) -> Result<TaskResult<Ask>, CanoError> {
        let run = cano_core::RunContext::current().unwrap().run_id();
        if self.short && run.as_u64() % 2 == 1 {
            wait::wake_after(Duration::from_millis(300))?;
        }
        if let Some(gate) = self.gate.as_ref().filter(|_| run == RunId::from(8)) {
            gate.0.notify_one();
            gate.1.notified().await;
        }
        Ok(TaskResult::Single(Ask::Wait))
    }
}

fn asks(begin: Begin) -> Workflow<Ask> {
    Workflow::bare()
        .register(Ask::Start, begin)
        .register_wait(
            Ask::Wait,
            Wait::new()
                .on("answer", |yes: bool| if yes { Ask::Yes } else { Ask::No })
                .leading_to([Ask::Yes, Ask::No])
                .timeout(Duration::from_secs(3600), Ask::Expired),
        )
        .add_exit_states([Ask::Yes, Ask::No, Ask::Expired])
}

/// The workflow as a sender sees it: its name (the worker's workflow id) and store.
/// How many signals `run` has taken: its `Received` rows.
async fn received(store: &PostgresCheckpointStore, run: RunId) -> usize {
    store
        .load(run)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.kind == RowKind::Received)
        .count()
}

fn sender(store: &PostgresCheckpointStore) -> Workflow<Ask> {
    asks(Begin::default())
        .with_shared_checkpoint_store(std::sync::Arc::new(store.clone()))
        .with_workflow_id("asks")
}

async fn worker_child(schema: &str, name: &str) {
    let store = PostgresCheckpointStore::connect(options(schema).with_application_name(name))
        .await
        .unwrap();
    let worker = Worker::new(&store)
        .named(name)
        .register("asks", asks(Begin::default()))
        .with_concurrency(32)
        .with_lease(Duration::from_secs(5))
        .with_poll_interval(Duration::from_secs(30))
        .keep_finished_rows(true)
        .start()
        .await
        .unwrap();
    let mut events = worker.subscribe();
    say("ready");
    let report = async {
        while let Ok(event) = events.recv().await {
            match event {
                WorkerEvent::Parked { run } => say(&format!("parked {}", run.as_u64())),
                WorkerEvent::Finished { run, label } => {
                    say(&format!("finished {} {label}", run.as_u64()))
                }
                _ => {}
            }
        }
    };
    tokio::select! {
        _ = report => {}
        _ = parent_gone() => {}
    }
    worker.stop(Duration::from_secs(5)).await;
}

/// The entry point of the child processes; does nothing in the parent's run.
#[test]
fn child_entry() {
    serve_as_child(|mode, schema, name| async move {
        match mode.as_str() {
            "worker" => worker_child(&schema, &name).await,
            other => panic!("unknown child mode {other}"),
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_park_1000_runs_and_each_goes_on_once_when_signalled() {
    pg_or_skip!();
    let schema = "t_waits_cluster";
    drop_schema(schema).await;
    let store = PostgresCheckpointStore::connect(options(schema))
        .await
        .unwrap();
    let queue = RunQueue::new(&store);
    let mut children = Children::spawn("worker", schema, 3);
    let mut ready = 0;
    while ready < 3 {
        if children.next().1 == "ready" {
            ready += 1;
        }
    }
    const RUNS: usize = 1000;
    let mut runs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let run = queue
            .enqueue("asks", &Ask::Start, EnqueueOptions::new())
            .await
            .unwrap()
            .run;
        runs.push(run);
    }
    // Which worker parked each run: the one that parked most is killed before the
    // signals, so its runs must go on on another (no run is bound to its worker).
    let mut parked_on: HashMap<usize, usize> = HashMap::new();
    let mut parked = 0;
    while parked < RUNS {
        let (index, event) = children.next();
        if event.starts_with("parked ") {
            parked += 1;
            *parked_on.entry(index).or_default() += 1;
        }
    }
    let (busiest, its_runs) = parked_on
        .iter()
        .max_by_key(|(_, runs)| **runs)
        .map(|(index, runs)| (*index, *runs))
        .unwrap();
    assert!(its_runs > 0);
    children.kill(busiest);
    // Parked: held by the queue, not by any worker.
    let db = raw().await;
    let held = db
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE status = 'parked' AND lease_until IS NULL),
                        count(*) FILTER (WHERE status = 'running')
                 FROM {schema}.cano_runs"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (held.get::<_, i64>(0), held.get::<_, i64>(1)),
        (RUNS as i64, 0)
    );
    assert_eq!(
        queue.status(runs[0]).await.unwrap().unwrap().status,
        QueueStatus::Parked
    );

    // The signals, from this (fourth) process; every other run is told no.
    let wf = sender(&store);
    for (i, run) in runs.iter().enumerate() {
        let sent = wf
            .signal_once(*run, "answer", &(i % 2 == 0), &format!("answer-{i}"))
            .await
            .unwrap();
        assert!(matches!(sent, Sent::Waiting { .. }), "{sent:?}");
    }
    for record in queue
        .wait_all(&runs, Duration::from_secs(120))
        .await
        .unwrap()
    {
        assert_eq!(record.status, QueueStatus::Finished, "{record:?}");
    }
    let mut finished: HashMap<u64, Vec<(usize, String)>> = HashMap::new();
    while let Ok((index, event)) = children.events.recv_timeout(Duration::from_millis(500)) {
        if let Some(rest) = event.strip_prefix("finished ") {
            let (run, label) = rest.split_once(' ').unwrap();
            finished
                .entry(run.parse().unwrap())
                .or_default()
                .push((index, label.to_owned()));
        }
    }
    children.finish();
    for (i, run) in runs.iter().enumerate() {
        let ends = finished.get(&run.as_u64()).cloned().unwrap_or_default();
        assert_eq!(ends.len(), 1, "run {run} ended {ends:?}");
        let expected = if i % 2 == 0 { "Yes" } else { "No" };
        assert_eq!(ends[0].1, expected);
        assert_ne!(ends[0].0, busiest, "the killed worker ended run {run}");
        // One signal taken, once.
        assert_eq!(received(&store, *run).await, 1, "run {run}");
    }
    let left: i64 = db
        .query_one(&format!("SELECT count(*) FROM {schema}.cano_signals"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "every signal was taken");
    drop_schema(schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_wake_parked_runs_and_a_signal_sent_before_the_park_is_taken() {
    pg_or_skip!();
    let schema = "t_waits_deadlines";
    drop_schema(schema).await;
    let store = PostgresCheckpointStore::connect(options(schema))
        .await
        .unwrap();
    let queue = RunQueue::new(&store);
    let gate = Arc::new((Notify::new(), Notify::new()));
    let begin = Begin {
        short: true,
        gate: Some(gate.clone()),
    };
    // Polls every 30 s: what wakes a run here is a signal's NOTIFY or its deadline.
    let worker = Worker::new(&store)
        .register("asks", asks(begin))
        .with_poll_interval(Duration::from_secs(30))
        .keep_finished_rows(true)
        .start()
        .await
        .unwrap();
    let mut events = worker.subscribe();
    let runs: Vec<RunId> = [2u64, 3, 5, 6].into_iter().map(RunId::from).collect();
    for run in &runs {
        queue
            .enqueue("asks", &Ask::Start, EnqueueOptions::new().with_run_id(*run))
            .await
            .unwrap();
    }
    let mut parked = 0;
    while parked < runs.len() {
        if let WorkerEvent::Parked { .. } = events.recv().await.unwrap() {
            parked += 1;
        }
    }
    // Run 2 (even: an hour's deadline) is answered; 3 and 5 (odd: 300 ms) expire with
    // no signal, woken at their deadline; 6 is left to its hour.
    let wf = sender(&store);
    wf.signal(RunId::from(2), "answer", &true).await.unwrap();
    let done = queue
        .wait_all(&runs[..3], Duration::from_secs(20))
        .await
        .unwrap();
    let labels: Vec<_> = done
        .iter()
        .map(|r| r.final_label.clone().unwrap_or_default())
        .collect();
    assert_eq!(labels, ["Yes", "Expired", "Expired"]);
    let six = queue.status(RunId::from(6)).await.unwrap().unwrap();
    assert_eq!(six.status, QueueStatus::Parked);
    // A wrong payload type and an unknown name are refused before anything is written.
    assert!(wf.signal(RunId::from(6), "answer", &7u32).await.is_err());
    assert!(wf.signal(RunId::from(6), "anwser", &true).await.is_err());
    // One key sent twice is one signal. The first send wakes the run, which may
    // finish before the second arrives: then the second is refused as too late (a
    // run that is over takes no signal, keyed or not), else it is the same signal.
    wf.signal_once(RunId::from(6), "answer", &false, "k")
        .await
        .unwrap();
    match wf.signal_once(RunId::from(6), "answer", &false, "k").await {
        Ok(again) => assert!(matches!(again, Sent::Duplicate { .. }), "{again:?}"),
        Err(late) => assert!(late.to_string().contains("over"), "{late}"),
    }
    let six = queue
        .wait(RunId::from(6), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(six.final_label.as_deref(), Some("No"));
    assert_eq!(
        received(&store, RunId::from(6)).await,
        1,
        "the key's two sends were taken as one signal"
    );
    let left: i64 = raw()
        .await
        .query_one(
            &format!("SELECT count(*) FROM {schema}.cano_signals WHERE run_id = 6"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "no second signal was kept for the key");
    // A finished run takes no signal.
    assert!(wf.signal(RunId::from(2), "answer", &true).await.is_err());

    // Run 10 is cancelled while parked: the queue fails it, and a signal sent after
    // is refused; nothing wakes it.
    queue
        .enqueue(
            "asks",
            &Ask::Start,
            EnqueueOptions::new().with_run_id(RunId::from(10)),
        )
        .await
        .unwrap();
    while !matches!(events.recv().await.unwrap(), WorkerEvent::Parked { run } if run == RunId::from(10))
    {
    }
    queue.cancel_parked(RunId::from(10)).await.unwrap();
    let ten = queue.status(RunId::from(10)).await.unwrap().unwrap();
    assert_eq!(ten.status, QueueStatus::Failed);
    assert_eq!(ten.error.as_deref(), Some("cancelled while parked"));
    let late = wf
        .signal(RunId::from(10), "answer", &true)
        .await
        .unwrap_err();
    assert!(late.to_string().contains("failed"), "{late}");
    assert!(queue.cancel_parked(RunId::from(10)).await.is_err());

    // Run 8 is sent its answer while it is still in its first state (it has rows, but
    // has not parked): the signal is kept, and taken when it reaches the wait.
    queue
        .enqueue(
            "asks",
            &Ask::Start,
            EnqueueOptions::new().with_run_id(RunId::from(8)),
        )
        .await
        .unwrap();
    gate.0.notified().await;
    let early = wf.signal(RunId::from(8), "answer", &true).await.unwrap();
    assert!(matches!(early, Sent::Buffered { .. }), "{early:?}");
    gate.1.notify_one();
    let eight = queue
        .wait(RunId::from(8), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(eight.final_label.as_deref(), Some("Yes"));
    assert_eq!(received(&store, RunId::from(8)).await, 1);
    worker.stop(Duration::from_secs(5)).await;
    drop_schema(schema).await;
}
