//! Test processes: the test binary runs itself as children (`child_entry` with
//! `CANO_PG_CHILD` set), which report events on stdout; the parent reads them on one
//! channel, and kills, stops or resumes the children with signals.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The child's mode (set: this process is a child).
pub const CHILD: &str = "CANO_PG_CHILD";
/// The schema a child works in.
pub const SCHEMA: &str = "CANO_PG_SCHEMA";
/// The child's name.
pub const NAME: &str = "CANO_PG_NAME";
const MARK: &str = "cano-event ";

/// Reports `event` to the parent.
pub fn say(event: &str) {
    println!("{MARK}{event}");
}

/// The body of a test file's `child_entry` test: in a child process (`CHILD` set), runs
/// `serve(mode, schema, name)` on a two-thread runtime; in the parent's run, nothing.
pub fn serve_as_child<F, Fut>(serve: F)
where
    F: FnOnce(String, String, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let schema = std::env::var(SCHEMA).unwrap();
    let name = std::env::var(NAME).unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(serve(mode, schema, name));
}

/// Resolves when the parent closes our stdin (or dies).
pub async fn parent_gone() {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
        let _ = sender.send(());
    });
    let _ = receiver.await;
}

/// The children of one test, their events on one channel: (child index, event).
pub struct Children {
    pub children: Vec<Child>,
    pub events: mpsc::Receiver<(usize, String)>,
    sender: mpsc::Sender<(usize, String)>,
    mode: String,
    schema: String,
    extra: Vec<(String, String)>,
}

impl Children {
    pub fn spawn(mode: &str, schema: &str, count: usize) -> Self {
        Self::spawn_with(mode, schema, count, &[])
    }

    pub fn spawn_with(mode: &str, schema: &str, count: usize, extra: &[(&str, String)]) -> Self {
        let (sender, events) = mpsc::channel();
        let mut this = Self {
            children: Vec::with_capacity(count),
            events,
            sender,
            mode: mode.to_owned(),
            schema: schema.to_owned(),
            extra: extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        };
        for index in 0..count {
            let child = this.launch(index);
            this.children.push(child);
        }
        this
    }

    /// Starts child `index` (named `<schema>_<index>`), its events onto the channel.
    fn launch(&self, index: usize) -> Child {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
            .env(CHILD, &self.mode)
            .env(SCHEMA, &self.schema)
            .env(NAME, format!("{}_{index}", self.schema))
            .envs(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let sender = self.sender.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(MARK) {
                    let _ = sender.send((index, line[at + MARK.len()..].trim().to_owned()));
                }
            }
        });
        child
    }

    /// Starts child `index` again (after it was killed).
    pub fn respawn(&mut self, index: usize) {
        self.children[index] = self.launch(index);
    }

    /// The next event of any child (a child silent for a minute fails the test).
    pub fn next(&self) -> (usize, String) {
        self.events
            .recv_timeout(Duration::from_secs(60))
            .expect("the children went silent")
    }

    pub fn kill(&mut self, index: usize) {
        self.children[index].kill().unwrap(); // SIGKILL on Unix
        self.children[index].wait().unwrap();
    }

    /// Sends `signal` (`STOP`, `CONT`) to child `index`.
    pub fn signal(&self, index: usize, signal: &str) {
        let status = Command::new("kill")
            .args([
                &format!("-{signal}"),
                &self.children[index].id().to_string(),
            ])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Closes every live child's stdin and waits for it to stop cleanly; a child still
    /// running after 30 s is killed and fails the test (rather than hanging it).
    pub fn finish(self) {
        let (exited, exits) = mpsc::channel();
        let mut pids = Vec::new();
        for (index, mut child) in self.children.into_iter().enumerate() {
            drop(child.stdin.take());
            pids.push(child.id());
            let exited = exited.clone();
            std::thread::spawn(move || {
                let _ = child.wait();
                let _ = exited.send(index);
            });
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut running: HashSet<usize> = (0..pids.len()).collect();
        while !running.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match exits.recv_timeout(left) {
                Ok(index) => {
                    running.remove(&index);
                }
                Err(_) => break,
            }
        }
        for &index in &running {
            let _ = Command::new("kill")
                .args(["-9", &pids[index].to_string()])
                .status();
        }
        assert!(
            running.is_empty(),
            "children {running:?} did not stop when their stdin closed"
        );
    }
}
