//! Property tests: the breaker against a small reference model of its state machine,
//! and the limiters against their promises, for random sequences of calls, outcomes and
//! clock advances (tokio's paused clock, so time moves only when the test says).

use std::collections::VecDeque;
use std::time::Duration;

use cano_circuit::{BreakerPolicy, CircuitBreaker, CircuitState, Permit, RateLimiter};

/// The model's view of a state: the breaker's, without an open breaker's deadline
/// (the model keeps its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open,
    HalfOpen,
}

fn phase(state: CircuitState) -> Phase {
    match state {
        CircuitState::Closed => Phase::Closed,
        CircuitState::Open { .. } => Phase::Open,
        CircuitState::HalfOpen => Phase::HalfOpen,
    }
}
use cano_error::CanoError;
use proptest::prelude::*;

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    /// Report the permit at this index (modulo how many are held).
    Succeed(usize),
    Fail(usize),
    Drop(usize),
    /// Hand back without a verdict (an error the classifier ignores).
    Neutral(usize),
    AdvanceMs(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Acquire),
        3 => any::<usize>().prop_map(Op::Succeed),
        3 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::Neutral),
        2 => (0u64..1500).prop_map(Op::AdvanceMs),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Rule {
    Consecutive(u32),
    /// Rate in percent, minimum calls; the window is 1 s in 10 buckets of 100 ms.
    Rate(u32, u32),
}

const RESET_MS: u64 = 700;
const WINDOW_MS: u64 = 1000;
const BUCKET_MS: u64 = WINDOW_MS / 10;

/// The reference: the breaker's state machine written as plainly as possible.
struct Model {
    rule: Rule,
    probes: u32,
    to_close: u32,
    state: Phase,
    /// Bumped on every change of state; a permit is live only in its own epoch.
    epoch: u64,
    streak: u32,
    /// (time in ms, failed) of the calls recorded while closed.
    calls: Vec<(u64, bool)>,
    reopen_at: u64,
    in_flight: u32,
    successes: u32,
}

impl Model {
    fn acquire(&mut self, now: u64) -> Option<(u64, bool)> {
        match self.state {
            Phase::Closed => Some((self.epoch, false)),
            Phase::Open if now >= self.reopen_at => {
                self.enter(Phase::HalfOpen);
                self.in_flight = 1;
                self.successes = 0;
                Some((self.epoch, true))
            }
            Phase::Open => None,
            Phase::HalfOpen if self.in_flight < self.probes => {
                self.in_flight += 1;
                Some((self.epoch, true))
            }
            Phase::HalfOpen => None,
        }
    }

    fn enter(&mut self, state: Phase) {
        self.state = state;
        self.epoch += 1;
    }

    fn open(&mut self, now: u64) {
        self.enter(Phase::Open);
        self.reopen_at = now + RESET_MS;
    }

    fn succeed(&mut self, (epoch, probe): (u64, bool), now: u64) {
        if epoch != self.epoch {
            return;
        }
        if !probe {
            self.streak = 0;
            self.calls.push((now, false));
            return;
        }
        self.in_flight -= 1;
        self.successes += 1;
        if self.successes >= self.to_close {
            self.enter(Phase::Closed);
            self.streak = 0;
            self.calls.clear();
        }
    }

    fn fail(&mut self, (epoch, probe): (u64, bool), now: u64) {
        if epoch != self.epoch {
            return;
        }
        if probe {
            return self.open(now);
        }
        let trips = match self.rule {
            Rule::Consecutive(threshold) => {
                self.streak += 1;
                self.streak >= threshold
            }
            Rule::Rate(percent, min_calls) => {
                self.calls.push((now, true));
                // Buckets of 100 ms: the current one and the nine before it count.
                let oldest = (now / BUCKET_MS).saturating_sub(9);
                let recent: Vec<_> = self
                    .calls
                    .iter()
                    .filter(|(t, _)| t / BUCKET_MS >= oldest)
                    .collect();
                let failed = recent.iter().filter(|(_, f)| *f).count() as u64;
                recent.len() as u64 >= u64::from(min_calls)
                    && failed * 100 >= u64::from(percent) * recent.len() as u64
            }
        };
        if trips {
            self.open(now);
        }
    }

    fn neutral(&mut self, (epoch, probe): (u64, bool)) {
        if epoch == self.epoch && probe {
            self.in_flight -= 1;
        }
    }
}

