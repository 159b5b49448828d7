//! Sagas with a checkpoint store: outputs saved with the run, so a resumed run still
//! undoes what was done before a crash, and a rollback cut short (by a crash, or by a
//! compensation that failed) is finished by a resume without undoing anything twice.
//! Crashes are simulated here by dropping a run's future; `crash.rs` kills processes.

mod common;

use std::sync::Arc;

use cano_core::{
    CanoError, CheckpointRow, CheckpointStore, Retention, RowKind, RunId, RunOptions, RunStatus,
    RunSummary, Task, Workflow,
};
use cano_recovery::{MemoryCheckpointStore, SledCheckpointStore};
use cano_testing::FaultyStore;
use common::{Log, Order, Step, Stuck, Undo, crash_when, ship, steps};
use tokio::sync::Notify;

/// The order workflow of `common`, checkpointed in `store`.
fn order(
    reserve: Step,
    charge: Step,
    last: impl Task<Order> + 'static,
    store: Arc<dyn CheckpointStore>,
) -> Workflow<Order> {
    common::order(reserve, charge, last)
        .with_shared_checkpoint_store(store)
        .with_workflow_id("order")
}

fn kinds(rows: &[CheckpointRow]) -> Vec<(RowKind, String)> {
    rows.iter().map(|r| (r.kind, r.label.clone())).collect()
}

async fn crash_in_ship(store: Arc<dyn CheckpointStore>, log: &Log, run: RunId) {
    let (reserve, charge) = steps(log);
    let stuck = Arc::new(Notify::new());
    let workflow = order(reserve, charge, Stuck(stuck.clone()), store);
    crash_when(
        workflow.orchestrate_with(Order::Reserve, RunOptions::new().with_run_id(run)),
        &stuck,
    )
    .await;
}

