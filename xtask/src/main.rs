//! `cargo xtask <command>`: project chores.
//!
//! - `bench [criterion args]`: runs the criterion benches of `cano-benches` and prints
//!   one summary table of the figures the project holds itself to. `--quick` (passed
//!   to criterion) gives rougher figures in less time.
//! - `test [cargo test args]`: the whole test suite, `cargo test --workspace
//!   --all-features`, with a throwaway PostgreSQL server on loopback for the
//!   `cano-postgres` tests (started by `.ci/postgres`, stopped afterwards) unless
//!   `CANO_PG_URL` already names one, and the system tools the tests use (strace)
//!   installed by `.ci/tools` when missing.
//! - `cycles`: the module cycles of every crate (none are allowed: a test of this
//!   crate fails on one).

mod cycles;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("bench") => bench(args.collect()),
        Some("test") => test(args.collect()),
        Some("cycles") => print_cycles(),
        _ => {
            eprintln!(
                "usage: cargo xtask bench [criterion args, e.g. --quick]\n       cargo xtask test [cargo test args]\n       cargo xtask cycles"
            );
            ExitCode::from(2)
        }
    }
}

/// Prints each crate's module cycles; fails when there is one.
fn print_cycles() -> ExitCode {
    let mut any = false;
    let Ok(entries) = std::fs::read_dir(workspace_root().join("crates")) else {
        eprintln!("xtask cycles: no crates directory");
        return ExitCode::FAILURE;
    };
    let mut crates: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    crates.sort();
    for dir in crates {
        let groups = cycles::cycles(&dir.join("src"));
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        println!("{name}: {} cycle(s)", groups.len());
        for group in &groups {
            println!("  {}", group.join(" <-> "));
        }
        any |= !groups.is_empty();
    }
    if any {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// A PostgreSQL server for the tests and benches: the one `CANO_PG_URL` names, or a
/// throwaway one `.ci/postgres` starts (and [`Drop`] stops).
struct Postgres {
    url: String,
    started: bool,
}

impl Postgres {
    fn get() -> Result<Self, String> {
        if let Ok(url) = std::env::var("CANO_PG_URL") {
            return Ok(Self {
                url,
                started: false,
            });
        }
        let script = workspace_root().join(".ci/postgres");
        let output = Command::new(&script)
            .arg("start")
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("could not run {}: {e}", script.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{} start failed ({})",
                script.display(),
                output.status
            ));
        }
        let url = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        eprintln!("xtask: a throwaway PostgreSQL server at {url}");
        Ok(Self { url, started: true })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.started {
            let _ = Command::new(workspace_root().join(".ci/postgres"))
                .arg("stop")
                .status();
        }
    }
}

