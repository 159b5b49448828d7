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

/// How often an open page's part is rendered again, at most.
const EVERY: Duration = Duration::from_secs(1);

/// A render that takes a while (a sled store of many runs is listed one run at a
/// time) waits this many times its own length before the next: an open page never
/// keeps the store busy more than a fifth of the time.
const BUSY_SHARE: u32 = 4;

/// How long to wait after a render that took `took`.
fn pause_after(took: Duration) -> Duration {
    EVERY.max(took.saturating_mul(BUSY_SHARE))
}

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
            let mut wait = (!pending).then_some(EVERY);
            loop {
                if let Some(pause) = wait {
                    tokio::time::sleep(pause).await;
                }
                let started = std::time::Instant::now();
                let rendered = render().await;
                wait = Some(pause_after(started.elapsed()));
                match rendered {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_renders_are_spaced_out() {
        assert_eq!(pause_after(Duration::from_millis(5)), EVERY);
        assert_eq!(
            pause_after(Duration::from_millis(600)),
            Duration::from_millis(2400)
        );
        assert_eq!(pause_after(Duration::MAX), Duration::MAX);
    }
}