fn rule() -> impl Strategy<Value = Rule> {
    prop_oneof![
        (1u32..5).prop_map(Rule::Consecutive),
        // Percentages that are exact in binary and decimal alike, so the model's
        // integer comparison and the breaker's float one agree.
        (
            prop_oneof![Just(25u32), Just(50), Just(75), Just(100)],
            1u32..6
        )
            .prop_map(|(p, m)| Rule::Rate(p, m)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_breaker_follows_its_reference_model(
        rule in rule(),
        probes in 1u32..4,
        to_close in 1u32..4,
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let reset = Duration::from_millis(RESET_MS);
        let policy = match rule {
            Rule::Consecutive(n) => BreakerPolicy::consecutive(n, reset),
            Rule::Rate(p, m) => BreakerPolicy::failure_rate(
                f64::from(p) / 100.0, m, Duration::from_millis(WINDOW_MS), reset),
        }
        .with_half_open_probes(probes)
        .with_successes_to_close(to_close);
        paused_runtime().block_on(async {
            let breaker = CircuitBreaker::try_new(policy).unwrap();
            let mut model = Model {
                rule, probes, to_close,
                state: Phase::Closed, epoch: 0, streak: 0, calls: Vec::new(),
                reopen_at: 0, in_flight: 0, successes: 0,
            };
            let mut now = 0u64;
            let mut held: VecDeque<(Permit<'_>, (u64, bool))> = VecDeque::new();
            for (step, op) in ops.into_iter().enumerate() {
                let pick = |i: usize, held: &mut VecDeque<_>| {
                    let len = held.len();
                    (len > 0).then(|| held.remove(i % len).unwrap())
                };
                match op {
                    Op::Acquire => {
                        let real = breaker.try_acquire();
                        let expected = model.acquire(now);
                        prop_assert_eq!(real.is_ok(), expected.is_some(), "step {}: acquire", step);
                        if let (Ok(permit), Some(tag)) = (real, expected) {
                            prop_assert_eq!(permit.is_probe(), tag.1, "step {}: probe", step);
                            held.push_back((permit, tag));
                        }
                    }
                    Op::Succeed(i) => if let Some((permit, tag)) = pick(i, &mut held) {
                        breaker.record_success(permit);
                        model.succeed(tag, now);
                    },
                    Op::Fail(i) => if let Some((permit, tag)) = pick(i, &mut held) {
                        breaker.record_failure(permit);
                        model.fail(tag, now);
                    },
                    Op::Drop(i) => if let Some((permit, tag)) = pick(i, &mut held) {
                        drop(permit);
                        model.fail(tag, now);
                    },
                    Op::Neutral(i) => if let Some((permit, tag)) = pick(i, &mut held) {
                        breaker.record_error(permit, &CanoError::configuration("ours, not theirs"));
                        model.neutral(tag);
                    },
                    Op::AdvanceMs(ms) => {
                        tokio::time::advance(Duration::from_millis(ms)).await;
                        now += ms;
                    }
                }
                prop_assert_eq!(phase(breaker.state()), model.state, "step {}", step);
            }
            // Whatever is still held is dropped now: each counts as a failure.
            while let Some((permit, tag)) = held.pop_front() {
                drop(permit);
                model.fail(tag, now);
                prop_assert_eq!(phase(breaker.state()), model.state);
            }
            Ok(())
        })?;
    }

    #[test]
    fn a_token_bucket_never_grants_more_than_rate_times_elapsed_plus_burst(
        rate in 1u32..50,
        period_ms in 1u64..2000,
        burst in 1u32..20,
        ops in prop::collection::vec((0u64..300, 1u64..5), 1..150),
    ) {
        let period = Duration::from_millis(period_ms);
        paused_runtime().block_on(async {
            let limiter = RateLimiter::token_bucket(rate, period, burst).unwrap();
            // (time since start, tokens granted at that time)
            let mut grants: Vec<(Duration, u64)> = Vec::new();
            let mut now = Duration::ZERO;
            for (advance, cost) in ops {
                tokio::time::advance(Duration::from_millis(advance)).await;
                now += Duration::from_millis(advance);
                match limiter.try_acquire_n(cost) {
                    Ok(()) => grants.push((now, cost)),
                    Err(CanoError::RateLimited { retry_after, .. }) => {
                        // The promised delay is truthful: after it, the same call passes.
                        let retry_after = retry_after.duration();
                        prop_assert!(retry_after > Duration::ZERO);
                        tokio::time::advance(retry_after).await;
                        now += retry_after;
                        prop_assert!(limiter.try_acquire_n(cost).is_ok(), "refused again after retry_after");
                        grants.push((now, cost));
                    }
                    Err(CanoError::Configuration(_)) => prop_assert!(cost > u64::from(burst)),
                    Err(other) => prop_assert!(false, "unexpected {other}"),
                }
            }
            // Over every span between two grants, what was granted fits the promise.
            for (i, &(start, _)) in grants.iter().enumerate() {
                let mut granted = 0u64;
                for &(at, cost) in &grants[i..] {
                    granted += cost;
                    let elapsed = (at - start).as_secs_f64();
                    let bound = f64::from(rate) * elapsed / period.as_secs_f64() + f64::from(burst);
                    prop_assert!(granted as f64 <= bound + 1e-6,
                        "{granted} granted in {elapsed} s; bound {bound}");
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn a_windowed_limiter_never_exceeds_its_limit_in_one_window(
        limit in 1u32..20,
        window_ms in 1u64..1000,
        ops in prop::collection::vec((0u64..200, 1u64..4), 1..150),
    ) {
        paused_runtime().block_on(async {
            let limiter = RateLimiter::windowed(limit, Duration::from_millis(window_ms)).unwrap();
            let mut per_window = std::collections::HashMap::<u64, u64>::new();
            let mut now = 0u64;
            for (advance, cost) in ops {
                tokio::time::advance(Duration::from_millis(advance)).await;
                now += advance;
                match limiter.try_acquire_n(cost) {
                    Ok(()) => *per_window.entry(now / window_ms).or_default() += cost,
                    Err(e) => {
                        if let Some(wait) = e.retry_after() {
                            // Refused only when this window really is too full.
                            let spent = per_window.get(&(now / window_ms)).copied().unwrap_or(0);
                            prop_assert!(spent + cost > u64::from(limit));
                            prop_assert!(wait <= Duration::from_millis(window_ms));
                        } else {
                            prop_assert!(cost > u64::from(limit));
                        }
                    }
                }
            }
            for (window, spent) in per_window {
                prop_assert!(spent <= u64::from(limit), "window {window}: {spent} > {limit}");
            }
            Ok(())
        })?;
    }
}
