//! The scheduler's wall clock: tokio's clock (which tests can pause and advance) read as
//! UTC from an origin, so cron instants and timers agree.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// A deadline that never comes: thirty years on, far enough for any schedule and near
/// enough that `Instant` arithmetic on it cannot overflow.
pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(30 * 365 * 86_400)
}

/// `now` plus `wait`, or [`far_future`] for a wait past it (`Duration::MAX`).
pub(crate) fn after(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .filter(|at| *at < far_future())
        .unwrap_or_else(far_future)
}

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
        chrono::Duration::from_std(since)
            .ok()
            .and_then(|since| self.wall.checked_add_signed(since))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The tokio instant of wall time `wall` (the origin, for a time before it);
    /// `None` for a time further than tokio's clock can name.
    pub(crate) fn instant(&self, wall: DateTime<Utc>) -> Option<Instant> {
        let since = (wall - self.wall).to_std().unwrap_or(Duration::ZERO);
        self.at.checked_add(since)
    }
}
