//! Times as people read them (UTC, to the millisecond) and as they type them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A time in milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm` UTC
/// (`-` for 0, which means unknown).
pub fn time(ms: u64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 as a (year, month, day) of the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A time as milliseconds since the Unix epoch, from `YYYY-MM-DD`,
/// `YYYY-MM-DDTHH:MM[:SS]` (UTC), or a number of milliseconds.
pub fn parse_time(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<u64>() {
        return Some(ms);
    }
    let (date, clock) = match text.split_once(['T', ' ']) {
        Some((date, clock)) => (date, clock.trim_end_matches('Z')),
        None => (text, "00:00"),
    };
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    let mut clock = clock.split(':');
    let hh: u64 = clock.next()?.parse().ok()?;
    let mm: u64 = clock.next()?.parse().ok()?;
    let ss: u64 = clock.next().map_or(Some(0), |s| s.parse().ok())?;
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (the inverse of civil_from_days).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(((days * 86_400) + hh * 3600 + mm * 60 + ss) * 1000)
}

/// A duration as people say it: `850ms`, `12.4s`, `3m05s`, `2h10m`, `4d3h`.
pub fn duration(ms: u64) -> String {
    let d = Duration::from_millis(ms);
    let s = d.as_secs();
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    millis(SystemTime::now())
}

/// `at` in milliseconds since the Unix epoch (0 before it, `u64::MAX` past what that
/// holds).
pub fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn times_print_in_utc() {
        assert_eq!(time(0), "-");
        assert_eq!(time(1_700_000_000_123), "2023-11-14 22:13:20.123");
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(parse_time("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(parse_time("12345"), Some(12345));
        for bad in ["yesterday", "2024-13-01", "2024-01-01T25:00", "1969-12-31"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(185_000), "3m05s");
    }

    proptest! {
        /// Printing a time and reading it back gives the same second.
        #[test]
        fn times_round_trip(secs in 0u64..10_000_000_000) {
            let printed = time(secs * 1000 + 1);
            let date_time = printed.replacen(' ', "T", 1);
            let back = parse_time(&date_time[..19]).unwrap();
            prop_assert_eq!(back, secs * 1000);
        }
    }
}
