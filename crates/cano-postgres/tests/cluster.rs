//! Real processes on one database. The test binary runs itself as worker and scheduler
//! processes (`child_entry` with `CANO_PG_CHILD` set); the parent kills one of them with
//! SIGKILL midway and checks the database afterwards.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cano_core::{CanoError, RunId, Task, TaskConfig, TaskResult, Workflow};
use cano_postgres::{
    ClusterEvent, ClusterScheduler, EnqueueOptions, PostgresCheckpointStore, QueueStatus, RunQueue,
    Worker, WorkerEvent,
};
use common::children::{Children, parent_gone, say, serve_as_child};
use common::{drop_schema, options, raw};

const LEASE_MS: &str = "CANO_PG_LEASE_MS";

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Chain {
    A,
    B,
    C,
    D,
    E,
    Done,
}

/// A step of simulated work (a short sleep stands for a call to another service).
struct Work(Chain);

#[async_trait::async_trait]
impl Task<Chain> for Work {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Chain>, CanoError> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(TaskResult::Single(self.0.clone()))
    }
}

fn chain() -> Workflow<Chain> {
    Workflow::bare()
        .register(Chain::A, Work(Chain::B))
        .register(Chain::B, Work(Chain::C))
        .register(Chain::C, Work(Chain::D))
        .register(Chain::D, Work(Chain::E))
        .register(Chain::E, Work(Chain::Done))
        .add_exit_state(Chain::Done)
}

/// A worker child; `keep`: whether it keeps finished runs' rows (the default
/// deletes them, ending each claim with its run's `Finish` row instead).
async fn worker_child(schema: &str, name: &str, keep: bool) {
    let store = PostgresCheckpointStore::connect(options(schema).with_application_name(name))
        .await
        .unwrap();
    let worker = Worker::new(&store)
        .named(name)
        .register("chain", chain())
        .with_concurrency(20)
        .with_lease(Duration::from_secs(2))
        .with_poll_interval(Duration::from_millis(200))
        .keep_finished_rows(keep)
        .start()
        .await
        .unwrap();
    let mut events = worker.subscribe();
    say("ready");
    let report = async {
        while let Ok(event) = events.recv().await {
            match event {
                WorkerEvent::Claimed { run, .. } => say(&format!("claimed {}", run.as_u64())),
                WorkerEvent::Finished { run, .. } => say(&format!("finished {}", run.as_u64())),
                other => say(&format!("other {other:?}")),
            }
        }
    };
    tokio::select! {
        _ = report => {}
        _ = parent_gone() => {}
    }
    worker.stop(Duration::from_secs(5)).await;
}

async fn scheduler_child(schema: &str, name: &str) {
    let store = PostgresCheckpointStore::connect(options(schema).with_application_name(name))
        .await
        .unwrap();
    let mut scheduler = ClusterScheduler::new(&store, "ticks")
        .named(name)
        .cron("every-second", "* * * * * *", "tick", &Chain::A)
        .unwrap()
        .with_standby_poll(Duration::from_millis(200));
    if let Ok(ms) = std::env::var(LEASE_MS) {
        scheduler = scheduler.with_leader_lease(Duration::from_millis(ms.parse().unwrap()));
    }
    // Subscribed before the start: a quick takeover's `Leading` is not missed.
    let mut events = scheduler.subscribe();
    let scheduler = scheduler.start().await.unwrap();
    say("ready");
    let report = async {
        while let Ok(event) = events.recv().await {
            match event {
                ClusterEvent::Leading { epoch } => say(&format!("leading {epoch}")),
                ClusterEvent::Fired { at, .. } => say(&format!("fired {}", at.timestamp_millis())),
                ClusterEvent::SteppedDown => say("stepped-down"),
                ClusterEvent::Skipped { count, .. } => say(&format!("skipped {count}")),
                other => say(&format!("other {other:?}")),
            }
        }
    };
    tokio::select! {
        _ = report => {}
        _ = parent_gone() => {}
    }
    scheduler.stop().await;
}

/// The entry point of the child processes; does nothing in the parent's run.
#[test]
fn child_entry() {
    serve_as_child(|mode, schema, name| async move {
        match mode.as_str() {
            "worker" => worker_child(&schema, &name, true).await,
            "lean-worker" => worker_child(&schema, &name, false).await,
            "scheduler" => scheduler_child(&schema, &name).await,
            other => panic!("unknown child mode {other}"),
        }
    });
}

