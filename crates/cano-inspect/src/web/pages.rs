//! The console's pages, rendered to HTML on the server. Every text from the store is
//! escaped: run labels, errors and data are user data.

use std::fmt::Write as _;

use cano_core::RunId;
use cano_core::checkpoint::{LiveStatus, StatusCounts};

use super::{Console, Params, filter_of, page_of};
use crate::actions::BulkReport;
use crate::detail::{RunDetail, RunView};
use crate::error::InspectError;
use crate::render::{cut, duration, time};

/// `text` safe inside HTML text and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A short fingerprint of a rendered part, which a page hands its live stream: the
/// stream sends the part at once if it no longer matches what the page shows.
pub(crate) fn fingerprint(html: &str) -> String {
    use std::hash::{Hash, Hasher};
    // Fixed keys: the same text gives the same fingerprint in every request.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    html.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// `text` as a URL query value.
pub(crate) fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#111}
header{background:#1e293b;color:#fff;padding:.6em 1em;display:flex;gap:1.5em;align-items:baseline}
header a{color:#cbd5e1;text-decoration:none}header b{font-size:1.1em}
main{padding:1em}table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}
th,td{border-bottom:1px solid #e2e8f0;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f8fafc;font-weight:600}td.err{color:#b91c1c}code,pre{font:12px ui-monospace,monospace}
.status{padding:.1em .45em;border-radius:.3em;background:#e2e8f0;white-space:nowrap}
.st-running,.st-queued{background:#dbeafe}.st-parked{background:#fef3c7}.st-failed,.st-unreadable{background:#fee2e2}
.st-finished{background:#dcfce7}.st-interrupted{background:#ffedd5}.st-rolled-back{background:#f3e8ff}
form.filter{display:flex;flex-wrap:wrap;gap:.5em;align-items:end}form.filter label{display:flex;flex-direction:column;font-size:12px}
.counts a{margin-right:1em}.note{background:#ecfdf5;border:1px solid #a7f3d0;padding:.5em;margin-bottom:1em}
.actions form{display:inline-flex;gap:.3em;margin:0 1em .5em 0;padding:.4em;border:1px solid #e2e8f0}
tr.at{background:#fefce8}";

/// The frame of every page.
fn page(title: &str, body: &str, console: Option<&Console>) -> String {
    let mut out = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · cano</title><style>{STYLE}</style></head><body><header><b>cano</b><a href=\"/\">Runs</a><a href=\"/cluster\">Cluster</a>",
        escape(title)
    );
    if let Some(console) = console {
        let _ = write!(
            out,
            "<span style=\"margin-left:auto;color:#94a3b8\">{} · {}</span>",
            escape(console.inspector.describe()),
            if console.actions_allowed() {
                "actions on"
            } else {
                "read-only"
            }
        );
    }
    out.push_str("</header><main>");
    out.push_str(body);
    // Live regions: each element naming an event stream has its content replaced by
    // what the stream sends.
    out.push_str(
        "</main><script>for(const el of document.querySelectorAll('[data-events]')){const s=new EventSource(el.dataset.events);s.addEventListener('update',e=>{el.innerHTML=e.data;el.dataset.updates=(+(el.dataset.updates||0)+1)})}</script></body></html>",
    );
    out
}

/// A page that only says something.
pub(crate) fn message(title: &str, text: &str) -> String {
    page(
        title,
        &format!("<h1>{}</h1><p>{}</p>", escape(title), escape(text)),
        None,
    )
}

/// The page of an error.
pub(crate) fn error(e: &InspectError) -> String {
    page(
        "Error",
        &format!(
            "<h1>Cannot do that</h1><p class=\"err\" id=\"error\">{}</p><p><a href=\"/\">Back to the runs</a></p>",
            escape(&e.to_string())
        ),
        None,
    )
}

fn status(status: &str) -> String {
    format!("<span class=\"status st-{status}\">{status}</span>")
}

/// The query string of `params` without `skip`.
fn query(params: &Params, skip: &[&str]) -> String {
    let mut pairs: Vec<_> = params
        .iter()
        .filter(|(k, v)| !skip.contains(&k.as_str()) && !v.is_empty())
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The counts and the table of the runs list: what the live stream re-sends.
pub(crate) async fn runs_fragment(
    console: &Console,
    params: &Params,
) -> Result<String, InspectError> {
    let counts = console.inspector.counts(&filter_of(params)?).await?;
    runs_fragment_with(console, params, &counts).await
}

/// [`runs_fragment`] with counts already taken (the live stream takes them less often
/// than it lists: counting reads every run).
pub(crate) async fn runs_fragment_with(
    console: &Console,
    params: &Params,
    counts: &StatusCounts,
) -> Result<String, InspectError> {
    let filter = filter_of(params)?;
    let (after, limit) = page_of(params)?;
    let page = console.inspector.list(&filter, after, limit).await?;
    let base = query(params, &["status", "after", "note", "seen"]);
    let mut out = String::from("<p class=\"counts\" id=\"counts\">");
    for s in LiveStatus::ALL {
        let n = counts.of(s);
        if n > 0 {
            let _ = write!(
                out,
                "<a href=\"/?{base}{}status={}\" data-status=\"{}\">{} {n}</a>",
                if base.is_empty() { "" } else { "&" },
                s.name(),
                s.name(),
                status(s.name())
            );
        }
    }
    let _ = write!(out, "<b>{} runs</b></p>", counts.total());
    out.push_str("<table id=\"runs\"><thead><tr><th>Run</th><th>Workflow</th><th>V</th><th>Status</th><th>State</th><th>Started</th><th>Updated</th><th>Error</th></tr></thead><tbody>");
    for r in page.runs.iter().map(RunView::from) {
        let _ = write!(
            out,
            "<tr data-run=\"{run}\"><td><a href=\"/runs/{run}\"><code>{run}</code></a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
            escape(&r.workflow),
            r.version,
            status(r.status),
            escape(&cut(&r.state, 40)),
            time(r.started_at_ms),
            time(r.updated_at_ms),
            escape(&cut(&r.error, 100)),
            run = r.run,
        );
    }
    out.push_str("</tbody></table>");
    if page.runs.is_empty() {
        out.push_str("<p id=\"empty\">No run matches.</p>");
    }
    if let Some(next) = page.next {
        let rest = query(params, &["after", "note", "seen"]);
        let _ = write!(
            out,
            "<p><a id=\"next\" href=\"/?{rest}{}after={}\">Older runs →</a></p>",
            if rest.is_empty() { "" } else { "&" },
            url_encode(&next.to_string())
        );
    }
    Ok(out)
}

/// The runs list.
pub(crate) async fn list(console: &Console, params: &Params) -> Result<String, InspectError> {
    let fragment = runs_fragment(console, params).await?;
    let value = |k: &str| escape(params.get(k).map_or("", String::as_str));
    let mut body = String::new();
    if let Some(note) = params.get("note") {
        let _ = write!(body, "<p class=\"note\" id=\"note\">{}</p>", escape(note));
    }
    let _ = write!(
        body,
        "<form class=\"filter\" method=\"get\" action=\"/\">
<label>Workflow<input name=\"workflow\" value=\"{}\"></label>
<label>Version<input name=\"version\" size=\"4\" value=\"{}\"></label>
<label>Status<input name=\"status\" placeholder=\"failed,parked\" value=\"{}\"></label>
<label>State<input name=\"state\" value=\"{}\"></label>
<label>Since<input name=\"since\" placeholder=\"YYYY-MM-DD\" value=\"{}\"></label>
<label>Until<input name=\"until\" placeholder=\"YYYY-MM-DD\" value=\"{}\"></label>
<label>Error text<input name=\"error\" value=\"{}\"></label>
<button id=\"apply\">Filter</button> <a href=\"/\">Clear</a></form>",
        value("workflow"),
        value("version"),
        value("status"),
        value("state"),
        value("since"),
        value("until"),
        value("error"),
    );
    if console.actions_allowed() {
        body.push_str(&bulk_form(params));
    }
    let mut stream = query(params, &["note", "seen"]);
    if !stream.is_empty() {
        stream.push('&');
    }
    let _ = write!(
        body,
        "<div id=\"live\" data-events=\"/events/runs?{}seen={}\">{fragment}</div>",
        escape(&stream),
        fingerprint(&fragment)
    );
    Ok(page("Runs", &body, Some(console)))
}

/// The form that acts on every run the list's filter matches (dry run by default).
fn bulk_form(params: &Params) -> String {
    let mut hidden = String::new();
    for key in [
        "workflow", "version", "status", "state", "since", "until", "error",
    ] {
        if let Some(value) = params.get(key).filter(|v| !v.is_empty()) {
            let _ = write!(
                hidden,
                "<input type=\"hidden\" name=\"{key}\" value=\"{}\">",
                escape(value)
            );
        }
    }
    format!(
        "<form class=\"filter\" method=\"post\" action=\"/actions\" id=\"bulk\">{hidden}
<label>On every run this filter matches<select name=\"action\"><option>cancel</option><option>resume</option><option>delete</option></select></label>
<label>By<input name=\"by\" required></label><label>Why<input name=\"reason\"></label>
<label>Token<input name=\"token\" type=\"password\" required></label>
<label>Dry run<input type=\"checkbox\" name=\"dry_run\" value=\"on\" checked></label>
<button>Act</button></form>"
    )
}

/// What a bulk action did, or would do.
pub(crate) fn bulk(console: &Console, report: &BulkReport, params: &Params) -> String {
    let mut body = format!(
        "<h1>{} {}</h1><p class=\"note\" id=\"note\">{}.{}</p>",
        if report.dry_run { "Dry run:" } else { "Done:" },
        report.action,
        escape(&report.summary()),
        if report.dry_run {
            " Nothing was changed."
        } else {
            ""
        }
    );
    body.push_str("<table id=\"bulk-report\"><thead><tr><th>Run</th><th>Status</th><th>Verdict</th><th>Detail</th></tr></thead><tbody>");
    for p in &report.runs {
        let _ = write!(
            body,
            "<tr data-run=\"{run}\" data-verdict=\"{}\"><td><a href=\"/runs/{run}\"><code>{run}</code></a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.verdict,
            status(p.run.status),
            p.verdict,
            escape(&p.detail),
            run = p.run.run,
        );
    }
    let back = query(
        params,
        &["action", "by", "reason", "token", "dry_run", "note"],
    );
    let _ = write!(
        body,
        "</tbody></table><p><a href=\"/?{back}\">Back to the runs</a></p>"
    );
    page("Bulk action", &body, Some(console))
}

/// The part of a run's page that changes while it runs: status, timeline, waits.
pub(crate) fn run_fragment(detail: &RunDetail, at: Option<u64>) -> String {
    let r = &detail.run;
    let mut out = format!(
        "<p id=\"summary\">{} in <b>{}</b> · workflow <b>{}</b> v{} · started {} · updated {}</p>",
        status(r.status),
        escape(&r.state),
        escape(&r.workflow),
        r.version,
        time(r.started_at_ms),
        time(r.updated_at_ms)
    );
    if !r.error.is_empty() {
        let _ = write!(
            out,
            "<p class=\"err\" id=\"run-error\">{}</p>",
            escape(&r.error)
        );
    }
    if let Some(wait) = &detail.waits_for {
        let until = wait
            .deadline_ms
            .map_or("no deadline".to_owned(), |ms| format!("until {}", time(ms)));
        let _ = write!(
            out,
            "<p id=\"waits\">Waits for <b>{}</b> ({until})</p>",
            escape(&wait.signals.join(" or "))
        );
    }
    out.push_str("<h2>Timeline</h2><table id=\"timeline\"><thead><tr><th>Row</th><th>Kind</th><th>State</th><th>At</th><th>In state</th><th>Entry</th><th>Worker</th><th>Detail</th></tr></thead><tbody>");
    for e in &detail.timeline {
        let detail_text = [e.message.as_str(), e.note.as_str(), &e.data_keys.join(", ")]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" · ");
        let _ = write!(
            out,
            "<tr data-seq=\"{seq}\" data-kind=\"{}\"{}><td><a href=\"?row={seq}\">{seq}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td{}>{}</td></tr>",
            e.kind,
            if at == Some(e.seq) {
                " class=\"at\""
            } else {
                ""
            },
            e.kind,
            escape(&e.state),
            time(e.at_ms),
            e.in_state_ms.map_or("-".to_owned(), duration),
            e.attempt,
            escape(e.worker.as_deref().unwrap_or("-")),
            if e.kind == "fail" || e.kind == "unreadable" {
                " class=\"err\""
            } else {
                ""
            },
            escape(&detail_text),
            seq = e.seq,
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn action_forms(run: RunId, detail: &RunDetail) -> String {
    let who = "<input name=\"by\" placeholder=\"your name\" required><input name=\"reason\" placeholder=\"why\"><input name=\"token\" type=\"password\" placeholder=\"token\" required>";
    let last = detail.timeline.last().map_or(0, |e| e.seq);
    let mut out = String::from("<h2>Actions</h2><div class=\"actions\">");
    for (action, label) in [
        ("cancel", "Cancel"),
        ("resume", "Resume"),
        ("delete", "Delete"),
    ] {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/runs/{run}/actions\" id=\"form-{action}\"><input type=\"hidden\" name=\"action\" value=\"{action}\">{who}<button>{label}</button></form>"
        );
    }
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/runs/{run}/actions\" id=\"form-retry\"><input type=\"hidden\" name=\"action\" value=\"retry\">from row <input name=\"from_row\" type=\"number\" min=\"0\" max=\"{last}\" value=\"{last}\" size=\"4\">{who}<button>Retry as a new run</button></form>"
    );
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/runs/{run}/actions\" id=\"form-signal\"><input type=\"hidden\" name=\"action\" value=\"signal\"><input name=\"name\" placeholder=\"signal\" required><input name=\"text\" placeholder=\"text payload\"><input name=\"key\" placeholder=\"idempotency key\">{who}<button>Send signal</button></form>"
    );
    out.push_str("</div>");
    out
}

/// A run's page.
pub(crate) async fn run(
    console: &Console,
    run: RunId,
    row: Option<u64>,
    note: Option<&str>,
) -> Result<String, InspectError> {
    let detail = console.inspector.detail(run, row).await?;
    let mut body = format!("<h1>Run <code>{run}</code></h1>");
    if let Some(note) = note {
        let _ = write!(body, "<p class=\"note\" id=\"note\">{}</p>", escape(note));
    }
    let fragment = run_fragment(&detail, detail.data_at);
    let _ = write!(
        body,
        "<div id=\"live\" data-events=\"/events/runs/{run}?{}seen={}\">{fragment}</div>",
        row.map_or(String::new(), |r| format!("row={r}&")),
        fingerprint(&fragment)
    );
    if let Some(at) = detail.data_at {
        let _ = write!(
            body,
            "<h2>Data at row {at}</h2><table id=\"data\"><thead><tr><th>Key</th><th>Read as</th><th>Written at row</th><th>Value</th></tr></thead><tbody>"
        );
        for d in &detail.data {
            let _ = write!(
                body,
                "<tr><td>{}{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                if d.engine { "<i>engine</i> " } else { "" },
                escape(&d.key),
                d.value.read_as,
                d.written_at_row,
                escape(&d.value.text)
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("<h2>Graph</h2>");
    match &detail.graph {
        Some(drawing) => {
            let _ = write!(
                body,
                "<pre class=\"mermaid\" id=\"graph\">{}</pre><script src=\"{}\"></script><script>if(window.mermaid){{mermaid.initialize({{startOnLoad:true,securityLevel:'strict'}})}}else{{document.getElementById('graph').dataset.unrendered='mermaid did not load'}}</script>",
                escape(drawing),
                escape(&console.mermaid_src)
            );
        }
        None => body.push_str("<p id=\"graph-missing\">Its workflow recorded no graph in this store (cano records it when a run of the workflow first writes).</p>"),
    }
    if !detail.claims.is_empty() {
        body.push_str("<h2>Claims</h2><table id=\"claims\"><thead><tr><th>Epoch</th><th>Worker</th><th>Claimed</th><th>Ended</th><th>Outcome</th></tr></thead><tbody>");
        for c in &detail.claims {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                c.epoch,
                escape(&c.worker),
                time(c.claimed_at_ms),
                c.ended_at_ms.map_or("-".to_owned(), time),
                escape(c.outcome.as_deref().unwrap_or("holding"))
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("<h2>Action log</h2><table id=\"actions\"><thead><tr><th>At</th><th>Action</th><th>By</th><th>Why</th><th>Detail</th></tr></thead><tbody>");
    for a in &detail.actions {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(a.at_ms),
            escape(&a.action),
            escape(&a.actor),
            escape(&a.reason),
            escape(&a.detail)
        );
    }
    body.push_str("</tbody></table>");
    if console.actions_allowed() {
        body.push_str(&action_forms(run, &detail));
    }
    Ok(page(&format!("Run {run}"), &body, Some(console)))
}

/// The cluster page.
pub(crate) async fn cluster(console: &Console) -> Result<String, InspectError> {
    let Some(view) = console.inspector.overview().await? else {
        return Ok(page(
            "Cluster",
            &format!(
                "<h1>Cluster</h1><p id=\"no-cluster\">A {} store has no cluster: schedules and workers live in PostgreSQL.</p>",
                console.inspector.backend_name()
            ),
            Some(console),
        ));
    };
    let opt = |t: Option<u64>| t.map_or("-".to_owned(), time);
    let mut body = String::from(
        "<h1>Cron schedules</h1><table id=\"schedules\"><thead><tr><th>Group</th><th>Schedule</th><th>Cron</th><th>Workflow</th><th>Leader</th><th>Last fire</th><th>Next fire</th></tr></thead><tbody>",
    );
    for s in &view.schedules {
        let leader = match (&s.leader, s.leader_live) {
            (Some(l), true) => escape(l),
            (Some(l), false) => format!("{} (lease expired)", escape(l)),
            (None, _) => "-".to_owned(),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{leader}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.group),
            escape(&s.schedule),
            escape(&s.cron),
            escape(&s.workflow),
            opt(s.last_fire_ms),
            opt(s.next_fire_ms)
        );
    }
    body.push_str("</tbody></table><h1>Workers</h1><table id=\"workers\"><thead><tr><th>Worker</th><th>Holding</th><th>Lease until</th><th>Last claim</th><th>Claims in the last hour</th></tr></thead><tbody>");
    for w in &view.workers {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&w.worker),
            w.holding,
            match w.lease_until_ms {
                Some(u64::MAX) => "never expires".to_owned(),
                other => opt(other),
            },
            time(w.last_claim_ms),
            w.claims_last_hour
        );
    }
    body.push_str("</tbody></table>");
    Ok(page("Cluster", &body, Some(console)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_is_escaped() {
        assert_eq!(
            escape("<b a=\"1\">&'"),
            "&lt;b a=&quot;1&quot;&gt;&amp;&#39;"
        );
        assert_eq!(url_encode("a b&c=ü"), "a%20b%26c%3D%C3%BC");
    }
}
