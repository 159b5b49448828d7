//! A rolling window of call outcomes for the failure-rate rule, lock-free.
//!
//! The window is cut into [`SLOTS`] buckets; each bucket is one atomic word holding the
//! bucket's epoch stamp and its call and failure counts, so recording is a single
//! compare-and-swap and a bucket from an earlier lap reads as empty.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::nanos;

const SLOTS: u64 = 10;
const COUNT_BITS: u32 = 20;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const STAMP_MASK: u64 = (1 << (64 - 2 * COUNT_BITS)) - 1;

#[derive(Debug)]
pub(crate) struct Window {
    width: u64,
    slots: [AtomicU64; SLOTS as usize],
}

fn unpack(word: u64) -> (u64, u64, u64) {
    (
        word >> (2 * COUNT_BITS),
        (word >> COUNT_BITS) & COUNT_MAX,
        word & COUNT_MAX,
    )
}

fn pack(stamp: u64, calls: u64, failures: u64) -> u64 {
    (stamp & STAMP_MASK) << (2 * COUNT_BITS) | calls << COUNT_BITS | failures
}

impl Window {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            width: (nanos(window) / SLOTS).max(1),
            slots: Default::default(),
        }
    }

    /// Counts one call at `now`, failed or not.
    pub(crate) fn record(&self, now: u64, failed: bool) {
        let epoch = now / self.width;
        let slot = &self.slots[(epoch % SLOTS) as usize];
        let stamp = epoch & STAMP_MASK;
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (s, calls, failures) = unpack(current);
            let (calls, failures) = if s == stamp {
                (calls, failures)
            } else {
                (0, 0)
            };
            if calls == COUNT_MAX {
                // A full bucket keeps its ratio rather than skewing it.
                return;
            }
            let next = pack(stamp, calls + 1, failures + u64::from(failed));
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// Calls and failures recorded over the window that ends at `now`.
    pub(crate) fn totals(&self, now: u64) -> (u64, u64) {
        let epoch = now / self.width;
        let (mut calls, mut failures) = (0, 0);
        for back in 0..SLOTS.min(epoch + 1) {
            let e = epoch - back;
            let (stamp, c, f) = unpack(self.slots[(e % SLOTS) as usize].load(Ordering::Relaxed));
            if stamp == e & STAMP_MASK {
                calls += c;
                failures += f;
            }
        }
        (calls, failures)
    }

    /// Forgets everything (the breaker changed state).
    pub(crate) fn clear(&self) {
        for slot in &self.slots {
            slot.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn counts_what_falls_inside_the_window() {
        let w = Window::new(Duration::from_secs(10));
        w.record(0, true);
        w.record(SECOND, false);
        w.record(5 * SECOND, true);
        assert_eq!(w.totals(5 * SECOND), (3, 2));
        // 10.5 s later the bucket holding t = 0 has left the window.
        assert_eq!(w.totals(10 * SECOND + SECOND / 2), (2, 1));
        assert_eq!(w.totals(30 * SECOND), (0, 0));
    }

    #[test]
    fn a_bucket_from_an_earlier_lap_reads_as_empty() {
        let w = Window::new(Duration::from_secs(1));
        w.record(0, true);
        // Same slot, one lap (10 buckets) later.
        w.record(SECOND, false);
        assert_eq!(w.totals(SECOND), (1, 0));
    }

    #[test]
    fn clear_forgets() {
        let w = Window::new(Duration::from_secs(1));
        w.record(0, true);
        w.clear();
        assert_eq!(w.totals(0), (0, 0));
    }
}
