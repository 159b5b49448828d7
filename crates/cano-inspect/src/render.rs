//! Plain-text output for the command line: aligned tables and times people read.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cano_core::checkpoint::{LiveStatus, StatusCounts};

use crate::actions::BulkReport;
use crate::cluster::ClusterView;
use crate::detail::{RunDetail, RunView};

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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Cuts `text` to `max` characters, marking the cut.
pub fn cut(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Counts by status on one line: `running 3 · failed 1 · finished 40 (44 runs)`.
pub fn counts(counts: &StatusCounts) -> String {
    let parts: Vec<String> = LiveStatus::ALL
        .iter()
        .filter(|s| counts.of(**s) > 0)
        .map(|s| format!("{} {}", s.name(), counts.of(*s)))
        .collect();
    format!("{} ({} runs)", parts.join(" · "), counts.total())
}

/// The runs table of `cano runs list`.
pub fn runs(runs: &[RunView]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.run.clone(),
                r.workflow.clone(),
                r.version.to_string(),
                r.status.to_owned(),
                cut(&r.state, 28),
                time(r.started_at_ms),
                time(r.updated_at_ms),
                cut(&r.error, 60),
            ]
        })
        .collect();
    table(
        &[
            "RUN", "WORKFLOW", "V", "STATUS", "STATE", "STARTED", "UPDATED", "ERROR",
        ],
        &rows,
    )
}

/// `cano runs show`: the run, its timeline, data, waits, claims and actions.
pub fn detail(detail: &RunDetail) -> String {
    let r = &detail.run;
    let mut out = format!(
        "run {}  workflow {} v{}  {}  in {}\nstarted {}  updated {}\n",
        r.run,
        r.workflow,
        r.version,
        r.status,
        r.state,
        time(r.started_at_ms),
        time(r.updated_at_ms)
    );
    if !r.error.is_empty() {
        let _ = writeln!(out, "error: {}", r.error);
    }
    if let Some(wait) = &detail.waits_for {
        let until = wait
            .deadline_ms
            .map_or("no deadline".to_owned(), |ms| format!("until {}", time(ms)));
        let _ = writeln!(out, "waits for: {} ({until})", wait.signals.join(" or "));
    }
    out.push_str("\ntimeline\n");
    let rows: Vec<Vec<String>> = detail
        .timeline
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                e.kind.to_owned(),
                cut(&e.state, 28),
                time(e.at_ms),
                e.in_state_ms.map_or("-".to_owned(), duration),
                e.attempt.to_string(),
                cut(
                    &[e.message.as_str(), e.note.as_str(), &e.data_keys.join(",")]
                        .iter()
                        .filter(|s| !s.is_empty())
                        .copied()
                        .collect::<Vec<_>>()
                        .join(" | "),
                    80,
                ),
            ]
        })
        .collect();
    out.push_str(&table(
        &["ROW", "KIND", "STATE", "AT", "IN STATE", "ENTRY", "DETAIL"],
        &rows,
    ));
    if let Some(at) = detail.data_at {
        let _ = writeln!(out, "\ndata at row {at}");
        let rows: Vec<Vec<String>> = detail
            .data
            .iter()
            .map(|d| {
                let key = if d.engine {
                    format!("(engine) {}", d.key)
                } else {
                    d.key.clone()
                };
                vec![
                    key,
                    d.value.read_as.to_owned(),
                    d.written_at_row.to_string(),
                    cut(&d.value.text, 80),
                ]
            })
            .collect();
        out.push_str(&table(&["KEY", "AS", "ROW", "VALUE"], &rows));
    }
    if !detail.claims.is_empty() {
        out.push_str("\nclaims\n");
        let rows: Vec<Vec<String>> = detail
            .claims
            .iter()
            .map(|c| {
                vec![
                    c.epoch.to_string(),
                    c.worker.clone(),
                    time(c.claimed_at_ms),
                    c.ended_at_ms.map_or("-".to_owned(), time),
                    c.outcome.clone().unwrap_or_else(|| "holding".to_owned()),
                ]
            })
            .collect();
        out.push_str(&table(
            &["EPOCH", "WORKER", "CLAIMED", "ENDED", "OUTCOME"],
            &rows,
        ));
    }
    if !detail.actions.is_empty() {
        out.push_str("\nactions\n");
        let rows: Vec<Vec<String>> = detail
            .actions
            .iter()
            .map(|a| {
                vec![
                    time(a.at_ms),
                    a.action.clone(),
                    a.actor.clone(),
                    cut(&a.reason, 40),
                    cut(&a.detail, 60),
                ]
            })
            .collect();
        out.push_str(&table(&["AT", "ACTION", "BY", "WHY", "DETAIL"], &rows));
    }
    match &detail.graph {
        Some(_) => out.push_str("\ngraph: `cano runs graph RUN` prints it in Mermaid\n"),
        None => out.push_str("\ngraph: its workflow recorded none\n"),
    }
    out
}

/// A bulk action's report.
pub fn bulk(report: &BulkReport) -> String {
    let rows: Vec<Vec<String>> = report
        .runs
        .iter()
        .map(|p| {
            vec![
                p.run.run.clone(),
                p.run.status.to_owned(),
                p.verdict.to_owned(),
                cut(&p.detail, 80),
            ]
        })
        .collect();
    let mut out = table(&["RUN", "STATUS", "VERDICT", "DETAIL"], &rows);
    let _ = writeln!(
        out,
        "{}{}: {} runs matched, {} {}, {} skipped, {} failed",
        report.action,
        if report.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        },
        report.runs.len(),
        report.count(if report.dry_run { "will" } else { "did" }),
        if report.dry_run {
            "would change"
        } else {
            "changed"
        },
        report.count("skip"),
        report.count("failed"),
    );
    out
}

/// `cano cluster`: schedules, then workers.
pub fn cluster(view: &ClusterView) -> String {
    let opt_time = |t: Option<u64>| t.map_or("-".to_owned(), time);
    let schedules: Vec<Vec<String>> = view
        .schedules
        .iter()
        .map(|s| {
            let leader = match (&s.leader, s.leader_live) {
                (Some(l), true) => l.clone(),
                (Some(l), false) => format!("{l} (lease expired)"),
                (None, _) => "-".to_owned(),
            };
            vec![
                s.group.clone(),
                s.schedule.clone(),
                s.cron.clone(),
                s.workflow.clone(),
                leader,
                opt_time(s.last_fire_ms),
                opt_time(s.next_fire_ms),
            ]
        })
        .collect();
    let mut out = String::from("schedules\n");
    out.push_str(&table(
        &[
            "GROUP",
            "SCHEDULE",
            "CRON",
            "WORKFLOW",
            "LEADER",
            "LAST FIRE",
            "NEXT FIRE",
        ],
        &schedules,
    ));
    let workers: Vec<Vec<String>> = view
        .workers
        .iter()
        .map(|w| {
            vec![
                w.worker.clone(),
                w.holding.to_string(),
                match w.lease_until_ms {
                    Some(u64::MAX) => "never expires".to_owned(),
                    other => opt_time(other),
                },
                time(w.last_claim_ms),
                w.claims_last_hour.to_string(),
            ]
        })
        .collect();
    out.push_str("\nworkers (claimed in the last day)\n");
    out.push_str(&table(
        &[
            "WORKER",
            "HOLDING",
            "LEASE UNTIL",
            "LAST CLAIM",
            "CLAIMS/HOUR",
        ],
        &workers,
    ));
    out
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
