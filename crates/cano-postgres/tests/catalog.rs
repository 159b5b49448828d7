//! Browsing runs on PostgreSQL (RunCatalog): for any mix of queue runs and log-only
//! runs, ids with the high bit set (negative as stored), and many runs started in the
//! same microsecond, paging yields every matching run exactly once, newest first.

mod common;

use cano_core::RunId;
use cano_core::checkpoint::{LiveStatus, PageCursor, RunCatalog, RunFilter};
use common::{fresh_store, raw};
use proptest::prelude::*;

/// One stored run: on the queue (else a log only), in which of four start instants,
/// with which id, failed or finished.
#[derive(Debug, Clone)]
struct Stored {
    queue: bool,
    instant: i64,
    id: i64,
    failed: bool,
}

fn stored() -> impl Strategy<Value = Vec<Stored>> {
    proptest::collection::vec(
        (any::<bool>(), 0i64..4, any::<i64>(), any::<bool>()).prop_map(
            |(queue, instant, id, failed)| Stored {
                queue,
                instant,
                id,
                failed,
            },
        ),
        0..40,
    )
    .prop_map(|mut runs| {
        runs.sort_by_key(|r| r.id);
        runs.dedup_by_key(|r| r.id);
        runs
    })
}

async fn insert(schema: &str, runs: &[Stored]) {
    let client = raw().await;
    for r in runs {
        // Each start instant is one microsecond-exact timestamp shared by many runs.
        let at = format!(
            "timestamptz '2026-01-01 00:00:00+00' + {} * interval '1 second'",
            r.instant
        );
        if r.queue {
            let status = if r.failed { "failed" } else { "finished" };
            client
                .execute(
                    &format!(
                        "INSERT INTO {schema}.cano_runs (run_id, workflow, initial_state, initial_label, status, enqueued_at, error)
                         VALUES ($1, 'wf', '\\x00', 'Start', $2, {at}, CASE WHEN $2 = 'failed' THEN 'boom' END)"
                    ),
                    &[&r.id, &status],
                )
                .await
                .unwrap();
        } else {
            let status: i16 = if r.failed { 1 } else { 2 };
            client
                .execute(
                    &format!(
                        "INSERT INTO {schema}.cano_logs (run_id, last_seq, workflow, version, status, label, updated_at_ms, updated_at, created_at, message)
                         VALUES ($1, 0, 'wf', 1, $2::smallint, 'Done', 0, now(), {at}, CASE WHEN $2::smallint = 1 THEN 'boom' ELSE '' END)"
                    ),
                    &[&r.id, &status],
                )
                .await
                .unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn pages_yield_every_run_once_newest_first(runs in stored(), limit in 1usize..6, only_failed in any::<bool>()) {
        if !common::server_for("catalog::pages_yield_every_run_once_newest_first") {
            return Ok(());
        }
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (seen, counts) = runtime.block_on(async {
            let store = fresh_store("catalog_pages").await;
            insert("catalog_pages", &runs).await;
            let filter = RunFilter {
                statuses: if only_failed { vec![LiveStatus::Failed] } else { Vec::new() },
                ..RunFilter::default()
            };
            let mut seen: Vec<(u64, i64)> = Vec::new();
            let mut after: Option<PageCursor> = None;
            loop {
                let page = store.list_runs(&filter, after, limit).await.unwrap();
                assert!(page.runs.len() <= limit);
                seen.extend(page.runs.iter().map(|r| (r.started_at_us, r.run.as_u64() as i64)));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
                assert!(seen.len() <= runs.len(), "paging does not end");
            }
            (seen, store.count_runs(&filter).await.unwrap())
        });
        let epoch_2026_us: u64 = 1_767_225_600_000_000;
        let mut expected: Vec<(u64, i64)> = runs
            .iter()
            .filter(|r| !only_failed || r.failed)
            .map(|r| (epoch_2026_us + r.instant as u64 * 1_000_000, r.id))
            .collect();
        expected.sort_by(|a, b| b.cmp(a));
        prop_assert_eq!(&seen, &expected);
        // Counts ignore the status filter.
        prop_assert_eq!(counts.of(LiveStatus::Failed) as usize, runs.iter().filter(|r| r.failed).count());
        prop_assert_eq!(counts.total() as usize, runs.len());
    }
}

#[tokio::test]
async fn a_queued_run_without_rows_and_a_lapsed_lease_read_as_the_queue_says() {
    pg_or_skip!();
    let store = fresh_store("catalog_status").await;
    let client = raw().await;
    client
        .batch_execute(
            "INSERT INTO catalog_status.cano_runs (run_id, workflow, initial_state, initial_label, status, lease_until, worker)
             VALUES (1, 'wf', '\\x00', 'Start', 'queued', NULL, NULL),
                    (2, 'wf', '\\x00', 'Start', 'running', now() + interval '1 hour', 'w1'),
                    (3, 'wf', '\\x00', 'Start', 'running', now() - interval '1 second', 'w1'),
                    (4, 'wf', '\\x00', 'Start', 'parked', NULL, NULL)",
        )
        .await
        .unwrap();
    let status = |run: u64| {
        let store = store.clone();
        async move {
            let filter = RunFilter {
                run: Some(RunId::from(run)),
                ..RunFilter::default()
            };
            store.list_runs(&filter, None, 1).await.unwrap().runs[0].status
        }
    };
    assert_eq!(status(1).await, LiveStatus::Queued);
    assert_eq!(status(2).await, LiveStatus::Running);
    assert_eq!(
        status(3).await,
        LiveStatus::Interrupted,
        "a lapsed lease is no longer running"
    );
    assert_eq!(status(4).await, LiveStatus::Parked);
    let listed = store
        .list_runs(&RunFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(listed.runs.len(), 4);
    assert!(
        listed
            .runs
            .iter()
            .all(|r| r.label == "Start" && r.last_seq.is_none())
    );
}
