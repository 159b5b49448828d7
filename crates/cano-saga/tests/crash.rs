//! Sagas across real process crashes: a child process (this test binary, re-run in
//! child mode) drives one saga on sled and appends every step and compensation it
//! performs to a ledger file. It stops dead at a chosen point, where the parent kills
//! it with SIGKILL; a second child resumes the run. The ledger then shows that each
//! compensation ran exactly as often as required: once, or again only when the crash
//! came before its success was recorded.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use cano_core::{
    CanoError, CheckpointStore, Resources, RunId, RunObserver, RunOptions, Task, TaskConfig,
    TaskResult, Workflow,
};
use cano_recovery::SledCheckpointStore;
use cano_saga::{CompensatableTask, SagaExt};

const CHILD_DIR: &str = "CANO_SAGA_CHILD_DIR";
const PAUSE_AT: &str = "CANO_SAGA_PAUSE_AT";
const MARK: &str = "@@";
const RUN: u64 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Order {
    Reserve,
    Charge,
    Ship,
    Done,
}

/// Where the child stops dead, waiting for its SIGKILL.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pause {
    /// Inside Charge's step, after its effect.
    InCharge,
    /// Right after the row recording Charge's completion was written.
    AfterCompletedRow,
    /// During the rollback, right after Charge's undoing was recorded.
    AfterChargeUndone,
    /// Inside Charge's compensation, after its effect but before it was recorded.
    InChargeUndo,
}

impl Pause {
    const ALL: [Pause; 4] = [
        Pause::InCharge,
        Pause::AfterCompletedRow,
        Pause::AfterChargeUndone,
        Pause::InChargeUndo,
    ];

    fn from_env() -> Option<Self> {
        let name = std::env::var(PAUSE_AT).ok()?;
        Self::ALL.into_iter().find(|p| format!("{p:?}") == name)
    }
}

fn ledger(dir: &Path, line: &str) {
    // One write per line on an O_APPEND file: whole lines, even when killed.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("ledger"))
        .unwrap();
    file.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// Tells the parent the child reached its pause point, then never returns.
fn stop_dead() -> ! {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{MARK} paused");
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}

struct Step {
    name: &'static str,
    next: Order,
    dir: PathBuf,
    pause: Option<Pause>,
}

#[async_trait::async_trait]
impl CompensatableTask<Order> for Step {
    type Output = String;

    async fn run(&self, _: &Resources) -> Result<(TaskResult<Order>, String), CanoError> {
        ledger(&self.dir, &format!("do {}", self.name));
        if self.name == "Charge" && self.pause == Some(Pause::InCharge) {
            stop_dead();
        }
        Ok((
            TaskResult::Single(self.next.clone()),
            format!("{}-id", self.name),
        ))
    }

    async fn compensate(&self, _: &Resources, id: String) -> Result<(), CanoError> {
        ledger(&self.dir, &format!("undo {} {id}", self.name));
        if self.name == "Charge" && self.pause == Some(Pause::InChargeUndo) {
            stop_dead();
        }
        Ok(())
    }

    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }

    fn compensation_config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }

    fn name(&self) -> std::borrow::Cow<'static, str> {
        self.name.into()
    }
}

struct Ship(PathBuf);

#[async_trait::async_trait]
impl Task<Order> for Ship {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        ledger(&self.0, "ship failed");
        Err(CanoError::task_execution("the carrier refused the parcel"))
    }
}

/// Stops the child at the pause points the engine reports to observers.
struct Pauses(Option<Pause>);

impl RunObserver for Pauses {
    fn checkpointed(&self, _: RunId, _workflow: &str, state: &dyn std::fmt::Debug, _: u64) {
        // The row that moves the run to Ship is Charge's Completed row.
        if self.0 == Some(Pause::AfterCompletedRow) && format!("{state:?}") == "Ship" {
            stop_dead();
        }
    }
    fn compensation_succeeded(&self, _: RunId, state: &dyn std::fmt::Debug, _: &str) {
        if self.0 == Some(Pause::AfterChargeUndone) && format!("{state:?}") == "Charge" {
            stop_dead();
        }
    }
}

