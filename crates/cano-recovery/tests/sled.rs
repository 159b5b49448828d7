//! The sled store on a real database in a temporary directory.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use cano_core::{CanoError, CheckpointStore, Retention, RowKind};
use cano_recovery::{Durability, SledCheckpointStore};
use common::{Ledger, Step, failed_run, pipeline};

#[tokio::test]
async fn a_run_resumes_after_the_store_is_closed_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let ledger = Ledger::default();
    let store = SledCheckpointStore::open(&path).unwrap();
    let run = failed_run(&ledger, "load", store, None).await;
    let store = SledCheckpointStore::open(&path).unwrap();
    let (workflow, _) = pipeline(&ledger, "");
    let workflow = workflow.with_checkpoint_store(store.clone());
    let unfinished = workflow.unfinished_runs().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].run, run);
    assert_eq!(workflow.resume_from(run).await.unwrap(), Step::Done);
    assert_eq!(
        ledger.entries(),
        ["start", "fetch", "transform", "load", "load"]
    );
    assert!(
        store.load(run).await.unwrap().is_empty(),
        "cleared on finishing"
    );
}

#[tokio::test]
async fn concurrent_runs_share_flushes_under_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledCheckpointStore::open(dir.path()).unwrap();
    let (workflow, _) = pipeline(&Ledger::default(), "");
    let workflow = workflow
        .with_checkpoint_store(store.clone())
        .with_retention(Retention::KeepFinished);
    let handles: Vec<_> = (0..100).map(|_| workflow.spawn(Step::Start)).collect();
    let mut runs = Vec::new();
    for handle in handles {
        runs.push(handle.run_id());
        handle.await.unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.rows, 500);
    assert!(stats.flushes < stats.rows, "{stats:?}");
    for run in runs {
        let rows = store.load(run).await.unwrap();
        let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4]);
        assert_eq!(rows[4].kind, RowKind::Finish);
    }
}

#[tokio::test]
async fn every_row_mode_flushes_each_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledCheckpointStore::open_with(dir.path(), Durability::EveryRow).unwrap();
    let (workflow, _) = pipeline(&Ledger::default(), "");
    workflow
        .with_checkpoint_store(store.clone())
        .orchestrate(Step::Start)
        .await
        .unwrap();
    let stats = store.stats();
    assert_eq!(stats.rows, 4);
    // The workflow's graph is kept before its first run writes: one more write.
    assert_eq!(stats.flushes, 6, "the graph, four rows and the clear");
    assert_eq!(stats.syncs, 6, "each flush synced");
}

#[tokio::test]
async fn periodic_mode_acknowledges_without_flushing() {
    let dir = tempfile::tempdir().unwrap();
    // `Duration::MAX`: no periodic flush at all, only an explicit one.
    let store =
        SledCheckpointStore::open_with(dir.path(), Durability::Periodic(Duration::MAX)).unwrap();
    let (workflow, _) = pipeline(&Ledger::default(), "");
    workflow
        .with_checkpoint_store(store.clone())
        .orchestrate(Step::Start)
        .await
        .unwrap();
    assert_eq!((store.stats().flushes, store.stats().syncs), (0, 0));
    store.flush().await.unwrap();
    assert_eq!((store.stats().flushes, store.stats().syncs), (1, 1));
}

#[tokio::test]
async fn a_zero_flush_interval_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = SledCheckpointStore::open_with(dir.path(), Durability::Periodic(Duration::ZERO))
        .unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)), "{err}");
    assert!(err.to_string().contains("Periodic"), "{err}");
}

#[tokio::test]
async fn a_corrupt_row_is_reported_with_its_run_and_number() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    let store = SledCheckpointStore::open(dir.path()).unwrap();
    let run = failed_run(&ledger, "transform", store.clone(), None).await;
    store.close().await.unwrap();
    {
        // Damage row 1 behind the store's back.
        let db = reopen_raw(dir.path());
        let tree = db.open_tree("rows").unwrap();
        let mut key = run.as_u64().to_be_bytes().to_vec();
        key.extend_from_slice(&1u64.to_be_bytes());
        let mut bytes = tree.get(&key).unwrap().unwrap().to_vec();
        bytes.truncate(bytes.len() / 2);
        tree.insert(&key, bytes).unwrap();
        db.flush().unwrap();
    }
    let store = open_after_raw(dir.path());
    let (workflow, _) = pipeline(&ledger, "");
    let err = workflow
        .with_checkpoint_store(store.clone())
        .resume_from(run)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CanoError::Store(_)), "{text}");
    assert!(
        text.contains(&format!("row 1 of run {run}")) && text.contains("corrupt"),
        "{text}"
    );
    // Nothing ran, and the other rows are still there.
    assert_eq!(ledger.entries().len(), 3);
    store.close().await.unwrap();
    let db = reopen_raw(dir.path());
    assert_eq!(db.open_tree("rows").unwrap().len(), 4);
}

#[tokio::test]
async fn prune_removes_runs_whose_last_row_is_old() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledCheckpointStore::open(dir.path()).unwrap();
    let (workflow, failures) = pipeline(&Ledger::default(), "load");
    let workflow = workflow
        .with_checkpoint_store(store.clone())
        .with_retention(Retention::KeepFinished);
    workflow.orchestrate(Step::Start).await.unwrap();
    failures.store(1, Ordering::SeqCst);
    workflow.orchestrate(Step::Start).await.unwrap_err();
    assert_eq!(workflow.unfinished_runs().await.unwrap().len(), 1);
    assert_eq!(store.prune(SystemTime::UNIX_EPOCH).await.unwrap(), 0);
    let later = SystemTime::now() + Duration::from_secs(60);
    assert_eq!(store.prune(later).await.unwrap(), 2);
    assert!(store.unfinished().await.unwrap().is_empty());
}

/// Opens the store's directory with sled directly, behind the store's back (after the
/// store was closed: `close` returns once the directory is free).
fn reopen_raw(path: &std::path::Path) -> sled::Db {
    sled::open(path).unwrap()
}

/// Opens the store after a raw sled handle of this test was dropped. sled gives up its
/// lock only when its own background threads let go, a moment later, and offers
/// nothing to wait on; so this polls, boundedly (a store of cano's own, closed with
/// `close`, is free at once).
fn open_after_raw(path: &std::path::Path) -> SledCheckpointStore {
    let start = std::time::Instant::now();
    loop {
        match SledCheckpointStore::open(path) {
            Err(e) if start.elapsed() < Duration::from_secs(5) => {
                assert!(e.to_string().contains("another process"), "{e}");
                std::thread::yield_now();
            }
            other => return other.unwrap(),
        }
    }
}
