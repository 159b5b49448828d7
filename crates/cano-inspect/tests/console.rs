//! The web console over HTTP, mounted as a library user mounts it: bulk actions with
//! a dry run, the token, a run page's live stream, the cluster page without a
//! cluster, and store text that must not become markup.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use cano_core::checkpoint::{CheckpointStore, LiveStatus, RunFilter};
use cano_core::{RunId, RunOptions};
use cano_inspect::{Inspector, web};
use cano_recovery::MemoryCheckpointStore;
use common::{Invoice, Runs, fill, http, invoices};

const TOKEN: &str = "t0ken";
const FORM: &str = "application/x-www-form-urlencoded";

/// A console over a memory store holding one run in each status, and a failed run
/// whose error carries markup; returns its address.
async fn console(actions: bool) -> (String, Inspector, Runs, RunId) {
    let store = MemoryCheckpointStore::new();
    let shared: Arc<dyn CheckpointStore> = Arc::new(store.clone());
    let runs = fill(shared.clone()).await;
    let marked = RunId::new();
    let result = invoices(shared, "<script>alert(1)</script>", None)
        .orchestrate_with(Invoice::Send, RunOptions::new().with_run_id(marked))
        .await;
    assert!(result.is_err());
    let inspector = Inspector::from_memory(store);
    let options =
        web::ConsoleOptions::new().with_actions(actions, actions.then(|| TOKEN.to_owned()));
    let router = web::console(inspector.clone(), options).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, inspector, runs, marked)
}

/// `http` off the runtime's threads.
async fn request(addr: &str, method: &str, path: &str, body: String) -> (u16, String) {
    let (addr, method, path) = (addr.to_owned(), method.to_owned(), path.to_owned());
    let (status, body) =
        tokio::task::spawn_blocking(move || http(&addr, &method, &path, FORM, body.as_bytes()))
            .await
            .unwrap();
    (status, String::from_utf8(body).unwrap())
}

