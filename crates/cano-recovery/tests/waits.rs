//! Durable waits on the in-memory and sled stores: signals sent before, during and
//! after a wait, twice with one key, with payloads no handler reads, to runs that
//! cannot take them; deadlines; a store that fails the row that takes a signal, before
//! or after writing it; and what validation and the drawings say of a wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cano_core::checkpoint::{
    CheckpointRow, CheckpointStore, RunSummary, Sent, Signal, SignalStore,
};
use cano_core::wait::{INBOX_LIMIT, Wait};
use cano_core::{
    CanoError, Retention, RowKind, RunId, RunOptions, RunStatus, Task, TaskResult, Workflow,
};
use cano_recovery::{MemoryCheckpointStore, SledCheckpointStore};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum Order {
    Plan,
    Approval,
    Buy,
    Rejected,
    Expired,
    Done,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Decision {
    approve: bool,
    by: String,
}

/// A task that moves on to `next`, after `gate` (when given) is opened.
struct Step {
    next: Order,
    gate: Option<Arc<(Notify, Notify)>>,
}

#[async_trait::async_trait]
impl Task<Order> for Step {
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        if let Some(gate) = &self.gate {
            gate.0.notify_one();
            gate.1.notified().await;
        }
        Ok(TaskResult::Single(self.next.clone()))
    }
}

fn step(next: Order) -> Step {
    Step { next, gate: None }
}

fn approval() -> Wait<Order> {
    Wait::new()
        .on("approval", |d: Decision| {
            if d.approve {
                Order::Buy
            } else {
                Order::Rejected
            }
        })
        .leading_to([Order::Buy, Order::Rejected])
        .timeout(Duration::from_secs(120), Order::Expired)
}

fn workflow(store: impl CheckpointStore, plan: Step) -> Workflow<Order> {
    Workflow::bare()
        .register(Order::Plan, plan)
        .register_wait(Order::Approval, approval())
        .register(Order::Buy, step(Order::Done))
        .add_exit_states([Order::Done, Order::Rejected, Order::Expired])
        .with_checkpoint_store(store)
        .with_workflow_id("purchase")
}

fn yes() -> Decision {
    Decision {
        approve: true,
        by: "ada".into(),
    }
}

async fn start(wf: &Workflow<Order>, run: RunId) -> Result<Order, CanoError> {
    wf.orchestrate_with(Order::Plan, RunOptions::new().with_run_id(run))
        .await
}

