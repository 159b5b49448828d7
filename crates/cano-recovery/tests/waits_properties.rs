//! Property: whatever the interleaving of signals and crashes (a store that dies after
//! any number of writes, with its last write landing or not), a run consumes every
//! signal exactly once and in the order sent, and ends where the same signals
//! delivered without crashes lead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::SystemTime;

use cano_core::checkpoint::{
    CheckpointRow, CheckpointStore, DurableStore, RunSummary, Sent, Signal, SignalStore,
};
use cano_core::wait::Wait;
use cano_core::{
    CanoError, Retention, RowKind, RunId, RunOptions, RunStatus, Task, TaskResult, Workflow,
};
use cano_recovery::MemoryCheckpointStore;
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Tally {
    Idle,
    Add(u8),
    Done,
}

/// Adds its number to the run's durable tally, in order.
struct Add(u8);

#[async_trait::async_trait]
impl Task<Tally> for Add {
    async fn run_bare(&self) -> Result<TaskResult<Tally>, CanoError> {
        DurableStore::current()?.update("seen", |seen: Option<Vec<u8>>| {
            let mut seen = seen.unwrap_or_default();
            seen.push(self.0);
            seen
        })?;
        Ok(TaskResult::Single(Tally::Idle))
    }
}

fn tally(store: impl CheckpointStore) -> Workflow<Tally> {
    let mut wf = Workflow::bare()
        .register_wait(
            Tally::Idle,
            Wait::new()
                .on("add", Tally::Add)
                .on("stop", |(): ()| Tally::Done)
                .sent_by("the test"),
        )
        .add_exit_state(Tally::Done)
        .with_checkpoint_store(store)
        .with_workflow_id("tally")
        .with_retention(Retention::KeepFinished)
        .with_compaction(10_000);
    for n in 0..4 {
        wf = wf.register(Tally::Add(n), Add(n));
    }
    wf
}

/// A store that dies after `budget` more writes: the write that reaches the limit
/// lands or not (`lands`), then every call fails, as in a process that crashed.
struct Crashy {
    inner: MemoryCheckpointStore,
    budget: AtomicI64,
    lands: AtomicBool,
}

impl Crashy {
    fn write(&self) -> Result<bool, CanoError> {
        match self.budget.fetch_sub(1, Ordering::SeqCst) {
            n if n > 0 => Ok(true),
            0 => Ok(false),
            _ => Err(CanoError::store("crashed")),
        }
    }
    fn read(&self) -> Result<(), CanoError> {
        if self.budget.load(Ordering::SeqCst) < 0 {
            return Err(CanoError::store("crashed"));
        }
        Ok(())
    }
    async fn written<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, CanoError>>,
    ) -> Result<T, CanoError> {
        if self.write()? {
            return op.await;
        }
        if self.lands.load(Ordering::SeqCst) {
            op.await?;
        }
        Err(CanoError::store("crashed during the write"))
    }
}

#[async_trait::async_trait]
impl CheckpointStore for Crashy {
    async fn append(&self, row: CheckpointRow) -> Result<(), CanoError> {
        self.written(self.inner.append(row)).await
    }
    async fn load(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError> {
        self.read()?;
        self.inner.load(run).await
    }
    async fn truncate(&self, run: RunId, before: u64) -> Result<(), CanoError> {
        self.written(self.inner.truncate(run, before)).await
    }
    async fn clear(&self, run: RunId) -> Result<(), CanoError> {
        self.written(self.inner.clear(run)).await
    }
    async fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError> {
        self.read()?;
        self.inner.unfinished().await
    }
    async fn prune(&self, older_than: SystemTime) -> Result<usize, CanoError> {
        self.written(self.inner.prune(older_than)).await
    }
    fn signals(&self) -> Option<&dyn SignalStore> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl SignalStore for Crashy {
    async fn send(
        &self,
        run: RunId,
        name: &str,
        payload: Vec<u8>,
        key: Option<&str>,
    ) -> Result<Sent, CanoError> {
        self.inner.send(run, name, payload, key).await
    }
    async fn first_for(&self, run: RunId, names: &[String]) -> Result<Option<Signal>, CanoError> {
        self.read()?;
        self.inner.first_for(run, names).await
    }
    async fn inbox(&self, run: RunId, limit: usize) -> Result<Vec<Signal>, CanoError> {
        self.read()?;
        self.inner.inbox(run, limit).await
    }
    async fn append_taking(&self, row: CheckpointRow, signal: u64) -> Result<(), CanoError> {
        self.written(self.inner.append_taking(row, signal)).await
    }
    async fn discard(&self, run: RunId, signal: u64) -> Result<bool, CanoError> {
        self.written(self.inner.discard(run, signal)).await
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Another process sends `add(n)`.
    Send(u8),
    /// The serving process runs a recovery pass with a store that dies after `budget`
    /// writes (its last write landing or not).
    Drive { budget: i64, lands: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4).prop_map(Op::Send),
        (0i64..8, any::<bool>()).prop_map(|(budget, lands)| Op::Drive { budget, lands }),
    ]
}

/// One process's pass over the store: resumes what was interrupted and wakes what is
/// runnable, until its store dies or nothing is left to do.
async fn drive(inner: &MemoryCheckpointStore, budget: i64, lands: bool) {
    let wf = tally(Arc::new(Crashy {
        inner: inner.clone(),
        budget: AtomicI64::new(budget),
        lands: AtomicBool::new(lands),
    }));
    for _ in 0..64 {
        let Ok(resumed) = wf.resume_interrupted().await else {
            return;
        };
        let Ok(woken) = wf.wake_parked().await else {
            return;
        };
        if resumed.is_empty() && woken.is_empty() {
            return;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_signal_is_consumed_once_in_order_whatever_crashes(ops in prop::collection::vec(op(), 0..24)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let inner = MemoryCheckpointStore::new();
            let sender = tally(inner.clone());
            let run = RunId::from(1);
            let parked = sender
                .orchestrate_with(Tally::Idle, RunOptions::new().with_run_id(run))
                .await
                .unwrap_err();
            prop_assert!(parked.is_parked(), "{}", parked);
            let mut sent = Vec::new();
            for op in ops {
                match op {
                    Op::Send(n) => {
                        sender.signal(run, "add", &n).await.unwrap();
                        sent.push(n);
                    }
                    Op::Drive { budget, lands } => drive(&inner, budget, lands).await,
                }
            }
            sender.signal(run, "stop", &()).await.unwrap();
            // A process whose store works now finishes the run; a failed run (none is
            // expected: a crashed store writes no Fail row) would be resumed by hand.
            for _ in 0..8 {
                drive(&inner, i64::MAX, true).await;
                let view = sender.query(run).await.unwrap();
                match view.status {
                    RunStatus::Finished => break,
                    RunStatus::Failed => {
                        let _ = sender.resume_from(run).await;
                    }
                    _ => {}
                }
            }
            let view = sender.query(run).await.unwrap();
            prop_assert_eq!(view.status, RunStatus::Finished);
            prop_assert_eq!(view.state, Tally::Done);
            let seen: Vec<u8> = view.durable.get_opt("seen").unwrap().unwrap_or_default();
            prop_assert_eq!(&seen, &sent, "consumed in the order sent, each once");
            let received = inner
                .rows()
                .iter()
                .filter(|r| r.kind == RowKind::Received)
                .count();
            prop_assert_eq!(received, sent.len() + 1, "one Received row per signal");
            prop_assert!(view.inbox.is_empty());
            Ok(())
        })?;
    }
}
