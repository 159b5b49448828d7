//! Human in the loop: an AI agent plans a purchase, then parks its run waiting for a
//! person's approval, with a deadline. While it waits the run is one row on disk: the
//! process can stop, and a later one finishes the purchase once the approval is sent.
//!
//! Run with no arguments, it tells the whole story by starting itself as child
//! processes on a fresh embedded (sled) store:
//!
//! 1. `start` plans three purchases; each run parks at `AwaitApproval`. The process is
//!    then killed (SIGKILL) while the runs wait.
//! 2. `approve agent-1` and `reject agent-2`, each a process of its own, send the
//!    person's answers to the store.
//! 3. `serve` opens the store and serves the waits: agent-1 buys, agent-2 stops, and
//!    agent-3, whose approval window was one second, expires.
//!
//! Or drive it by hand (the store is in the system temp directory, or `CANO_AGENT_DIR`):
//!
//! ```text
//! cargo run --example agent_approval -- start
//! cargo run --example agent_approval -- approve agent-1
//! cargo run --example agent_approval -- status agent-1
//! cargo run --example agent_approval -- serve
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cano::prelude::*;
use cano::wait::{self, Wait};
use cano::{
    CancellationToken, Durability, DurableStore, RunContext, RunId, RunObserver, RunOptions,
};

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Purchase {
    Plan,
    AwaitApproval,
    Buy,
    Bought,
    Rejected,
    Expired,
}

/// What the person sends.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Approval {
    approved: bool,
    by: String,
}

/// The three requests of the story: (run name, item, price, approval window).
const REQUESTS: [(&str, &str, u32, Duration); 3] = [
    ("agent-1", "GPU hours", 420, Duration::from_secs(120)),
    (
        "agent-2",
        "conference tickets",
        1900,
        Duration::from_secs(120),
    ),
    ("agent-3", "a domain name", 12, Duration::from_secs(1)),
];

/// The agent's planning step: finds its run's request, picks a vendor, saves the plan
/// in the run's durable data, and sets how long the person has to answer.
struct PlanPurchase;
#[task]
impl Task<Purchase> for PlanPurchase {
    async fn run_bare(&self) -> Result<TaskResult<Purchase>, CanoError> {
        let run = RunContext::current()
            .ok_or_else(|| CanoError::workflow("planning outside a run"))?
            .run_id();
        let (name, item, price, window) = REQUESTS
            .into_iter()
            .find(|(name, ..)| RunId::named(name) == run)
            .ok_or_else(|| CanoError::workflow(format!("no request for run {run}")))?;
        let vendor = if price > 1000 {
            "BigVendor"
        } else {
            "QuickShop"
        };
        let data = DurableStore::current()?;
        data.put("item", &item)?;
        data.put("vendor", &vendor)?;
        println!(
            "  {name}: buy {item} from {vendor} for ${price}; a person has {window:?} to answer"
        );
        wait::wake_after(window)?;
        Ok(TaskResult::Single(Purchase::AwaitApproval))
    }
}

/// Spends the money: runs only after an approval.
struct BuyIt;
#[task]
impl Task<Purchase> for BuyIt {
    async fn run_bare(&self) -> Result<TaskResult<Purchase>, CanoError> {
        let data = DurableStore::current()?;
        let (item, vendor): (String, String) = (data.get("item")?, data.get("vendor")?);
        println!("  buy: ordered {item} from {vendor}");
        data.put("receipt", &format!("{vendor}/{item}"))?;
        Ok(TaskResult::Single(Purchase::Bought))
    }
}

fn purchase(store: SledCheckpointStore) -> Workflow<Purchase> {
    Workflow::bare()
        .register(Purchase::Plan, PlanPurchase)
        .register_wait(
            Purchase::AwaitApproval,
            Wait::new()
                .on("approval", |a: Approval| {
                    if a.approved {
                        Purchase::Buy
                    } else {
                        Purchase::Rejected
                    }
                })
                .leading_to([Purchase::Buy, Purchase::Rejected])
                // The default window; the plan sets each run's own with `wake_after`.
                .timeout(Duration::from_secs(120), Purchase::Expired)
                .sent_by("a person, through `agent_approval approve|reject <run>`"),
        )
        .register(Purchase::Buy, BuyIt)
        .add_exit_states([Purchase::Bought, Purchase::Rejected, Purchase::Expired])
        .with_checkpoint_store(store)
        .with_workflow_id("agent-purchase")
}

/// Counts runs that ended, so `serve` knows when the story is over.
struct Ended(AtomicUsize, tokio::sync::Notify);
impl RunObserver for Ended {
    fn run_ended(&self, run: RunId, outcome: Result<&dyn std::fmt::Debug, &CanoError>) {
        if let Ok(exit) = outcome {
            println!("  run {run} ended in {exit:?}");
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.notify_one();
        }
    }
}

