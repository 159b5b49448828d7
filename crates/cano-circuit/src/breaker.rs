//! [`CircuitBreaker`]: stops calling a dependency that keeps failing, then probes it
//! back to health.
//!
//! The state lives in one atomic word (a generation counter and the state), so the
//! closed-state path — acquire a permit, record the outcome — is a few atomic loads and,
//! on failure, one increment. Every change of state happens under a small lock, which
//! only the rare paths (tripping, probing, closing) take. A permit remembers the word it
//! was issued under; once the breaker has moved on, that permit's outcome is ignored.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cano_error::CanoError;

use crate::clock::{Clock, nanos};
use crate::policy::{BreakerPolicy, CircuitPolicy, TripRule};
use crate::refusal::Refusal;
use crate::window::Window;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
/// A breaker built from a policy with mistakes: it refuses every call with the
/// `Configuration` error that names them (never a panic).
const MISCONFIGURED: u64 = 3;
const STATE_MASK: u64 = 3;

/// Where a breaker stands (cano 0.13's variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls are refused until `until` (then the first call turns it half-open).
    Open {
        /// When the reset timeout ends. A misconfigured breaker, which refuses every
        /// call, reports a time decades away.
        until: Instant,
    },
    /// A bounded number of probe calls go through; their outcome closes or reopens it.
    HalfOpen,
}

impl CircuitState {
    /// Whether calls are refused (open).
    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open { .. })
    }

    /// Whether calls go through freely (closed).
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed)
    }

    /// Whether only probe calls go through (half-open).
    pub fn is_half_open(&self) -> bool {
        matches!(self, Self::HalfOpen)
    }
}

/// The name of the state in `word`, for debugging.
fn state_name(word: u64) -> &'static str {
    match word & STATE_MASK {
        CLOSED => "closed",
        OPEN => "open",
        HALF_OPEN => "half-open",
        _ => "misconfigured",
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen => "half-open",
        })
    }
}

/// The next generation's word in `state`.
fn advance(word: u64, state: u64) -> u64 {
    (((word >> 2) + 1) << 2) | state
}

/// Half-open bookkeeping, guarded by the transition lock.
#[derive(Debug, Default)]
struct Probes {
    in_flight: u32,
    successes: u32,
}

/// A circuit breaker shared by every caller of one dependency.
///
/// Share it with an `Arc`: across tasks, workflows and threads. Ask for a [`Permit`]
/// before each call and report how the call went; or let [`call`](Self::call) do both.
///
/// ```
/// use std::time::Duration;
/// use cano_circuit::{CircuitBreaker, CircuitPolicy, CircuitState};
/// use cano_error::CanoError;
///
/// let breaker = CircuitBreaker::new(CircuitPolicy {
///     failure_threshold: 2,
///     reset_timeout: Duration::from_secs(10),
///     half_open_max_calls: 1,
/// });
/// for _ in 0..2 {
///     let permit = breaker.try_acquire()?;
///     breaker.record_failure(permit);
/// }
/// assert!(breaker.state().is_open());
/// assert!(matches!(breaker.try_acquire(), Err(CanoError::CircuitOpen(_))));
/// # Ok::<(), CanoError>(())
/// ```
pub struct CircuitBreaker {
    word: AtomicU64,
    /// Failures in a row under [`TripRule::Consecutive`].
    failures: AtomicU32,
    /// When an open breaker lets the first probe through (clock nanoseconds).
    retry_at: AtomicU64,
    window: Option<Window>,
    probes: Mutex<Probes>,
    policy: BreakerPolicy,
    /// The policy in 0.13's terms, for [`policy`](Self::policy).
    simple: CircuitPolicy,
    /// What is wrong with the policy, if anything (the word is then `MISCONFIGURED`).
    mistake: Option<CanoError>,
    clock: Clock,
    name: Cow<'static, str>,
}

