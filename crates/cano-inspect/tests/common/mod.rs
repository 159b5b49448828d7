//! What the inspector's tests inspect: real workflows run against a real store, one
//! run in each status, and the `cano` binary run as a user runs it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
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

/// One HTTP/1.1 request, the answer's status and body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    // Read the head, then as much body as it announces: a server may keep the
    // connection open whatever the request asked (chromedriver does).
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let split = loop {
        if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "{addr} closed the connection before its answer's head"
        );
        answer.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = answer[split + 4..].to_vec();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let complete = match length {
            Some(length) => body.len() >= length,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    if chunked {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&body[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
}
