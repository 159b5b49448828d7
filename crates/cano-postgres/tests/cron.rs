//! The cluster scheduler in one process against a real server: what a new leader does
//! with the ticks nobody fired while the cluster had no leader.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use cano_postgres::{ClusterEvent, ClusterScheduler};
use common::{fresh_store, raw};
use tokio::sync::broadcast;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Tick {
    Start,
}

async fn next(events: &mut broadcast::Receiver<ClusterEvent>) -> ClusterEvent {
    tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await
        .expect("the scheduler said nothing for 30 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_fires_missed_ticks_within_the_window_and_reports_the_older_ones() {
    pg_or_skip!();
    let schema = "t_cron_catch_up";
    let store = fresh_store(schema).await;
    let scheduler = |name: &str| {
        ClusterScheduler::new(&store, "g")
            .named(name)
            .cron("every-second", "* * * * * *", "tick", &Tick::Start)
            .unwrap()
            .with_leader_lease(Duration::from_secs(1))
            .with_standby_poll(Duration::from_millis(100))
            .with_catch_up(Duration::from_secs(2))
    };
    let first = scheduler("first");
    let mut events = first.subscribe();
    let first = first.start().await.unwrap();
    // Subscribed before the start, so its first word is that it leads.
    assert!(
        matches!(next(&mut events).await, ClusterEvent::Leading { .. }),
        "a lone scheduler leads first"
    );
    let mut last_fired = None;
    while last_fired.is_none() {
        if let ClusterEvent::Fired { at, .. } = next(&mut events).await {
            last_fired = Some(at.timestamp_millis());
        }
    }
    first.stop().await;
    // The cluster has no scheduler for five seconds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Subscribed before the start: what it skips on taking over is reported at once,
    // before a subscription taken after the start could hear of it.
    let second = scheduler("second");
    let mut events = second.subscribe();
    let second = second.start().await.unwrap();
    let mut skipped: Vec<(i64, i64, u64)> = Vec::new();
    let mut fired: BTreeSet<i64> = BTreeSet::new();
    // Until it fires a tick that is not late.
    loop {
        match next(&mut events).await {
            ClusterEvent::Skipped {
                from, to, count, ..
            } => skipped.push((from.timestamp_millis(), to.timestamp_millis(), count)),
            ClusterEvent::Fired { at, .. } => {
                let at = at.timestamp_millis();
                fired.insert(at);
                if chrono::Utc::now().timestamp_millis() - at < 900 {
                    break;
                }
            }
            _ => {}
        }
    }
    second.stop().await;
    // Ticks older than the window were reported, not fired; every tick since the
    // first scheduler's last one was either fired once or reported, never both.
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    let (from, to, count) = skipped[0];
    assert!(
        count >= 1 && to - from == (count as i64 - 1) * 1000,
        "{skipped:?}"
    );
    let last = *fired.last().unwrap();
    let mut expected = last_fired.unwrap() + 1000;
    while expected <= last {
        let reported = (from..=to).contains(&expected);
        assert!(
            reported != fired.contains(&expected),
            "tick {expected}: fired {}, reported {reported}",
            fired.contains(&expected)
        );
        expected += 1000;
    }
    // The database agrees: no skipped tick has a fire row.
    let rows = raw()
        .await
        .query(
            &format!(
                "SELECT fire_at_ms FROM {schema}.cano_fires WHERE fire_at_ms BETWEEN $1 AND $2"
            ),
            &[&from, &to],
        )
        .await
        .unwrap();
    assert!(rows.is_empty(), "a skipped tick was fired");
}
