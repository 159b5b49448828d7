//! Crash recovery for real: this example starts itself as a child process that runs a
//! nightly import on a sled checkpoint store and dies (`abort`, as a crash or an OOM
//! kill would) in the middle of the `Load` state. The parent then opens the same store,
//! finds the interrupted run and resumes it: `Extract` and `Transform` do not run again,
//! and what they saved in the run's durable data is there.
//!
//! Run it with `cargo run --example workflow_recovery`.

use std::time::Duration;

use cano::DurableStore;
use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Import {
    Extract { source: String },
    Transform,
    Load { table: String },
    Done,
}

struct Extract;
#[task]
impl Task<Import> for Extract {
    async fn run_bare(&self) -> Result<TaskResult<Import>, CanoError> {
        println!("  extract: reading 5 rows from the source");
        DurableStore::current()?.put("rows", &vec![3u32, 1, 4, 1, 5])?;
        Ok(TaskResult::Single(Import::Transform))
    }
}

struct Transform;
#[task]
impl Task<Import> for Transform {
    async fn run_bare(&self) -> Result<TaskResult<Import>, CanoError> {
        let data = DurableStore::current()?;
        let rows: Vec<u32> = data.get("rows")?;
        let doubled: Vec<u32> = rows.iter().map(|r| r * 2).collect();
        println!("  transform: {rows:?} -> {doubled:?}");
        data.put("rows", &doubled)?;
        Ok(TaskResult::Single(Import::Load {
            table: "warehouse.facts".into(),
        }))
    }
}

/// Loads the rows; in the child process it crashes half way.
struct Load {
    crash: bool,
}
#[task]
impl Task<Import> for Load {
    async fn run_bare(&self) -> Result<TaskResult<Import>, CanoError> {
        let rows: Vec<u32> = DurableStore::current()?.get("rows")?;
        println!("  load: writing {rows:?}");
        if self.crash {
            tokio::time::sleep(Duration::from_millis(20)).await;
            println!("  load: *** the process dies here ***");
            std::process::abort();
        }
        println!(
            "  load: {} rows written, total {}",
            rows.len(),
            rows.iter().sum::<u32>()
        );
        Ok(TaskResult::Single(Import::Done))
    }
}

fn import(store: SledCheckpointStore, crash: bool) -> Workflow<Import> {
    Workflow::bare()
        .register(
            Import::Extract {
                source: "s3://exports/today.csv".into(),
            },
            Extract,
        )
        .register(Import::Transform, Transform)
        .register(
            Import::Load {
                table: "warehouse.facts".into(),
            },
            Load { crash },
        )
        .add_exit_state(Import::Done)
        .with_checkpoint_store(store)
        .with_workflow_id("nightly-import")
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--child") {
        // The child: start the import and crash in Load.
        let dir = args.next().expect("the store directory");
        let workflow = import(SledCheckpointStore::open(dir)?, true);
        let start = Import::Extract {
            source: "s3://exports/today.csv".into(),
        };
        workflow.orchestrate(start).await?;
        unreachable!("the child aborts in Load");
    }

    let dir = tempfile::tempdir().map_err(|e| CanoError::store("no temp dir").with_source(e))?;
    let path = dir.path().join("checkpoints");
    println!("== A child process runs the import and crashes ==");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--child")
        .arg(&path)
        .status()
        .map_err(|e| CanoError::workflow("could not start the child").with_source(e))?;
    println!("child exited: {status}");

    println!("\n== A new process opens the store and resumes ==");
    let workflow = import(SledCheckpointStore::open(&path)?, false);
    for run in workflow.unfinished_runs().await? {
        println!(
            "found run {} ({:?}), last row {} in {}",
            run.run, run.status, run.last_seq, run.label
        );
    }
    for (run, outcome) in workflow.resume_interrupted().await? {
        println!("run {run} resumed and ended in {:?}", outcome?);
    }
    println!(
        "unfinished runs left: {}",
        workflow.unfinished_runs().await?.len()
    );
    Ok(())
}
