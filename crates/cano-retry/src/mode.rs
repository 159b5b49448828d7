//! The retry schedule: how many times to try again and how long to wait in between.

use std::time::Duration;

/// How an operation is retried after a failed attempt.
///
/// Delays keep their full precision: a 250 µs delay is a 250 µs delay, never rounded
/// down to zero milliseconds.
///
/// ```
/// use std::time::Duration;
/// use cano_retry::RetryMode;
///
/// let mode = RetryMode::exponential(4)
///     .with_base_delay(Duration::from_millis(10))
///     .with_jitter(0.0);
/// assert_eq!(mode.delay_for_attempt(0), Some(Duration::from_millis(10)));
/// assert_eq!(mode.delay_for_attempt(2), Some(Duration::from_millis(40)));
/// assert_eq!(mode.delay_for_attempt(4), None); // only four retries
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryMode {
    /// One attempt, no retry.
    None,
    /// Up to `retries` further attempts, each after the same `delay`.
    Fixed {
        /// Retries after the first attempt.
        retries: usize,
        /// Pause before each retry.
        delay: Duration,
    },
    /// Up to `max_retries` further attempts; the pause grows by `multiplier` each time
    /// from `base_delay`, is capped at `max_delay`, and is spread by `jitter`.
    ExponentialBackoff {
        /// Retries after the first attempt.
        max_retries: usize,
        /// Pause before the first retry.
        base_delay: Duration,
        /// Growth factor between consecutive pauses (values below 1 are treated as 1).
        multiplier: f64,
        /// Upper bound of any pause, jitter included.
        max_delay: Duration,
        /// Fraction in `[0, 1]`: each pause is drawn uniformly from
        /// `pause × (1 ± jitter)`, so many callers that failed together do not retry
        /// in lockstep.
        jitter: f64,
    },
}

impl Default for RetryMode {
    /// Three retries with exponential backoff (see [`RetryMode::exponential`]).
    fn default() -> Self {
        Self::exponential(3)
    }
}

impl RetryMode {
    /// No retry: the first failure is final.
    pub const fn none() -> Self {
        Self::None
    }

    /// `retries` further attempts, each after `delay`.
    pub const fn fixed(retries: usize, delay: Duration) -> Self {
        Self::Fixed { retries, delay }
    }

    /// `max_retries` further attempts with exponential backoff: 100 ms, doubling,
    /// capped at 30 s, with ±10 % jitter. Adjust with the `with_*` methods.
    pub const fn exponential(max_retries: usize) -> Self {
        Self::ExponentialBackoff {
            max_retries,
            base_delay: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30),
            jitter: 0.1,
        }
    }

    /// An exponential mode with every setting given (cano 0.13's constructor); `jitter`
    /// is clamped to `[0, 1]`.
    pub fn exponential_custom(
        max_retries: usize,
        base_delay: Duration,
        multiplier: f64,
        max_delay: Duration,
        jitter: f64,
    ) -> Self {
        Self::ExponentialBackoff {
            max_retries,
            base_delay,
            multiplier,
            max_delay,
            jitter: clamp_unit(jitter),
        }
    }

    /// Sets the first pause of an exponential mode (no effect on other modes).
    pub fn with_base_delay(mut self, delay: Duration) -> Self {
        if let Self::ExponentialBackoff { base_delay, .. } = &mut self {
            *base_delay = delay;
        }
        self
    }

    /// Sets the growth factor of an exponential mode (no effect on other modes).
    pub fn with_multiplier(mut self, factor: f64) -> Self {
        if let Self::ExponentialBackoff { multiplier, .. } = &mut self {
            *multiplier = factor;
        }
        self
    }

    /// Sets the cap of an exponential mode (no effect on other modes).
    pub fn with_max_delay(mut self, cap: Duration) -> Self {
        if let Self::ExponentialBackoff { max_delay, .. } = &mut self {
            *max_delay = cap;
        }
        self
    }

    /// Sets the jitter fraction of an exponential mode, clamped to `[0, 1]` (no effect
    /// on other modes).
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        if let Self::ExponentialBackoff { jitter, .. } = &mut self {
            *jitter = clamp_unit(fraction);
        }
        self
    }

    /// Retries after the first attempt.
    pub const fn max_retries(&self) -> usize {
        match self {
            Self::None => 0,
            Self::Fixed { retries, .. } => *retries,
            Self::ExponentialBackoff { max_retries, .. } => *max_retries,
        }
    }

    /// Attempts in all, the first included.
    pub const fn max_attempts(&self) -> usize {
        self.max_retries().saturating_add(1)
    }

    /// The pause after failed attempt `attempt` (0 is the first attempt) before the
    /// next one, or `None` when no retry is left.
    pub fn delay_for_attempt(&self, attempt: usize) -> Option<Duration> {
        if attempt >= self.max_retries() {
            return None;
        }
        match *self {
            Self::None => None,
            Self::Fixed { delay, .. } => Some(delay),
            Self::ExponentialBackoff {
                base_delay,
                multiplier,
                max_delay,
                jitter,
                ..
            } => Some(backoff(base_delay, multiplier, max_delay, jitter, attempt)),
        }
    }
}

