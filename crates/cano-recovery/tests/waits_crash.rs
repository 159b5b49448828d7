//! Durable waits across real process deaths: a child process (this test binary, re-run
//! in child mode) parks one run waiting for a signal and puts another to sleep on
//! sled, then is killed with SIGKILL. The parent opens the same store, sends the
//! signal, and serves the waits: the signalled run goes on at once, the sleeping one
//! no earlier than the time it asked for, each exactly once.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cano_core::wait::{self, Wait};
use cano_core::{
    CancellationToken, CanoError, Retention, RowKind, RunId, RunObserver, RunOptions, RunStatus,
    Task, TaskResult, Workflow,
};
use cano_recovery::SledCheckpointStore;

const CHILD_DIR: &str = "CANO_WAIT_CHILD_DIR";
const MARK: &str = "@@";

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Job {
    Start,
    AwaitGo,
    Nap,
    Went,
    Woke,
}

/// Starts the run: `Start` goes to the wait for `go`, or to sleep until the time the
/// run's name carries.
struct Begin;

#[async_trait::async_trait]
impl Task<Job> for Begin {
    async fn run_bare(&self) -> Result<TaskResult<Job>, CanoError> {
        let run = cano_core::RunContext::current().unwrap().run_id();
        if run == RunId::from(1) {
            return Ok(TaskResult::Single(Job::AwaitGo));
        }
        let at: u64 = std::env::var("CANO_WAIT_WAKE_AT").unwrap().parse().unwrap();
        wait::wake_at(UNIX_EPOCH + Duration::from_millis(at))?;
        Ok(TaskResult::Single(Job::Nap))
    }
}

fn workflow(store: SledCheckpointStore) -> Workflow<Job> {
    Workflow::bare()
        .register(Job::Start, Begin)
        .register_wait(
            Job::AwaitGo,
            Wait::new().on("go", |_: u32| Job::Went).sent_by("the test"),
        )
        .register_wait(Job::Nap, Wait::sleep(Duration::from_secs(3600), Job::Woke))
        .add_exit_states([Job::Went, Job::Woke])
        .with_checkpoint_store(store)
        .with_retention(Retention::KeepFinished)
}

/// Entry point of the child process; a no-op when run as an ordinary test.
#[test]
fn child_entry() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SledCheckpointStore::open(Path::new(&dir).join("db")).unwrap();
        let wf = workflow(store);
        for run in [1, 2] {
            let options = RunOptions::new().with_run_id(RunId::from(run));
            let parked = wf.orchestrate_with(Job::Start, options).await.unwrap_err();
            assert!(parked.is_parked(), "{parked}");
            println!("{MARK} parked {run}");
        }
        // Serving until killed, as a long-running process would.
        wf.serve_waits(CancellationToken::new()).await.unwrap();
    });
}

struct Ended(tokio::sync::mpsc::UnboundedSender<(RunId, String, SystemTime)>);

impl RunObserver for Ended {
    fn run_ended(&self, run: RunId, outcome: Result<&dyn std::fmt::Debug, &CanoError>) {
        if let Ok(exit) = outcome {
            let _ = self.0.send((run, format!("{exit:?}"), SystemTime::now()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_and_sleeping_runs_survive_sigkill_and_go_on_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let wake_at = SystemTime::now() + Duration::from_millis(3000);
    let wake_ms = wake_at.duration_since(UNIX_EPOCH).unwrap().as_millis();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .env("CANO_WAIT_WAKE_AT", wake_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let parked = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains(MARK))
            .take(2)
            .count()
    })
    .await
    .unwrap();
    assert_eq!(parked, 2, "the child parked both runs");
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();

    let store = SledCheckpointStore::open(dir.path().join("db")).unwrap();
    let (tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let wf = workflow(store.clone()).with_observer(Arc::new(Ended(tx)));
    for run in [1, 2] {
        assert_eq!(
            wf.query(RunId::from(run)).await.unwrap().status,
            RunStatus::Parked
        );
    }
    wf.signal(RunId::from(1), "go", &7u32).await.unwrap();
    let token = CancellationToken::new();
    let serving = tokio::spawn({
        let (wf, token) = (wf.clone(), token.clone());
        async move { wf.serve_waits(token).await }
    });
    let mut outcomes = [ended.recv().await.unwrap(), ended.recv().await.unwrap()];
    outcomes.sort_by_key(|(run, ..)| *run);
    assert_eq!(outcomes[0].0, RunId::from(1));
    assert_eq!(outcomes[0].1, "Went");
    assert_eq!(outcomes[1].0, RunId::from(2));
    assert_eq!(outcomes[1].1, "Woke");
    assert!(
        outcomes[1].2 >= wake_at,
        "the sleeper woke no earlier than asked"
    );
    token.cancel();
    serving.await.unwrap().unwrap();
    // Each run took what woke it exactly once, and went on once.
    use cano_core::CheckpointStore;
    for run in [1, 2] {
        let rows = store.load(RunId::from(run)).await.unwrap();
        let received = rows.iter().filter(|r| r.kind == RowKind::Received).count();
        let finished = rows.iter().filter(|r| r.kind == RowKind::Finish).count();
        assert_eq!((received, finished), (1, 1), "run {run}: {rows:?}");
    }
    assert!(wf.query(RunId::from(1)).await.unwrap().inbox.is_empty());
}