async fn failed_runs(inspector: &Inspector) -> usize {
    let filter = RunFilter {
        statuses: vec![LiveStatus::Failed],
        ..RunFilter::default()
    };
    inspector.list(&filter, None, 100).await.unwrap().runs.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_dry_run_changes_nothing_and_the_real_one_acts() {
    let (addr, inspector, _, _) = console(true).await;
    assert_eq!(failed_runs(&inspector).await, 2);
    let form = format!("status=failed&action=delete&by=ada&reason=cleanup&token={TOKEN}");

    let (status, page) = request(&addr, "POST", "/actions", format!("{form}&dry_run=on")).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("2 would change") && page.contains("Nothing was changed"),
        "{page}"
    );
    assert_eq!(
        failed_runs(&inspector).await,
        2,
        "a dry run changed the store"
    );

    let (status, page) = request(&addr, "POST", "/actions", form.clone()).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("2 changed"), "{page}");
    assert_eq!(failed_runs(&inspector).await, 0);

    // No filter: refused, not "every run".
    let (status, page) = request(
        &addr,
        "POST",
        "/actions",
        format!("action=delete&token={TOKEN}"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(page.contains("needs a filter"), "{page}");
    // A wrong token changes nothing.
    let (status, _) = request(
        &addr,
        "POST",
        "/actions",
        "status=finished&action=delete&token=nope".into(),
    )
    .await;
    assert_eq!(status, 403);
    let all = inspector
        .list(&RunFilter::default(), None, 100)
        .await
        .unwrap();
    assert!(all.runs.iter().any(|r| r.status == LiveStatus::Finished));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_console_refuses_every_action_and_shows_no_forms() {
    let (addr, inspector, runs, _) = console(false).await;
    let (status, page) = request(
        &addr,
        "GET",
        &format!("/runs/{}", runs.finished),
        String::new(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        !page.contains("form-delete") && page.contains("read-only"),
        "{page}"
    );
    let (status, _) = request(
        &addr,
        "POST",
        &format!("/runs/{}/actions", runs.finished),
        format!("action=delete&token={TOKEN}"),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = request(
        &addr,
        "POST",
        "/actions",
        format!("status=finished&action=delete&token={TOKEN}"),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        inspector.status(runs.finished).await.unwrap(),
        LiveStatus::Finished
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn store_text_is_shown_as_text_never_as_markup() {
    let (addr, _, _, marked) = console(false).await;
    let (_, list) = request(&addr, "GET", "/?status=failed", String::new()).await;
    assert!(list.contains(&marked.to_string()), "{list}");
    assert!(
        !list.contains("<script>alert(1)</script>"),
        "raw markup from the store"
    );
    assert!(list.contains("&lt;script&gt;alert(1)"), "{list}");
    let (_, page) = request(&addr, "GET", &format!("/runs/{marked}"), String::new()).await;
    assert!(!page.contains("<script>alert(1)</script>"));
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    // Bad query values are the caller's error, said plainly.
    let (status, page) = request(&addr, "GET", "/?status=done", String::new()).await;
    assert_eq!(status, 400);
    assert!(page.contains("not a run status"), "{page}");
    let (status, page) = request(&addr, "GET", "/cluster", String::new()).await;
    assert_eq!(status, 200);
    assert!(page.contains("has no cluster"), "{page}");
}

/// Opens the event stream at `path`, says so on `subscribed` once its head arrived,
/// and returns its first `update` event (its data lines).
fn first_update(addr: &str, path: &str, subscribed: tokio::sync::oneshot::Sender<()>) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut lines = BufReader::new(stream).lines();
    for line in lines.by_ref() {
        if line.unwrap().is_empty() {
            break;
        }
    }
    let _ = subscribed.send(());
    let mut event = String::new();
    for line in lines {
        let line = line.unwrap();
        if line.starts_with("event: update") {
            event.push_str("update\n");
        } else if !event.is_empty() && line.starts_with("data:") {
            event.push_str(&line);
            event.push('\n');
        } else if !event.is_empty() && line.is_empty() {
            return event;
        }
    }
    event
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_page_stream_sends_the_change_when_its_run_changes() {
    let (addr, _, runs, _) = console(true).await;
    // Subscribe first, then change the run: the stream must carry the change.
    let run = runs.interrupted;
    let (subscribed, on_subscribed) = tokio::sync::oneshot::channel();
    let stream_addr = addr.clone();
    let reader = tokio::task::spawn_blocking(move || {
        first_update(&stream_addr, &format!("/events/runs/{run}"), subscribed)
    });
    on_subscribed.await.unwrap();
    let (status, _) = request(
        &addr,
        "POST",
        &format!("/runs/{run}/actions"),
        format!("action=cancel&by=ada&reason=stuck&token={TOKEN}"),
    )
    .await;
    assert_eq!(status, 303);
    let event = reader.await.unwrap();
    assert!(event.starts_with("update"), "{event}");
    assert!(
        event.contains("st-failed") && event.contains("cancelled by ada: stuck"),
        "{event}"
    );
}

/// A change made after the page rendered but before its stream opened is not lost:
/// the page tells the stream what it shows, and a stale page is updated at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_that_is_already_stale_is_updated_when_its_stream_opens() {
    let (addr, _, runs, _) = console(true).await;
    let (status, page) = request(&addr, "GET", "/?status=finished", String::new()).await;
    assert_eq!(status, 200);
    let events = page
        .split("data-events=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .replace("&amp;", "&");
    assert!(events.contains("seen="), "{events}");
    // The run leaves the filter before the stream opens.
    let (status, _) = request(
        &addr,
        "POST",
        &format!("/runs/{}/actions", runs.finished),
        format!("action=delete&by=ada&token={TOKEN}"),
    )
    .await;
    assert_eq!(status, 303);
    let (subscribed, _) = tokio::sync::oneshot::channel();
    let event = tokio::task::spawn_blocking(move || first_update(&addr, &events, subscribed))
        .await
        .unwrap();
    assert!(
        event.starts_with("update") && !event.contains(&runs.finished.to_string()),
        "{event}"
    );
}