fn run_number(text: &str) -> u64 {
    text.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_300_runs_and_one_killed_mid_run_loses_none() {
    pg_or_skip!();
    let schema = "t_cluster_workers";
    let in_flight_at_kill = share_runs_and_kill_one(schema, "worker", 300).await;

    // Every log is whole: rows 0..=n, one per state and the Finish, and epochs never
    // go back (no write of a lost lease landed after the takeover).
    let db = raw().await;
    let check = db
        .query_one(
            &format!(
                "SELECT
                    (SELECT count(*) FROM {schema}.cano_logs WHERE status = 2),
                    (SELECT count(*) FROM {schema}.cano_logs l
                        WHERE (SELECT count(*) FROM {schema}.cano_rows r WHERE r.run_id = l.run_id) <> l.last_seq + 1),
                    (SELECT count(*) FROM (SELECT epoch < lag(epoch) OVER (PARTITION BY run_id ORDER BY seq) AS back
                        FROM {schema}.cano_rows) t WHERE back),
                    (SELECT count(*) FROM {schema}.cano_runs WHERE claims >= 2)"
            ),
            &[],
        )
        .await
        .unwrap();
    let (finished_logs, gaps, backwards, reclaimed): (i64, i64, i64, i64) =
        (check.get(0), check.get(1), check.get(2), check.get(3));
    assert_eq!((finished_logs, gaps, backwards), (300, 0, 0));
    assert!(reclaimed >= in_flight_at_kill);
}

/// As above with workers that keep no finished rows: each claim ends with its run's
/// `Finish` row in one statement, so a kill between the two cannot happen. Every run
/// still finishes once, and no log is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lean_workers_share_150_runs_and_one_killed_mid_run_loses_none() {
    pg_or_skip!();
    let schema = "t_cluster_lean_workers";
    let in_flight_at_kill = share_runs_and_kill_one(schema, "lean-worker", 150).await;
    let check = raw()
        .await
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM {schema}.cano_rows), (SELECT count(*) FROM {schema}.cano_logs),
                    (SELECT count(*) FROM {schema}.cano_claims WHERE ended_at IS NULL),
                    (SELECT count(*) FROM {schema}.cano_claims WHERE outcome = 'finished'),
                    (SELECT count(*) FROM {schema}.cano_runs WHERE claims >= 2)"
            ),
            &[],
        )
        .await
        .unwrap();
    let (rows, logs, open, finished, reclaimed): (i64, i64, i64, i64, i64) = (
        check.get(0),
        check.get(1),
        check.get(2),
        check.get(3),
        check.get(4),
    );
    assert_eq!(
        (rows, logs, open, finished),
        (0, 0, 0, 150),
        "no log left, every claim closed, one finished claim a run"
    );
    assert!(reclaimed >= in_flight_at_kill);
}

