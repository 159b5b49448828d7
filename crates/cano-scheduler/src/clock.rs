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

/// Maps tokio instants to wall-clock time.
///
/// On the system clock every conversion reads the wall clock again, so a step of it
/// (NTP, an operator) or a suspend of the machine moves no later tick: the next cron
/// instant is always worked out from the time it is now. From a fixed origin (tests,
/// simulations on a paused clock), wall time is the origin plus tokio's elapsed time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start: Instant,
    origin: Option<DateTime<Utc>>,
    wall_now: fn() -> DateTime<Utc>,
}

impl Clock {
    /// The system's wall clock, read anew for each conversion.
    pub(crate) fn system() -> Self {
        Self::reading(Utc::now)
    }

    /// The wall clock `now` reads, anew for each conversion.
    pub(crate) fn reading(now: fn() -> DateTime<Utc>) -> Self {
        Self {
            start: Instant::now(),
            origin: None,
            wall_now: now,
        }
    }

    /// Wall time `origin` now, advancing with tokio's clock.
    pub(crate) fn starting_at(origin: DateTime<Utc>) -> Self {
        Self {
            start: Instant::now(),
            origin: Some(origin),
            wall_now: Utc::now,
        }
    }

    /// The tokio instant the scheduler started at.
    pub(crate) fn started(&self) -> Instant {
        self.start
    }

    /// The wall time of `instant`.
    pub(crate) fn wall(&self, instant: Instant) -> DateTime<Utc> {
        let (base_wall, base) = match self.origin {
            Some(origin) => (origin, self.start),
            None => ((self.wall_now)(), Instant::now()),
        };
        let shifted = if instant >= base {
            chrono::Duration::from_std(instant - base)
                .ok()
                .and_then(|d| base_wall.checked_add_signed(d))
        } else {
            chrono::Duration::from_std(base - instant)
                .ok()
                .and_then(|d| base_wall.checked_sub_signed(d))
        };
        shifted.unwrap_or(if instant >= base {
            DateTime::<Utc>::MAX_UTC
        } else {
            DateTime::<Utc>::MIN_UTC
        })
    }

    /// The tokio instant of wall time `wall` (now, for a time already past); `None`
    /// for a time further than tokio's clock can name.
    pub(crate) fn instant(&self, wall: DateTime<Utc>) -> Option<Instant> {
        let (base_wall, base) = match self.origin {
            Some(origin) => (origin, self.start),
            None => ((self.wall_now)(), Instant::now()),
        };
        let ahead = (wall - base_wall).to_std().unwrap_or(Duration::ZERO);
        let at = base.checked_add(ahead)?;
        Some(at.max(if self.origin.is_some() {
            base
        } else {
            Instant::now()
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use chrono::TimeZone;

    use super::*;

    /// A wall clock a test can step: 2026-01-01 00:00:00 UTC plus `STEP` seconds.
    static STEP: AtomicI64 = AtomicI64::new(0);
    fn stepped_wall() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
            + chrono::Duration::seconds(STEP.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn the_system_clock_is_read_anew_so_a_step_moves_no_later_tick() {
        let clock = Clock::reading(stepped_wall);
        let now = Instant::now();
        assert_eq!(clock.wall(now), stepped_wall());
        // The wall clock steps an hour forward (NTP, a resumed laptop): the very next
        // conversion sees it, and a wall time an hour off is "now", not an hour away.
        STEP.store(3_600, Ordering::SeqCst);
        assert_eq!(clock.wall(now), stepped_wall());
        let in_ten = stepped_wall() + chrono::Duration::seconds(10);
        assert_eq!(clock.instant(in_ten), Some(now + Duration::from_secs(10)));
        let before_step = Utc.with_ymd_and_hms(2026, 1, 1, 0, 30, 0).unwrap();
        assert_eq!(clock.instant(before_step), Some(now));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_origin_advances_with_tokio_and_far_times_do_not_overflow() {
        let origin = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let clock = Clock::starting_at(origin);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            clock.wall(Instant::now()),
            origin + chrono::Duration::seconds(5)
        );
        // The end of time is far, or past what tokio can name: never a panic.
        assert!(
            clock
                .instant(DateTime::<Utc>::MAX_UTC)
                .is_none_or(|at| at > Instant::now())
        );
        assert!(clock.wall(far_future()) > origin);
    }
}
