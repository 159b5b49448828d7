//! A fixed-window counter: at most `limit` per window, the count starting afresh when
//! a new window begins. Window index and count share one atomic word.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::{Clock, nanos};

#[derive(Debug)]
pub(crate) struct FixedWindow {
    /// Window index (high half) and the count spent in it (low half).
    word: AtomicU64,
    limit: u64,
    width: u64,
    clock: Clock,
}

fn split(word: u64) -> (u64, u64) {
    (word >> 32, word & u64::from(u32::MAX))
}

impl FixedWindow {
    /// `limit` per `window`; both checked non-zero.
    pub(crate) fn new(limit: u32, window: Duration) -> Self {
        Self {
            word: AtomicU64::new(0),
            limit: u64::from(limit),
            width: nanos(window).max(1),
            clock: Clock::new(),
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.limit
    }

    /// The current window's index (kept to 32 bits) and the nanoseconds until it ends.
    fn position(&self) -> (u64, u64) {
        let now = self.clock.now();
        let index = now / self.width;
        (index & u64::from(u32::MAX), self.width - now % self.width)
    }

    pub(crate) fn try_debit(&self, cost: u64) -> Result<(), u64> {
        let (index, remaining) = self.position();
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let (seen, spent) = split(word);
            let spent = if seen == index { spent } else { 0 };
            if spent + cost > self.limit {
                return Err(remaining);
            }
            let next = index << 32 | (spent + cost);
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(now_seen) => word = now_seen,
            }
        }
    }

    pub(crate) fn wait_for(&self, cost: u64) -> u64 {
        let (index, remaining) = self.position();
        let (seen, spent) = split(self.word.load(Ordering::Acquire));
        let spent = if seen == index { spent } else { 0 };
        if spent + cost > self.limit {
            remaining
        } else {
            0
        }
    }

    pub(crate) fn refund(&self, cost: u64) {
        let (index, _) = self.position();
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let (seen, spent) = split(word);
                // A refund into a window that has already ended has nothing to give back.
                (seen == index).then(|| index << 32 | spent.saturating_sub(cost))
            });
    }
}
