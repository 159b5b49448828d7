//! [`Schedule`]: when a flow runs.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use cano_core::CanoError;
use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// When a flow runs: on a cron expression, every so often, or only when triggered.
#[derive(Clone)]
pub enum Schedule {
    /// At the instants a cron expression names, in a time zone (UTC unless given).
    Cron {
        /// The parsed expression.
        cron: Box<Cron>,
        /// The expression as written.
        expr: String,
        /// The zone its fields are read in.
        zone: Tz,
    },
    /// Every `period`, counted from the end of the previous run (fixed delay) or from
    /// the previous tick (fixed rate). The first run is one period after the start.
    Every {
        /// The interval.
        period: Duration,
        /// Fixed rate (`true`) or fixed delay.
        fixed_rate: bool,
    },
    /// Only when [`RunningScheduler::trigger`](crate::RunningScheduler::trigger)ed.
    Manual,
}

impl Schedule {
    /// A cron expression read in UTC: five fields, or six with seconds first, or an
    /// alias such as `@hourly`.
    pub fn cron(expr: &str) -> Result<Self, CanoError> {
        Self::cron_in(expr, "UTC")
    }

    /// A cron expression read in the named IANA time zone (`"Europe/Berlin"`). Across
    /// a daylight-saving change each local instant fires once: a skipped hour has no
    /// fire, a repeated hour fires once.
    pub fn cron_in(expr: &str, zone: &str) -> Result<Self, CanoError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|e| {
                CanoError::configuration(format!("invalid cron expression {expr:?}: {e}"))
                    .with_hint("use five fields (minute hour day month weekday), six with seconds first, or an alias such as @hourly")
            })?;
        let zone = Tz::from_str(zone).map_err(|_| {
            CanoError::configuration(format!("unknown time zone {zone:?}"))
                .with_hint("use an IANA name such as \"UTC\" or \"Europe/Berlin\"")
        })?;
        Ok(Self::Cron {
            cron: Box::new(cron),
            expr: expr.to_owned(),
            zone,
        })
    }

    /// Every `period`, the next run starting `period` after the previous one ended.
    pub fn every(period: Duration) -> Result<Self, CanoError> {
        Self::interval(period, false)
    }

    /// Every `period` on a fixed grid (start + k × period), however long runs take;
    /// a tick that finds the previous run still going follows the flow's
    /// [`Overlap`](crate::Overlap) policy.
    pub fn every_fixed_rate(period: Duration) -> Result<Self, CanoError> {
        Self::interval(period, true)
    }

    fn interval(period: Duration, fixed_rate: bool) -> Result<Self, CanoError> {
        if period.is_zero() {
            return Err(CanoError::configuration(
                "an interval of zero would run the flow in a tight loop",
            )
            .with_hint("give Schedule::every a non-zero period"));
        }
        Ok(Self::Every { period, fixed_rate })
    }

    /// Only when triggered.
    pub fn manual() -> Self {
        Self::Manual
    }

    /// The first cron instant strictly after `after`, in UTC; `None` when the
    /// expression has no further instant, or for interval and manual schedules (whose
    /// ticks depend on when the scheduler started).
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use cano_scheduler::Schedule;
    ///
    /// let hourly = Schedule::cron("0 * * * *").unwrap();
    /// let at = Utc.with_ymd_and_hms(2026, 1, 1, 9, 30, 0).unwrap();
    /// assert_eq!(hourly.next_cron(at), Some(Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap()));
    /// // Ticks fall on the instants the expression names, whatever the fraction of `after`.
    /// let every_second = Schedule::cron("* * * * * *").unwrap();
    /// let later = at + chrono::Duration::milliseconds(572);
    /// assert_eq!(every_second.next_cron(later), Some(at + chrono::Duration::seconds(1)));
    /// ```
    pub fn next_cron(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            // From the whole second: croner keeps the sub-second part of its input,
            // which would put every tick off the instants the expression names.
            Self::Cron { cron, zone, .. } => cron
                .find_next_occurrence(&after.with_nanosecond(0)?.with_timezone(zone), false)
                .ok()
                .map(|next| next.with_timezone(&Utc)),
            _ => None,
        }
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cron { expr, zone, .. } => write!(f, "cron({expr:?} in {zone})"),
            Self::Every {
                period,
                fixed_rate: false,
            } => write!(f, "every({period:?}, fixed delay)"),
            Self::Every {
                period,
                fixed_rate: true,
            } => write!(f, "every({period:?}, fixed rate)"),
            Self::Manual => f.write_str("manual"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn bad_input_is_a_clear_error() {
        let err = Schedule::cron("61 * * * *").unwrap_err().to_string();
        assert!(
            err.contains("invalid cron expression \"61 * * * *\""),
            "{err}"
        );
        let err = Schedule::cron_in("0 * * * *", "Mars/Olympus")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown time zone"), "{err}");
        assert!(Schedule::every(Duration::ZERO).is_err());
        assert!(Schedule::every_fixed_rate(Duration::ZERO).is_err());
    }

    #[test]
    fn daily_local_time_moves_in_utc_across_dst() {
        // cano 0.13's cron took seven fields, a year last: read as such.
        let once = Schedule::cron("0 0 3 * * * 2027").unwrap();
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 7, 0, 0).unwrap();
        let first = once.next_cron(now).unwrap();
        assert_eq!(first, Utc.with_ymd_and_hms(2027, 1, 1, 3, 0, 0).unwrap());
        let last = Utc.with_ymd_and_hms(2027, 12, 31, 3, 0, 0).unwrap();
        assert_eq!(once.next_cron(last), None, "no instant after 2027");
        let nine = Schedule::cron_in("0 9 * * *", "Europe/Berlin").unwrap();
        // 28 March 2026 09:00 CET is 08:00 UTC; 29 March 09:00 CEST is 07:00 UTC.
        let start = Utc.with_ymd_and_hms(2026, 3, 28, 0, 0, 0).unwrap();
        let first = nine.next_cron(start).unwrap();
        let second = nine.next_cron(first).unwrap();
        assert_eq!(first, Utc.with_ymd_and_hms(2026, 3, 28, 8, 0, 0).unwrap());
        assert_eq!(second, Utc.with_ymd_and_hms(2026, 3, 29, 7, 0, 0).unwrap());
    }
}
