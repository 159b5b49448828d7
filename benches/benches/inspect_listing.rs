//! The run inspector's listings at scale: a page of runs (newest first) out of a
//! million stored on PostgreSQL, with and without filters, deep pages, and the counts
//! by status; and a page out of a hundred thousand runs on sled, with what the
//! listing costs in resident memory. Not a criterion bench: filling the store is the
//! long part, and each figure is the median of repeated listings. `cargo bench`
//! measures; `cargo test` runs a small smoke version. Needs `CANO_PG_URL`.

use std::time::{Duration, Instant};

use cano::postgres::{PgOptions, PostgresCheckpointStore};
use cano_core::checkpoint::{DataChange, LiveStatus, RunFilter};
use cano_core::{CheckpointRow, CheckpointStore, RowKind, RunId};
use cano_inspect::Inspector;
use cano_recovery::{Durability, SledCheckpointStore};

const SCHEMA: &str = "bench_inspect";

/// The median and the slowest of `n` timings of `f`.
async fn timed<F, Fut>(n: usize, mut f: F) -> (Duration, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        f().await;
        times.push(start.elapsed());
    }
    times.sort();
    (times[n / 2], times[n - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `runs` log-only runs and a tenth as many queue runs, written by SQL in bulk (the
/// engine writing a million runs would take the bench an hour and measure nothing
/// new): one run in a hundred failed (with a timeout error), the rest finished, over
/// ten workflows; queue runs are 1% queued.
async fn fill_postgres(url: &str, runs: i64) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .await
        .unwrap();
    // Creates the schema at this build's version.
    drop(
        PostgresCheckpointStore::connect(PgOptions::new(url).with_schema(SCHEMA))
            .await
            .unwrap(),
    );
    let queue_runs = runs / 10;
    client
        .batch_execute(&format!(
            "INSERT INTO {SCHEMA}.cano_logs (run_id, last_seq, workflow, version, status, label,
                 updated_at_ms, updated_at, created_at, message)
             SELECT g, 3, 'workflow-' || (g % 10), 1,
                    CASE WHEN g % 100 = 0 THEN 1 ELSE 2 END,
                    CASE WHEN g % 100 = 0 THEN 'Charge' ELSE 'Done' END,
                    (extract(epoch FROM now()) * 1000)::bigint - g, now() - g * interval '1 ms',
                    now() - g * interval '1 ms' - interval '5 ms',
                    CASE WHEN g % 100 = 0 THEN 'task `Charge` timed out after 2s' ELSE '' END
             FROM generate_series(1, {runs}) g;
             INSERT INTO {SCHEMA}.cano_runs (run_id, workflow, initial_state, initial_label, status,
                 enqueued_at, started_at, finished_at)
             SELECT -g, 'queued-' || (g % 5), '\\x00', 'Start',
                    CASE WHEN g % 100 = 0 THEN 'queued' ELSE 'finished' END,
                    now() - g * interval '7 ms', now(), now()
             FROM generate_series(1, {queue_runs}) g;
             ANALYZE {SCHEMA}.cano_logs; ANALYZE {SCHEMA}.cano_runs;"
        ))
        .await
        .unwrap();
}

/// `runs` runs of three rows on sled (the last of one run in a hundred a `Fail`).
async fn fill_sled(store: &SledCheckpointStore, runs: u64) {
    let at = 1_700_000_000_000u64;
    let mut writes = Vec::new();
    for i in 0..runs {
        let run = RunId::from(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let failed = i % 100 == 0;
        for seq in 0..3u64 {
            let kind = match seq {
                2 if failed => RowKind::Fail,
                2 => RowKind::Finish,
                _ => RowKind::Enter,
            };
            let row = CheckpointRow {
                run,
                seq,
                kind,
                workflow: format!("workflow-{}", i % 10),
                version: 1,
                state: vec![seq as u8],
                label: format!("Step{seq}"),
                data: DataChange {
                    full: seq == 0,
                    entries: vec![("payload".into(), Some(vec![7u8; 200]))],
                },
                cursor: None,
                message: if failed && seq == 2 {
                    "timed out".into()
                } else {
                    String::new()
                },
                written_at_ms: at + i * 10 + seq,
            };
            let store = store.clone();
            writes.push(async move { store.append(row).await.unwrap() });
        }
        if writes.len() >= 3000 {
            futures::future::join_all(writes.drain(..)).await;
        }
    }
    futures::future::join_all(writes).await;
    store.flush().await.unwrap();
}

fn main() {
    let measuring = cano_benches::measuring();
    let url = cano_benches::pg_url_or_exit();
    let runtime = cano_benches::two_workers();
    let (pg_runs, sled_runs, repeats) = if measuring {
        (1_000_000i64, 100_000u64, 15)
    } else {
        (2_000, 500, 2)
    };
    let mut json = Vec::new();
    runtime.block_on(async {
        let started = Instant::now();
        fill_postgres(&url, pg_runs).await;
        println!("inspect listing: filled {pg_runs} log runs and {} queue runs on PostgreSQL in {:.1} s", pg_runs / 10, started.elapsed().as_secs_f64());
        let store = PostgresCheckpointStore::connect(PgOptions::new(&url).with_schema(SCHEMA))
            .await
            .unwrap();
        let inspector = Inspector::from_postgres(store);
        let failed = RunFilter {
            statuses: vec![LiveStatus::Failed],
            ..RunFilter::default()
        };
        let one_workflow = RunFilter {
            workflow: Some("workflow-3".into()),
            ..RunFilter::default()
        };
        let error_text = RunFilter {
            error_contains: Some("TIMED OUT".into()),
            ..RunFilter::default()
        };
        let queued = RunFilter {
            statuses: vec![LiveStatus::Queued],
            ..RunFilter::default()
        };
        // No run matches: both indexes are read to their end (the worst case).
        let none = RunFilter {
            state: Some("NoSuchState".into()),
            ..RunFilter::default()
        };
        let no_error = RunFilter {
            error_contains: Some("no such error".into()),
            ..RunFilter::default()
        };
        // The cursor 100 pages in.
        let mut deep = None;
        for _ in 0..100 {
            deep = inspector.list(&RunFilter::default(), deep, 50).await.unwrap().next;
        }
        let cases: Vec<(&str, RunFilter, Option<cano_core::checkpoint::PageCursor>)> = vec![
            ("pg_newest", RunFilter::default(), None),
            ("pg_failed", failed.clone(), None),
            ("pg_workflow", one_workflow, None),
            ("pg_error_text", error_text, None),
            ("pg_queued", queued, None),
            ("pg_page_100", RunFilter::default(), deep),
            ("pg_no_match", none, None),
            ("pg_no_error_match", no_error, None),
        ];
        for (name, filter, after) in cases {
            let page = inspector.list(&filter, after, 50).await.unwrap();
            assert_eq!(page.runs.is_empty(), name.starts_with("pg_no_"), "{name}");
            let (median, worst) = timed(repeats, || async {
                inspector.list(&filter, after, 50).await.unwrap();
            })
            .await;
            println!("inspect listing: {name:<14} a page of 50 of {pg_runs} runs: median {:.2} ms, slowest {:.2} ms", ms(median), ms(worst));
            json.push(format!("\"{name}_ms\":{:.3}", ms(median)));
        }
        let counts = inspector.counts(&failed).await.unwrap();
        assert!(counts.total() as i64 >= pg_runs);
        let (median, worst) = timed(repeats.min(5), || async {
            inspector.counts(&failed).await.unwrap();
        })
        .await;
        println!("inspect listing: pg_counts      counts by status of {} runs: median {:.1} ms, slowest {:.1} ms", counts.total(), ms(median), ms(worst));
        json.push(format!("\"pg_counts_ms\":{:.3}", ms(median)));

        let dir = tempfile::tempdir().unwrap();
        let store = SledCheckpointStore::open_async(dir.path(), Durability::Periodic(Duration::MAX))
            .await
            .unwrap();
        let started = Instant::now();
        fill_sled(&store, sled_runs).await;
        println!("inspect listing: filled {sled_runs} runs ({} rows) on sled in {:.1} s", sled_runs * 3, started.elapsed().as_secs_f64());
        let inspector = Inspector::from_sled(store);
        let before = cano_benches::resident_bytes().unwrap_or(0);
        let (median, worst) = timed(repeats.min(5), || async {
            let page = inspector.list(&failed, None, 50).await.unwrap();
            assert_eq!(page.runs.len() as u64, (sled_runs / 100).min(50));
        })
        .await;
        let after = cano_benches::resident_bytes().unwrap_or(0);
        let grew_mb = after.saturating_sub(before) as f64 / 1e6;
        println!("inspect listing: sled_failed    a page of 50 of {sled_runs} runs: median {:.0} ms, slowest {:.0} ms; resident memory grew {grew_mb:.1} MB (the rows hold {:.0} MB)", ms(median), ms(worst), (sled_runs * 3 * 230) as f64 / 1e6);
        json.push(format!("\"sled_failed_ms\":{:.3},\"sled_listing_grew_mb\":{grew_mb:.2}", ms(median)));
        inspector.close().await.unwrap();
    });
    cano_benches::write_report("inspect_listing.json", &format!("{{{}}}\n", json.join(",")));
}
