//! What a flow does on failure streaks, overlapping ticks and late wake-ups.

use std::time::Duration;

/// Backs a failing flow off, and trips it after too many failures in a row.
///
/// After `n` failures in a row the next run waits `initial × multiplier^(n-1)`, at most
/// `max_delay`, spread by ± `jitter` of it; with `streak_limit: Some(n)` the flow stops
/// (status [`Tripped`](crate::Status::Tripped)) at the `n`th failure in a row until
/// `reset_flow`. The fields are public as in cano 0.13, so
/// `BackoffPolicy { jitter: 0.0, ..Default::default() }` works; values out of range are
/// read leniently, never as a panic: a multiplier below 1 (or not finite) as 1, a
/// jitter outside `0..=1` clamped into it, a wait past what a `Duration` holds as
/// `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// The wait after the first failure of a streak.
    pub initial: Duration,
    /// What each further failure multiplies the wait by.
    pub multiplier: f64,
    /// The longest wait (`Duration::MAX`: no cap).
    pub max_delay: Duration,
    /// How far each wait is spread, as a fraction of it (0 to 1), so that flows
    /// failing together do not retry together.
    pub jitter: f64,
    /// `Some(n)`: the flow trips at its `n`th failure in a row (0 is taken as 1).
    /// `None`: it backs off forever.
    pub streak_limit: Option<u32>,
}

impl Default for BackoffPolicy {
    /// cano 0.13's defaults: 1 s, doubling, at most 5 min, ± 10 % jitter, no trip.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(300),
            jitter: 0.1,
            streak_limit: None,
        }
    }
}

impl BackoffPolicy {
    /// Waits `initial` after the first failure, doubling after each further one, at
    /// most 5 minutes, without jitter.
    pub fn new(initial: Duration) -> Self {
        Self {
            initial,
            jitter: 0.0,
            ..Self::default()
        }
    }

    /// The default policy that also trips the flow at its `n`th failure in a row.
    pub fn with_trip(n: u32) -> Self {
        Self {
            streak_limit: Some(n),
            ..Self::default()
        }
    }

    /// Multiplies the wait by `factor` after each further failure.
    pub fn with_multiplier(mut self, factor: f64) -> Self {
        self.multiplier = factor;
        self
    }

    /// Never waits longer than `max`.
    pub fn with_max(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self
    }

    /// Spreads each wait by up to ± `fraction` of it (0 to 1).
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Trips the flow at its `n`th failure in a row.
    pub fn with_streak_limit(mut self, n: u32) -> Self {
        self.streak_limit = Some(n);
        self
    }

    /// The wait after `streak` failures in a row (0 is taken as 1), with a fresh
    /// jitter draw.
    pub fn compute_delay(&self, streak: u32) -> Duration {
        self.delay(streak, jitter_sample())
    }

    /// Whether `failure_streak` failures in a row trip the flow.
    pub fn is_tripped(&self, failure_streak: u32) -> bool {
        self.streak_limit
            .is_some_and(|limit| failure_streak >= limit.max(1))
    }

    /// The wait after `streak` failures in a row (from 1); `sample` in `[0, 1)` picks
    /// the jitter.
    pub(crate) fn delay(&self, streak: u32, sample: f64) -> Duration {
        let multiplier = if self.multiplier.is_finite() {
            self.multiplier.max(1.0)
        } else {
            1.0
        };
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let exponent = i32::try_from(streak.max(1) - 1).unwrap_or(i32::MAX);
        let base = self.initial.as_secs_f64() * multiplier.powi(exponent);
        let capped = base.min(self.max_delay.as_secs_f64());
        let spread = capped * jitter * (sample * 2.0 - 1.0);
        // Past what a Duration holds (a huge multiplier): the cap.
        Duration::try_from_secs_f64((capped + spread).max(0.0))
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// A sample in `[0, 1)` for a backoff's jitter, from the process's random hasher keys.
fn jitter_sample() -> f64 {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let bits = std::collections::hash_map::RandomState::new()
        .hash_one(DRAWS.fetch_add(1, Ordering::Relaxed));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// What a tick does while the flow's previous run is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// The tick is dropped (the default).
    #[default]
    Skip,
    /// One tick is kept and runs as soon as the current run ends (further ones are
    /// dropped).
    QueueOne,
    /// The tick starts another run alongside.
    Allow,
}

/// What a flow does when it wakes up late, with ticks missed (the machine slept, the
/// runtime was blocked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissedFire {
    /// Run once for all the missed ticks, then carry on (the default).
    #[default]
    RunOnce,
    /// Run nothing for them; the next run is the next tick from now.
    Skip,
}

/// A flow's failure, overlap and missed-fire handling.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FlowPolicy {
    pub(crate) backoff: Option<BackoffPolicy>,
    pub(crate) trip_after: Option<u32>,
    pub(crate) overlap: Overlap,
    pub(crate) missed_fire: MissedFire,
}

impl FlowPolicy {
    /// No backoff, no trip, overlapping ticks skipped, missed ticks run once. (The
    /// flows `Scheduler::every`, `cron` and `manual` add use
    /// [`FlowPolicy::backing_off`] instead, as cano 0.13 does.)
    pub fn new() -> Self {
        Self::default()
    }

    /// cano 0.13's policy for a flow: [`BackoffPolicy::default`], no trip.
    pub fn backing_off() -> Self {
        Self::new().with_backoff(BackoffPolicy::default())
    }

    /// Backs off after failures; the backoff's `streak_limit`, when set, trips the
    /// flow as [`trip_after`](Self::trip_after) does.
    pub fn with_backoff(mut self, backoff: BackoffPolicy) -> Self {
        if let Some(limit) = backoff.streak_limit {
            self.trip_after = Some(limit.max(1));
        }
        self.backoff = Some(backoff);
        self
    }

    /// Stops scheduling the flow after `failures` failures in a row (status
    /// `Tripped`) until it is reset. Zero is taken as one.
    pub fn trip_after(mut self, failures: u32) -> Self {
        self.trip_after = Some(failures.max(1));
        self
    }

    /// What a tick does while a run is still going.
    pub fn with_overlap(mut self, overlap: Overlap) -> Self {
        self.overlap = overlap;
        self
    }

    /// What a late wake-up does.
    pub fn with_missed_fire(mut self, missed: MissedFire) -> Self {
        self.missed_fire = missed;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_spreads() {
        let backoff = BackoffPolicy::new(Duration::from_secs(2)).with_max(Duration::from_secs(10));
        let waits: Vec<u64> = (1..=5).map(|n| backoff.delay(n, 0.5).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 10, 10]);
        let jittered = backoff.with_jitter(0.5);
        assert_eq!(jittered.delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(jittered.delay(1, 1.0), Duration::from_secs(3));
    }
}
