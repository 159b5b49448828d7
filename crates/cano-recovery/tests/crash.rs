//! Crash recovery with real processes: a child process (this test binary, re-run in
//! child mode) drives checkpointed runs on sled and records every task it runs in a
//! ledger file; the parent kills it with SIGKILL at seeded random points, starts it
//! again (it resumes what was interrupted), and finally checks the ledger and the
//! checkpoint logs against what an uninterrupted run does. It does so for each
//! durability mode, with a log compacted every few rows, and with a store that fails
//! one append and then recovers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use cano_core::checkpoint::{CheckpointRow, DurableStore, RunSummary, replay};
use cano_core::{
    CanoError, CheckpointStore, Retention, RowKind, RunId, RunObserver, RunOptions, Task,
    TaskResult, Workflow,
};
use cano_recovery::{Durability, SledCheckpointStore};

const RUNS: u64 = 4;
const STAGES: u8 = 10;
const CHILD_DIR: &str = "CANO_CRASH_CHILD_DIR";
const CHILD_MODE: &str = "CANO_CRASH_CHILD_MODE";
const CHILD_SETUP: &str = "CANO_CRASH_CHILD_SETUP";
/// Lines the child prints for the parent to count; everything else is the harness.
const MARK: &str = "@@";

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Stage {
    At(u8),
    Done,
}

fn ledger_line(dir: &Path, line: &str) {
    // One write per line on an O_APPEND file: whole lines, even when killed.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("ledger"))
        .unwrap();
    file.write_all(format!("{line}\n").as_bytes()).unwrap();
}

fn mark(event: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{MARK} {event}");
    let _ = out.flush();
}

struct Hop {
    stage: u8,
    dir: Arc<Path>,
}

#[async_trait::async_trait]
impl Task<Stage> for Hop {
    async fn run_bare(&self) -> Result<TaskResult<Stage>, CanoError> {
        let run = cano_core::RunContext::current().unwrap().run_id();
        ledger_line(&self.dir, &format!("start {run} {}", self.stage));
        mark("task");
        // Some work, so that kills also land inside tasks.
        tokio::time::sleep(Duration::from_micros(300)).await;
        let durable = DurableStore::current()?;
        durable.update("visited", |v: Option<Vec<u8>>| {
            let mut v = v.unwrap_or_default();
            v.push(self.stage);
            v
        })?;
        durable.update("sum", |s: Option<u64>| {
            s.unwrap_or(0) + u64::from(self.stage)
        })?;
        ledger_line(&self.dir, &format!("end {run} {}", self.stage));
        mark("task-end");
        Ok(TaskResult::Single(if self.stage + 1 == STAGES {
            Stage::Done
        } else {
            Stage::At(self.stage + 1)
        }))
    }
}

/// Tells the parent a state is entered: its row is being written (and flushed).
struct Marks;
impl RunObserver for Marks {
    fn state_entered(&self, _: RunId, _: &dyn std::fmt::Debug) {
        mark("enter");
    }
}

/// How a trial's children run their store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// Group commit, a log never compacted.
    GroupCommit,
    /// A sync per row, a snapshot every 3 rows (compaction under crash).
    EveryRow,
    /// Rows synced every 20 ms: a kill may lose the rows of the last interval.
    Periodic,
    /// Group commit, each child's 7th append fails once (the store recovers).
    FailsOnce,
}

impl Setup {
    const ALL: [Setup; 4] = [
        Setup::GroupCommit,
        Setup::EveryRow,
        Setup::Periodic,
        Setup::FailsOnce,
    ];

    fn from_env() -> Self {
        let name = std::env::var(CHILD_SETUP).unwrap_or_default();
        Self::ALL
            .into_iter()
            .find(|s| format!("{s:?}") == name)
            .unwrap_or(Setup::GroupCommit)
    }

    fn durability(self) -> Durability {
        match self {
            Setup::EveryRow => Durability::EveryRow,
            Setup::Periodic => Durability::Periodic(Duration::from_millis(20)),
            Setup::GroupCommit | Setup::FailsOnce => Durability::GroupCommit,
        }
    }

    fn compaction(self) -> u32 {
        match self {
            Setup::EveryRow | Setup::Periodic => 3,
            Setup::GroupCommit | Setup::FailsOnce => 1_000,
        }
    }
}

/// The sled store, failing its `fail_at`-th append once (like a disk full for a moment).
struct FailsOnce {
    inner: SledCheckpointStore,
    appends: AtomicUsize,
    fail_at: Option<usize>,
}

