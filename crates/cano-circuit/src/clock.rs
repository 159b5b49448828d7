//! Time as nanoseconds since a fixed origin, so it fits in an atomic word.
//!
//! The origin is a `tokio::time::Instant`: under tokio's paused test clock the breaker and
//! the limiters see the same time as the tasks they guard.

use std::time::Duration;

use tokio::time::Instant;

/// A fixed origin; readings are nanoseconds since it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// The moment `nanos` after the origin, as a std `Instant` (under tokio's paused
    /// clock, the paused time); past what the platform's `Instant` holds, the latest
    /// moment that fits.
    pub(crate) fn instant_at(&self, nanos: u64) -> std::time::Instant {
        let origin = self.origin.into_std();
        let mut offset = Duration::from_nanos(nanos);
        loop {
            if let Some(at) = origin.checked_add(offset) {
                return at;
            }
            offset /= 2;
        }
    }

    /// Nanoseconds since the origin (saturating: 584 years fit in a `u64`).
    pub(crate) fn now(&self) -> u64 {
        nanos(self.origin.elapsed())
    }
}

/// A duration as whole nanoseconds, saturating at `u64::MAX`.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
