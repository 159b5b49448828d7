//! What a flow does on failure streaks, overlapping ticks and late wake-ups.

use std::time::Duration;

/// Backs a failing flow off: after `n` failures in a row its next run waits at least
/// `initial × multiplier^(n-1)` (capped at `max`, ± `jitter` of it) after the failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    initial: Duration,
    multiplier: f64,
    max: Duration,
    jitter: f64,
}

impl Default for BackoffPolicy {
    /// 1 s, doubling, capped at 5 min, no jitter.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(300),
            jitter: 0.0,
        }
    }
}

impl BackoffPolicy {
    /// Waits `initial` after the first failure, doubling after each further one, at
    /// most 5 minutes.
    pub fn new(initial: Duration) -> Self {
        Self {
            initial,
            ..Self::default()
        }
    }

    /// Multiplies the wait by `factor` (at least 1) after each further failure.
    pub fn with_multiplier(mut self, factor: f64) -> Self {
        self.multiplier = if factor.is_finite() {
            factor.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// Never waits longer than `max`.
    pub fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Spreads each wait by up to ± `fraction` of it (0 to 1), so that flows failing
    /// together do not retry together.
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The wait after `streak` failures in a row (from 1); `sample` in `[0, 1)` picks
    /// the jitter.
    pub(crate) fn delay(&self, streak: u32, sample: f64) -> Duration {
        let exponent = i32::try_from(streak.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let spread = capped * self.jitter * (sample * 2.0 - 1.0);
        // Past what a Duration holds (a huge cap, a huge multiplier): the longest one.
        Duration::try_from_secs_f64((capped + spread).max(0.0)).unwrap_or(Duration::MAX)
    }
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
    /// No backoff, no trip, overlapping ticks skipped, missed ticks run once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Backs off after failures.
    pub fn with_backoff(mut self, backoff: BackoffPolicy) -> Self {
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