fn test(extra: Vec<String>) -> ExitCode {
    let tools = workspace_root().join(".ci/tools");
    match Command::new(&tools).status() {
        Ok(status) if status.success() => {}
        outcome => {
            eprintln!("xtask test: {} failed ({outcome:?})", tools.display());
            return ExitCode::FAILURE;
        }
    }
    let postgres = match Postgres::get() {
        Ok(postgres) => postgres,
        Err(e) => {
            eprintln!("xtask test: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--workspace", "--all-features"])
        .args(extra)
        .current_dir(workspace_root())
        .env("CANO_PG_URL", &postgres.url)
        // Here a missing server fails the PostgreSQL tests instead of skipping them.
        .env("CANO_PG_REQUIRED", "1")
        // And a missing browser fails the console's browser test (.ci/tools installed
        // Chromium, its driver and Mermaid's script).
        .env("CANO_BROWSER_REQUIRED", "1")
        .env(
            "CANO_MERMAID_JS",
            workspace_root().join("target/browser-deps/node_modules/mermaid/dist/mermaid.min.js"),
        )
        .status();
    drop(postgres);
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask test: could not run cargo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(extra: Vec<String>) -> ExitCode {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let criterion_home = target.join("criterion");
    let out = target.join("cano-bench");
    // The observer benches need cano's tracing and metrics compiled in, which would
    // change every other bench's engine: they run in a build of their own.
    // The scheduler's simulation needs tokio's paused clock (test-util), which slows
    // tokio's clock for everything else: a build of its own too.
    // The PostgreSQL bench needs a server: CANO_PG_URL's, or a throwaway one.
    let postgres = match Postgres::get() {
        Ok(postgres) => postgres,
        Err(e) => {
            eprintln!("xtask bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runs: [&[&str]; 5] = [
        &["bench", "-p", "cano-benches", "--benches", "--"],
        // The published cano 0.13 beside ours (downloaded from crates.io).
        &[
            "bench",
            "-p",
            "cano-benches",
            "--features",
            "vs-013",
            "--bench",
            "vs_013",
            "--",
        ],
        &[
            "bench",
            "-p",
            "cano-benches",
            "--features",
            "simulate",
            "--bench",
            "scheduler",
            "--",
        ],
        &[
            "bench",
            "-p",
            "cano-benches",
            "--features",
            "observe",
            "--bench",
            "observers",
            "--",
        ],
        &[
            "bench",
            "-p",
            "cano-benches",
            "--features",
            "pg",
            "--bench",
            "postgres",
            "--bench",
            "pg_queues",
            "--",
        ],
    ];
    for args in runs {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .env("CRITERION_HOME", &criterion_home)
            .env("CANO_BENCH_OUT", &out)
            .env("CANO_PG_URL", &postgres.url)
            .args(args)
            .args(&extra)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                eprintln!("cargo bench failed: {s}");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("could not run cargo: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    drop(postgres);
    print!("{}", summary(&criterion_home, &out));
    ExitCode::SUCCESS
}

/// A JSON file, parsed; `Null` when it is missing or not JSON (its rows then show
/// "n/a").
fn read_json(path: &Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null)
}

/// The mean of one criterion benchmark, in nanoseconds.
fn mean_ns(criterion_home: &Path, id: &str) -> Option<f64> {
    mean_of(&read_json(
        &criterion_home.join(id).join("new").join("estimates.json"),
    ))
}

/// The mean's point estimate in criterion's `estimates.json`.
fn mean_of(estimates: &Value) -> Option<f64> {
    estimates.get("mean")?.get("point_estimate")?.as_f64()
}

/// The ratio a target is checked against: `key` of `paired`, a bench's paired report
/// (both sides timed in alternating rounds), when it has one, else `separate`, the
/// ratio of criterion's means; and a note with the latter when the former was used.
fn checked_ratio(paired: &Value, key: &str, separate: Option<f64>) -> (Option<f64>, String) {
    match (json_number(paired, key), separate) {
        (Some(ratio), Some(separate)) => (Some(ratio), format!("; separate means {separate:.2}x")),
        (Some(ratio), None) => (Some(ratio), String::new()),
        (None, separate) => (separate, String::new()),
    }
}

/// The JSON report a bench wrote under `out` as `name`; `Null` when it wrote none (the
/// rows then fall back to criterion's figures or show "n/a").
fn report(out: &Path, name: &str) -> Value {
    read_json(&out.join(name))
}

/// The number under `key` in one of the flat JSON reports the benches write.
fn json_number(report: &Value, key: &str) -> Option<f64> {
    report.get(key)?.as_f64()
}

/// Transitions in one run of the benches' linear workflow.
const TRANSITIONS: f64 = 10.0;

fn summary(criterion_home: &Path, out: &Path) -> String {
    const RUNS: f64 = 10_000.0;
    let engine = mean_ns(criterion_home, "linear/engine");
    let baseline = mean_ns(criterion_home, "linear/baseline");
    let dyn_dispatch = mean_ns(criterion_home, "linear/dyn_dispatch");
    let build = mean_ns(criterion_home, "build_and_run");
    let concurrent = mean_ns(criterion_home, "concurrent/10k_runs");
    let memory = report(out, "memory.json");
    let mem = |key: &str| json_number(&memory, key);

    let fmt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "n/a".into());
    let separate = engine.zip(baseline).map(|(e, b)| e / b);
    let paired = report(out, "linear_paired.json");
    let (ratio, note) = checked_ratio(&paired, "ratio", separate);
    let ratio_target = format!("<= 1.50x {}{note}", verdict(ratio.map(|r| r <= 1.5)));
    let dyn_ratio = engine.zip(dyn_dispatch).map(|(e, d)| e / d);
    let mut rows = vec![
        (
            "linear: engine, per transition",
            fmt(engine, &|e| format!("{:.1} ns", e / TRANSITIONS)),
            format!(
                "<= 60 ns {}",
                verdict(engine.map(|e| e / TRANSITIONS <= 60.0))
            ),
        ),
        (
            "linear: match baseline, per transition",
            fmt(baseline, &|b| format!("{:.1} ns", b / TRANSITIONS)),
            "".to_string(),
        ),
        (
            "linear: engine / match baseline",
            fmt(ratio, &|r| format!("{r:.2}x")),
            ratio_target,
        ),
        (
            "linear: hash + dyn loop, per transition",
            fmt(dyn_dispatch, &|d| format!("{:.1} ns", d / TRANSITIONS)),
            "".to_string(),
        ),
        (
            "linear: engine / hash + dyn loop",
            fmt(dyn_ratio, &|r| format!("{r:.2}x")),
            format!("<= 1.50x {}", verdict(dyn_ratio.map(|r| r <= 1.5))),
        ),
        (
            "build_and_run (10 states)",
            fmt(build, &|b| format!("{:.2} us", b / 1e3)),
            "".to_string(),
        ),
        (
            "concurrent: 10,000 runs, 2 workers",
            fmt(concurrent, &|c| format!("{:.0} runs/s", RUNS / (c / 1e9))),
            "".to_string(),
        ),
        (
            "memory: 10,000 runs in flight",
            fmt(mem("rss_delta"), &|d| {
                format!("{:.1} MB ({:.0} B/run)", d / 1e6, d / RUNS)
            }),
            format!("~10 MB {}", verdict(mem("rss_delta").map(|d| d <= 12e6))),
        ),
        (
            "memory: peak RSS of the bench process",
            fmt(mem("peak_rss"), &|p| format!("{:.1} MB", p / 1e6)),
            "".to_string(),
        ),
        (
            "size of one orchestrate() future",
            fmt(mem("orchestrate_future_bytes"), &|b| format!("{b:.0} B")),
            format!(
                "< 1 KB {}",
                verdict(mem("orchestrate_future_bytes").map(|b| b < 1024.0))
            ),
        ),
    ];
    rows.extend(vs_013_rows(out));
    rows.extend(split_rows(criterion_home, out));
    rows.extend(admission_rows(criterion_home));
    rows.extend(recovery_rows(criterion_home, out));
    rows.extend(wait_rows(out));
    rows.extend(many_rows(out));
    rows.extend(saga_rows(criterion_home));
    rows.extend(batch_rows(criterion_home, out));
    rows.extend(scheduler_rows(criterion_home, out));
    rows.extend(observer_rows(criterion_home, out));
    rows.extend(postgres_rows(out));
    rows.extend(pg_queue_rows(out));
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let mut table = format!(
        "\n{:<width$} | {:>24} | target\n{}\n",
        "benchmark",
        "figure",
        "-".repeat(width + 40)
    );
    for (name, figure, target) in rows {
        table.push_str(&format!("{name:<width$} | {figure:>24} | {target}\n"));
    }
    table
}

/// The rows beside the published cano 0.13: our time and the paired ratio for
/// building a 10-state workflow and running it once, building only, running only.
fn vs_013_rows(out: &Path) -> Vec<(&'static str, String, String)> {
    let stats = report(out, "vs_013.json");
    let row = |name: &'static str, key: &str, target: Option<f64>| {
        let side = |field: &str| stats.get(key).and_then(|v| json_number(v, field));
        let figure = match (side("ours_ns"), side("cano_0_13_ns")) {
            (Some(ours), Some(old)) => format!("{ours:.0} ns (0.13: {old:.0} ns)"),
            _ => "n/a".into(),
        };
        let ratio = side("ratio");
        let shown = ratio.map_or_else(|| "n/a".into(), |r| format!("{r:.2}x"));
        let target = match target {
            Some(limit) => format!(
                "<= {limit:.2}x {} ({shown})",
                verdict(ratio.map(|r| r <= limit))
            ),
            None => shown,
        };
        (name, figure, target)
    };
    vec![
        row(
            "vs cano 0.13: build 10 states + run once",
            "build_and_run",
            Some(0.5),
        ),
        row("vs cano 0.13: build only", "build", None),
        row("vs cano 0.13: run only", "run", None),
    ]
}

/// The batch rows: 10,000 runs 100 at a time under each wait strategy, per run,
/// against a JoinSet and a Semaphore by hand (the paired ratio has a target).
fn many_rows(out: &Path) -> Vec<(&'static str, String, String)> {
    let stats = report(out, "many_paired.json");
    let row = |name: &'static str, key: &str| {
        let ns = json_number(&stats, &format!("{key}_ns"));
        let by_hand = json_number(&stats, &format!("{key}_by_hand_ns"));
        let ratio = json_number(&stats, &format!("{key}_ratio"));
        let figure = match (ns, by_hand) {
            (Some(ns), Some(by_hand)) => format!("{ns:.0} ns (by hand {by_hand:.0} ns)"),
            _ => "n/a".into(),
        };
        let target = format!(
            "<= 1.20x {} ({})",
            verdict(ratio.map(|r| r <= 1.2)),
            ratio.map_or_else(|| "n/a".into(), |r| format!("{r:.2}x"))
        );
        (name, figure, target)
    };
    vec![
        row("many: 10,000 runs, 100 at a time, wait for all", "forever"),
        row("many: wait for a quota", "quota"),
        row("many: wait for a duration", "duration"),
        row("many: quota or duration", "quota_or_duration"),
    ]
}

/// The durable-wait rows: heap per parked run (the store's rows or cache) beside a run
/// held open by a live task, rows per parked run, and signal-to-next-state latency.
fn wait_rows(out: &Path) -> Vec<(&'static str, String, String)> {
    let stats = report(out, "waits.json");
    let get = |key: &str| json_number(&stats, key);
    let per_run = |key: &str| {
        get(key)
            .zip(get("runs"))
            .map(|(bytes, runs)| format!("{:.0} B", bytes / runs))
            .unwrap_or_else(|| "n/a".into())
    };
    let us = |key: &str| {
        get(key)
            .map(|v| format!("{v:.0} us"))
            .unwrap_or_else(|| "n/a".into())
    };
    vec![
        (
            "waits: heap per parked run, sled",
            per_run("sled_bytes"),
            format!("held open: {}", per_run("held_task_bytes")),
        ),
        (
            "waits: heap per parked run, in-memory store",
            per_run("memory_store_bytes"),
            "its rows".into(),
        ),
        (
            "waits: rows per parked run",
            get("rows_per_parked_run")
                .map(|r| format!("{r:.1}"))
                .unwrap_or_else(|| "n/a".into()),
            String::new(),
        ),
        (
            "waits: signal to next state, sled, p50 / p99",
            format!("{} / {}", us("signal_p50_us"), us("signal_p99_us")),
            String::new(),
        ),
    ]
}

/// The split/join rows: per-branch cost beside a plain JoinSet at each size, and heap
/// bytes per in-flight branch.
fn split_rows(criterion_home: &Path, out: &Path) -> Vec<(&'static str, String, String)> {
    const SIZES: [(usize, &str); 4] = [
        (10, "split All, 10 branches: engine / JoinSet"),
        (100, "split All, 100 branches: engine / JoinSet"),
        (1_000, "split All, 1,000 branches: engine / JoinSet"),
        (10_000, "split All, 10,000 branches: engine / JoinSet"),
    ];
    let paired = report(out, "split_paired.json");
    let mut rows = Vec::new();
    for (n, name) in SIZES {
        let engine = mean_ns(criterion_home, &format!("split_all/engine/{n}"));
        let joinset = mean_ns(criterion_home, &format!("split_all/joinset/{n}"));
        let separate = engine.zip(joinset).map(|(e, j)| e / j);
        let (ratio, note) = checked_ratio(&paired, &format!("ratio_{n}"), separate);
        // Per branch: the paired medians when the bench wrote them, else criterion's means.
        let pair = |key: &str| json_number(&paired, &format!("{key}_{n}"));
        let per_branch = |v: Option<f64>| v.map(|v| v / n as f64);
        let sides = pair("engine")
            .zip(pair("joinset"))
            .or(per_branch(engine).zip(per_branch(joinset)));
        let figure = match sides.zip(ratio) {
            Some(((e, j), r)) => format!("{e:.0} / {j:.0} ns = {r:.2}x"),
            None => "n/a".into(),
        };
        let target = format!("<= 1.30x {}{note}", verdict(ratio.map(|r| r <= 1.3)));
        rows.push((name, figure, target));
    }
    let memory = report(out, "split_memory.json");
    let mem = |key: &str| json_number(&memory, key);
    let per_branch = |bytes: Option<f64>| bytes.zip(mem("branches")).map(|(b, n)| b / n);
    let figure = match per_branch(mem("engine_bytes")).zip(per_branch(mem("joinset_bytes"))) {
        Some((e, j)) => format!("{e:.0} B (JoinSet {j:.0} B)"),
        None => "n/a".into(),
    };
    rows.push(("split: heap per in-flight branch", figure, String::new()));
    rows
}

/// The circuit breaker and rate limiter rows.
fn admission_rows(criterion_home: &Path) -> Vec<(&'static str, String, String)> {
    let ns = |id: &str| {
        mean_ns(criterion_home, id)
            .map(|v| format!("{v:.1} ns"))
            .unwrap_or_else(|| "n/a".into())
    };
    let closed = mean_ns(criterion_home, "circuit/closed_acquire_record");
    let guarded = mean_ns(criterion_home, "linear/engine_with_breaker");
    vec![
        (
            "circuit: closed acquire + record, 1 thread",
            ns("circuit/closed_acquire_record"),
            format!("< 50 ns {}", verdict(closed.map(|c| c < 50.0))),
        ),
        (
            "circuit: closed, 16 tasks on 2 workers, per call",
            ns("circuit/closed_concurrent/16"),
            String::new(),
        ),
        (
            "circuit: closed, 64 tasks on 2 workers, per call",
            ns("circuit/closed_concurrent/64"),
            String::new(),
        ),
        (
            "circuit: closed, 256 tasks on 2 workers, per call",
            ns("circuit/closed_concurrent/256"),
            String::new(),
        ),
        (
            "circuit: rejection by an open breaker",
            ns("circuit/open_reject"),
            String::new(),
        ),
        (
            "limiter: token bucket try_acquire, granted",
            ns("limiter/try_acquire_granted"),
            String::new(),
        ),
        (
            "limiter: token bucket try_acquire, refused",
            ns("limiter/try_acquire_refused"),
            String::new(),
        ),
        (
            "limiter: windowed try_acquire, granted",
            ns("limiter/windowed_try_acquire"),
            String::new(),
        ),
        (
            "linear: engine with a breaker, per transition",
            guarded
                .map(|g| format!("{:.1} ns", g / TRANSITIONS))
                .unwrap_or_else(|| "n/a".into()),
            String::new(),
        ),
    ]
}

/// The checkpointing rows: per-transition cost without a store, with the in-memory
/// store and on sled flushing every row; rows per second of 100 concurrent runs on sled
/// with group commit, and how many rows shared each flush there.
fn recovery_rows(criterion_home: &Path, out: &Path) -> Vec<(&'static str, String, String)> {
    let per_transition = |id: &str| {
        mean_ns(criterion_home, id)
            .map(|v| {
                let ns = v / TRANSITIONS;
                if ns >= 10_000.0 {
                    format!("{:.1} us", ns / 1e3)
                } else {
                    format!("{ns:.1} ns")
                }
            })
            .unwrap_or_else(|| "n/a".into())
    };
    // 100 runs of 10 states each, per iteration.
    let group = mean_ns(criterion_home, "recovery/sled_group_commit_100_runs");
    let stats = report(out, "recovery.json");
    let per_flush = json_number(&stats, "rows")
        .zip(json_number(&stats, "flushes"))
        .map(|(rows, flushes)| rows / flushes.max(1.0));
    vec![
        (
            "recovery: no store, per transition",
            per_transition("recovery/no_store"),
            String::new(),
        ),
        (
            "recovery: in-memory store, per transition",
            per_transition("recovery/memory_store"),
            String::new(),
        ),
        (
            "recovery: sled, flush every row, per transition",
            per_transition("recovery/sled_every_row"),
            String::new(),
        ),
        (
            "recovery: sled group commit, 100 runs, rows/s",
            group
                .map(|g| format!("{:.0}", 1_000.0 / (g / 1e9)))
                .unwrap_or_else(|| "n/a".into()),
            String::new(),
        ),
        (
            "recovery: sled group commit, rows per flush",
            per_flush
                .map(|r| format!("{r:.1}"))
                .unwrap_or_else(|| "n/a".into()),
            String::new(),
        ),
    ]
}

/// The saga rows: a compensatable step against a plain one (without and with the
/// in-memory store), and one compensation of a rollback.
fn saga_rows(criterion_home: &Path) -> Vec<(&'static str, String, String)> {
    let per_step = |id: &str| mean_ns(criterion_home, id).map(|v| v / TRANSITIONS);
    let ns = |v: Option<f64>| {
        v.map(|v| format!("{v:.1} ns"))
            .unwrap_or_else(|| "n/a".into())
    };
    let plain = per_step("saga/plain_steps");
    let steps = per_step("saga/compensatable_steps");
    let stored = per_step("saga/compensatable_steps_memory_store");
    // A rollback run: ten steps forward, the failing state, then ten compensations.
    let rollback = per_step("saga/rollback_10_steps");
    let per_compensation = rollback.zip(steps).map(|(r, s)| r - s);
    vec![
        ("saga: plain step", ns(plain), String::new()),
        (
            "saga: compensatable step",
            ns(steps),
            steps
                .zip(plain)
                .map(|(s, p)| format!("{:.2}x plain", s / p))
                .unwrap_or_default(),
        ),
        (
            "saga: compensatable step, in-memory store",
            ns(stored),
            String::new(),
        ),
        (
            "saga: one compensation of a rollback",
            ns(per_compensation),
            String::new(),
        ),
    ]
}

/// The batch rows: a `BatchTask` over 1,000 items against `buffer_unordered` doing the
/// same work, per item.
fn batch_rows(criterion_home: &Path, out: &Path) -> Vec<(&'static str, String, String)> {
    const ITEMS: f64 = 1_000.0;
    let per_item = |id: &str| mean_ns(criterion_home, id).map(|v| v / ITEMS);
    let ns = |v: Option<f64>| {
        v.map(|v| format!("{v:.1} ns"))
            .unwrap_or_else(|| "n/a".into())
    };
    let plain = per_item("batch/buffer_unordered_1000");
    let batch = per_item("batch/batch_task_1000");
    let spawned = per_item("batch/batch_task_1000_worker_threads");
    let separate = batch.zip(plain).map(|(b, p)| b / p);
    let paired = report(out, "batch_paired.json");
    let (ratio, note) = checked_ratio(&paired, "ratio", separate);
    vec![
        (
            "batch: buffer_unordered, per item",
            ns(plain),
            String::new(),
        ),
        (
            "batch: BatchTask, per item",
            ns(batch),
            format!(
                "{} <= 1.3x {}{note}",
                ratio.map(|r| format!("{r:.2}x")).unwrap_or_default(),
                verdict(ratio.map(|r| r <= 1.3))
            ),
        ),
        (
            "batch: BatchTask on worker threads, per item",
            ns(spawned),
            String::new(),
        ),
    ]
}

/// The scheduler rows: per fire of 10,000 interval flows over 60 simulated seconds
/// (and the bare run inside it), and wake-up lateness of 100 flows on the real clock.
fn scheduler_rows(criterion_home: &Path, out: &Path) -> Vec<(&'static str, String, String)> {
    const FIRES: f64 = 10_000.0 * 60.0;
    let per_fire = mean_ns(criterion_home, "scheduler/10k_flows_60s").map(|v| v / FIRES);
    let bare = mean_ns(criterion_home, "scheduler/bare_run");
    let stats = report(out, "scheduler.json");
    let us = |key: &str| {
        json_number(&stats, key)
            .map(|v| format!("{v:.0} us"))
            .unwrap_or_else(|| "n/a".into())
    };
    let ns = |v: Option<f64>| {
        v.map(|v| format!("{v:.0} ns"))
            .unwrap_or_else(|| "n/a".into())
    };
    vec![
        (
            "scheduler: per fire, 10,000 flows x 60 s",
            ns(per_fire),
            String::new(),
        ),
        (
            "scheduler: scheduling overhead per fire",
            ns(per_fire.zip(bare).map(|(f, b)| f - b)),
            format!("(bare run {})", ns(bare)),
        ),
        (
            "scheduler: wake-up lateness p50, 100 flows",
            us("p50_us"),
            String::new(),
        ),
        (
            "scheduler: wake-up lateness p99, 100 flows",
            us("p99_us"),
            String::new(),
        ),
    ]
}

/// The PostgreSQL rows: transitions per second as workers are added, and the latency
/// from enqueue to a run's first state.
fn postgres_rows(out: &Path) -> Vec<(&'static str, String, String)> {
    let stats = report(out, "postgres.json");
    let rate = |key: &str| {
        json_number(&stats, key)
            .map(|v| format!("{v:.0} transitions/s"))
            .unwrap_or_else(|| "n/a".into())
    };
    let ms = |key: &str| {
        json_number(&stats, key)
            .map(|v| format!("{v:.2} ms"))
            .unwrap_or_else(|| "n/a".into())
    };
    vec![
        (
            "postgres: 1 worker, 2,000 runs x 10 states",
            rate("w1"),
            String::new(),
        ),
        ("postgres: 4 workers", rate("w4"), String::new()),
        ("postgres: 16 workers", rate("w16"), String::new()),
        (
            "postgres: 4 workers, backlog of 20,000 runs",
            rate("w4_backlog"),
            String::new(),
        ),
        (
            "postgres: enqueue to first state p50",
            ms("p50_ms"),
            String::new(),
        ),
        (
            "postgres: enqueue to first state p99",
            ms("p99_ms"),
            String::new(),
        ),
        (
            "postgres: signal to next state, parked run, p50 / p99",
            format!("{} / {}", ms("signal_p50_ms"), ms("signal_p99_ms")),
            String::new(),
        ),
    ]
}

/// The named-queue rows: runs started per second as workers are added and over 100
/// partitions, with the statements and the CPU (server, workers) each run cost.
fn pg_queue_rows(out: &Path) -> Vec<(&'static str, String, String)> {
    let stats = report(out, "pg_queues.json");
    let row = |name: &'static str, key: &str| {
        let figure = json_number(&stats, key)
            .map(|v| format!("{v:.0} runs started/s"))
            .unwrap_or_else(|| "n/a".into());
        let statements = json_number(&stats, &format!("{key}_statements"))
            .map(|v| format!("{v:.1} statements/run"))
            .unwrap_or_else(|| "statements n/a".into());
        let cpu = |side: &str| {
            json_number(&stats, &format!("{key}_{side}_cpu_ms"))
                .map(|v| format!("{v:.2} ms"))
                .unwrap_or_else(|| "n/a".into())
        };
        (
            name,
            figure,
            format!(
                "{statements}; CPU/run server {}, workers {}",
                cpu("server"),
                cpu("worker")
            ),
        )
    };
    vec![
        row(
            "pg named queue: 1 worker (pool of 2), 4,000 one-state runs",
            "w1",
        ),
        row("pg named queue: 4 workers", "w4"),
        row("pg named queue: 16 workers", "w16"),
        row("pg named queue: 16 workers, pools of 4", "w16p4"),
        row("pg named queue: 4 workers, 100 partitions of 2", "p100"),
        row("pg named queue, runs waiting 10 ms: 1 worker", "t1"),
        row("pg named queue, runs waiting 10 ms: 4 workers", "t4"),
        row("pg named queue, runs waiting 10 ms: 16 workers", "t16"),
        row("pg named queue, runs enqueued live by 4: 1 worker", "l1"),
        row("pg named queue, runs enqueued live by 4: 4 workers", "l4"),
        row("pg named queue, runs enqueued live by 4: 16 workers", "l16"),
    ]
}

/// The observer rows: each observer against the bare run, in the build with tracing
/// and metrics compiled in.
/// The ratios are the paired ones (each observed run against the bare run in
/// alternating rounds) when the bench wrote them, with the separate means beside.
fn observer_rows(criterion_home: &Path, out: &Path) -> Vec<(&'static str, String, String)> {
    let per_step = |id: &str| mean_ns(criterion_home, id).map(|v| v / TRANSITIONS);
    let bare = per_step("observers/bare");
    let paired = report(out, "observers_paired.json");
    let against = |id: &str| {
        let v = per_step(id);
        let separate = v.zip(bare).map(|(v, b)| v / b);
        let name = id.trim_start_matches("observers/");
        let (ratio, note) = checked_ratio(&paired, name, separate);
        (
            v.map(|v| format!("{v:.1} ns"))
                .unwrap_or_else(|| "n/a".into()),
            format!(
                "{} <= 1.2x bare {}{note}",
                ratio.map(|r| format!("{r:.2}x")).unwrap_or_default(),
                verdict(ratio.map(|r| r <= 1.2))
            ),
        )
    };
    let row = |name, id| {
        let (figure, target) = against(id);
        (name, figure, target)
    };
    vec![
        (
            "observers: bare run, tracing + metrics compiled in",
            bare.map(|v| format!("{v:.1} ns"))
                .unwrap_or_else(|| "n/a".into()),
            String::new(),
        ),
        row("observers: no-op observer", "observers/noop"),
        row(
            "observers: TracingObserver, no subscriber",
            "observers/tracing_no_subscriber",
        ),
        row(
            "observers: MetricsObserver, no recorder",
            "observers/metrics_no_recorder",
        ),
        row(
            "observers: MetricsObserver per task, no recorder",
            "observers/metrics_per_task_no_recorder",
        ),
    ]
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "(met)",
        Some(false) => "(MISSED)",
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn reads_the_mean_point_estimate() {
        let estimates = json(
            r#"{"median":{"point_estimate":9.0},"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":3.0},"point_estimate":2.5e2,"standard_error":0.1}}"#,
        );
        // The mean's own estimate, wherever the median's stands.
        assert_eq!(mean_of(&estimates), Some(250.0));
        assert_eq!(mean_of(&json(r#"{"median":{"point_estimate":9.0}}"#)), None);
        assert_eq!(mean_of(&Value::Null), None);
        let missing = read_json(Path::new("/nonexistent/estimates.json"));
        assert_eq!(missing, Value::Null);
    }

    #[test]
    fn a_paired_ratio_wins_over_the_separate_one_and_keys_match_whole() {
        let paired = json(r#"{"engine_100":540.1,"ratio_100":1.283,"ratio_10":1.053}"#);
        let (ratio, note) = checked_ratio(&paired, "ratio_10", Some(0.9));
        assert_eq!(ratio, Some(1.053));
        assert_eq!(note, "; separate means 0.90x");
        assert_eq!(checked_ratio(&paired, "ratio_100", None).0, Some(1.283));
        assert_eq!(
            checked_ratio(&Value::Null, "ratio", Some(1.2)),
            (Some(1.2), String::new())
        );
    }

    #[test]
    fn the_rows_beside_cano_0_13_check_build_and_run_against_half() {
        let dir = std::env::temp_dir().join(format!("xtask-vs013-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("vs_013.json"),
            r#"{"build_and_run":{"ours_ns":2463.7,"cano_0_13_ns":5381.7,"ratio":0.462},"build":{"ours_ns":1319.7,"cano_0_13_ns":2320.4,"ratio":0.569},"run":{"ours_ns":701.6,"cano_0_13_ns":2651.0,"ratio":0.266}}"#,
        )
        .unwrap();
        let rows = vs_013_rows(&dir);
        assert_eq!(rows[0].1, "2464 ns (0.13: 5382 ns)");
        assert_eq!(rows[0].2, "<= 0.50x (met) (0.46x)");
        assert_eq!(rows[2].2, "0.27x");
        // Over the target: the verdict changes.
        std::fs::write(
            dir.join("vs_013.json"),
            r#"{"build_and_run":{"ours_ns":3000,"cano_0_13_ns":5000,"ratio":0.6}}"#,
        )
        .unwrap();
        let over = vs_013_rows(&dir);
        assert_eq!(over[0].2, "<= 0.50x (MISSED) (0.60x)");
        assert_eq!(over[1].1, "n/a");
        std::fs::remove_dir_all(&dir).unwrap();
        // No report at all: every row says so.
        assert!(vs_013_rows(&dir).iter().all(|r| r.1 == "n/a"));
    }
}