fn store_dir() -> PathBuf {
    std::env::var_os("CANO_AGENT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("cano-agent-approval"))
}

async fn open(dir: &Path) -> Result<SledCheckpointStore, CanoError> {
    SledCheckpointStore::open_async(dir, Durability::GroupCommit).await
}

/// Plans every request; each run parks at its approval. Then serves the waits until
/// killed, as a long-running agent service would.
async fn start(dir: &Path) -> Result<(), CanoError> {
    let workflow = purchase(open(dir).await?);
    for (name, ..) in REQUESTS {
        let options = RunOptions::new().with_run_id(RunId::named(name));
        match workflow.orchestrate_with(Purchase::Plan, options).await {
            Err(e) if e.is_parked() => println!("@@ parked {name}"),
            other => println!("  {name}: unexpected {other:?}"),
        }
    }
    // Waiting for answers (this process is killed here in the story).
    workflow.serve_waits(CancellationToken::new()).await
}

async fn answer(dir: &Path, run: &str, approved: bool) -> Result<(), CanoError> {
    let workflow = purchase(open(dir).await?);
    let approval = Approval {
        approved,
        by: "ada@example.com".into(),
    };
    // The key makes a double click one answer.
    let sent = workflow
        .signal_once(
            RunId::named(run),
            "approval",
            &approval,
            &format!("{run}-answer"),
        )
        .await?;
    println!("@@ sent {run} {sent:?}");
    Ok(())
}

async fn status(dir: &Path, run: &str) -> Result<(), CanoError> {
    let workflow = purchase(open(dir).await?);
    let view = workflow.query(RunId::named(run)).await?;
    let waiting = match &view.waiting {
        Some(w) => {
            let left = w.deadline.map(|at| {
                at.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
            });
            format!("waiting for {:?}, {left:?} left", w.signals)
        }
        None => "not waiting".to_owned(),
    };
    println!(
        "  {run}: {:?} in {:?}, {waiting}; vendor {}",
        view.status,
        view.state,
        view.durable
            .get_opt::<String>("vendor")?
            .unwrap_or_default()
    );
    Ok(())
}

/// Serves the waits until every run of the story has ended.
async fn serve(dir: &Path, runs: usize) -> Result<(), CanoError> {
    let ended = Arc::new(Ended(AtomicUsize::new(0), tokio::sync::Notify::new()));
    let workflow = purchase(open(dir).await?).with_observer(ended.clone());
    let token = CancellationToken::new();
    let serving = tokio::spawn({
        let (workflow, token) = (workflow.clone(), token.clone());
        async move { workflow.serve_waits(token).await }
    });
    while ended.0.load(Ordering::SeqCst) < runs {
        ended.1.notified().await;
    }
    token.cancel();
    serving
        .await
        .map_err(|e| CanoError::workflow("the wait server panicked").with_source(e))??;
    println!("@@ served {runs}");
    Ok(())
}

/// Runs this example again as a child process with `args`; returns its output.
fn child(dir: &Path, args: &[&str]) -> Result<std::process::Child, CanoError> {
    Command::new(std::env::current_exe().map_err(|e| CanoError::generic(e.to_string()))?)
        .args(args)
        .env("CANO_AGENT_DIR", dir)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| CanoError::workflow("could not start a child process").with_source(e))
}

fn finish(child: std::process::Child) -> Result<String, CanoError> {
    let output = child
        .wait_with_output()
        .map_err(|e| CanoError::workflow("a child process failed").with_source(e))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{text}");
    if !output.status.success() {
        return Err(CanoError::workflow(format!(
            "a child process failed: {}",
            output.status
        )));
    }
    Ok(text)
}

/// The whole story, each step a process of its own.
fn story() -> Result<(), CanoError> {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().map_err(|e| CanoError::store("no temp dir").with_source(e))?;
    let path = dir.path().join("store");

    println!("== 1. The agent plans three purchases; each run parks for approval ==");
    let mut agent = child(&path, &["start"])?;
    let out = agent.stdout.take().expect("piped");
    let mut parked = 0;
    for line in BufReader::new(out).lines() {
        let line = line.map_err(|e| CanoError::generic(e.to_string()))?;
        println!("{line}");
        if line.starts_with("@@ parked") {
            parked += 1;
            if parked == REQUESTS.len() {
                break;
            }
        }
    }
    // SIGKILL: nothing of the parked runs lives in memory anyway.
    agent
        .kill()
        .map_err(|e| CanoError::generic(e.to_string()))?;
    let _ = agent.wait();
    println!("  (the agent process was killed while the runs waited)");

    println!("\n== 2. A person answers, from other processes ==");
    finish(child(&path, &["approve", "agent-1"])?)?;
    finish(child(&path, &["reject", "agent-2"])?)?;
    finish(child(&path, &["status", "agent-3"])?)?;

    println!("\n== 3. The agent restarts and serves its waits ==");
    let served = finish(child(&path, &["serve", "3"])?)?;
    if !served.contains("@@ served 3") {
        return Err(CanoError::workflow(
            "the restarted agent did not end every run",
        ));
    }
    println!(
        "\nagent-1 bought, agent-2 was rejected, agent-3 expired: every run went on exactly once."
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = store_dir();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => tokio::task::spawn_blocking(story)
            .await
            .map_err(|e| CanoError::generic(e.to_string()))?,
        ["start"] => start(&dir).await,
        ["approve", run] => answer(&dir, run, true).await,
        ["reject", run] => answer(&dir, run, false).await,
        ["status", run] => status(&dir, run).await,
        ["serve"] => serve(&dir, usize::MAX).await,
        ["serve", runs] => serve(&dir, runs.parse().unwrap_or(usize::MAX)).await,
        _ => Err(CanoError::configuration(
            "usage: agent_approval [start | approve <run> | reject <run> | status <run> | serve [runs]]",
        )),
    }
}