#[async_trait::async_trait]
impl CheckpointStore for FailsOnce {
    async fn append(&self, row: CheckpointRow) -> Result<(), CanoError> {
        let n = self.appends.fetch_add(1, Ordering::SeqCst);
        if Some(n) == self.fail_at {
            mark("injected-failure");
            return Err(CanoError::store("injected: No space left on device"));
        }
        self.inner.append(row).await
    }
    async fn load(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError> {
        self.inner.load(run).await
    }
    async fn truncate(&self, run: RunId, before: u64) -> Result<(), CanoError> {
        self.inner.truncate(run, before).await
    }
    async fn clear(&self, run: RunId) -> Result<(), CanoError> {
        self.inner.clear(run).await
    }
    async fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError> {
        self.inner.unfinished().await
    }
    async fn prune(&self, older_than: std::time::SystemTime) -> Result<usize, CanoError> {
        self.inner.prune(older_than).await
    }
}

fn workflow(dir: &Path, store: Arc<FailsOnce>, setup: Setup) -> Workflow<Stage> {
    let dir: Arc<Path> = dir.into();
    (0..STAGES)
        .fold(Workflow::bare(), |w, stage| {
            w.register(
                Stage::At(stage),
                Hop {
                    stage,
                    dir: dir.clone(),
                },
            )
        })
        .add_exit_state(Stage::Done)
        .with_shared_checkpoint_store(store)
        .with_workflow_id("crash-test")
        .with_retention(Retention::KeepFinished)
        .with_compaction(setup.compaction())
        .with_observer(Arc::new(Marks))
}

/// The child: start the runs that have no rows, resume those interrupted, skip the
/// finished ones, all concurrently. A run that fails (the injected store failure) is
/// resumed again.
async fn child(dir: &Path) {
    let setup = Setup::from_env();
    let sled = SledCheckpointStore::open_with(dir.join("db"), setup.durability()).unwrap();
    let store = Arc::new(FailsOnce {
        inner: sled.clone(),
        appends: AtomicUsize::new(0),
        fail_at: (setup == Setup::FailsOnce).then_some(7),
    });
    let workflow = workflow(dir, store.clone(), setup);
    let mut runs = Vec::new();
    for id in 1..=RUNS {
        let run = RunId::from(id);
        let workflow = workflow.clone();
        let store = store.clone();
        runs.push(tokio::spawn(async move {
            let mut last = Ok(());
            for _attempt in 0..3 {
                let rows = store.load(run).await.unwrap();
                last = match rows.last().map(|r| r.kind) {
                    None => workflow
                        .orchestrate_with(Stage::At(0), RunOptions::new().with_run_id(run))
                        .await
                        .map(drop),
                    Some(RowKind::Finish) => Ok(()),
                    Some(_) => workflow.resume_from(run).await.map(drop),
                };
                if last.is_ok() {
                    break;
                }
            }
            last
        }));
    }
    for run in runs {
        run.await.unwrap().unwrap();
    }
    // Periodic mode: what the last interval wrote is put on disk before the end.
    sled.close().await.unwrap();
    mark("all-done");
}

/// Entry point of the child process; a no-op when run as an ordinary test.
#[test]
fn child_entry() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match std::env::var(CHILD_MODE).as_deref() {
        Ok("open") => match SledCheckpointStore::open(dir.join("db")) {
            Ok(_) => mark("opened"),
            Err(e) => mark(&format!("refused {e}")),
        },
        _ => runtime.block_on(child(dir)),
    }
}

