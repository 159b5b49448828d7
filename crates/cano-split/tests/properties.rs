//! For random branch outcomes and latencies under every strategy, on tokio's paused
//! clock, the split behaves exactly like a direct model of the rules: it proceeds iff
//! the strategy's rule holds, at the very moment the rule became decidable; the
//! branches it cancels are exactly those still running then; and the `SplitResult`
//! accounts for every branch once.

mod common;

use std::time::Duration;

use cano_core::CanoError;
use cano_split::{JoinConfig, JoinStrategy, Tally};
use common::*;
use proptest::prelude::*;
use tokio::time::Instant;

#[derive(Debug, Clone)]
struct Case {
    /// Per branch: latency (distinct multiples of 10 ms) and outcome.
    branches: Vec<(u64, Outcome)>,
    strategy: JoinStrategy,
    /// A timeout between two branch completions (never tied with one).
    timeout_ms: Option<u64>,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        5 => Just(Outcome::Succeed),
        3 => Just(Outcome::Fail),
        1 => Just(Outcome::Panic),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..8).prop_flat_map(|n| {
        let latencies = Just((1..=n as u64).map(|i| i * 10).collect::<Vec<_>>()).prop_shuffle();
        let outcomes = proptest::collection::vec(outcome(), n);
        let strategy = prop_oneof![
            Just(JoinStrategy::All),
            Just(JoinStrategy::Any),
            (1..=n).prop_map(JoinStrategy::Quorum),
            (1u32..=100).prop_map(|p| JoinStrategy::Percentage(f64::from(p) / 100.0)),
            (1..=n).prop_map(JoinStrategy::PartialResults),
            Just(JoinStrategy::PartialTimeout),
        ];
        let timeout = proptest::option::of(0..=n as u64 + 1);
        (latencies, outcomes, strategy, timeout).prop_map(|(lat, out, strategy, timeout)| {
            let timeout_ms = match (strategy, timeout) {
                (JoinStrategy::PartialTimeout, None) => Some(25),
                (_, t) => t.map(|k| k * 10 + 5),
            };
            Case {
                branches: lat.into_iter().zip(out).collect(),
                strategy,
                timeout_ms,
            }
        })
    })
}

#[derive(Debug, PartialEq)]
enum Expected {
    Proceed { at: u64, timed_out: bool },
    Fail { at: u64 },
    TimedOut { at: u64 },
}

/// The documented rules, written out independently of the crate: `Some(true)` proceed,
/// `Some(false)` fail, `None` undecided.
fn rule(strategy: JoinStrategy, t: Tally) -> Option<bool> {
    let (n, ok, bad) = (t.total, t.succeeded, t.failed);
    let quorum = |need: usize| {
        if ok >= need {
            Some(true)
        } else if ok + (n - ok - bad) < need {
            Some(false)
        } else {
            None
        }
    };
    match strategy {
        JoinStrategy::All => quorum(n),
        JoinStrategy::Any => quorum(1),
        JoinStrategy::Quorum(k) => quorum(k),
        JoinStrategy::Percentage(p) => {
            // The smallest k with k >= p * n, in exact integer arithmetic (p is in
            // hundredths in these cases).
            let hundredths = (p * 100.0).round() as usize;
            quorum((hundredths * n).div_ceil(100))
        }
        JoinStrategy::PartialResults(min) => quorum(min),
        JoinStrategy::PartialTimeout => (ok + bad == n).then_some(true),
    }
}

/// Replays completions in time order and applies the rules directly.
fn model(case: &Case) -> Expected {
    let mut order: Vec<&(u64, Outcome)> = case.branches.iter().collect();
    order.sort_by_key(|(latency, _)| *latency);
    let mut tally = Tally {
        total: case.branches.len(),
        ..Tally::default()
    };
    for &&(latency, outcome) in &order {
        if case.timeout_ms.is_some_and(|t| latency > t) {
            break;
        }
        match outcome {
            Outcome::Succeed => tally.succeeded += 1,
            _ => tally.failed += 1,
        }
        match rule(case.strategy, tally) {
            Some(true) => {
                return Expected::Proceed {
                    at: latency,
                    timed_out: false,
                };
            }
            Some(false) => return Expected::Fail { at: latency },
            None => {}
        }
    }
    let at = case
        .timeout_ms
        .expect("without a timeout every strategy decides once all finished");
    // PartialTimeout proceeds with what finished, if anything did.
    if case.strategy == JoinStrategy::PartialTimeout && tally.succeeded + tally.failed > 0 {
        Expected::Proceed {
            at,
            timed_out: true,
        }
    } else {
        Expected::TimedOut { at }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_split_follows_its_strategy_exactly(case in case()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let (probe, mut ended) = Probe::new();
            let branches = case
                .branches
                .iter()
                .enumerate()
                .map(|(i, &(latency, outcome))| Branch::new(i, latency, outcome, &probe))
                .collect();
            let mut join = JoinConfig::new(case.strategy, S::Join);
            if let Some(ms) = case.timeout_ms {
                join = join.with_timeout(Duration::from_millis(ms));
            }
            let (wf, seen) = split_workflow(branches, join);
            let start = Instant::now();
            let outcome = wf.orchestrate(S::Fan).await;
            let elapsed = start.elapsed().as_millis() as u64;
            let expected = model(&case);
            let decided_at = match (&expected, &outcome) {
                (Expected::Proceed { at, timed_out }, Ok(end)) => {
                    prop_assert_eq!(end, &S::Done);
                    let result = taken(&seen);
                    prop_assert_eq!(result.timed_out(), *timed_out);
                    prop_assert_eq!(result.len(), case.branches.len());
                    // Every branch exactly once, classified by when it would finish.
                    for (i, &(latency, outcome)) in case.branches.iter().enumerate() {
                        let report = &result.branches()[i].outcome;
                        let shown = format!("{report:?}");
                        if latency > *at {
                            prop_assert!(shown == "Cancelled", "branch {} {}", i, shown);
                        } else if outcome == Outcome::Succeed {
                            prop_assert!(shown.starts_with("Succeeded"), "branch {} {}", i, shown);
                        } else {
                            prop_assert!(shown.starts_with("Failed"), "branch {} {}", i, shown);
                        }
                    }
                    *at
                }
                // As in cano 0.13, a split that cannot join is a Workflow error, and
                // so is one whose timeout passed.
                (Expected::Fail { at }, Err(err)) => {
                    prop_assert!(matches!(err, CanoError::Workflow(_)), "{:?}", err);
                    prop_assert!(err.to_string().contains("join condition not met"), "{}", err);
                    *at
                }
                (Expected::TimedOut { at }, Err(err)) => {
                    prop_assert!(matches!(err, CanoError::Workflow(_)), "{:?}", err);
                    prop_assert!(err.to_string().contains("timeout"), "{}", err);
                    *at
                }
                (want, got) => {
                    prop_assert!(false, "expected {:?}, got {:?}", want, got.as_ref().map(|_| ()));
                    unreachable!()
                }
            };
            prop_assert_eq!(elapsed, decided_at, "decided no later than decidable");
            let want_cancelled: Vec<usize> = case
                .branches
                .iter()
                .enumerate()
                .filter(|(_, (latency, _))| *latency > decided_at)
                .map(|(i, _)| i)
                .collect();
            prop_assert_eq!(cancelled_of(&mut ended, case.branches.len()).await, want_cancelled);
            Ok(())
        })?;
    }
}