impl CircuitBreaker {
    /// A closed breaker following `policy`: a [`CircuitPolicy`] (cano 0.13's fields) or a
    /// [`BreakerPolicy`].
    ///
    /// A policy with mistakes (a zero threshold, a rate outside (0, 1], an empty
    /// window...) does not panic: the breaker refuses every call with a permanent
    /// [`CanoError::Configuration`] naming every mistake, so the first run that uses it
    /// fails with that error. [`try_new`](Self::try_new) returns the error at once.
    pub fn new(policy: impl Into<BreakerPolicy>) -> Self {
        Self::named("circuit breaker", policy)
    }

    /// Like [`new`](Self::new), with a name that errors and observers use (the
    /// dependency it guards, say `"payments-api"`).
    pub fn named(name: impl Into<Cow<'static, str>>, policy: impl Into<BreakerPolicy>) -> Self {
        let name = name.into();
        let policy = policy.into();
        let mistake = policy.check(&name).err();
        let window = match policy.rule {
            TripRule::FailureRate { window, .. } if mistake.is_none() => Some(Window::new(window)),
            _ => None,
        };
        Self {
            word: AtomicU64::new(if mistake.is_some() {
                MISCONFIGURED
            } else {
                CLOSED
            }),
            failures: AtomicU32::new(0),
            retry_at: AtomicU64::new(0),
            window,
            probes: Mutex::new(Probes::default()),
            simple: policy.simple(),
            policy,
            mistake,
            clock: Clock::new(),
            name,
        }
    }

    /// Like [`new`](Self::new), but a policy with mistakes is refused here, with the
    /// `Configuration` error naming them.
    pub fn try_new(policy: impl Into<BreakerPolicy>) -> Result<Self, CanoError> {
        let breaker = Self::new(policy);
        breaker.check()?;
        Ok(breaker)
    }

    /// Like [`named`](Self::named), but a policy with mistakes is refused here.
    pub fn try_named(
        name: impl Into<Cow<'static, str>>,
        policy: impl Into<BreakerPolicy>,
    ) -> Result<Self, CanoError> {
        let breaker = Self::named(name, policy);
        breaker.check()?;
        Ok(breaker)
    }

    /// `Ok` if the policy is sound; otherwise the error every call gets.
    pub fn check(&self) -> Result<(), CanoError> {
        match &self.mistake {
            None => Ok(()),
            Some(mistake) => Err(mistake.clone()),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its policy in cano 0.13's three fields (a failure-rate rule shows its
    /// `min_calls` as the threshold); [`breaker_policy`](Self::breaker_policy) has all of it.
    pub fn policy(&self) -> &CircuitPolicy {
        &self.simple
    }

    /// Its full policy.
    pub fn breaker_policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    /// Where it stands now. An open breaker turns half-open when the first call after
    /// its reset timeout asks for a permit.
    pub fn state(&self) -> CircuitState {
        let word = self.word.load(Ordering::Acquire);
        match word & STATE_MASK {
            CLOSED => CircuitState::Closed,
            HALF_OPEN => CircuitState::HalfOpen,
            OPEN => CircuitState::Open {
                until: self.clock.instant_at(self.retry_at.load(Ordering::Acquire)),
            },
            // A misconfigured breaker refuses every call, as an open one does.
            _ => CircuitState::Open {
                until: self.clock.instant_at(u64::MAX),
            },
        }
    }

    /// Asks to make one call. Closed: always granted. Open: refused with
    /// [`CanoError::CircuitOpen`] until the reset timeout has passed, then granted as
    /// the first probe. Half-open: granted while fewer than the policy's probes are in
    /// flight.
    ///
    /// Report the call with [`record_success`](Self::record_success),
    /// [`record_failure`](Self::record_failure) or [`record_error`](Self::record_error);
    /// a permit dropped without a report counts as a failure.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, CanoError> {
        let word = self.word.load(Ordering::Acquire);
        if word & STATE_MASK == CLOSED {
            return Ok(Permit::new(self, word, None));
        }
        self.acquire_slow(word)
            .map_err(|refusal| match (&refusal, &self.mistake) {
                // The policy's own error, as `check` gives it.
                (Refusal::Misconfigured { .. }, Some(mistake)) => mistake.clone(),
                _ => refusal.into(),
            })
    }

    /// Like [`try_acquire`](Self::try_acquire), with the breaker's own [`Refusal`]
    /// (which converts into the `CanoError` `try_acquire` gives): for code that uses
    /// the breaker without a workflow and wants to know why, and until when.
    #[inline]
    pub fn try_admit(&self) -> Result<Permit<'_>, Refusal> {
        let word = self.word.load(Ordering::Acquire);
        if word & STATE_MASK == CLOSED {
            return Ok(Permit::new(self, word, None));
        }
        self.acquire_slow(word)
    }

