//! Plain-text output for the command line: aligned tables and times people read.

use std::fmt::Write as _;

use cano_core::checkpoint::{LiveStatus, StatusCounts};

pub use crate::when::{duration, now_ms, parse_time, time};

use crate::actions::BulkReport;
use crate::cluster::ClusterView;
use crate::detail::{RunDetail, RunView};

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
                e.worker.clone().unwrap_or_else(|| "-".to_owned()),
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
        &[
            "ROW", "KIND", "STATE", "AT", "IN STATE", "ENTRY", "WORKER", "DETAIL",
        ],
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
        "{}{}: {}",
        report.action,
        if report.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        },
        report.summary()
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