#[tokio::test]
async fn a_resumed_run_undoes_steps_completed_before_the_crash() {
    let (_dir, stores) = stores();
    for store in stores {
        let log = Log::default();
        let run = RunId::new();
        crash_in_ship(store.clone(), &log, run).await;
        // Each completed step wrote one row that also moved the run on.
        let rows = store.load(run).await.unwrap();
        assert_eq!(
            kinds(&rows),
            [
                (RowKind::Enter, "Reserve".into()),
                (RowKind::Completed, "Charge".into()),
                (RowKind::Completed, "Ship".into())
            ]
        );

        // The next process: Ship fails now.
        let (reserve, charge) = steps(&log);
        let workflow = order(reserve, charge, ship(&log, true), store.clone());
        let err = workflow.resume_from(run).await.unwrap_err();
        assert!(err.to_string().contains("carrier refused"), "{err}");
        assert_eq!(
            log.lines(),
            [
                "do Reserve",
                "do Charge",
                "ship failed",
                "undo Charge Charge-output",
                "undo Reserve Reserve-output"
            ]
        );
        // Rolled back: nothing is left to resume.
        assert!(store.load(run).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_failed_rollback_is_finished_by_resume_from_without_undoing_anything_twice() {
    let (_dir, stores) = stores();
    for store in stores {
        let log = Log::default();
        let run = RunId::new();
        let (reserve, charge) = steps(&log);
        let charge = charge.undo(Undo::FailsFirst(1));
        let attempts = charge.undo_attempts.clone();
        let workflow = order(reserve, charge, ship(&log, true), store.clone());
        let err = workflow
            .orchestrate_with(Order::Reserve, RunOptions::new().with_run_id(run))
            .await
            .unwrap_err();
        assert!(
            matches!(err, CanoError::CompensationFailed { .. }),
            "{err:?}"
        );
        assert_eq!(log.count("undo Reserve Reserve-output"), 1);
        assert_eq!(log.count("undo Charge Charge-output"), 0);
        let left = workflow.unfinished_runs().await.unwrap();
        assert_eq!((left[0].run, left[0].status), (run, RunStatus::Failed));

        // The refund service is back: finish the rollback. Charge is undone now, and
        // Reserve (undone already) is not undone again; Ship does not run again.
        let err = workflow.resume_from(run).await.unwrap_err();
        assert!(err.to_string().contains("was being rolled back"), "{err}");
        assert!(err.to_string().contains("carrier refused"), "{err}");
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(log.count("undo Charge Charge-output"), 1);
        assert_eq!(log.count("undo Reserve Reserve-output"), 1);
        assert_eq!(log.count("ship failed"), 1);
        assert!(store.load(run).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_crash_during_the_rollback_resumes_it_where_it_stopped() {
    let (_dir, stores) = stores();
    for store in stores {
        // Crash while Reserve is being undone: Charge's undoing was recorded already.
        let log = Log::default();
        let run = RunId::new();
        let hung = Arc::new(Notify::new());
        let (reserve, charge) = steps(&log);
        let workflow = order(
            reserve.hang_undo_once(&hung),
            charge,
            ship(&log, true),
            store.clone(),
        );
        crash_when(
            workflow.orchestrate_with(Order::Reserve, RunOptions::new().with_run_id(run)),
            &hung,
        )
        .await;
        let rows = store.load(run).await.unwrap();
        let last: Vec<_> = kinds(&rows).into_iter().skip(3).collect();
        // The rollback's start, then Charge's undoing.
        assert_eq!(
            last,
            [
                (RowKind::Rollback, "Ship".into()),
                (RowKind::Rollback, "Ship".into())
            ]
        );
        assert_eq!(
            workflow.unfinished_runs().await.unwrap()[0].status,
            RunStatus::Interrupted
        );

        let (reserve, charge) = steps(&log);
        let workflow = order(reserve, charge, ship(&log, true), store.clone());
        let outcomes = workflow.resume_interrupted().await.unwrap();
        assert_eq!(outcomes.len(), 1);
        assert!(outcomes[0].1.is_err());
        assert_eq!(
            log.count("undo Charge Charge-output"),
            1,
            "{:?}",
            log.lines()
        );
        assert_eq!(log.count("undo Reserve started"), 1);
        assert_eq!(log.count("undo Reserve Reserve-output"), 1);
        assert_eq!(log.count("ship failed"), 1);
        assert!(store.load(run).await.unwrap().is_empty());

        // Crash while Charge is being undone: it was not recorded, so it runs again.
        let log = Log::default();
        let run = RunId::new();
        let hung = Arc::new(Notify::new());
        let (reserve, charge) = steps(&log);
        let workflow = order(
            reserve,
            charge.hang_undo_once(&hung),
            ship(&log, true),
            store.clone(),
        );
        crash_when(
            workflow.orchestrate_with(Order::Reserve, RunOptions::new().with_run_id(run)),
            &hung,
        )
        .await;
        let (reserve, charge) = steps(&log);
        let workflow = order(reserve, charge, ship(&log, true), store.clone());
        workflow.resume_from(run).await.unwrap_err();
        assert_eq!(log.count("undo Charge started"), 1);
        assert_eq!(log.count("undo Charge Charge-output"), 1);
        assert_eq!(log.count("undo Reserve Reserve-output"), 1);
    }
}

#[tokio::test]
async fn kept_logs_end_rolled_back_and_are_not_resumed() {
    let store = Arc::new(MemoryCheckpointStore::new());
    let log = Log::default();
    let run = RunId::new();
    let (reserve, charge) = steps(&log);
    let workflow = order(reserve, charge, ship(&log, true), store.clone())
        .with_retention(Retention::KeepFinished);
    workflow
        .orchestrate_with(Order::Reserve, RunOptions::new().with_run_id(run))
        .await
        .unwrap_err();
    let rows = store.load(run).await.unwrap();
    let last = rows.last().unwrap();
    assert_eq!(last.kind, RowKind::RolledBack);
    assert!(last.message.contains("carrier refused"));
    assert_eq!(
        RunSummary::from_last_row(last).status,
        RunStatus::RolledBack
    );
    assert!(store.unfinished().await.unwrap().is_empty());
    let err = workflow.resume_from(run).await.unwrap_err();
    assert!(err.to_string().contains("was rolled back"), "{err}");
    assert_eq!(log.count("undo Charge Charge-output"), 1);
}

#[tokio::test]
async fn a_checkpoint_failure_starts_a_rollback_too() {
    let inner = MemoryCheckpointStore::new();
    // The third row (Charge's Completed row) cannot be written: disk full, once.
    let store = FaultyStore::wrapping(Arc::new(inner.clone()));
    store.fail_append(2);
    let log = Log::default();
    let run = RunId::new();
    let (reserve, charge) = steps(&log);
    let workflow = order(reserve, charge, ship(&log, true), store);
    let err = workflow
        .orchestrate_with(Order::Reserve, RunOptions::new().with_run_id(run))
        .await
        .unwrap_err();
    assert!(matches!(err, CanoError::Store(_)), "{err:?}");
    assert!(err.to_string().contains("No space left"), "{err}");
    // Charge completed (its row could not be written), so it is undone, then Reserve.
    assert_eq!(
        log.lines(),
        [
            "do Reserve",
            "do Charge",
            "undo Charge Charge-output",
            "undo Reserve Reserve-output"
        ]
    );
    assert!(inner.load(run).await.unwrap().is_empty());
}

#[tokio::test]
async fn compaction_keeps_the_steps_still_to_undo() {
    // A snapshot after every row: earlier rows are dropped, the stack is not.
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::new());
    let log = Log::default();
    let run = RunId::new();
    let (reserve, charge) = steps(&log);
    let stuck = Arc::new(Notify::new());
    let workflow = order(reserve, charge, Stuck(stuck.clone()), store.clone()).with_compaction(1);
    crash_when(
        workflow.orchestrate_with(Order::Reserve, RunOptions::new().with_run_id(run)),
        &stuck,
    )
    .await;
    assert!(store.load(run).await.unwrap().len() < 3);
    let (reserve, charge) = steps(&log);
    let workflow = order(reserve, charge, ship(&log, true), store.clone()).with_compaction(1);
    workflow.resume_from(run).await.unwrap_err();
    assert_eq!(log.count("undo Charge Charge-output"), 1);
    assert_eq!(log.count("undo Reserve Reserve-output"), 1);
}

#[tokio::test]
async fn a_resumed_run_that_succeeds_keeps_its_steps() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::new());
    let log = Log::default();
    let run = RunId::new();
    crash_in_ship(store.clone(), &log, run).await;
    let (reserve, charge) = steps(&log);
    let workflow = order(reserve, charge, ship(&log, false), store.clone());
    assert_eq!(workflow.resume_from(run).await.unwrap(), Order::Done);
    // Neither step ran again nor was undone.
    assert_eq!(log.lines(), ["do Reserve", "do Charge", "do Ship"]);
}

/// An in-memory store and a sled store (in a directory removed with the guard).
fn stores() -> (tempfile::TempDir, Vec<Arc<dyn CheckpointStore>>) {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledCheckpointStore::open(dir.path()).unwrap();
    (
        dir,
        vec![Arc::new(MemoryCheckpointStore::new()), Arc::new(sled)],
    )
}
