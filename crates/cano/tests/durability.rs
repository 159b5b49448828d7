//! A run's durability under store faults, checked from outside: a failed or ambiguous
//! row, a log that cannot be cleared, a rollback that cannot be recorded, a state enum
//! edited between a crash and its resume. Each test injects the fault first, lets the
//! store recover, and then checks what a user can see: the resumed run's data, which
//! tasks ran how often, what the log says.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cano::checkpoint::CheckpointStore;
use cano::checkpoint::{CheckpointRow, RowKind, RunSummary};
use cano::ext::replay;
use cano::prelude::*;
use cano::testing::FaultyStore;
use cano::{DurableStore, Retention, RunId, RunOptions};

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Flow {
    A,
    B,
    C,
    Done,
}

/// Every task run, in order, across runs and resumes.
#[derive(Clone, Default)]
struct Ledger(Arc<Mutex<Vec<String>>>);

impl Ledger {
    fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }
    fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn count(&self, entry: &str) -> usize {
        self.entries().iter().filter(|e| *e == entry).count()
    }
}

/// Writes `key` in the run's durable data (reading what the states before wrote),
/// records itself and moves on.
struct Writes {
    name: &'static str,
    reads: &'static [&'static str],
    next: Flow,
    ledger: Ledger,
}

#[task]
impl Task<Flow> for Writes {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Flow>, CanoError> {
        let durable = DurableStore::current()?;
        let mut seen = Vec::new();
        for key in self.reads {
            seen.push(format!("{key}={:?}", durable.get_opt::<String>(key)?));
        }
        self.ledger.push(
            format!("{} {}", self.name, seen.join(" "))
                .trim()
                .to_owned(),
        );
        durable.put(self.name, &format!("from {}", self.name))?;
        Ok(TaskResult::Single(self.next.clone()))
    }
}

fn flow(store: &Arc<FaultyStore>, ledger: &Ledger, retention: Retention) -> Workflow<Flow> {
    let writes = |name, reads, next| Writes {
        name,
        reads,
        next,
        ledger: ledger.clone(),
    };
    Workflow::bare()
        .register(Flow::A, writes("a", &[], Flow::B))
        .register(Flow::B, writes("b", &["a"], Flow::C))
        .register(Flow::C, writes("c", &["a", "b"], Flow::Done))
        .add_exit_state(Flow::Done)
        .with_shared_checkpoint_store(store.clone())
        .with_workflow_id("durability")
        .with_retention(retention)
}

async fn start(workflow: &Workflow<Flow>) -> (RunId, Result<Flow, CanoError>) {
    let run = RunId::new();
    let outcome = workflow
        .orchestrate_with(Flow::A, RunOptions::new().with_run_id(run))
        .await;
    (run, outcome)
}

#[tokio::test]
async fn a_failed_enter_row_keeps_the_writes_of_the_state_before_it() {
    let store = FaultyStore::new();
    let ledger = Ledger::default();
    let workflow = flow(&store, &ledger, Retention::ClearFinished);
    // Rows: 0 = Enter(A), 1 = Enter(B) (fails once: the disk is full for a moment).
    store.fail_append(1);
    let (run, outcome) = start(&workflow).await;
    let err = outcome.unwrap_err();
    assert!(err.to_string().contains("row 1"), "{err}");
    assert_eq!(workflow.resume_from(run).await.unwrap(), Flow::Done);
    // A ran once and B saw what it wrote.
    assert_eq!(
        ledger.entries(),
        [
            "a",
            "b a=Some(\"from a\")",
            "c a=Some(\"from a\") b=Some(\"from b\")"
        ]
    );
}

#[tokio::test]
async fn when_the_fail_row_is_lost_too_the_state_whose_writes_were_lost_runs_again() {
    let store = FaultyStore::new();
    let ledger = Ledger::default();
    let workflow = flow(&store, &ledger, Retention::ClearFinished);
    // Enter(B) and the Fail row after it both fail: the log ends at Enter(A).
    store.fail_appends_from(1);
    let (run, outcome) = start(&workflow).await;
    outcome.unwrap_err();
    store.heal();
    assert_eq!(workflow.resume_from(run).await.unwrap(), Flow::Done);
    assert_eq!(ledger.count("a"), 2, "{:?}", ledger.entries());
    assert_eq!(ledger.count("b a=Some(\"from a\")"), 1);
}

