//! The web console in a real headless Chromium, driven over WebDriver (Debian's
//! chromium and chromium-driver): the list loads and filters, a run's timeline and
//! Mermaid graph render, an action from a form changes the run, and the list updates
//! live when a run changes. Screenshots go to `target/browser-artifacts/`.
//!
//! Skipped when chromedriver is missing, except when `CANO_BROWSER_REQUIRED` is set
//! (as `.ci/run` does, after installing it and Mermaid's script).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use cano_core::checkpoint::CheckpointStore;
use cano_recovery::SledCheckpointStore;
use common::http;
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const TOKEN: &str = "s3cret-token";

/// A child process killed when dropped.
struct Reaped(Child);
impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (u32::from(value(c)) << (18 - 6 * i)));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// A WebDriver session.
struct Browser {
    driver: String,
    session: String,
    shots: PathBuf,
}

impl Browser {
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let body = if method == "GET" {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let (status, answer) = http(&self.driver, method, &path, "application/json", &body);
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    fn find(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            json!({ "using": "css selector", "value": css }),
        );
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    }

    fn count(&self, css: &str) -> usize {
        let found = self.call(
            "POST",
            "/elements",
            json!({ "using": "css selector", "value": css }),
        );
        found.as_array().unwrap().len()
    }

    fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.call("GET", &format!("/element/{element}/text"), Value::Null)
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn attribute(&self, css: &str, name: &str) -> String {
        let element = self.find(css);
        self.call(
            "GET",
            &format!("/element/{element}/attribute/{name}"),
            Value::Null,
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        );
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.call("POST", &format!("/element/{element}/click"), json!({}));
    }