async fn child(dir: &Path) {
    let pause = Pause::from_env();
    let store = SledCheckpointStore::open(dir.join("db")).unwrap();
    let step = |name, next| Step {
        name,
        next,
        dir: dir.to_owned(),
        pause,
    };
    let workflow = Workflow::bare()
        .register_with_compensation(Order::Reserve, step("Reserve", Order::Charge))
        .register_with_compensation(Order::Charge, step("Charge", Order::Ship))
        .register(Order::Ship, Ship(dir.to_owned()))
        .add_exit_state(Order::Done)
        .with_checkpoint_store(store.clone())
        .with_workflow_id("saga-crash")
        .with_observer(Arc::new(Pauses(pause)));
    let run = RunId::from(RUN);
    let outcome = if store.load(run).await.unwrap().is_empty() {
        workflow
            .orchestrate_with(Order::Reserve, RunOptions::new().with_run_id(run))
            .await
    } else {
        workflow.resume_from(run).await
    };
    let err = outcome.unwrap_err();
    assert!(err.to_string().contains("carrier refused"), "{err}");
    println!("{MARK} done");
}

/// Entry point of the child process; a no-op when run as an ordinary test.
#[test]
fn child_entry() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(child(Path::new(&dir)));
}

/// Runs a child until it prints `paused` (then SIGKILLs it) or ends.
fn run_child(dir: &Path, pause: Option<Pause>) -> bool {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    match pause {
        Some(p) => command.env(PAUSE_AT, format!("{p:?}")),
        None => command.env_remove(PAUSE_AT),
    };
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.contains(&format!("{MARK} paused")) {
            child.kill().unwrap(); // SIGKILL on Unix
            killed = true;
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(killed || status.success(), "child failed: {status}");
    killed
}

fn count(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

#[test]
fn sigkill_during_a_step_after_a_completion_row_and_during_the_rollback() {
    for pause in Pause::ALL {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            run_child(dir.path(), Some(pause)),
            "{pause:?}: the child paused"
        );
        assert!(
            !run_child(dir.path(), None),
            "{pause:?}: the resume ran to its end"
        );
        let lines: Vec<String> = std::fs::read_to_string(dir.path().join("ledger"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        // What each crash point requires.
        let (charged, charge_undone) = match pause {
            // The step ran again on resume (its completion was never recorded), and
            // was undone once.
            Pause::InCharge => (2, 1),
            // Recorded: not run again, undone once.
            Pause::AfterCompletedRow => (1, 1),
            // Its undoing was recorded: not undone again.
            Pause::AfterChargeUndone => (1, 1),
            // Its undoing ran but was not recorded: it runs again (compensations must
            // tolerate that), and the rollback then goes on.
            Pause::InChargeUndo => (1, 2),
        };
        let context = format!("{pause:?}: {lines:?}");
        assert_eq!(count(&lines, "do Reserve"), 1, "{context}");
        assert_eq!(count(&lines, "do Charge"), charged, "{context}");
        assert_eq!(count(&lines, "ship failed"), 1, "{context}");
        assert_eq!(
            count(&lines, "undo Charge Charge-id"),
            charge_undone,
            "{context}"
        );
        assert_eq!(count(&lines, "undo Reserve Reserve-id"), 1, "{context}");
        // Charge is always undone before Reserve.
        let last_charge_undo = lines.iter().rposition(|l| l.starts_with("undo Charge"));
        let reserve_undo = lines.iter().position(|l| l.starts_with("undo Reserve"));
        assert!(last_charge_undo < reserve_undo, "{context}");
        // Rolled back: the run's log is cleared.
        let store = SledCheckpointStore::open(dir.path().join("db")).unwrap();
        let rows = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(store.load(RunId::from(RUN)))
            .unwrap();
        assert!(rows.is_empty(), "{context}: {rows:?}");
    }
}