fn spawn_child(dir: &Path, mode: &str, setup: Setup) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_MODE, mode)
        .env(CHILD_SETUP, format!("{setup:?}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The child's event on a line of its output (the test harness may print before it).
fn event(line: &str) -> Option<&str> {
    line.find(MARK).map(|at| line[at + MARK.len()..].trim())
}

/// Runs a child to its end, or kills it (SIGKILL) once it has printed `kill_after`
/// events. Returns the event it was killed after, if it was.
fn run_child(dir: &Path, setup: Setup, kill_after: Option<usize>) -> Option<String> {
    let mut child = spawn_child(dir, "run", setup);
    let stdout = child.stdout.take().unwrap();
    let mut events = 0;
    let mut killed = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Some(name) = event(&line) else { continue };
        events += 1;
        if Some(events) == kill_after {
            child.kill().unwrap(); // SIGKILL on Unix
            killed = Some(name.to_owned());
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed.is_some() || status.success(),
        "child failed: {status}"
    );
    killed
}

/// A small seeded generator (xorshift64*), so every trial can be replayed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Events one uninterrupted child prints: per run and stage an enter, a task start and
/// a task end, and the final line.
const EVENTS: u64 = RUNS * STAGES as u64 * 3 + 1;

#[test]
fn sigkill_at_random_points_then_resume() {
    const TRIALS: u64 = 16;
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    for setup in Setup::ALL {
        // Where the kills landed: right after a state was entered (its row being
        // written and flushed), inside a task, or between a task's end and the next
        // state.
        let mut kills: BTreeMap<String, usize> = BTreeMap::new();
        for trial in 0..TRIALS {
            let dir = tempfile::tempdir().unwrap();
            for _ in 0..1 + rng.below(3) {
                let kill_after = 1 + rng.below(EVENTS - 1) as usize;
                if let Some(event) = run_child(dir.path(), setup, Some(kill_after)) {
                    *kills.entry(event).or_default() += 1;
                }
            }
            assert!(
                run_child(dir.path(), setup, None).is_none(),
                "{setup:?}: the last child runs to its end"
            );
            check(dir.path(), setup, trial);
        }
        eprintln!("{setup:?}: kills after each kind of event: {kills:?}");
        let total: usize = kills.values().sum();
        assert!(
            total as u64 >= TRIALS,
            "{setup:?}: {total} kills in {TRIALS} trials"
        );
        for kind in ["enter", "task", "task-end"] {
            assert!(
                kills.get(kind).is_some_and(|&n| n > 0),
                "{setup:?}: no kill after {kind}: {kills:?}"
            );
        }
    }
}

/// Every run ended in its exit state and entered each stage once, in order, in the
/// rows it kept; no row is missing or repeated; the durable data is that of an
/// uninterrupted run. Where every acknowledged row is on disk, a stage ran more than
/// once only right after itself and at most once per resume.
fn check(dir: &Path, setup: Setup, trial: u64) {
    let ledger = std::fs::read_to_string(dir.join("ledger")).unwrap_or_default();
    let mut starts: BTreeMap<RunId, Vec<u8>> = BTreeMap::new();
    for line in ledger.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        if parts[0] == "start" {
            let run: RunId = parts[1].parse().unwrap();
            starts
                .entry(run)
                .or_default()
                .push(parts[2].parse().unwrap());
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = SledCheckpointStore::open(dir.join("db")).unwrap();
    for id in 1..=RUNS {
        let run = RunId::from(id);
        let rows = runtime.block_on(store.load(run)).unwrap();
        let kinds: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{} {:?} {}{}",
                    r.seq,
                    r.kind,
                    r.label,
                    if r.data.full { " (full)" } else { "" }
                )
            })
            .collect();
        let context = format!("{setup:?}, trial {trial}, run {run}, rows {kinds:?}");
        let last = rows.last().unwrap_or_else(|| panic!("{context}: no rows"));
        assert_eq!(last.kind, RowKind::Finish, "{context}");
        assert_eq!(last.label, "Done", "{context}");
        let first = rows[0].seq;
        assert!(
            first == 0 || rows[0].data.full,
            "{context}: a compacted log starts with a snapshot"
        );
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(
                row.seq,
                first + i as u64,
                "{context}: rows numbered without gaps"
            );
        }
        let entered: Vec<&str> = rows
            .iter()
            .filter(|r| {
                matches!(r.kind, RowKind::Enter) || (r.kind == RowKind::Fail && r.data.full)
            })
            .map(|r| r.label.as_str())
            .collect();
        let expected: Vec<String> = (0..STAGES).map(|s| format!("At({s})")).collect();
        assert!(
            expected.ends_with(&entered.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
            "{context}: each state entered once, in order: {entered:?}"
        );
        if first == 0 {
            assert_eq!(entered.len(), usize::from(STAGES), "{context}: {entered:?}");
        }
        let resumes = rows.iter().filter(|r| r.kind == RowKind::Resume).count();

        let ran = &starts[&run];
        let mut distinct = ran.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct,
            (0..STAGES).collect::<Vec<_>>(),
            "{context}: every stage ran: {ran:?}"
        );
        if setup != Setup::Periodic {
            let mut consecutive = ran.clone();
            consecutive.dedup();
            assert_eq!(
                consecutive,
                (0..STAGES).collect::<Vec<_>>(),
                "{context}: no stage ran after a later one: {ran:?}"
            );
            // (Compaction drops Resume rows with the rows before a snapshot.)
            let repeats = ran.len() - consecutive.len();
            assert!(
                repeats <= resumes || first > 0,
                "{context}: {repeats} repeated tasks but {resumes} resumes ({ran:?})"
            );
        }

        let point = replay(run, &rows, "crash-test", 1).unwrap();
        let visited: Vec<u8> = point.durable.get("visited").unwrap();
        assert_eq!(visited, (0..STAGES).collect::<Vec<_>>(), "{context}");
        let sum: u64 = point.durable.get("sum").unwrap();
        assert_eq!(sum, (0..u64::from(STAGES)).sum::<u64>(), "{context}");
    }
}

#[test]
fn a_second_process_cannot_open_a_store_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _store = SledCheckpointStore::open(dir.path().join("db")).unwrap();
    let child = spawn_child(dir.path(), "open", Setup::GroupCommit);
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let answer = text
        .lines()
        .find_map(event)
        .unwrap_or_else(|| panic!("no answer from the child: {text}"));
    assert!(
        answer.starts_with("refused Store error: could not open the sled checkpoint store"),
        "{answer}"
    );
}
