//! What the inspector's tests inspect: real workflows run against a real store, one
//! run in each status, and the `cano` binary run as a user runs it.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use cano_core::checkpoint::{CheckpointStore, Retention};
use cano_core::wait::Wait;
use cano_core::{CanoError, DurableStore, RunId, RunOptions, Task, TaskResult, Workflow};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Invoice {
    Draft,
    Approve,
    Send,
    Sent,
    Voided,
}

/// Writes the invoice's data, then moves on to approval.
struct Draft;
#[async_trait::async_trait]
impl Task<Invoice> for Draft {
    async fn run_bare(&self) -> Result<TaskResult<Invoice>, CanoError> {
        let data = DurableStore::current()?;
        data.put("customer", "ada@example.com")?;
        data.put("amount_cents", &125_000u64)?;
        Ok(TaskResult::Single(Invoice::Approve))
    }
}

/// Sends the invoice: fails for an address without `@`, blocks for `hang@...`
/// (after telling the test it started), succeeds otherwise.
struct SendIt {
    to: String,
    started: Option<Arc<tokio::sync::Notify>>,
}
#[async_trait::async_trait]
impl Task<Invoice> for SendIt {
    async fn run_bare(&self) -> Result<TaskResult<Invoice>, CanoError> {
        let to = self.to.clone();
        DurableStore::current()?.put("send_to", &to)?;
        if to.starts_with("hang@") {
            if let Some(started) = &self.started {
                started.notify_one();
            }
            std::future::pending::<()>().await;
        }
        if !to.contains('@') {
            return Err(
                CanoError::task_execution(format!("mail server refused address {to:?}"))
                    .permanent(),
            );
        }
        Ok(TaskResult::Single(Invoice::Sent))
    }
}

/// The invoice workflow: Draft, a wait for the `approval` signal, then Send (to
/// `to`), which runs start in directly to skip the wait.
pub fn invoices(
    store: Arc<dyn CheckpointStore>,
    to: &str,
    started: Option<Arc<tokio::sync::Notify>>,
) -> Workflow<Invoice> {
    Workflow::bare()
        .register(Invoice::Draft, Draft)
        .register_wait(
            Invoice::Approve,
            Wait::new()
                .on(
                    "approval",
                    |ok: bool| {
                        if ok { Invoice::Send } else { Invoice::Voided }
                    },
                )
                .leading_to([Invoice::Send, Invoice::Voided])
                .timeout(Duration::from_secs(3600), Invoice::Voided),
        )
        .register(
            Invoice::Send,
            SendIt {
                to: to.to_owned(),
                started,
            },
        )
        .add_exit_states([Invoice::Sent, Invoice::Voided])
        .with_shared_checkpoint_store(store)
        .with_workflow_id("invoice")
        .with_workflow_version(3)
        .with_retention(Retention::KeepFinished)
}

/// One run in each status the store can hold.
#[derive(Debug, Clone, Copy)]
pub struct Runs {
    pub finished: RunId,
    pub failed: RunId,
    pub interrupted: RunId,
    pub parked: RunId,
}

/// Runs the invoice workflow once per status: sent, refused by the mail server,
/// stopped while sending (its task dropped mid-run, as a killed process leaves it),
/// and parked waiting for approval.
pub async fn fill(store: Arc<dyn CheckpointStore>) -> Runs {
    let run_in = |state: Invoice, to: &str, started: Option<Arc<tokio::sync::Notify>>| {
        let workflow = invoices(store.clone(), to, started);
        let run = RunId::new();
        let handle = tokio::spawn(async move {
            workflow
                .orchestrate_with(state, RunOptions::new().with_run_id(run))
                .await
        });
        (run, handle)
    };
    let (finished, h) = run_in(Invoice::Send, "bob@example.com", None);
    h.await.unwrap().unwrap();
    let (failed, h) = run_in(Invoice::Send, "nobody", None);
    assert!(h.await.unwrap().is_err());
    let started = Arc::new(tokio::sync::Notify::new());
    let (interrupted, h) = run_in(Invoice::Send, "hang@example.com", Some(started.clone()));
    started.notified().await;
    h.abort();
    let _ = h.await;
    let (parked, h) = run_in(Invoice::Draft, "ada@example.com", None);
    let parked_result = h.await.unwrap();
    assert!(
        matches!(parked_result, Err(ref e) if e.is_parked()),
        "{parked_result:?}"
    );
    Runs {
        finished,
        failed,
        interrupted,
        parked,
    }
}

/// Runs `cano` with `args` against `store`.
pub fn cano(store: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cano"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("CANO_STORE")
        .output()
        .expect("the cano binary runs")
}

/// Its standard output, once it exited 0.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "cano failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Its standard error, once it exited non-zero.
pub fn failed(output: Output) -> String {
    assert!(
        !output.status.success(),
        "cano should have failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

/// The JSON `cano ... --json` printed.
pub fn json(output: Output) -> serde_json::Value {
    serde_json::from_str(&ok(output)).expect("cano printed JSON")
}

/// The sled spec of `dir`.
pub fn sled(dir: &Path) -> String {
    format!("sled:{}", dir.display())
}
