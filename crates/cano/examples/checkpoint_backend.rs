//! Writing your own checkpoint backend: rows kept in one append-only file per run, in
//! the versioned row format of `cano::recovery::codec`. The engine needs nothing more
//! than the six methods of the full store trait, `cano::checkpoint::CheckpointStore`
//! (the prelude's `CheckpointStore` is the simple three-method one of cano 0.13).
//!
//! Run it with `cargo run --example checkpoint_backend`.

use std::path::PathBuf;
use std::time::SystemTime;

use cano::checkpoint::{CheckpointRow, CheckpointStore, RunSummary};
use cano::ext::check_next_seq;
use cano::prelude::*;
use cano::recovery::codec::{decode_row, encode_row};
use cano::{RunId, RunOptions};

/// One file per run: each row is a 4-byte length and the encoded row.
struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    fn file(&self, run: RunId) -> PathBuf {
        self.dir.join(format!("{run}.rows"))
    }

    fn read(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError> {
        let bytes = match std::fs::read(self.file(run)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CanoError::store(format!("cannot read run {run}")).with_source(e)),
        };
        let mut rows = Vec::new();
        let mut rest = bytes.as_slice();
        while rest.len() >= 4 {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            let Some(body) = rest.get(4..4 + len) else {
                break; // a torn write at the end: the row was never acknowledged
            };
            let row = decode_row(body).map_err(|e| {
                CanoError::store(format!("row {} of run {run}: {}", rows.len(), e.message()))
            })?;
            rows.push(row);
            rest = &rest[4 + len..];
        }
        Ok(rows)
    }

    fn write(&self, run: RunId, rows: &[CheckpointRow]) -> Result<(), CanoError> {
        let mut bytes = Vec::new();
        for row in rows {
            let body = encode_row(row)?;
            bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&body);
        }
        std::fs::write(self.file(run), bytes)
            .map_err(|e| CanoError::store(format!("cannot write run {run}")).with_source(e))
    }

    fn runs(&self) -> Result<Vec<RunId>, CanoError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| CanoError::store("cannot list the store").with_source(e))?;
        Ok(entries
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".rows")?
                    .parse()
                    .ok()
            })
            .collect())
    }
}

// A real backend would move this blocking I/O off tokio's workers (spawn_blocking, or
// a writer thread as the sled store does) and fsync; kept plain here for reading.
#[async_trait::async_trait]
impl CheckpointStore for FileStore {
    async fn append(&self, row: CheckpointRow) -> Result<(), CanoError> {
        let mut rows = self.read(row.run)?;
        check_next_seq(row.run, rows.last().map(|r| r.seq), row.seq)?;
        let run = row.run;
        rows.push(row);
        self.write(run, &rows)
    }
    async fn load(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError> {
        self.read(run)
    }
    async fn truncate(&self, run: RunId, before: u64) -> Result<(), CanoError> {
        let mut rows = self.read(run)?;
        rows.retain(|r| r.seq >= before);
        self.write(run, &rows)
    }
    async fn clear(&self, run: RunId) -> Result<(), CanoError> {
        let _ = std::fs::remove_file(self.file(run));
        Ok(())
    }
    async fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError> {
        let mut out = Vec::new();
        for run in self.runs()? {
            if let Some(last) = self.read(run)?.last()
                && !last.kind.ends_run()
            {
                out.push(RunSummary::from_last_row(last));
            }
        }
        Ok(out)
    }
    async fn prune(&self, older_than: SystemTime) -> Result<usize, CanoError> {
        let mut pruned = 0;
        for run in self.runs()? {
            if self
                .read(run)?
                .last()
                .is_some_and(|r| r.written_at() < older_than)
            {
                self.clear(run).await?;
                pruned += 1;
            }
        }
        Ok(pruned)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Report {
    Gather,
    Render { pages: u32 },
    Done,
}

struct Gather;
#[task]
impl Task<Report> for Gather {
    async fn run_bare(&self) -> Result<TaskResult<Report>, CanoError> {
        println!("  gather: 12 pages of figures");
        Ok(TaskResult::Single(Report::Render { pages: 12 }))
    }
}

struct Render {
    fail_once: std::sync::atomic::AtomicBool,
}
#[task]
impl Task<Report> for Render {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Report>, CanoError> {
        if self
            .fail_once
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            println!("  render: the PDF service is down");
            return Err(CanoError::task_execution("PDF service unavailable"));
        }
        println!("  render: done");
        Ok(TaskResult::Single(Report::Done))
    }
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let dir = tempfile::tempdir().map_err(|e| CanoError::store("no temp dir").with_source(e))?;
    let workflow = Workflow::bare()
        .register(Report::Gather, Gather)
        .register(
            Report::Render { pages: 12 },
            Render {
                fail_once: true.into(),
            },
        )
        .add_exit_state(Report::Done)
        .with_checkpoint_store(FileStore {
            dir: dir.path().to_path_buf(),
        });

    let run = RunId::new();
    let first = workflow
        .orchestrate_with(Report::Gather, RunOptions::new().with_run_id(run))
        .await;
    println!("first attempt: {}", first.unwrap_err());
    for summary in workflow.unfinished_runs().await? {
        println!(
            "in the file store: run {} {:?} at row {} ({})",
            summary.run, summary.status, summary.last_seq, summary.label
        );
    }
    println!("resumed: {:?}", workflow.resume_from(run).await?);
    Ok(())
}