    #[cold]
    fn acquire_slow(&self, seen: u64) -> Result<Permit<'_>, Refusal> {
        if let Some(mistake) = &self.mistake {
            return Err(Refusal::Misconfigured {
                name: self.name.to_string(),
                reason: mistake.message().to_owned(),
            });
        }
        if seen & STATE_MASK == OPEN {
            // Refusing needs no lock: the lock is only for turning half-open.
            self.still_cooling()?;
        }
        let mut probes = self.lock();
        let word = self.word.load(Ordering::Acquire);
        match word & STATE_MASK {
            CLOSED => Ok(Permit::new(self, word, None)),
            OPEN => {
                // Checked again under the lock: another caller may have reopened it.
                self.still_cooling()?;
                let half = advance(word, HALF_OPEN);
                *probes = Probes {
                    in_flight: 1,
                    successes: 0,
                };
                self.word.store(half, Ordering::Release);
                Ok(Permit::new(self, half, Some(CircuitState::HalfOpen)))
            }
            _ if probes.in_flight < self.policy.half_open_probes => {
                probes.in_flight += 1;
                Ok(Permit::new(self, word, None))
            }
            _ => Err(Refusal::ProbesBusy {
                name: self.name.to_string(),
                in_flight: probes.in_flight,
            }),
        }
    }

    /// Refuses while an open breaker's reset timeout is still running.
    fn still_cooling(&self) -> Result<(), Refusal> {
        let now = self.clock.now();
        let retry_at = self.retry_at.load(Ordering::Acquire);
        if now >= retry_at {
            return Ok(());
        }
        Err(Refusal::Open {
            name: self.name.to_string(),
            until: self.clock.instant_at(retry_at),
            remaining: Duration::from_nanos(retry_at - now),
        })
    }

    /// Reports that the call behind `permit` succeeded. Returns the state the breaker
    /// moved to if this report moved it (a probe that closed it). Every report goes to
    /// the breaker that issued the permit.
    pub fn record_success(&self, permit: Permit<'_>) -> Option<CircuitState> {
        let (breaker, word) = permit.settle();
        breaker.succeeded(word)
    }

    /// Reports that the call behind `permit` failed. Returns the state the breaker moved
    /// to if this report moved it (the failure that opened it).
    pub fn record_failure(&self, permit: Permit<'_>) -> Option<CircuitState> {
        let (breaker, word) = permit.settle();
        breaker.failed(word)
    }

    /// Reports a failed call by its error: a failure if the policy's classifier says the
    /// error counts against the dependency, otherwise the permit is handed back without
    /// a verdict (see [`release`](Self::release)).
    pub fn record_error(&self, permit: Permit<'_>, error: &CanoError) -> Option<CircuitState> {
        // The issuing breaker's classifier, like every other report.
        if permit.breaker.policy.counts(error) {
            self.record_failure(permit)
        } else {
            self.release(permit);
            None
        }
    }

    /// Hands a permit back without a verdict: the call said nothing about the
    /// dependency. A probe's slot is freed for another probe.
    pub fn release(&self, permit: Permit<'_>) {
        let (breaker, word) = permit.settle();
        if word & STATE_MASK == HALF_OPEN {
            let mut probes = breaker.lock();
            if breaker.word.load(Ordering::Acquire) == word {
                probes.in_flight = probes.in_flight.saturating_sub(1);
            }
        }
    }

    /// Runs `call` under a permit and records its outcome (errors through the policy's
    /// classifier). Refused calls return [`CanoError::CircuitOpen`] without running.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, CanoError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, CanoError>>,
    {
        let permit = self.try_acquire()?;
        let result = call().await;
        match &result {
            Ok(_) => {
                self.record_success(permit);
            }
            Err(error) => {
                self.record_error(permit, error);
            }
        }
        result
    }

    fn lock(&self) -> MutexGuard<'_, Probes> {
        // Nothing under this lock can panic; a poisoned lock still holds valid counts.
        self.probes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[inline]
    fn succeeded(&self, word: u64) -> Option<CircuitState> {
        match word & STATE_MASK {
            CLOSED => {
                if self.word.load(Ordering::Acquire) != word {
                    return None;
                }
                match &self.window {
                    None => {
                        // Writing only when needed keeps the shared line clean while
                        // every call succeeds.
                        if self.failures.load(Ordering::Relaxed) != 0 {
                            self.failures.store(0, Ordering::Relaxed);
                        }
                    }
                    Some(window) => window.record(self.clock.now(), false),
                }
                None
            }
            _ => self.probe_succeeded(word),
        }
    }

    #[cold]
    fn probe_succeeded(&self, word: u64) -> Option<CircuitState> {
        let mut probes = self.lock();
        if self.word.load(Ordering::Acquire) != word {
            return None;
        }
        probes.in_flight = probes.in_flight.saturating_sub(1);
        probes.successes += 1;
        if probes.successes < self.policy.successes_to_close {
            return None;
        }
        self.failures.store(0, Ordering::Relaxed);
        if let Some(window) = &self.window {
            window.clear();
        }
        self.word.store(advance(word, CLOSED), Ordering::Release);
        Some(CircuitState::Closed)
    }

    fn failed(&self, word: u64) -> Option<CircuitState> {
        if word & STATE_MASK != CLOSED {
            // A failed probe reopens the breaker.
            return self.trip(word);
        }
        if self.word.load(Ordering::Acquire) != word {
            return None;
        }
        let trips = match (&self.window, self.policy.rule) {
            (None, TripRule::Consecutive { threshold }) => {
                self.failures.fetch_add(1, Ordering::AcqRel) + 1 >= threshold
            }
            (
                Some(window),
                TripRule::FailureRate {
                    rate, min_calls, ..
                },
            ) => {
                let now = self.clock.now();
                window.record(now, true);
                let (calls, failures) = window.totals(now);
                calls >= u64::from(min_calls) && failures as f64 >= rate * calls as f64
            }
            _ => unreachable!("the window exists exactly under the failure-rate rule"),
        };
        if trips { self.trip(word) } else { None }
    }

    #[cold]
    fn trip(&self, word: u64) -> Option<CircuitState> {
        let _probes = self.lock();
        if self.word.load(Ordering::Acquire) != word {
            return None;
        }
        let reopen = self
            .clock
            .now()
            .saturating_add(nanos(self.policy.reset_timeout));
        self.retry_at.store(reopen, Ordering::Release);
        self.word.store(advance(word, OPEN), Ordering::Release);
        Some(CircuitState::Open {
            until: self.clock.instant_at(reopen),
        })
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .field("policy", &self.policy)
            .finish()
    }
}

