//! Batches of runs (`Workflow::spawn_many`): 10,000 runs of the 10-state linear
//! workflow, at most 100 in flight, under each wait strategy, timed against the same
//! runs spawned by hand with a `JoinSet` and a `Semaphore` (results kept in order).
//!
//! Writes `many_paired.json` where `cargo xtask bench` finds it.

use std::sync::Arc;
use std::time::Duration;

use cano::many::WaitStrategy;
use cano_benches::{Step, linear_workflow, measuring, paired, two_workers, write_report};

const RUNS: usize = 10_000;
const LIMIT: usize = 100;

fn main() {
    let runs = if measuring() { RUNS } else { 200 };
    let rt = two_workers();
    let workflow = linear_workflow();
    let strategies = [
        ("forever", WaitStrategy::WaitForever),
        ("quota", WaitStrategy::WaitForQuota(runs)),
        (
            "duration",
            WaitStrategy::WaitDuration(Duration::from_secs(3600)),
        ),
        (
            "quota_or_duration",
            WaitStrategy::WaitQuotaOrDuration {
                quota: runs,
                duration: Duration::from_secs(3600),
            },
        ),
    ];
    let by_hand = || {
        rt.block_on(async {
            let permits = Arc::new(tokio::sync::Semaphore::new(LIMIT));
            let mut set = tokio::task::JoinSet::new();
            for index in 0..runs {
                let permit = permits.clone().acquire_owned().await.unwrap();
                let workflow = workflow.clone();
                set.spawn(async move {
                    let _permit = permit;
                    (index, workflow.orchestrate(Step(0)).await)
                });
            }
            let mut results: Vec<Option<_>> = (0..runs).map(|_| None).collect();
            while let Some(joined) = set.join_next().await {
                let (index, result) = joined.unwrap();
                results[index] = Some(result);
            }
            assert!(results.iter().all(|r| matches!(r, Some(Ok(_)))));
        })
    };
    let mut fields = Vec::new();
    for (name, strategy) in strategies {
        let batch = || {
            rt.block_on(async {
                let result = workflow
                    .orchestrate_many(std::iter::repeat_n(Step(0), runs), LIMIT, strategy)
                    .await
                    .unwrap();
                assert_eq!(result.counts().finished, runs);
            })
        };
        let pair = paired(batch, by_hand);
        println!(
            "many/{name}: {:.0} ns per run, by hand {:.0} ns per run, ratio {:.2}",
            pair.a_ns / runs as f64,
            pair.b_ns / runs as f64,
            pair.ratio
        );
        fields.push(format!(
            "\"{name}_ns\":{:.1},\"{name}_by_hand_ns\":{:.1},\"{name}_ratio\":{:.3}",
            pair.a_ns / runs as f64,
            pair.b_ns / runs as f64,
            pair.ratio
        ));
    }
    write_report("many_paired.json", &format!("{{{}}}\n", fields.join(",")));
}
