//! `cano` against a real sled store filled by real workflows, run as a user runs it.

mod common;

use std::sync::Arc;

use cano_core::checkpoint::CheckpointStore;
use cano_recovery::SledCheckpointStore;
use common::{Runs, cano, failed, fill, json, ok, sled};

/// A sled store in a temp dir with one run in each status, closed so `cano` can open it.
async fn store() -> (tempfile::TempDir, Runs) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledCheckpointStore::open(dir.path().join("runs")).unwrap();
    let runs = fill(Arc::new(store.clone()) as Arc<dyn CheckpointStore>).await;
    store.close().await.unwrap();
    (dir, runs)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_list_counts_filters_and_pages_every_status() {
    let (dir, runs) = store().await;
    let spec = sled(&dir.path().join("runs"));
    let all = json(cano(&spec, &["runs", "list", "--json"]));
    assert_eq!(all["runs"].as_array().unwrap().len(), 4, "{all}");
    for status in ["finished", "failed", "interrupted", "parked"] {
        assert_eq!(all["counts"][status], 1, "{status}: {all}");
    }
    // Newest first (runs started in the same millisecond go by id).
    let started: Vec<u64> = all["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["started_at_ms"].as_u64().unwrap())
        .collect();
    assert!(started.windows(2).all(|w| w[0] >= w[1]), "{started:?}");

    let failed_runs = json(cano(
        &spec,
        &["runs", "list", "--status", "failed", "--json"],
    ));
    let listed = failed_runs["runs"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["run"], runs.failed.to_string());
    assert!(
        listed[0]["error"]
            .as_str()
            .unwrap()
            .contains("refused address")
    );
    // The counts ignore the status filter, so the other statuses stay in view.
    assert_eq!(failed_runs["counts"]["finished"], 1);

    let two = json(cano(
        &spec,
        &["runs", "list", "--status", "failed,parked", "--json"],
    ));
    assert_eq!(two["runs"].as_array().unwrap().len(), 2, "{two}");
    let by_error = json(cano(
        &spec,
        &["runs", "list", "--error", "REFUSED", "--json"],
    ));
    assert_eq!(by_error["runs"].as_array().unwrap().len(), 1);
    let by_state = json(cano(
        &spec,
        &["runs", "list", "--state", "Approve", "--json"],
    ));
    assert_eq!(by_state["runs"][0]["run"], runs.parked.to_string());
    let other_version = json(cano(&spec, &["runs", "list", "--version", "2", "--json"]));
    assert!(other_version["runs"].as_array().unwrap().is_empty());
    let future = json(cano(
        &spec,
        &["runs", "list", "--since", "2999-01-01", "--json"],
    ));
    assert!(future["runs"].as_array().unwrap().is_empty());

    // Two pages of two, then none: every run once.
    let first = json(cano(&spec, &["runs", "list", "--limit", "2", "--json"]));
    let next = first["next"].as_str().unwrap().to_owned();
    let second = json(cano(
        &spec,
        &["runs", "list", "--limit", "2", "--after", &next, "--json"],
    ));
    assert!(second["next"].is_null(), "{second}");
    let mut seen: Vec<String> = first["runs"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["runs"].as_array().unwrap())
        .map(|r| r["run"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4);

    let table = ok(cano(&spec, &["runs", "list"]));
    assert!(
        table.contains("STATUS") && table.contains("interrupted"),
        "{table}"
    );
    assert!(table.contains("(4 runs)"), "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_shows_its_timeline_data_wait_and_graph() {
    let (dir, runs) = store().await;
    let spec = sled(&dir.path().join("runs"));
    let parked = json(cano(
        &spec,
        &["runs", "show", &runs.parked.to_string(), "--json"],
    ));
    assert_eq!(parked["run"]["status"], "parked");
    assert_eq!(parked["run"]["workflow"], "invoice");
    assert_eq!(parked["run"]["version"], 3);
    let kinds: Vec<&str> = parked["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["enter", "wait"], "{parked}");
    assert_eq!(parked["waits_for"]["signals"][0], "approval");
    let data: Vec<(String, String)> = parked["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["engine"] == false)
        .map(|d| {
            (
                d["key"].as_str().unwrap().to_owned(),
                d["value"]["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        data.contains(&("customer".into(), "ada@example.com".into())),
        "{data:?}"
    );
    assert!(
        data.contains(&("amount_cents".into(), "125000".into())),
        "{data:?}"
    );
    // Data as of the first row: what Draft had written when the run entered it.
    let at_first = json(cano(
        &spec,
        &[
            "runs",
            "show",
            &runs.parked.to_string(),
            "--row",
            "0",
            "--json",
        ],
    ));
    assert!(
        at_first["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["key"] != "customer"),
        "{at_first}"
    );
    let graph = ok(cano(&spec, &["runs", "graph", &runs.parked.to_string()]));
    assert!(graph.starts_with("flowchart TD"), "{graph}");
    assert!(
        graph.contains("class ") && graph.contains(" current"),
        "{graph}"
    );

    let text = ok(cano(&spec, &["runs", "show", &runs.failed.to_string()]));
    assert!(
        text.contains("refused address") && text.contains("timeline"),
        "{text}"
    );
    let err = failed(cano(
        &spec,
        &["runs", "show", &runs.failed.to_string(), "--row", "99"],
    ));
    assert!(err.contains("no row 99"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_clear_error_and_creates_nothing() {
    let (dir, runs) = store().await;
    let missing = dir.path().join("no-such-store");
    let err = failed(cano(&sled(&missing), &["runs", "list"]));
    assert!(
        err.contains("there is no sled store") && err.contains("nothing was created"),
        "{err}"
    );
    assert!(!missing.exists(), "the inspector created {missing:?}");

    let spec = sled(&dir.path().join("runs"));
    let err = failed(cano(&spec, &["runs", "show", "0123456789abcdef"]));
    assert!(err.contains("not in this store"), "{err}");
    let err = failed(cano(&spec, &["runs", "show", "not-a-run"]));
    assert!(err.contains("not a run id"), "{err}");
    let err = failed(cano(&spec, &["runs", "list", "--status", "done"]));
    assert!(
        err.contains("not a run status") && err.contains("rolled-back"),
        "{err}"
    );
    let err = failed(cano(&spec, &["runs", "list", "--since", "yesterday"]));
    assert!(err.contains("not a time"), "{err}");
    let err = failed(cano(&spec, &["runs", "list", "--limit", "0"]));
    assert!(err.contains("1 to 10000"), "{err}");
    let err = failed(cano("mysql://x", &["runs", "list"]));
    assert!(err.contains("sled:PATH"), "{err}");
    // An action on a run in the wrong status names both.
    let err = failed(cano(&spec, &["runs", "delete", &runs.parked.to_string()]));
    assert!(
        err.contains("it is parked") && err.contains("cancel it first"),
        "{err}"
    );
    let err = failed(cano(&spec, &["runs", "delete"]));
    assert!(err.contains("give a filter"), "{err}");
    let err = failed(cano(&spec, &["runs", "resume", &runs.failed.to_string()]));
    assert!(err.contains("resume_from"), "{err}");

    // A store another process holds: a clear message, nothing changed.
    let held = SledCheckpointStore::open(dir.path().join("runs")).unwrap();
    let err = failed(cano(&spec, &["runs", "list"]));
    assert!(err.contains("open in another process"), "{err}");
    held.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_that_does_not_decode_is_shown_as_such() {
    let (dir, runs) = store().await;
    let path = dir.path().join("runs");
    {
        // Damage the failed run's first row on disk (a format byte no build writes).
        let db = sled::open(&path).unwrap();
        let rows = db.open_tree("rows").unwrap();
        let mut key = runs.failed.as_u64().to_be_bytes().to_vec();
        key.extend_from_slice(&0u64.to_be_bytes());
        rows.insert(key, vec![0xee, 0xfd, 0xff, 0xff, 0xff, 0xff])
            .unwrap();
        db.flush().unwrap();
    }
    let spec = sled(&path);
    let shown = json(cano(
        &spec,
        &["runs", "show", &runs.failed.to_string(), "--json"],
    ));
    let first = &shown["timeline"][0];
    assert_eq!(first["kind"], "unreadable", "{shown}");
    assert!(
        first["message"].as_str().unwrap().contains("row 0"),
        "{shown}"
    );
    // The rest of the run is still shown, and the list still lists every run.
    assert_eq!(shown["run"]["status"], "failed");
    let all = json(cano(&spec, &["runs", "list", "--json"]));
    assert_eq!(all["runs"].as_array().unwrap().len(), 4);
    // Retrying across the damaged row is refused, not half done.
    let err = failed(cano(
        &spec,
        &["runs", "retry", &runs.failed.to_string(), "--from-row", "1"],
    ));
    assert!(
        err.contains("row 0") && err.contains("cannot be read"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn actions_change_the_run_and_are_logged_and_dry_runs_change_nothing() {
    let (dir, runs) = store().await;
    let spec = sled(&dir.path().join("runs"));
    let before = ok(cano(&spec, &["runs", "list", "--json"]));

    // A dry run of a bulk delete names what it would delete and deletes nothing.
    let dry = ok(cano(
        &spec,
        &[
            "runs",
            "delete",
            "--status",
            "finished",
            "--status",
            "failed",
            "--dry-run",
        ],
    ));
    assert!(
        dry.contains("would change") && dry.contains(&runs.finished.to_string()),
        "{dry}"
    );
    let dry_one = ok(cano(
        &spec,
        &["runs", "cancel", &runs.interrupted.to_string(), "--dry-run"],
    ));
    assert!(dry_one.contains("would cancel"), "{dry_one}");
    assert_eq!(
        ok(cano(&spec, &["runs", "list", "--json"])),
        before,
        "a dry run changed the store"
    );

    // Cancel the interrupted run: a Fail row says who and why.
    let out = ok(cano(
        &spec,
        &[
            "runs",
            "cancel",
            &runs.interrupted.to_string(),
            "--by",
            "ada",
            "--reason",
            "customer left",
        ],
    ));
    assert!(out.contains("records the cancel"), "{out}");
    let cancelled = json(cano(
        &spec,
        &["runs", "show", &runs.interrupted.to_string(), "--json"],
    ));
    assert_eq!(cancelled["run"]["status"], "failed");
    assert!(
        cancelled["run"]["error"]
            .as_str()
            .unwrap()
            .contains("cancelled by ada: customer left")
    );
    assert_eq!(cancelled["actions"][0]["action"], "cancel");
    assert_eq!(cancelled["actions"][0]["actor"], "ada");

    // Retry the failed run from its first row: a new interrupted run, linked both ways.
    let out = ok(cano(
        &spec,
        &[
            "runs",
            "retry",
            &runs.failed.to_string(),
            "--from-row",
            "0",
            "--by",
            "ada",
            "--json",
        ],
    ));
    let outcome: serde_json::Value = serde_json::from_str(&out).unwrap();
    let detail = outcome["detail"].as_str().unwrap();
    let new_run = detail.split_whitespace().nth(2).unwrap().to_owned();
    let new = json(cano(&spec, &["runs", "show", &new_run, "--json"]));
    assert_eq!(new["run"]["status"], "interrupted", "{new}");
    assert!(
        new["actions"][0]["detail"]
            .as_str()
            .unwrap()
            .contains(&runs.failed.to_string())
    );

    // A signal for the parked run lands in its inbox; the same key again adds none.
    let parked = runs.parked.to_string();
    let approve = [
        "runs", "signal", &parked, "approval", "--hex", "01", "--key", "once",
    ];
    let out = ok(cano(&spec, &approve));
    assert!(out.contains("Waiting"), "{out}");
    let again = ok(cano(&spec, &approve));
    assert!(again.contains("Duplicate"), "{again}");

    // The bulk delete for real: the finished and failed runs go, the log of who
    // deleted them stays.
    let done = ok(cano(
        &spec,
        &[
            "runs", "delete", "--status", "finished", "--status", "failed", "--by", "ada",
            "--reason", "cleanup",
        ],
    ));
    assert!(done.contains("3 changed"), "{done}");
    let left = json(cano(&spec, &["runs", "list", "--json"]));
    let statuses: Vec<&str> = left["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 2, "{left}");
    assert!(
        statuses.contains(&"parked") && statuses.contains(&"interrupted"),
        "{statuses:?}"
    );
}