/// Leave to make one call through a [`CircuitBreaker`].
///
/// Hand it back with one of the breaker's `record_*` methods or
/// [`release`](CircuitBreaker::release); dropped without a report, it counts as a
/// failure (the call was abandoned, which is what a hung dependency looks like). A
/// permit issued before the breaker changed state is harmless: its report is ignored.
#[must_use = "report the call with record_success / record_failure; a dropped permit counts as a failure"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    word: u64,
    moved: Option<CircuitState>,
    settled: bool,
}

impl<'a> Permit<'a> {
    fn new(breaker: &'a CircuitBreaker, word: u64, moved: Option<CircuitState>) -> Self {
        Self {
            breaker,
            word,
            moved,
            settled: false,
        }
    }

    /// Whether this is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.word & STATE_MASK == HALF_OPEN
    }

    /// The state the breaker moved to when this permit was issued, if issuing it moved
    /// the breaker (the first probe after the reset timeout turns it half-open).
    pub fn transition(&self) -> Option<CircuitState> {
        self.moved
    }

    /// Marks the permit reported and hands back what the report needs.
    fn settle(mut self) -> (&'a CircuitBreaker, u64) {
        self.settled = true;
        (self.breaker, self.word)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.failed(self.word);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.breaker.name)
            .field("issued_in", &state_name(self.word))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> CircuitBreaker {
        CircuitBreaker::try_new(BreakerPolicy::consecutive(
            threshold,
            Duration::from_secs(5),
        ))
        .unwrap()
    }

    #[test]
    fn a_bad_policy_never_panics_and_every_call_names_the_mistake() {
        for policy in [
            CircuitPolicy {
                failure_threshold: 0,
                ..Default::default()
            },
            CircuitPolicy {
                half_open_max_calls: 0,
                ..Default::default()
            },
            CircuitPolicy {
                failure_threshold: 0,
                reset_timeout: Duration::MAX,
                half_open_max_calls: 0,
            },
        ] {
            let b = CircuitBreaker::named("ledger", policy);
            assert!(b.state().is_open(), "it refuses calls");
            for _ in 0..3 {
                let err = b.try_acquire().unwrap_err();
                assert!(matches!(err, CanoError::Configuration(_)), "{err}");
                assert!(err.is_permanent(), "retrying cannot fix a policy");
                assert!(err.to_string().contains("`ledger`"), "{err}");
            }
            assert_eq!(b.check().unwrap_err(), b.try_acquire().unwrap_err());
            assert!(CircuitBreaker::try_new(policy).is_err());
            assert_eq!(*b.policy(), policy, "the policy reads back as given");
        }
    }

    #[test]
    fn the_0_13_policy_probes_and_closes_with_half_open_max_calls() {
        let b = CircuitBreaker::new(CircuitPolicy {
            failure_threshold: 1,
            reset_timeout: Duration::ZERO,
            half_open_max_calls: 2,
        });
        assert!(matches!(fail(&b), Some(CircuitState::Open { .. })));
        // Two probes at once, a third is refused; both must succeed to close.
        let first = b.try_acquire().unwrap();
        let second = b.try_acquire().unwrap();
        assert!(matches!(b.try_acquire(), Err(CanoError::CircuitOpen(_))));
        assert_eq!(b.record_success(first), None);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(b.record_success(second), Some(CircuitState::Closed));
        assert_eq!(b.breaker_policy().successes_to_close(), 2);
    }

    #[test]
    fn try_admit_says_why_in_the_breakers_own_type_and_converts_to_the_same_error() {
        // Open, with the time its reset timeout ends.
        let b = CircuitBreaker::named(
            "payments",
            CircuitPolicy {
                failure_threshold: 1,
                reset_timeout: Duration::from_secs(60),
                half_open_max_calls: 1,
            },
        );
        let opened_at = Instant::now();
        fail(&b);
        let refusal = b.try_admit().unwrap_err();
        let Refusal::Open {
            name,
            until,
            remaining,
        } = &refusal
        else {
            panic!("{refusal:?}");
        };
        assert_eq!(name, "payments");
        assert!(*remaining <= Duration::from_secs(60) && *remaining > Duration::from_secs(50));
        assert!(*until >= opened_at + Duration::from_secs(50));
        assert_eq!(CircuitState::Open { until: *until }, b.state());
        let error = CanoError::from(refusal.clone());
        assert!(matches!(error, CanoError::CircuitOpen(_)));
        assert_eq!(error.message(), refusal.to_string());
        assert!(matches!(b.try_acquire(), Err(CanoError::CircuitOpen(_))));

        // Half-open with its one probe out.
        let b = CircuitBreaker::named(
            "ledger",
            CircuitPolicy {
                failure_threshold: 1,
                reset_timeout: Duration::ZERO,
                half_open_max_calls: 1,
            },
        );
        fail(&b);
        let probe = b.try_admit().unwrap();
        assert_eq!(
            b.try_admit().unwrap_err(),
            Refusal::ProbesBusy {
                name: "ledger".into(),
                in_flight: 1
            }
        );
        b.record_success(probe);
        assert!(b.try_admit().is_ok(), "closed again");

        // Misconfigured: refused every time, and try_acquire keeps the policy's error.
        let bad = CircuitBreaker::named(
            "broken",
            CircuitPolicy {
                failure_threshold: 0,
                ..Default::default()
            },
        );
        assert!(matches!(
            bad.try_admit(),
            Err(Refusal::Misconfigured { .. })
        ));
        assert_eq!(bad.try_acquire().unwrap_err(), bad.check().unwrap_err());
    }

    fn fail(b: &CircuitBreaker) -> Option<CircuitState> {
        let permit = b.try_acquire().unwrap();
        b.record_failure(permit)
    }

    #[test]
    fn opens_after_the_threshold_and_a_success_resets_the_count() {
        let b = breaker(3);
        fail(&b);
        fail(&b);
        let permit = b.try_acquire().unwrap();
        b.record_success(permit);
        assert_eq!(fail(&b), None);
        assert_eq!(fail(&b), None);
        assert!(matches!(fail(&b), Some(CircuitState::Open { .. })));
        assert!(b.state().is_open());
        let err = b.try_acquire().unwrap_err();
        assert!(matches!(err, CanoError::CircuitOpen(_)));
        assert!(
            err.to_string().contains("`circuit breaker` is open"),
            "{err}"
        );
    }

    #[test]
    fn a_dropped_permit_counts_as_a_failure() {
        let b = breaker(1);
        drop(b.try_acquire().unwrap());
        assert!(b.state().is_open());
    }

    #[test]
    fn stale_permits_are_ignored() {
        let b = breaker(1);
        let early = b.try_acquire().unwrap();
        let also_early = b.try_acquire().unwrap();
        assert!(matches!(fail(&b), Some(CircuitState::Open { .. })));
        // Issued while closed, reported after it opened: nothing changes.
        assert_eq!(b.record_failure(early), None);
        assert_eq!(b.record_success(also_early), None);
        assert!(b.state().is_open());
    }

    #[test]
    fn errors_that_say_nothing_about_the_dependency_do_not_count() {
        let b = breaker(1);
        let permit = b.try_acquire().unwrap();
        b.record_error(permit, &CanoError::configuration("bad input"));
        assert_eq!(b.state(), CircuitState::Closed);

        let picky = CircuitBreaker::try_new(
            BreakerPolicy::consecutive(1, Duration::from_secs(1))
                .with_classifier(|e| !e.message().starts_with("invalid")),
        )
        .unwrap();
        let permit = picky.try_acquire().unwrap();
        picky.record_error(permit, &CanoError::task_execution("invalid order id"));
        assert_eq!(picky.state(), CircuitState::Closed);
        let permit = picky.try_acquire().unwrap();
        picky.record_error(permit, &CanoError::task_execution("connection reset"));
        assert!(picky.state().is_open());
    }

    #[test]
    fn bad_policies_are_configuration_errors_naming_the_setting() {
        let cases = [
            (
                BreakerPolicy::consecutive(0, Duration::from_secs(1)),
                "failure threshold is 0",
            ),
            (
                BreakerPolicy::failure_rate(
                    0.0,
                    10,
                    Duration::from_secs(1),
                    Duration::from_secs(1),
                ),
                "outside (0, 1]",
            ),
            (
                BreakerPolicy::failure_rate(0.5, 10, Duration::ZERO, Duration::from_secs(1)),
                "window is empty",
            ),
            (
                BreakerPolicy::failure_rate(0.5, 0, Duration::from_secs(1), Duration::from_secs(1)),
                "min_calls is 0",
            ),
            (
                BreakerPolicy::default().with_half_open_probes(0),
                "half_open_probes is 0",
            ),
            (
                BreakerPolicy::default().with_successes_to_close(0),
                "successes_to_close is 0",
            ),
        ];
        for (policy, expected) in cases {
            let err = CircuitBreaker::try_named("search", policy).unwrap_err();
            assert!(matches!(err, CanoError::Configuration(_)));
            let text = err.to_string();
            assert!(
                text.contains(expected) && text.contains("`search`"),
                "{text}"
            );
        }
        let nan = BreakerPolicy::failure_rate(f64::NAN, 1, Duration::from_secs(1), Duration::ZERO);
        assert!(CircuitBreaker::try_new(nan).is_err());
    }
}