#[tokio::test]
async fn an_ambiguous_row_is_recognised_not_taken_for_another_driver() {
    let store = FaultyStore::new();
    let ledger = Ledger::default();
    let workflow = flow(&store, &ledger, Retention::KeepFinished);
    // Enter(B) reaches the store, but its append reports a failure.
    store.lose_reply_of_append(1);
    let (run, outcome) = start(&workflow).await;
    outcome.unwrap_err();
    // The Fail row went after the row that did land, not over it.
    let rows = store.load(run).await.unwrap();
    let kinds: Vec<_> = rows.iter().map(|r| (r.seq, r.kind)).collect();
    assert_eq!(
        kinds,
        [(0, RowKind::Enter), (1, RowKind::Enter), (2, RowKind::Fail)]
    );
    assert_eq!(workflow.resume_from(run).await.unwrap(), Flow::Done);
    assert_eq!(ledger.count("a"), 1);
    assert_eq!(ledger.count("b a=Some(\"from a\")"), 1);
}

/// A store where, when the chosen append fails, another process's row takes its place.
struct Contested {
    inner: Arc<FaultyStore>,
    intruder: Mutex<Option<u64>>,
}

#[async_trait::async_trait]
impl CheckpointStore for Contested {
    async fn append(&self, row: CheckpointRow) -> Result<(), CanoError> {
        let intrude = *self.intruder.lock().unwrap() == Some(row.seq);
        if intrude {
            *self.intruder.lock().unwrap() = None;
            let mut theirs = row.clone();
            theirs.kind = RowKind::Resume;
            theirs.label = "the other process".into();
            self.inner.append(theirs).await?;
            return Err(CanoError::store("connection reset"));
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

#[tokio::test]
async fn a_row_written_by_another_process_after_a_failed_append_stops_this_driver() {
    let faulty = FaultyStore::new();
    let store = Arc::new(Contested {
        inner: faulty.clone(),
        intruder: Mutex::new(Some(1)),
    });
    let ledger = Ledger::default();
    let workflow =
        flow(&faulty, &ledger, Retention::KeepFinished).with_shared_checkpoint_store(store.clone());
    let (run, outcome) = start(&workflow).await;
    outcome.unwrap_err();
    // This driver wrote nothing over or after the other process's row.
    let rows = faulty.load(run).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].label, "the other process");
    assert_eq!(ledger.entries(), ["a"]);
}

#[tokio::test]
async fn a_log_that_cannot_be_cleared_is_closed_so_nothing_runs_again() {
    let store = FaultyStore::new();
    let ledger = Ledger::default();
    let workflow = flow(&store, &ledger, Retention::ClearFinished);
    store.fail_next_clear(false);
    let (run, outcome) = start(&workflow).await;
    assert_eq!(outcome.unwrap(), Flow::Done);
    // Closed with a Finish row instead: not listed, and a resume runs nothing.
    assert!(workflow.unfinished_runs().await.unwrap().is_empty());
    assert_eq!(workflow.resume_from(run).await.unwrap(), Flow::Done);
    assert_eq!(ledger.count("c a=Some(\"from a\") b=Some(\"from b\")"), 1);

    // A clear that went through although it reported a failure.
    store.fail_next_clear(true);
    let (run, outcome) = start(&workflow).await;
    assert_eq!(outcome.unwrap(), Flow::Done);
    assert!(store.load(run).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_lost_finish_row_reruns_only_the_last_state_with_its_data() {
    let store = FaultyStore::new();
    let ledger = Ledger::default();
    let workflow = flow(&store, &ledger, Retention::KeepFinished);
    // Rows 0..=2 enter A, B, C; row 3 is the Finish row.
    store.fail_append(3);
    let (run, outcome) = start(&workflow).await;
    let err = outcome.unwrap_err();
    assert!(
        err.to_string().contains("would run that state again"),
        "{err}"
    );
    assert_eq!(workflow.resume_from(run).await.unwrap(), Flow::Done);
    assert_eq!(ledger.count("a"), 1);
    assert_eq!(ledger.count("c a=Some(\"from a\") b=Some(\"from b\")"), 2);
    let rows = store.load(run).await.unwrap();
    let end = replay(run, &rows, "durability", 1).unwrap();
    assert_eq!(end.last_kind, RowKind::Finish);
    assert_eq!(end.durable.keys(), ["a", "b", "c"]);
}

#[tokio::test]
async fn a_failing_compaction_does_not_fail_the_run() {
    let store = FaultyStore::new();
    store.fail_truncates(true);
    let ledger = Ledger::default();
    let workflow = flow(&store, &ledger, Retention::KeepFinished).with_compaction(1);
    let (run, outcome) = start(&workflow).await;
    assert_eq!(outcome.unwrap(), Flow::Done);
    let rows = store.load(run).await.unwrap();
    assert_eq!(
        replay(run, &rows, "durability", 1).unwrap().durable.len(),
        3
    );
}

mod saga_faults {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
    pub enum Order {
        Reserve,
        Charge,
        Ship,
        Done,
    }

    struct Step {
        name: &'static str,
        next: Order,
        ledger: Ledger,
    }

    #[async_trait::async_trait]
    impl CompensatableTask<Order> for Step {
        type Output = String;
        fn config(&self) -> TaskConfig {
            TaskConfig::minimal()
        }
        fn compensation_config(&self) -> TaskConfig {
            TaskConfig::minimal()
        }
        async fn run(&self, _: &Resources) -> Result<(TaskResult<Order>, String), CanoError> {
            self.ledger.push(format!("do {}", self.name));
            Ok((TaskResult::Single(self.next.clone()), self.name.to_owned()))
        }
        async fn compensate(&self, _: &Resources, output: String) -> Result<(), CanoError> {
            self.ledger.push(format!("undo {output}"));
            Ok(())
        }
    }

    /// Fails while `failures` is above zero, then ships.
    struct Ship {
        failures: Arc<AtomicUsize>,
        ledger: Ledger,
    }

    #[task]
    impl Task<Order> for Ship {
        fn config(&self) -> TaskConfig {
            TaskConfig::minimal()
        }
        async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
            let failing = self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                self.ledger.push("ship failed");
                return Err(CanoError::task_execution("the carrier is down"));
            }
            self.ledger.push("shipped");
            Ok(TaskResult::Single(Order::Done))
        }
    }

    pub fn order(
        store: &Arc<FaultyStore>,
        ledger: &Ledger,
        ship_failures: usize,
    ) -> Workflow<Order> {
        let step = |name, next| Step {
            name,
            next,
            ledger: ledger.clone(),
        };
        Workflow::bare()
            .register_with_compensation(Order::Reserve, step("reserve", Order::Charge))
            .register_with_compensation(Order::Charge, step("charge", Order::Ship))
            .register(
                Order::Ship,
                Ship {
                    failures: Arc::new(AtomicUsize::new(ship_failures)),
                    ledger: ledger.clone(),
                },
            )
            .add_exit_state(Order::Done)
            .with_shared_checkpoint_store(store.clone())
            .with_workflow_id("orders")
    }

    #[tokio::test]
    async fn no_compensation_runs_unless_the_rollback_is_recorded() {
        let store = FaultyStore::new();
        let ledger = Ledger::default();
        // Ship fails once, then works.
        let workflow = order(&store, &ledger, 1);
        // Rows: Enter(Reserve), Completed→Charge, Completed→Ship; the rollback's first
        // row (3) and everything after it fail until the store is healed.
        store.fail_appends_from(3);
        let run = RunId::new();
        let err = workflow
            .orchestrate_with(Order::Reserve, RunOptions::new().with_run_id(run))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no compensation ran"), "{err}");
        assert_eq!(ledger.entries(), ["do reserve", "do charge", "ship failed"]);
        store.heal();
        // The log says nothing of a rollback, so the resume goes forward: the order
        // ships, and it was never refunded.
        assert_eq!(workflow.resume_from(run).await.unwrap(), Order::Done);
        assert_eq!(
            ledger.entries(),
            ["do reserve", "do charge", "ship failed", "shipped"]
        );
    }

    #[tokio::test]
    async fn a_compensation_whose_record_fails_stops_the_rollback_until_a_resume() {
        let store = FaultyStore::new();
        let ledger = Ledger::default();
        let workflow = order(&store, &ledger, usize::MAX);
        // Row 3 is the rollback's marker; row 4 would record Charge's undoing.
        store.fail_appends_from(4);
        let run = RunId::new();
        let err = workflow
            .orchestrate_with(Order::Reserve, RunOptions::new().with_run_id(run))
            .await
            .unwrap_err();
        assert!(matches!(err, CanoError::CompensationFailed { .. }), "{err}");
        // Reserve was not undone after an undoing the log could not record.
        assert_eq!(
            ledger.entries(),
            ["do reserve", "do charge", "ship failed", "undo charge"]
        );
        store.heal();
        let err = workflow.resume_from(run).await.unwrap_err();
        assert!(
            !matches!(err, CanoError::CompensationFailed { .. }),
            "{err}"
        );
        assert_eq!(ledger.count("undo charge"), 2);
        assert_eq!(ledger.count("undo reserve"), 1);
        assert_eq!(ledger.count("shipped"), 0);
        assert!(store.load(run).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_ambiguous_completion_row_does_not_spoil_the_rollback() {
        let store = FaultyStore::new();
        let ledger = Ledger::default();
        let workflow = order(&store, &ledger, 0);
        // Charge's Completed row (2) lands, but reports a failure: the run fails there
        // and rolls back, recording its rollback after the row that landed.
        store.lose_reply_of_append(2);
        let run = RunId::new();
        let err = workflow
            .orchestrate_with(Order::Reserve, RunOptions::new().with_run_id(run))
            .await
            .unwrap_err();
        assert!(
            !matches!(err, CanoError::CompensationFailed { .. }),
            "{err}"
        );
        assert!(!err.to_string().contains("another process"), "{err}");
        assert_eq!(ledger.count("undo charge"), 1);
        assert_eq!(ledger.count("undo reserve"), 1);
        assert!(store.load(run).await.unwrap().is_empty());
    }
}

mod edited_enum {
    use super::*;

    pub mod v1 {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum Order {
            Charge,
            Send { parcel: u32 },
            Done,
        }
    }

    pub mod inserted {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum Order {
            Charge,
            Refund { parcel: u32 },
            Send { parcel: u32 },
            Done,
        }
    }

    pub mod reordered {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum Order {
            Send { parcel: u32 },
            Charge,
            Done,
        }
    }

    pub mod retyped {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum Order {
            Charge,
            Send { parcel: String },
            Done,
        }
    }

    pub mod appended {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum Order {
            Charge,
            Send { parcel: u32 },
            Done,
            Audit,
        }
    }

    /// Records `name` and goes to `next`, or fails when `next` is `None`.
    struct Named<S> {
        name: &'static str,
        next: Option<S>,
        ledger: Ledger,
    }

    macro_rules! named_tasks {
        ($($state:ty),*) => {$(
            #[async_trait::async_trait]
            impl Task<$state> for Named<$state> {
                fn config(&self) -> TaskConfig {
                    TaskConfig::minimal()
                }
                async fn run_bare(&self) -> Result<TaskResult<$state>, CanoError> {
                    self.ledger.push(self.name);
                    match &self.next {
                        Some(next) => Ok(TaskResult::Single(next.clone())),
                        None => Err(CanoError::task_execution("the parcel service is down")),
                    }
                }
            }
        )*};
    }

    named_tasks!(
        v1::Order,
        inserted::Order,
        reordered::Order,
        retyped::Order,
        appended::Order
    );

    fn named<S>(ledger: &Ledger, name: &'static str, next: Option<S>) -> Named<S> {
        Named {
            name,
            next,
            ledger: ledger.clone(),
        }
    }

    /// A run of v1 that failed in `Send { parcel: 7 }`.
    async fn failed_in_send(store: &Arc<FaultyStore>, ledger: &Ledger) -> RunId {
        let run = RunId::new();
        Workflow::bare()
            .register(
                v1::Order::Charge,
                named(ledger, "charge", Some(v1::Order::Send { parcel: 7 })),
            )
            .register(v1::Order::Send { parcel: 7 }, named(ledger, "send", None))
            .add_exit_state(v1::Order::Done)
            .with_shared_checkpoint_store(store.clone())
            .with_workflow_id("parcels")
            .orchestrate_with(v1::Order::Charge, RunOptions::new().with_run_id(run))
            .await
            .unwrap_err();
        run
    }

    fn assert_refused(err: CanoError, now: &str) {
        let text = err.to_string();
        assert!(
            matches!(err, CanoError::WorkflowVersionMismatch(_)),
            "{text}"
        );
        assert!(text.contains("`Send`") && text.contains(now), "{text}");
    }

    #[tokio::test]
    async fn an_inserted_variant_never_runs_in_place_of_the_stored_one() {
        let store = FaultyStore::new();
        let ledger = Ledger::default();
        let run = failed_in_send(&store, &ledger).await;
        let err = Workflow::bare()
            .register(
                inserted::Order::Charge,
                named(&ledger, "charge", Some(inserted::Order::Done)),
            )
            .register(
                inserted::Order::Refund { parcel: 7 },
                named(&ledger, "refund", Some(inserted::Order::Done)),
            )
            .register(
                inserted::Order::Send { parcel: 7 },
                named(&ledger, "send", Some(inserted::Order::Done)),
            )
            .add_exit_state(inserted::Order::Done)
            .with_shared_checkpoint_store(store.clone())
            .with_workflow_id("parcels")
            .resume_from(run)
            .await
            .unwrap_err();
        assert_refused(err, "`Refund`");
        assert_eq!(ledger.entries(), ["charge", "send"]);
        // Refused, not spoiled: the run is still there for the build that wrote it.
        assert_eq!(
            store.load(run).await.unwrap().last().unwrap().kind,
            RowKind::Fail
        );
    }

    #[tokio::test]
    async fn reordered_and_retyped_variants_are_refused_too() {
        let store = FaultyStore::new();
        let ledger = Ledger::default();
        let run = failed_in_send(&store, &ledger).await;
        let err = Workflow::bare()
            .register(
                reordered::Order::Charge,
                named(&ledger, "charge", Some(reordered::Order::Done)),
            )
            .register(
                reordered::Order::Send { parcel: 7 },
                named(&ledger, "send", Some(reordered::Order::Done)),
            )
            .add_exit_state(reordered::Order::Done)
            .with_shared_checkpoint_store(store.clone())
            .with_workflow_id("parcels")
            .resume_from(run)
            .await
            .unwrap_err();
        // Index 1 is `Charge` now, whose bytes are shorter: unreadable, and refused.
        assert_refused(err, "cannot read");
        let err = Workflow::bare()
            .register(
                retyped::Order::Charge,
                named(&ledger, "charge", Some(retyped::Order::Done)),
            )
            .register(
                retyped::Order::Send { parcel: "7".into() },
                named(&ledger, "send", Some(retyped::Order::Done)),
            )
            .add_exit_state(retyped::Order::Done)
            .with_shared_checkpoint_store(store.clone())
            .with_workflow_id("parcels")
            .resume_from(run)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CanoError::WorkflowVersionMismatch(_)),
            "{err}"
        );
        assert_eq!(ledger.entries(), ["charge", "send"]);
    }

    #[tokio::test]
    async fn a_variant_added_at_the_end_leaves_old_runs_resumable() {
        let store = FaultyStore::new();
        let ledger = Ledger::default();
        let run = failed_in_send(&store, &ledger).await;
        let end = Workflow::bare()
            .register(
                appended::Order::Charge,
                named(&ledger, "charge", Some(appended::Order::Done)),
            )
            .register(
                appended::Order::Send { parcel: 7 },
                named(&ledger, "send again", Some(appended::Order::Audit)),
            )
            .register(
                appended::Order::Audit,
                named(&ledger, "audit", Some(appended::Order::Done)),
            )
            .add_exit_state(appended::Order::Done)
            .with_shared_checkpoint_store(store.clone())
            .with_workflow_id("parcels")
            .resume_from(run)
            .await
            .unwrap();
        assert_eq!(end, appended::Order::Done);
        assert_eq!(ledger.entries(), ["charge", "send", "send again", "audit"]);
    }
}