/// Three `mode` children share `count` runs; the first is killed (SIGKILL) once it has
/// finished 20. Checks that each run finished exactly once and that the runs the
/// killed worker held were finished by the others; returns how many it held.
async fn share_runs_and_kill_one(schema: &str, mode: &str, count: usize) -> i64 {
    drop_schema(schema).await;
    let store = PostgresCheckpointStore::connect(options(schema))
        .await
        .unwrap();
    let queue = RunQueue::new(&store);
    let mut children = Children::spawn(mode, schema, 3);
    let mut ready = 0;
    while ready < 3 {
        if children.next().1 == "ready" {
            ready += 1;
        }
    }
    let mut runs = Vec::new();
    for _ in 0..count {
        runs.push(
            queue
                .enqueue("chain", &Chain::A, EnqueueOptions::new())
                .await
                .unwrap()
                .run,
        );
    }

    // Follow the children until the first has finished 20 runs, then kill it.
    let mut finished: Vec<Vec<u64>> = vec![Vec::new(); 3];
    while finished[0].len() < 20 {
        let (index, event) = children.next();
        if let Some(("finished", run)) = event.split_once(' ') {
            finished[index].push(run_number(run));
        }
    }
    children.kill(0);
    let dead = format!("{schema}_0");
    // What it held when it died, as the database saw it.
    let in_flight_at_kill: Vec<i64> = raw()
        .await
        .query(
            &format!(
                "SELECT run_id FROM {schema}.cano_runs WHERE worker = $1 AND status = 'running'"
            ),
            &[&dead],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !in_flight_at_kill.is_empty(),
        "the worker was killed between runs"
    );
    // Lines the killed worker wrote before it died are still in the pipe.
    for record in queue
        .wait_all(&runs, Duration::from_secs(120))
        .await
        .unwrap()
    {
        assert_eq!(record.status, QueueStatus::Finished, "{record:?}");
    }
    while let Ok((index, event)) = children.events.recv_timeout(Duration::from_millis(500)) {
        if let Some(("finished", run)) = event.split_once(' ') {
            finished[index].push(run_number(run));
        }
    }
    children.finish();

    // Each run reached its exit state exactly once, across the three workers.
    let mut times: HashMap<u64, usize> = HashMap::new();
    for run in finished.iter().flatten() {
        *times.entry(*run).or_default() += 1;
    }
    assert!(times.values().all(|&n| n == 1), "a run finished twice");
    // A run the killed worker recorded as finished just before it died may have no line.
    for &run in &runs {
        if !times.contains_key(&run.as_u64()) {
            let record = queue.status(run).await.unwrap().unwrap();
            assert_eq!(record.worker.as_deref(), Some(dead.as_str()), "{record:?}");
        }
    }
    // The runs it held when it died were finished by the others once its leases expired.
    for &run in &in_flight_at_kill {
        let record = queue
            .status(RunId::from(run as u64))
            .await
            .unwrap()
            .unwrap();
        assert!(
            record.claims >= 2 && record.worker.as_deref() != Some(dead.as_str()),
            "{record:?}"
        );
    }
    in_flight_at_kill.len() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_schedulers_fire_each_of_60_ticks_once_when_the_leader_is_killed() {
    pg_or_skip!();
    let schema = "t_cluster_cron";
    drop_schema(schema).await;
    let _store = PostgresCheckpointStore::connect(options(schema))
        .await
        .unwrap();
    let mut children = Children::spawn("scheduler", schema, 3);
    let mut leader = None;
    let mut fired: Vec<(usize, i64)> = Vec::new();
    let mut killed = None;
    while fired.len() < 62 {
        let (index, event) = children.next();
        match event.split_once(' ') {
            Some(("leading", _)) => leader = Some(index),
            // Only the leader fires: a fire names it as well.
            Some(("fired", at)) => {
                leader = Some(index);
                fired.push((index, at.parse().unwrap()));
            }
            _ => {}
        }
        if fired.len() == 30 && killed.is_none() {
            let index = leader.expect("a leader fired");
            children.kill(index);
            killed = Some(index);
        }
    }
    children.finish();
    let killed = killed.unwrap();

    // 60 consecutive seconds from the first tick: each has one fire row and one run.
    let first = fired.iter().map(|&(_, at)| at).min().unwrap();
    let db = raw().await;
    let rows = db
        .query(
            &format!(
                "SELECT f.fire_at_ms, f.fired_by, (SELECT count(*) FROM {schema}.cano_runs r WHERE r.run_id = f.run_id)
                 FROM {schema}.cano_fires f WHERE fire_at_ms >= $1 AND fire_at_ms < $1 + 60000 ORDER BY fire_at_ms"
            ),
            &[&first],
        )
        .await
        .unwrap();
    let ticks: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        ticks,
        (0..60).map(|k| first + k * 1000).collect::<Vec<_>>(),
        "a tick is missing"
    );
    assert!(
        rows.iter().all(|r| r.get::<_, i64>(2) == 1),
        "a tick has no run"
    );
    // No tick was reported by two processes, and both the dead leader and a successor fired.
    let mut seen = HashSet::new();
    assert!(
        fired.iter().all(|&(_, at)| seen.insert(at)),
        "a tick fired twice"
    );
    let by: HashSet<String> = rows.iter().map(|r| r.get(1)).collect();
    assert!(
        by.contains(&format!("{schema}_{killed}")) && by.len() >= 2,
        "{by:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_leader_is_replaced_within_a_lease_and_fires_nothing_stale() {
    pg_or_skip!();
    let schema = "t_cluster_stall";
    drop_schema(schema).await;
    let _store = PostgresCheckpointStore::connect(options(schema))
        .await
        .unwrap();
    // A 1.5 s leader lease: a stalled leader (SIGSTOP: its connection stays open and
    // says nothing, as a half-open one would) must be replaced within about that.
    let children = Children::spawn_with("scheduler", schema, 2, &[(LEASE_MS, "1500".to_owned())]);
    let mut leader = None;
    let mut fired_before = 0;
    while fired_before < 3 {
        let (index, event) = children.next();
        match event.split_once(' ') {
            Some(("leading", _)) => leader = Some(index),
            // Only the leader fires: a fire names it as well.
            Some(("fired", _)) => {
                leader = Some(index);
                fired_before += 1;
            }
            _ => {}
        }
    }
    let stalled = leader.unwrap();
    children.signal(stalled, "STOP");
    let other = 1 - stalled;
    let mut new_lead = false;
    let mut fired_after = 0;
    while fired_after < 3 {
        let (index, event) = children.next();
        assert_ne!(index, stalled, "a stopped process spoke: {event}");
        match event.split_once(' ') {
            Some(("leading", _)) if index == other => new_lead = true,
            Some(("fired", _)) if new_lead => fired_after += 1,
            _ => {}
        }
    }
    // The stalled leader wakes up: it finds itself deposed and fires nothing, not
    // the backlog of ticks it slept through.
    children.signal(stalled, "CONT");
    let mut stepped_down = false;
    let mut more = 0;
    while !stepped_down || more < 2 {
        let (index, event) = children.next();
        if index == stalled {
            assert!(
                !event.starts_with("fired"),
                "the deposed leader fired: {event}"
            );
            stepped_down |= event == "stepped-down";
        } else if event.starts_with("fired") {
            more += 1;
        }
    }
    children.finish();
    // Each second between the first and last fire has exactly one fire row (caught up
    // within the window, where the failover left a gap).
    let db = raw().await;
    let ticks: Vec<i64> = db
        .query(
            &format!("SELECT fire_at_ms FROM {schema}.cano_fires ORDER BY fire_at_ms"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        ticks.windows(2).all(|w| w[1] - w[0] == 1000),
        "a tick missing or doubled: {ticks:?}"
    );
}