    fn screenshot(&self, name: &str) {
        let png = self.call("GET", "/screenshot", Value::Null);
        std::fs::write(self.shots.join(name), base64_decode(png.as_str().unwrap())).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            &self.driver,
            "DELETE",
            &format!("/session/{}", self.session),
            "application/json",
            b"",
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads chromedriver's output until it says it started: it says so once it listens.
fn until_started(driver: &mut Child) {
    let output = BufReader::new(
        driver
            .stdout
            .take()
            .expect("chromedriver's output is piped"),
    );
    for line in output.lines() {
        if line
            .expect("chromedriver's output")
            .contains("started successfully")
        {
            return;
        }
    }
    panic!("chromedriver exited without starting");
}

#[test]
fn the_console_lists_filters_draws_acts_and_updates_live() {
    let required = std::env::var_os("CANO_BROWSER_REQUIRED").is_some();
    if !Path::new(CHROMEDRIVER).exists() || !Path::new(CHROMIUM).exists() {
        assert!(
            !required,
            "chromium and chromedriver are required but missing"
        );
        eprintln!(
            "skipped: install Debian's chromium and chromium-driver (`.ci/run` does) to run the browser test"
        );
        return;
    }
    let mermaid = std::env::var("CANO_MERMAID_JS")
        .ok()
        .filter(|p| Path::new(p).exists());
    assert!(
        mermaid.is_some() || !required,
        "CANO_MERMAID_JS must name Mermaid's script"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let runs = runtime.block_on(async {
        let store = SledCheckpointStore::open(&path).unwrap();
        let runs = common::fill(Arc::new(store.clone()) as Arc<dyn CheckpointStore>).await;
        store.close().await.unwrap();
        runs
    });

    // The console, as a user starts it.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_cano"));
    serve
        .args([
            "--store",
            &format!("sled:{}", path.display()),
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--allow-actions",
            "--token",
            TOKEN,
        ])
        .stdout(Stdio::piped())
        .env_remove("CANO_STORE");
    if let Some(script) = &mermaid {
        serve.args(["--mermaid-js", script]);
    }
    let mut console = Reaped(serve.spawn().unwrap());
    let mut first_line = String::new();
    BufReader::new(console.0.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let base = first_line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{first_line}");
    let console_addr = base.trim_start_matches("http://").to_owned();

    // Read-only pages answer to plain HTTP too; a wrong token is refused.
    let (status, _) = http(
        &console_addr,
        "POST",
        &format!("/runs/{}/actions", runs.finished),
        "application/x-www-form-urlencoded",
        b"action=delete&token=wrong&by=x",
    );
    assert_eq!(status, 403);
    let (status, _) = http(
        &console_addr,
        "GET",
        "/runs/0123456789abcdef",
        "text/plain",
        b"",
    );
    assert_eq!(status, 404);

    let port = free_port();
    let mut chromedriver = Reaped(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    until_started(&mut chromedriver.0);
    let driver = format!("127.0.0.1:{port}");
    let profile = tempfile::tempdir().unwrap();
    let capabilities = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": {
        "binary": CHROMIUM,
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", format!("--user-data-dir={}", profile.path().display())]
    }}}});
    let (status, answer) = http(
        &driver,
        "POST",
        "/session",
        "application/json",
        capabilities.to_string().as_bytes(),
    );
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, 200, "{answer}");
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    let browser = Browser {
        driver,
        session: answer["value"]["sessionId"].as_str().unwrap().to_owned(),
        shots,
    };
    // Finding an element waits for it (a live update, Mermaid's drawing) up to 20 s.
    browser.call("POST", "/timeouts", json!({ "implicit": 20_000 }));

    // The list: every run, with counts.
    browser.open(&format!("{base}/"));
    assert_eq!(browser.count("#runs tbody tr"), 4);
    assert!(browser.text("#counts").contains("4 runs"));
    browser.screenshot("runs-list.png");

    // Filtering through the form.
    browser.type_into("input[name=status]", "failed");
    browser.click("#apply");
    browser.find("input[name=status][value=failed]");
    assert_eq!(browser.count("#runs tbody tr"), 1);
    assert_eq!(
        browser.attribute("#runs tbody tr", "data-run"),
        runs.failed.to_string()
    );
    browser.screenshot("runs-filtered.png");

    // A run's timeline and its graph, drawn by Mermaid with the current state marked.
    browser.open(&format!("{base}/runs/{}", runs.parked));
    assert_eq!(browser.count("#timeline tbody tr"), 2);
    assert!(browser.text("#waits").contains("approval"));
    if mermaid.is_some() {
        browser.find("#graph svg");
        assert!(
            browser.count("#graph svg .current") >= 1,
            "the current state is not marked"
        );
        assert!(
            browser.count("#graph svg .visited") >= 1,
            "the path is not marked"
        );
    }
    browser.screenshot("run-graph.png");

    // An action from the page's form: cancel the interrupted run.
    browser.open(&format!("{base}/runs/{}", runs.interrupted));
    browser.type_into("#form-cancel input[name=by]", "ada");
    browser.type_into("#form-cancel input[name=reason]", "customer left");
    browser.type_into("#form-cancel input[name=token]", TOKEN);
    browser.click("#form-cancel button");
    assert!(
        browser.text("#note").contains("cancel"),
        "no note after the action"
    );
    assert!(browser.text("#summary").contains("failed"));
    assert!(browser.text("#actions").contains("customer left"));
    browser.screenshot("run-cancelled.png");

    // Live: with the list open, a run deleted elsewhere leaves it without a reload.
    browser.open(&format!("{base}/"));
    assert_eq!(browser.count("#runs tbody tr"), 4);
    let form = format!("action=delete&token={TOKEN}&by=test&reason=live");
    let (status, _) = http(
        &console_addr,
        "POST",
        &format!("/runs/{}/actions", runs.finished),
        "application/x-www-form-urlencoded",
        form.as_bytes(),
    );
    assert_eq!(status, 303);
    browser.find("#live[data-updates]");
    assert_eq!(browser.count("#runs tbody tr"), 3);
    assert_eq!(
        browser.count(&format!("#runs tr[data-run='{}']", runs.finished)),
        0
    );
    browser.screenshot("runs-live.png");
    drop(browser);
    drop(console);
}
