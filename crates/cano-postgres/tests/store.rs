//! The PostgreSQL checkpoint store against a real server: the append rule, resuming a
//! workflow, batching, the migration, and the faults the store must survive.

mod common;

use std::time::{Duration, SystemTime};

use cano_core::checkpoint::{CheckpointRow, DataChange, DurableStore, RowKind, RunStatus};
use cano_core::{
    CanoError, CheckpointStore, RunId, RunOptions, Task, TaskConfig, TaskResult, Workflow,
};
use cano_postgres::{PgOptions, PostgresCheckpointStore, SCHEMA_VERSION};
use common::{fresh_store, options, raw};

fn row(run: RunId, seq: u64, kind: RowKind) -> CheckpointRow {
    CheckpointRow {
        run,
        seq,
        kind,
        workflow: "wf".into(),
        version: 1,
        state: vec![seq as u8],
        label: format!("S{seq}"),
        data: DataChange::default(),
        cursor: None,
        message: String::new(),
        written_at_ms: 1_000 + seq,
    }
}

/// The row numbers the store holds for `run`, in order.
async fn seqs(store: &PostgresCheckpointStore, run: RunId) -> Vec<u64> {
    store
        .load(run)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

#[tokio::test]
async fn rows_append_in_order_and_a_clash_names_the_run_and_row() {
    pg_or_skip!();
    let store = fresh_store("t_store_rules").await;
    let run = RunId::new();
    assert!(store.load(run).await.unwrap().is_empty());
    let err = store
        .append(row(run, 1, RowKind::Enter))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("row 1 of run {run}")) && err.contains("no rows"),
        "{err}"
    );
    for seq in 0..4 {
        store.append(row(run, seq, RowKind::Enter)).await.unwrap();
    }
    let err = store
        .append(row(run, 2, RowKind::Enter))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already exists") && err.contains("another process"),
        "{err}"
    );
    let err = store
        .append(row(run, 0, RowKind::Enter))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot reuse its id"), "{err}");
    let err = store
        .append(row(run, 9, RowKind::Enter))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("gap after row 3"), "{err}");

    let loaded = store.load(run).await.unwrap();
    assert_eq!(
        loaded,
        (0..4)
            .map(|s| row(run, s, RowKind::Enter))
            .collect::<Vec<_>>()
    );

    store.truncate(run, 2).await.unwrap();
    assert_eq!(seqs(&store, run).await, [2, 3]);
    // Truncation keeps the log head: the next row is still 4.
    store.append(row(run, 4, RowKind::Fail)).await.unwrap();

    let other = RunId::new();
    store.append(row(other, 0, RowKind::Enter)).await.unwrap();
    store.append(row(other, 1, RowKind::Finish)).await.unwrap();
    let unfinished = store.unfinished().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(
        (
            unfinished[0].run,
            unfinished[0].status,
            unfinished[0].last_seq
        ),
        (run, RunStatus::Failed, 4)
    );
    assert_eq!(unfinished[0].label, "S4");

    store.clear(run).await.unwrap();
    assert!(store.load(run).await.unwrap().is_empty());
    store.append(row(run, 0, RowKind::Enter)).await.unwrap(); // a cleared id starts over
    // Rows were written at 1000 ms after the epoch: everything is older than now.
    assert_eq!(store.prune(SystemTime::now()).await.unwrap(), 2);
    assert!(store.unfinished().await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_runs_share_append_statements() {
    pg_or_skip!();
    let store = fresh_store("t_store_batch").await;
    let runs: Vec<RunId> = (0..200).map(|_| RunId::new()).collect();
    for seq in 0..5 {
        let appends = runs
            .iter()
            .map(|&run| store.append(row(run, seq, RowKind::Enter)));
        for result in futures::future::join_all(appends).await {
            result.unwrap();
        }
    }
    let stats = store.stats();
    assert_eq!(stats.rows, 1_000);
    assert!(
        stats.statements < 1_000,
        "every row had a statement of its own: {stats:?}"
    );
    let counted = raw()
        .await
        .query_one(
            "SELECT count(*), count(DISTINCT run_id) FROM t_store_batch.cano_rows",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (counted.get::<_, i64>(0), counted.get::<_, i64>(1)),
        (1_000, 200)
    );
}

/// The writer keeps two statements in flight and holds a third batch back for them
/// while they answer quickly; two stuck behind locks must not hold the other runs'
/// rows up: the next batch goes on another connection.
#[tokio::test]
async fn appends_stuck_behind_locks_do_not_hold_up_other_runs() {
    pg_or_skip!();
    let schema = "t_store_stuck";
    common::drop_schema(schema).await;
    let store = PostgresCheckpointStore::connect(options(schema).with_pool_size(3))
        .await
        .unwrap();
    let stuck = [RunId::new(), RunId::new()];
    let free = RunId::new();
    for run in stuck {
        store.append(row(run, 0, RowKind::Enter)).await.unwrap();
    }

    // Another session holds the stuck runs' log rows, which their next appends update.
    let mut holder = raw().await;
    let lock = holder.transaction().await.unwrap();
    let keys: Vec<i64> = stuck.iter().map(|r| r.as_u64() as i64).collect();
    lock.query(
        &format!("SELECT 1 FROM {schema}.cano_logs WHERE run_id = ANY($1) FOR UPDATE"),
        &[&keys],
    )
    .await
    .unwrap();
    // One at a time, so that they are two statements, not one batch.
    let observer = raw().await;
    let mut waiting = Vec::new();
    for (n, run) in stuck.into_iter().enumerate() {
        waiting.push(tokio::spawn({
            let store = store.clone();
            async move { store.append(row(run, 1, RowKind::Enter)).await }
        }));
        // The server's word that the append waits on the lock (nothing to await for it).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let blocked: i64 = observer
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                    &[&schema],
                )
                .await
                .unwrap()
                .get(0);
            if blocked > n as i64 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "append {n} never waited on the lock"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // Another run's row is written while both are still stuck.
    tokio::time::timeout(
        Duration::from_secs(20),
        store.append(row(free, 0, RowKind::Enter)),
    )
    .await
    .expect("another run's append waited for the stuck statements")
    .unwrap();
    assert_eq!(seqs(&store, free).await, [0]);
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "the locks are still held"
    );

    // Let go: the stuck rows land, in order.
    lock.rollback().await.unwrap();
    for (run, append) in stuck.into_iter().zip(waiting) {
        append.await.unwrap().unwrap();
        assert_eq!(seqs(&store, run).await, [0, 1]);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Import {
    Fetch,
    Load { batch: u32 },
    Done,
}

struct Fetch;
#[async_trait::async_trait]
impl Task<Import> for Fetch {
    async fn run_bare(&self) -> Result<TaskResult<Import>, CanoError> {
        DurableStore::current()?.put("fetched", &vec![7u32, 8, 9])?;
        Ok(TaskResult::Single(Import::Load { batch: 3 }))
    }
}

struct Load(std::sync::Arc<std::sync::atomic::AtomicBool>);
#[async_trait::async_trait]
impl Task<Import> for Load {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Import>, CanoError> {
        if !self.0.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(CanoError::task_execution("warehouse offline"));
        }
        let fetched: Vec<u32> = DurableStore::current()?.get("fetched")?;
        assert_eq!(fetched, [7, 8, 9]);
        Ok(TaskResult::Single(Import::Done))
    }
}

#[tokio::test]
async fn a_failed_run_resumes_from_postgres_in_another_workflow_instance() {
    pg_or_skip!();
    let store = fresh_store("t_store_resume").await;
    let online = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let build = |store: PostgresCheckpointStore| {
        Workflow::bare()
            .register(Import::Fetch, Fetch)
            .register(Import::Load { batch: 3 }, Load(online.clone()))
            .add_exit_state(Import::Done)
            .with_checkpoint_store(store)
            .with_workflow_id("import")
    };
    let run = RunId::new();
    let first = build(store.clone());
    let err = first
        .orchestrate_with(Import::Fetch, RunOptions::new().with_run_id(run))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("warehouse offline"), "{err}");

    // A second process would connect on its own: so does this store.
    let second = build(
        PostgresCheckpointStore::connect(options("t_store_resume"))
            .await
            .unwrap(),
    );
    let unfinished = second.unfinished_runs().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].label, "Load { batch: 3 }");
    online.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(second.resume_from(run).await.unwrap(), Import::Done);
    assert!(second.unfinished_runs().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_migration_is_idempotent_and_a_newer_schema_is_refused() {
    pg_or_skip!();
    let _first = fresh_store("t_store_migrate").await;
    // Many processes starting at once each run the migration: all succeed.
    let connects = (0..4).map(|_| PostgresCheckpointStore::connect(options("t_store_migrate")));
    for store in futures::future::join_all(connects).await {
        store.unwrap();
    }
    let db = raw().await;
    let version: i32 = db
        .query_one("SELECT version FROM t_store_migrate.cano_meta", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);

    db.execute(
        "UPDATE t_store_migrate.cano_meta SET version = $1",
        &[&(SCHEMA_VERSION + 1)],
    )
    .await
    .unwrap();
    let err = PostgresCheckpointStore::connect(options("t_store_migrate"))
        .await
        .err()
        .expect("a newer schema must be refused")
        .to_string();
    assert!(
        err.contains("written by a newer cano") && err.contains("upgrade"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_retried_then_reported_clearly() {
    // Nothing listens on port 1.
    let started = std::time::Instant::now();
    let err = PostgresCheckpointStore::connect(
        PgOptions::new("postgres://cano@127.0.0.1:1/postgres")
            .with_schema("t_unreachable")
            .with_connect_timeout(Duration::from_millis(400)),
    )
    .await
    .err()
    .expect("no server there")
    .to_string();
    assert!(
        err.contains("could not reach PostgreSQL at 127.0.0.1:1/postgres after"),
        "{err}"
    );
    assert!(!err.contains("after 1 attempts"), "it did not retry: {err}");
    assert!(err.contains(".ci/postgres start"), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(200));

    let err = PostgresCheckpointStore::connect(
        PgOptions::new("postgres://cano@127.0.0.1/x").with_schema("Bad-Name"),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("\"Bad-Name\" is not a usable schema name"),
        "{err}"
    );
}

#[tokio::test]
async fn rows_survive_connections_dropped_between_and_during_appends() {
    pg_or_skip!();
    let store = fresh_store("t_store_dropped").await;
    let killer = raw().await;
    let kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                WHERE application_name = 't_store_dropped' AND pid <> pg_backend_pid()";
    let runs: Vec<RunId> = (0..50).map(|_| RunId::new()).collect();
    let mut terminated = 0;
    for seq in 0..6 {
        let appends = runs
            .iter()
            .map(|&run| store.append(row(run, seq, RowKind::Enter)));
        let (results, killed) = tokio::join!(
            futures::future::join_all(appends),
            killer.query_one(kill, &[])
        );
        terminated += killed.unwrap().get::<_, i64>(0);
        for result in results {
            result.unwrap();
        }
    }
    assert!(terminated > 0, "no connection of the store was dropped");
    for &run in &runs {
        assert_eq!(seqs(&store, run).await, [0, 1, 2, 3, 4, 5], "run {run}");
    }
}
