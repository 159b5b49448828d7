//! The scheduler's wall clock: tokio's clock (which tests can pause and advance) read as
//! UTC from an origin, so cron instants and timers agree.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Maps tokio instants to wall-clock time from one origin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    wall: DateTime<Utc>,
    at: Instant,
}

impl Clock {
    /// The origin `wall` is now on tokio's clock.
    pub(crate) fn starting_at(wall: DateTime<Utc>) -> Self {
        Self {
            wall,
            at: Instant::now(),
        }
    }

    /// The tokio instant the scheduler started at.
    pub(crate) fn started(&self) -> Instant {
        self.at
    }

    /// The wall time of `instant`.
    pub(crate) fn wall(&self, instant: Instant) -> DateTime<Utc> {
        let since = instant.saturating_duration_since(self.at);
        self.wall + chrono::Duration::from_std(since).unwrap_or(chrono::Duration::MAX)
    }

    /// The tokio instant of wall time `wall` (the origin, for a time before it).
    pub(crate) fn instant(&self, wall: DateTime<Utc>) -> Instant {
        let since = (wall - self.wall).to_std().unwrap_or(Duration::ZERO);
        self.at + since
    }
}
