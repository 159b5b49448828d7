//! Live updates: server-sent event streams that re-render a page's changing part
//! once a second and send it only when it changed (stores have no change feed that
//! every backend shares; a second's poll per open page is cheap next to a listing).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;

use super::{Console, Params, pages};
use crate::error::InspectError;
use cano_core::checkpoint::StatusCounts;

/// How often an open page's part is rendered again.
const EVERY: Duration = Duration::from_secs(1);

/// A stream of `render`'s output each time it differs from the last one sent. The
/// page says what it shows (`seen`, its [`pages::fingerprint`]): a change made
/// between the page's render and the stream's opening is sent at once.
async fn changes<F, Fut>(
    render: F,
    seen: Option<String>,
) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<String, InspectError>> + Send,
{
    // A store that fails for a moment leaves the page as it is.
    let first = render().await.unwrap_or_default();
    let stale = seen.is_some_and(|seen| !first.is_empty() && seen != pages::fingerprint(&first));
    let (last, pending) = if stale {
        (String::new(), true)
    } else {
        (first, false)
    };
    futures::stream::unfold(
        (render, last, pending),
        |(render, last, pending)| async move {
            let mut wait = !pending;
            loop {
                if wait {
                    tokio::time::sleep(EVERY).await;
                }
                wait = true;
                match render().await {
                    Ok(html) if html != last => {
                        let event = Event::default().event("update").data(html.clone());
                        return Some((Ok(event), (render, html, false)));
                    }
                    _ => {}
                }
            }
        },
    )
}

/// How long the list's counts by status are reused: counting reads every run (over
/// half a second for a million on PostgreSQL), listing a page reads one page.
const COUNTS_EVERY: Duration = Duration::from_secs(15);

/// Updates of the runs list (same query string as the page).
pub(crate) async fn runs(
    State(console): State<Arc<Console>>,
    Query(params): Query<Params>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let seen = params.get("seen").cloned();
    let counted: Arc<Mutex<Option<(Instant, StatusCounts)>>> = Arc::default();
    let render = move || {
        let (console, params, counted) = (console.clone(), params.clone(), counted.clone());
        async move {
            let fresh = counted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .filter(|(at, _)| at.elapsed() < COUNTS_EVERY);
            let counts = match fresh {
                Some((_, counts)) => counts,
                None => {
                    let counts = console
                        .inspector
                        .counts(&super::filter_of(&params)?)
                        .await?;
                    *counted.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), counts.clone()));
                    counts
                }
            };
            pages::runs_fragment_with(&console, &params, &counts).await
        }
    };
    Sse::new(changes(render, seen).await).keep_alive(KeepAlive::default())
}

/// Updates of one run's status and timeline.
pub(crate) async fn run(
    State(console): State<Arc<Console>>,
    Path(run): Path<String>,
    Query(params): Query<Params>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let row = params.get("row").and_then(|r| r.parse::<u64>().ok());
    let seen = params.get("seen").cloned();
    let run = run.parse::<cano_core::RunId>();
    let render = move || {
        let console = console.clone();
        let run = run.clone();
        async move {
            let run = run.map_err(|_| InspectError::BadInput("not a run id".into()))?;
            let detail = console.inspector.detail(run, row).await?;
            Ok(pages::run_fragment(&detail, detail.data_at))
        }
    };
    Sse::new(changes(render, seen).await).keep_alive(KeepAlive::default())
}
