//! A token bucket as a generic cell rate algorithm: one atomic word, the "theoretical
//! arrival time" of the next token, instead of a token count and a refill timestamp.
//!
//! A call of cost `c` pushes that time `c` emission intervals forward and is admitted if
//! the result stays within `burst` intervals of now. Over any span `t` this admits at
//! most `rate × t / period + burst` tokens, which is the limiter's whole promise.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::{Clock, nanos};

#[derive(Debug)]
pub(crate) struct TokenBucket {
    /// When the bucket would be full again (clock nanoseconds).
    tat: AtomicU64,
    /// Nanoseconds per token, rounded up so the bucket never refills faster than asked.
    interval: u64,
    burst: u64,
    clock: Clock,
}

impl TokenBucket {
    /// `rate` tokens per `period`, at most `burst` at once; both checked non-zero.
    pub(crate) fn new(rate: u32, period: Duration, burst: u32) -> Self {
        Self {
            tat: AtomicU64::new(0),
            interval: nanos(period).div_ceil(u64::from(rate)).max(1),
            burst: u64::from(burst),
            clock: Clock::new(),
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.burst
    }

    /// Takes `cost` tokens, or says how many nanoseconds until they would be there.
    pub(crate) fn try_debit(&self, cost: u64) -> Result<(), u64> {
        let now = self.clock.now();
        let tolerance = self.burst.saturating_mul(self.interval);
        let step = cost.saturating_mul(self.interval);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let next = tat.max(now).saturating_add(step);
            let ahead = next - now;
            if ahead > tolerance {
                return Err(ahead - tolerance);
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }

    /// Nanoseconds until `cost` tokens would be there (0: now), taking nothing.
    pub(crate) fn wait_for(&self, cost: u64) -> u64 {
        let now = self.clock.now();
        let tat = self.tat.load(Ordering::Acquire);
        let ahead = tat
            .max(now)
            .saturating_add(cost.saturating_mul(self.interval))
            - now;
        ahead.saturating_sub(self.burst.saturating_mul(self.interval))
    }

    /// Gives back `cost` tokens taken by `try_debit` (a tiered debit that another tier
    /// refused).
    pub(crate) fn refund(&self, cost: u64) {
        let step = cost.saturating_mul(self.interval);
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.saturating_sub(step))
            });
    }
}