fn clamp_unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

fn backoff(
    base: Duration,
    multiplier: f64,
    cap: Duration,
    jitter: f64,
    attempt: usize,
) -> Duration {
    let factor = if multiplier.is_finite() && multiplier > 1.0 {
        multiplier
    } else {
        1.0
    };
    let exponent = i32::try_from(attempt).unwrap_or(i32::MAX);
    let raw = base.as_secs_f64() * factor.powi(exponent);
    let jitter = clamp_unit(jitter);
    let spread = if jitter > 0.0 {
        raw * (1.0 + jitter * (2.0 * crate::jitter::unit() - 1.0))
    } else {
        raw
    };
    let capped = spread.min(cap.as_secs_f64()).max(0.0);
    // Non-finite intermediate values (a huge exponent) fall back to the cap.
    Duration::try_from_secs_f64(capped).unwrap_or(cap).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_never_retries() {
        assert_eq!(RetryMode::none().max_attempts(), 1);
        assert_eq!(RetryMode::none().delay_for_attempt(0), None);
    }

    #[test]
    fn fixed_repeats_the_same_delay_then_stops() {
        let mode = RetryMode::fixed(2, Duration::from_micros(250));
        assert_eq!(mode.delay_for_attempt(0), Some(Duration::from_micros(250)));
        assert_eq!(mode.delay_for_attempt(1), Some(Duration::from_micros(250)));
        assert_eq!(mode.delay_for_attempt(2), None);
        assert_eq!(mode.max_attempts(), 3);
    }

    #[test]
    fn exponential_grows_and_is_capped() {
        let mode = RetryMode::exponential(10)
            .with_base_delay(Duration::from_millis(1))
            .with_multiplier(3.0)
            .with_max_delay(Duration::from_millis(50))
            .with_jitter(0.0);
        assert_eq!(mode.delay_for_attempt(0), Some(Duration::from_millis(1)));
        assert_eq!(mode.delay_for_attempt(1), Some(Duration::from_millis(3)));
        assert_eq!(mode.delay_for_attempt(2), Some(Duration::from_millis(9)));
        assert_eq!(mode.delay_for_attempt(4), Some(Duration::from_millis(50)));
        assert_eq!(mode.delay_for_attempt(9), Some(Duration::from_millis(50)));
    }

    #[test]
    fn sub_millisecond_delays_keep_their_precision() {
        let mode = RetryMode::exponential(3)
            .with_base_delay(Duration::from_micros(100))
            .with_jitter(0.0);
        assert_eq!(mode.delay_for_attempt(1), Some(Duration::from_micros(200)));
    }

    #[test]
    fn jitter_stays_within_its_band_and_the_cap() {
        let mode = RetryMode::exponential(5)
            .with_base_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_millis(150))
            .with_jitter(0.5);
        for _ in 0..1_000 {
            let d = mode.delay_for_attempt(0).unwrap();
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(150),
                "{d:?}"
            );
            assert!(mode.delay_for_attempt(4).unwrap() <= Duration::from_millis(150));
        }
    }

    #[test]
    fn nonsense_parameters_do_not_panic() {
        let mode = RetryMode::exponential(usize::MAX - 1)
            .with_multiplier(f64::NAN)
            .with_jitter(f64::INFINITY);
        // NaN multiplier counts as 1, infinite jitter clamps to 1: within 0..=200 ms.
        let d = mode.delay_for_attempt(usize::MAX - 2).unwrap();
        assert!(d <= Duration::from_millis(200), "{d:?}");
        let huge = RetryMode::exponential(2000).with_jitter(0.0);
        assert_eq!(huge.delay_for_attempt(1999), Some(Duration::from_secs(30)));
        assert_eq!(
            RetryMode::fixed(usize::MAX, Duration::ZERO).max_attempts(),
            usize::MAX
        );
    }
}
