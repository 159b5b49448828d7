//! `cano` against the `.ci/postgres` server, with runs written by real workers, a
//! real queue and a real cluster scheduler. Skipped without `CANO_PG_URL` (except
//! under `cargo xtask test`, which sets `CANO_PG_REQUIRED`).

#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cano_core::checkpoint::CheckpointStore;
use cano_postgres::{
    ClusterEvent, ClusterScheduler, EnqueueOptions, PgOptions, PostgresCheckpointStore,
    QueueStatus, RunQueue, Worker,
};
use common::{Invoice, cano, failed, fill, invoices, json, ok};

fn url() -> Option<String> {
    match std::env::var("CANO_PG_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var_os("CANO_PG_REQUIRED").is_none(),
                "CANO_PG_URL is not set but the PostgreSQL tests are required"
            );
            eprintln!(
                "skipped: set CANO_PG_URL (or run `cargo xtask test`) to run the PostgreSQL tests"
            );
            None
        }
    }
}

async fn connect(url: &str, schema: &str) -> PostgresCheckpointStore {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    PostgresCheckpointStore::connect(PgOptions::new(url).with_schema(schema))
        .await
        .unwrap()
}

async fn sql(url: &str, statement: &str) -> Vec<tokio_postgres::Row> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.query(statement, &[]).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_and_log_runs_are_listed_shown_and_acted_on() {
    let Some(url) = url() else { return };
    let schema = "inspect_cli";
    let store = connect(&url, schema).await;
    let runs = fill(Arc::new(store.clone()) as Arc<dyn CheckpointStore>).await;
    let queue = RunQueue::new(&store);
    // A run nobody works on stays queued; the worker's workflow sends to a good
    // address, so a failed run it resumes goes through.
    let waiting = queue
        .enqueue("reports", &Invoice::Draft, EnqueueOptions::new())
        .await
        .unwrap()
        .run;
    let worker = Worker::new(&store)
        .named("worker-a")
        .register(
            "invoice",
            invoices(Arc::new(store.clone()), "carol@example.com", None),
        )
        .start()
        .await
        .unwrap();
    // A queue run that parks keeps its rows, each written under its claim.
    let mut events = worker.subscribe();
    let parked_on_queue = queue
        .enqueue("invoice", &Invoice::Draft, EnqueueOptions::new())
        .await
        .unwrap()
        .run;
    loop {
        if let cano_postgres::WorkerEvent::Parked { run } = events.recv().await.unwrap()
            && run == parked_on_queue
        {
            break;
        }
    }
    let driven = queue
        .enqueue("invoice", &Invoice::Send, EnqueueOptions::new())
        .await
        .unwrap()
        .run;
    assert_eq!(
        queue
            .wait(driven, Duration::from_secs(30))
            .await
            .unwrap()
            .status,
        QueueStatus::Finished
    );

    let spec = url.clone();
    let with_schema = |args: &[&str]| {
        let mut all = vec!["--schema", schema];
        all.extend_from_slice(args);
        cano(&spec, &all)
    };
    let all = json(with_schema(&["runs", "list", "--json"]));
    let listed = all["runs"].as_array().unwrap();
    assert_eq!(listed.len(), 7, "{all}");
    assert_eq!(all["counts"]["queued"], 1, "{all}");
    assert_eq!(all["counts"]["finished"], 2, "{all}");
    let queued = listed
        .iter()
        .find(|r| r["run"] == waiting.to_string())
        .unwrap();
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["workflow"], "reports");
    assert_eq!(queued["state"], "Draft");
    let only_reports = json(with_schema(&[
        "runs",
        "list",
        "--workflow",
        "reports",
        "--json",
    ]));
    assert_eq!(only_reports["runs"].as_array().unwrap().len(), 1);

    // The queue run's page shows the claim that drove it.
    let shown = json(with_schema(&[
        "runs",
        "show",
        &driven.to_string(),
        "--json",
    ]));
    assert_eq!(shown["claims"][0]["worker"], "worker-a", "{shown}");
    assert_eq!(shown["claims"][0]["outcome"], "finished");
    assert!(shown["graph"].as_str().unwrap().contains("flowchart TD"));

    // A retry from the row that parked a run is refused (nothing would wake the copy);
    // from the row before, it is a new run for the workers.
    let err = failed(with_schema(&[
        "runs",
        "retry",
        &runs.parked.to_string(),
        "--from-row",
        "1",
    ]));
    assert!(err.contains("parks it in a wait"), "{err}");
    let out = ok(with_schema(&[
        "runs",
        "retry",
        &runs.parked.to_string(),
        "--from-row",
        "0",
        "--json",
    ]));
    assert!(out.contains("queued for the workers"), "{out}");

    // Each row of the parked queue run names the worker whose claim wrote it.
    let shown = json(with_schema(&[
        "runs",
        "show",
        &parked_on_queue.to_string(),
        "--json",
    ]));
    let workers: Vec<&str> = shown["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["worker"].as_str().unwrap_or("-"))
        .collect();
    assert!(
        !workers.is_empty() && workers.iter().all(|w| *w == "worker-a"),
        "{shown}"
    );
    assert_eq!(shown["run"]["status"], "parked");

    // Cancel the queued run: durable, and logged with who and why.
    ok(with_schema(&[
        "runs",
        "cancel",
        &waiting.to_string(),
        "--by",
        "ada",
        "--reason",
        "not needed",
    ]));
    let record = queue.status(waiting).await.unwrap().unwrap();
    assert_eq!(record.status, QueueStatus::Cancelled);
    assert!(
        record
            .error
            .unwrap()
            .contains("cancelled by ada: not needed")
    );
    let shown = json(with_schema(&[
        "runs",
        "show",
        &waiting.to_string(),
        "--json",
    ]));
    assert_eq!(shown["run"]["status"], "failed");
    assert_eq!(shown["actions"][0]["actor"], "ada");

    // A queue run whose worker died (its lease ran out, no worker has claimed it yet)
    // is cancelled through the queue: a Fail row alone would be resumed by its next
    // claim.
    let orphan = queue
        .enqueue("reports", &Invoice::Draft, EnqueueOptions::new())
        .await
        .unwrap()
        .run;
    sql(
        &url,
        &format!(
            "UPDATE {schema}.cano_runs SET status = 'running', worker = 'ghost', epoch = 1,
                 lease_until = now() - interval '1 second', started_at = now()
             WHERE run_id = {}",
            orphan.as_u64() as i64
        ),
    )
    .await;
    let shown = json(with_schema(&[
        "runs",
        "show",
        &orphan.to_string(),
        "--json",
    ]));
    assert_eq!(shown["run"]["status"], "interrupted", "{shown}");
    ok(with_schema(&[
        "runs",
        "cancel",
        &orphan.to_string(),
        "--by",
        "ada",
    ]));
    let requested = sql(
        &url,
        &format!(
            "SELECT cancel_requested FROM {schema}.cano_runs WHERE run_id = {}",
            orphan.as_u64() as i64
        ),
    )
    .await;
    let reason: Option<String> = requested[0].get(0);
    assert!(
        reason.is_some_and(|r| r.contains("cancelled by ada")),
        "no durable cancel request"
    );

    // Resume the failed log run: the queue adopts it and the worker finishes it
    // from its last checkpoint.
    let out = ok(with_schema(&[
        "runs",
        "resume",
        &runs.failed.to_string(),
        "--by",
        "ada",
    ]));
    assert!(out.contains("queued for the workers"), "{out}");
    let record = queue
        .wait(runs.failed, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(record.status, QueueStatus::Finished, "{record:?}");
    let err = failed(with_schema(&["runs", "resume", &runs.finished.to_string()]));
    assert!(err.contains("it is finished"), "{err}");

    // A row the server holds but this build cannot read is shown as such.
    sql(
        &url,
        &format!(
            "UPDATE {schema}.cano_rows SET body = '\\xee00' WHERE run_id = {} AND seq = 0",
            runs.interrupted.as_u64() as i64
        ),
    )
    .await;
    let shown = json(with_schema(&[
        "runs",
        "show",
        &runs.interrupted.to_string(),
        "--json",
    ]));
    assert_eq!(shown["timeline"][0]["kind"], "unreadable", "{shown}");
    assert_eq!(shown["run"]["status"], "interrupted");

    // A bulk delete's dry run changes nothing; the real one deletes the finished runs.
    let before = ok(with_schema(&["runs", "list", "--json"]));
    let dry = ok(with_schema(&[
        "runs",
        "delete",
        "--status",
        "finished",
        "--dry-run",
    ]));
    assert!(dry.contains("3 would change"), "{dry}");
    assert_eq!(ok(with_schema(&["runs", "list", "--json"])), before);
    let done = ok(with_schema(&[
        "runs", "delete", "--status", "finished", "--by", "ada",
    ]));
    assert!(done.contains("3 changed"), "{done}");
    let left = json(with_schema(&["runs", "list", "--json"]));
    assert_eq!(
        left["counts"]["finished"],
        serde_json::Value::Null,
        "{left}"
    );
    assert!(
        queue.status(driven).await.unwrap().is_none(),
        "the queue record went too"
    );
    worker.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_view_shows_schedules_and_workers() {
    let Some(url) = url() else { return };
    let schema = "inspect_cluster";
    let store = connect(&url, schema).await;
    let worker = Worker::new(&store)
        .named("worker-b")
        .register(
            "invoice",
            invoices(Arc::new(store.clone()), "bob@example.com", None),
        )
        .start()
        .await
        .unwrap();
    let scheduler = ClusterScheduler::new(&store, "billing")
        .named("scheduler-1")
        .cron("every-second", "* * * * * *", "invoice", &Invoice::Send)
        .unwrap()
        .start()
        .await
        .unwrap();
    let mut events = scheduler.subscribe();
    // The leader records its schedules before its first tick.
    let run = loop {
        if let ClusterEvent::Fired { run, .. } = events.recv().await.unwrap() {
            break run;
        }
    };
    RunQueue::new(&store)
        .wait(run, Duration::from_secs(30))
        .await
        .unwrap();
    let view = json(cano(&url, &["--schema", schema, "cluster", "--json"]));
    let schedule = &view["schedules"][0];
    assert_eq!(schedule["group"], "billing", "{view}");
    assert_eq!(schedule["schedule"], "every-second");
    assert_eq!(schedule["leader"], "scheduler-1");
    assert_eq!(schedule["leader_live"], true);
    assert!(
        schedule["next_fire_ms"].as_u64().unwrap() >= schedule["last_fire_ms"].as_u64().unwrap()
    );
    assert_eq!(view["workers"][0]["worker"], "worker-b", "{view}");
    let text = ok(cano(&url, &["--schema", schema, "cluster"]));
    assert!(
        text.contains("every-second") && text.contains("worker-b"),
        "{text}"
    );
    scheduler.stop().await;
    worker.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_newer_schema_is_refused_and_nothing_is_created() {
    let Some(url) = url() else { return };
    let err = failed(cano(&url, &["--schema", "inspect_nowhere", "runs", "list"]));
    assert!(
        err.contains("no cano schema") && err.contains("nothing was created"),
        "{err}"
    );
    let exists = sql(
        &url,
        "SELECT 1 FROM information_schema.schemata WHERE schema_name = 'inspect_nowhere'",
    )
    .await;
    assert!(exists.is_empty(), "the inspector created the schema");

    let store = connect(&url, "inspect_newer").await;
    drop(store);
    sql(&url, "UPDATE inspect_newer.cano_meta SET version = 99").await;
    let err = failed(cano(&url, &["--schema", "inspect_newer", "runs", "list"]));
    assert!(
        err.contains("version 99") && err.contains("newer cano"),
        "{err}"
    );

    let err = failed(cano(
        "postgres://cano@127.0.0.1:1/nowhere",
        &["runs", "list"],
    ));
    assert!(err.contains("could not reach PostgreSQL"), "{err}");
}