#[tokio::test]
async fn a_run_parks_costs_one_row_and_goes_on_when_its_signal_arrives() {
    let store = MemoryCheckpointStore::new();
    let wf = workflow(store.clone(), step(Order::Approval));
    let run = RunId::from(1);
    let parked = start(&wf, run).await.unwrap_err();
    assert!(parked.is_parked(), "{parked}");
    assert!(parked.to_string().contains("approval"), "{parked}");
    let rows = store.rows();
    assert_eq!(rows.last().unwrap().kind, RowKind::Wait);
    assert_eq!(rows.len(), 2, "Enter(Plan), Wait(Approval): {rows:?}");

    let view = wf.query(run).await.unwrap();
    assert_eq!(view.state, Order::Approval);
    assert_eq!(view.status, RunStatus::Parked);
    let waiting = view.waiting.unwrap();
    assert_eq!(waiting.signals, ["approval"]);
    let deadline = waiting.deadline.unwrap();
    assert!(deadline > SystemTime::now() + Duration::from_secs(100));
    // Not an interrupted run: a plain recovery pass leaves it parked.
    assert!(wf.resume_interrupted().await.unwrap().is_empty());
    // Nothing is runnable yet.
    assert!(wf.wake_parked().await.unwrap().is_empty());

    let sent = wf.signal(run, "approval", &yes()).await.unwrap();
    assert!(matches!(sent, Sent::Waiting { .. }), "{sent:?}");
    let woken = wf.wake_parked().await.unwrap();
    assert_eq!(woken.len(), 1);
    assert_eq!(woken[0].1.as_ref().unwrap(), &Order::Done);
    // Finished runs are cleared, their inbox with them.
    assert!(store.is_empty());
    assert!(wf.wake_parked().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_signal_sent_before_the_run_reaches_its_wait_is_kept_and_taken_there() {
    let store = MemoryCheckpointStore::new();
    let gate = Arc::new((Notify::new(), Notify::new()));
    let wf = workflow(
        store.clone(),
        Step {
            next: Order::Approval,
            gate: Some(gate.clone()),
        },
    );
    let run = RunId::from(2);
    let running = tokio::spawn({
        let wf = wf.clone();
        async move { start(&wf, run).await }
    });
    // The run is in Plan: its Enter row is written and its task waits at the gate.
    gate.0.notified().await;
    let sent = wf
        .signal(
            run,
            "approval",
            &Decision {
                approve: false,
                by: "bob".into(),
            },
        )
        .await
        .unwrap();
    assert!(matches!(sent, Sent::Buffered { .. }), "{sent:?}");
    gate.1.notify_one();
    assert_eq!(running.await.unwrap().unwrap(), Order::Rejected);
    assert!(store.is_empty());
}

#[tokio::test]
async fn the_same_key_sent_twice_is_one_signal() {
    let store = MemoryCheckpointStore::new();
    let wf = workflow(store.clone(), step(Order::Approval)).with_retention(Retention::KeepFinished);
    let run = RunId::from(3);
    assert!(start(&wf, run).await.unwrap_err().is_parked());
    let first = wf
        .signal_once(run, "approval", &yes(), "req-1")
        .await
        .unwrap();
    let again = wf
        .signal_once(run, "approval", &yes(), "req-1")
        .await
        .unwrap();
    assert_eq!(again, Sent::Duplicate { id: first.id() });
    assert_eq!(wf.query(run).await.unwrap().inbox.len(), 1);
    assert_eq!(
        wf.update(run, "approval", &yes()).await.unwrap(),
        Order::Done
    );
    // Taken: the key is still known while the run's rows are kept.
    let late = wf.signal_once(run, "approval", &yes(), "req-1").await;
    assert!(late.unwrap_err().to_string().contains("over"));
    let received: Vec<_> = store
        .rows()
        .into_iter()
        .filter(|r| r.kind == RowKind::Received)
        .collect();
    assert_eq!(received.len(), 1, "one signal consumed");
}

#[tokio::test]
async fn signals_that_cannot_be_taken_are_refused_before_anything_is_written() {
    let store = MemoryCheckpointStore::new();
    let wf = workflow(store.clone(), step(Order::Approval));
    // An unknown run, then a finished one.
    let unknown = wf
        .signal(RunId::from(9), "approval", &yes())
        .await
        .unwrap_err();
    assert!(
        unknown.to_string().contains(&RunId::from(9).to_string()),
        "{unknown}"
    );
    // A name no wait waits for, and a payload of another type.
    let run = RunId::from(4);
    assert!(start(&wf, run).await.unwrap_err().is_parked());
    let name = wf.signal(run, "aproval", &yes()).await.unwrap_err();
    assert!(name.to_string().contains("\"approval\""), "{name}");
    let typed = wf.signal(run, "approval", &true).await.unwrap_err();
    let typed = typed.to_string();
    assert!(
        typed.contains("Decision") && typed.contains("bool"),
        "{typed}"
    );
    assert!(wf.query(run).await.unwrap().inbox.is_empty());
}

#[tokio::test]
async fn a_payload_no_wait_can_read_stays_in_the_inbox_and_the_error_names_it() {
    let store = MemoryCheckpointStore::new();
    let wf = workflow(store.clone(), step(Order::Approval));
    let run = RunId::from(5);
    assert!(start(&wf, run).await.unwrap_err().is_parked());
    // Written by a sender that does not go through the workflow's checks.
    let bad = store
        .send(run, "approval", vec![0xff; 3], None)
        .await
        .unwrap();
    let woken = wf.wake_parked().await.unwrap();
    let error = woken[0].1.as_ref().unwrap_err().to_string();
    assert!(
        error.contains(&run.to_string())
            && error.contains("approval")
            && error.contains("Decision"),
        "{error}"
    );
    let view = wf.query(run).await.unwrap();
    assert_eq!(view.status, RunStatus::Failed);
    assert_eq!(view.inbox.len(), 1, "the bad signal is kept");
    // Discarded, the run resumes in its wait and parks again; a good signal finishes it.
    assert!(wf.discard_signal(run, bad.id()).await.unwrap());
    assert!(wf.resume_from(run).await.unwrap_err().is_parked());
    assert_eq!(
        wf.update(run, "approval", &yes()).await.unwrap(),
        Order::Done
    );
}

#[tokio::test]
async fn a_deadline_in_the_past_fires_at_once_and_one_too_far_is_a_clear_error() {
    let store = MemoryCheckpointStore::new();
    let wf = Workflow::bare()
        .register(Order::Plan, step(Order::Approval))
        .register_wait(
            Order::Approval,
            Wait::new()
                .on("approval", |_: Decision| Order::Buy)
                .timeout(Duration::ZERO, Order::Expired),
        )
        .register(Order::Buy, step(Order::Done))
        .add_exit_states([Order::Done, Order::Expired])
        .with_checkpoint_store(store.clone());
    assert_eq!(wf.orchestrate(Order::Plan).await.unwrap(), Order::Expired);

    let far = Workflow::bare()
        .register(Order::Plan, step(Order::Approval))
        .register_wait(
            Order::Approval,
            Wait::sleep(Duration::from_secs(u64::MAX / 2), Order::Done),
        )
        .add_exit_state(Order::Done)
        .with_checkpoint_store(store.clone());
    let error = far.orchestrate(Order::Plan).await.unwrap_err().to_string();
    assert!(
        error.contains("cannot be stored") && error.contains("Approval"),
        "{error}"
    );

    // `Duration::MAX` waits for ever: parked without a deadline.
    let endless = Workflow::bare()
        .register(Order::Plan, step(Order::Approval))
        .register_wait(Order::Approval, Wait::sleep(Duration::MAX, Order::Done))
        .add_exit_state(Order::Done)
        .with_checkpoint_store(store.clone());
    let run = RunId::from(6);
    let parked = endless
        .orchestrate_with(Order::Plan, RunOptions::new().with_run_id(run))
        .await;
    assert!(parked.unwrap_err().is_parked());
    assert_eq!(
        endless.query(run).await.unwrap().waiting.unwrap().deadline,
        None
    );
}

/// A task that sets when the next wait wakes (a durable sleep), then moves to it.
struct SleepUntil(SystemTime);

#[async_trait::async_trait]
impl Task<Order> for SleepUntil {
    async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
        cano_core::wait::wake_at(self.0)?;
        Ok(TaskResult::Single(Order::Approval))
    }
}

#[tokio::test]
async fn a_task_sets_its_runs_wake_time_and_serve_waits_wakes_it_then() {
    let store = MemoryCheckpointStore::new();
    let at = SystemTime::now() + Duration::from_millis(200);
    let (observer, mut ended) = finished();
    let wf = Workflow::bare()
        .register(Order::Plan, SleepUntil(at))
        .register_wait(
            Order::Approval,
            Wait::sleep(Duration::from_secs(3600), Order::Done),
        )
        .add_exit_state(Order::Done)
        .with_checkpoint_store(store.clone())
        .with_observer(observer);
    let run = RunId::from(7);
    assert!(start(&wf, run).await.unwrap_err().is_parked());
    let deadline = wf
        .query(run)
        .await
        .unwrap()
        .waiting
        .unwrap()
        .deadline
        .unwrap();
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis();
    assert_eq!(ms(deadline), ms(at));

    let token = cano_core::CancellationToken::new();
    let serving = tokio::spawn({
        let (wf, token) = (wf.clone(), token.clone());
        async move { wf.serve_waits(token).await }
    });
    assert_eq!(ended.recv().await.unwrap(), (run, "Done".to_owned()));
    assert!(SystemTime::now() >= at, "woken no earlier than asked");
    assert!(store.is_empty());
    token.cancel();
    serving.await.unwrap().unwrap();
}

/// Tells the test of each run that ended in an exit state: what it awaits instead of
/// polling the store.
struct Finished(tokio::sync::mpsc::UnboundedSender<(RunId, String)>);

impl cano_core::RunObserver for Finished {
    fn run_ended(&self, run: RunId, outcome: Result<&dyn std::fmt::Debug, &CanoError>) {
        if let Ok(exit) = outcome {
            let _ = self.0.send((run, format!("{exit:?}")));
        }
    }
}

fn finished() -> (
    Arc<Finished>,
    tokio::sync::mpsc::UnboundedReceiver<(RunId, String)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (Arc::new(Finished(tx)), rx)
}

#[tokio::test]
async fn serve_waits_wakes_a_run_at_once_when_this_process_sends_its_signal() {
    let store = MemoryCheckpointStore::new();
    let (observer, mut ended) = finished();
    let wf = workflow(store.clone(), step(Order::Approval)).with_observer(observer);
    let run = RunId::from(8);
    let token = cano_core::CancellationToken::new();
    let serving = tokio::spawn({
        let (wf, token) = (wf.clone(), token.clone());
        async move { wf.serve_waits(token).await }
    });
    assert!(start(&wf, run).await.unwrap_err().is_parked());
    wf.signal(run, "approval", &yes()).await.unwrap();
    assert_eq!(ended.recv().await.unwrap(), (run, "Done".to_owned()));
    token.cancel();
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_parked_run_can_be_cancelled_and_resumed_later_with_its_deadline() {
    let store = MemoryCheckpointStore::new();
    let wf = workflow(store.clone(), step(Order::Approval));
    let run = RunId::from(10);
    assert!(start(&wf, run).await.unwrap_err().is_parked());
    let before = wf.query(run).await.unwrap().waiting.unwrap().deadline;
    wf.cancel_parked(run).await.unwrap();
    let view = wf.query(run).await.unwrap();
    assert_eq!(view.status, RunStatus::Failed);
    assert!(
        view.message.contains("cancelled while parked"),
        "{}",
        view.message
    );
    // A cancelled run is not woken by its signal.
    wf.signal(run, "approval", &yes()).await.unwrap();
    assert!(wf.wake_parked().await.unwrap().is_empty());
    assert!(wf.cancel_parked(run).await.is_err(), "no longer parked");
    // Resumed by hand, it takes the signal waiting in its inbox.
    assert_eq!(wf.resume_from(run).await.unwrap(), Order::Done);
    let _ = before;
}

#[tokio::test]
async fn an_inbox_holds_a_bounded_number_of_signals() {
    let store = MemoryCheckpointStore::new();
    let wf = workflow(store.clone(), step(Order::Approval));
    let run = RunId::from(11);
    assert!(start(&wf, run).await.unwrap_err().is_parked());
    for _ in 0..INBOX_LIMIT {
        store.send(run, "other", Vec::new(), None).await.unwrap();
    }
    let full = wf
        .signal(run, "approval", &yes())
        .await
        .unwrap_err()
        .to_string();
    assert!(full.contains(&INBOX_LIMIT.to_string()), "{full}");
}

#[test]
fn validation_needs_an_inbox_and_warns_of_a_wait_that_may_never_end() {
    let no_store = Workflow::bare()
        .register_wait(
            Order::Approval,
            Wait::new().on("approval", |_: Decision| Order::Done),
        )
        .add_exit_state(Order::Done);
    let error = no_store.validate().unwrap_err().to_string();
    assert!(
        error.contains("Approval") && error.contains("signal inbox"),
        "{error}"
    );
    let warnings = no_store.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("no timeout") && warnings[0].contains("approval"));

    let told = Workflow::bare()
        .register_wait(
            Order::Approval,
            Wait::new()
                .on("approval", |_: Decision| Order::Done)
                .sent_by("the purchasing desk"),
        )
        .add_exit_state(Order::Done)
        .with_checkpoint_store(MemoryCheckpointStore::new());
    assert!(told.validate().is_ok());
    assert!(told.warnings().is_empty());

    let nothing = Workflow::bare()
        .register_wait(Order::Approval, Wait::new())
        .add_exit_state(Order::Done)
        .with_checkpoint_store(MemoryCheckpointStore::new());
    assert!(
        nothing
            .validate()
            .unwrap_err()
            .to_string()
            .contains("no timeout")
    );
}

#[test]
fn drawings_label_a_waits_edges_with_its_signals_and_timeout() {
    let wf = workflow(MemoryCheckpointStore::new(), step(Order::Approval));
    let mermaid = wf.to_mermaid();
    assert!(mermaid.contains("[(\"Approval\")]"), "{mermaid}");
    assert!(mermaid.contains("-- \"approval\" -->"), "{mermaid}");
    assert!(mermaid.contains("-- \"timeout\" -->"), "{mermaid}");
    let dot = wf.to_dot();
    assert!(
        dot.contains("label=\"approval\"") && dot.contains("shape=cylinder"),
        "{dot}"
    );
    assert!(wf.validate_from(&Order::Plan).is_ok());
}

/// A memory store whose `append_taking` fails once: before writing (`BEFORE`) or after
/// writing (`AFTER`, an ambiguous write).
struct Flaky {
    inner: MemoryCheckpointStore,
    mode: AtomicU8,
}

const BEFORE: u8 = 1;
const AFTER: u8 = 2;

#[async_trait::async_trait]
impl CheckpointStore for Flaky {
    async fn append(&self, row: CheckpointRow) -> Result<(), CanoError> {
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
    async fn prune(&self, older_than: SystemTime) -> Result<usize, CanoError> {
        self.inner.prune(older_than).await
    }
    fn signals(&self) -> Option<&dyn SignalStore> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl SignalStore for Flaky {
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
        self.inner.first_for(run, names).await
    }
    async fn inbox(&self, run: RunId, limit: usize) -> Result<Vec<Signal>, CanoError> {
        self.inner.inbox(run, limit).await
    }
    async fn append_taking(&self, row: CheckpointRow, signal: u64) -> Result<(), CanoError> {
        match self.mode.swap(0, Ordering::SeqCst) {
            BEFORE => Err(CanoError::store("disk full")),
            AFTER => {
                self.inner.append_taking(row, signal).await?;
                Err(CanoError::store("the reply was lost"))
            }
            _ => self.inner.append_taking(row, signal).await,
        }
    }
    async fn discard(&self, run: RunId, signal: u64) -> Result<bool, CanoError> {
        self.inner.discard(run, signal).await
    }
}

#[tokio::test]
async fn a_failed_take_consumes_the_signal_exactly_once_whether_or_not_it_was_written() {
    for mode in [BEFORE, AFTER] {
        let inner = MemoryCheckpointStore::new();
        let flaky = Arc::new(Flaky {
            inner: inner.clone(),
            mode: AtomicU8::new(0),
        });
        let wf =
            workflow(flaky.clone(), step(Order::Approval)).with_retention(Retention::KeepFinished);
        let run = RunId::from(20 + u64::from(mode));
        assert!(start(&wf, run).await.unwrap_err().is_parked());
        wf.signal(run, "approval", &yes()).await.unwrap();
        flaky.mode.store(mode, Ordering::SeqCst);
        let woken = wf.wake_parked().await.unwrap();
        let error = woken[0].1.as_ref().unwrap_err().to_string();
        assert!(error.contains("could not write"), "mode {mode}: {error}");
        let view = wf.query(run).await.unwrap();
        assert_eq!(view.status, RunStatus::Failed, "mode {mode}");
        assert_eq!(view.inbox.len(), usize::from(mode == BEFORE), "mode {mode}");
        // Resumed once the store works: the signal is taken (again) or handed back from
        // its Received row, never twice and never lost.
        assert_eq!(
            wf.resume_from(run).await.unwrap(),
            Order::Done,
            "mode {mode}"
        );
        let taken = inner
            .rows()
            .into_iter()
            .filter(|r| r.run == run && r.kind == RowKind::Received)
            .count();
        assert_eq!(taken, 1, "mode {mode}");
        assert!(wf.query(run).await.unwrap().inbox.is_empty());
    }
}

#[tokio::test]
async fn on_sled_a_signal_and_its_take_survive_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let run = RunId::from(30);
    {
        let store = SledCheckpointStore::open(&path).unwrap();
        let wf = workflow(store.clone(), step(Order::Approval));
        assert!(start(&wf, run).await.unwrap_err().is_parked());
        let first = wf.signal_once(run, "approval", &yes(), "k").await.unwrap();
        assert!(matches!(first, Sent::Waiting { .. }));
        drop(wf);
        store.close().await.unwrap();
    }
    let store = SledCheckpointStore::open(&path).unwrap();
    let wf = workflow(store.clone(), step(Order::Approval)).with_retention(Retention::KeepFinished);
    let view = wf.query(run).await.unwrap();
    assert_eq!(view.status, RunStatus::Parked);
    assert_eq!(view.inbox.len(), 1);
    let again = wf.signal_once(run, "approval", &yes(), "k").await.unwrap();
    assert_eq!(
        again,
        Sent::Duplicate {
            id: view.inbox[0].id
        }
    );
    let woken = wf.wake_parked().await.unwrap();
    assert_eq!(woken[0].1.as_ref().unwrap(), &Order::Done);
    assert!(wf.query(run).await.unwrap().inbox.is_empty());
}

/// Tells the test how each run ended, failures included.
struct AnyEnd(tokio::sync::mpsc::UnboundedSender<(RunId, Result<String, String>)>);

impl cano_core::RunObserver for AnyEnd {
    fn run_ended(&self, run: RunId, outcome: Result<&dyn std::fmt::Debug, &CanoError>) {
        let outcome = outcome.map(|s| format!("{s:?}")).map_err(|e| e.to_string());
        let _ = self.0.send((run, outcome));
    }
}

#[tokio::test]
async fn the_workflow_timeout_counts_while_a_run_is_parked() {
    let store = MemoryCheckpointStore::new();
    let (tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let wf = workflow(store.clone(), step(Order::Approval))
        .with_timeout(Duration::from_millis(300))
        .with_observer(Arc::new(AnyEnd(tx)));
    let run = RunId::from(40);
    assert!(start(&wf, run).await.unwrap_err().is_parked());
    let (_, first) = ended.recv().await.unwrap();
    assert!(first.unwrap_err().contains("parked"));
    // It wakes at the workflow's deadline, not the wait's two minutes.
    let deadline = wf
        .query(run)
        .await
        .unwrap()
        .waiting
        .unwrap()
        .deadline
        .unwrap();
    assert!(deadline <= SystemTime::now() + Duration::from_millis(300));
    let token = cano_core::CancellationToken::new();
    let serving = tokio::spawn({
        let (wf, token) = (wf.clone(), token.clone());
        async move { wf.serve_waits(token).await }
    });
    let (woken, outcome) = ended.recv().await.unwrap();
    assert_eq!(woken, run);
    let error = outcome.unwrap_err();
    assert!(
        error.contains("timed out") && error.contains("Approval"),
        "{error}"
    );
    token.cancel();
    serving.await.unwrap().unwrap();
    let view = wf.query(run).await.unwrap();
    assert_eq!(view.status, RunStatus::Failed);
    // A signal after the timeout revives nothing.
    let late = wf.signal(run, "approval", &yes()).await.unwrap();
    assert!(matches!(late, Sent::Buffered { .. }), "{late:?}");
    assert!(wf.wake_parked().await.unwrap().is_empty());
}
