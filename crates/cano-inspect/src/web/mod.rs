//! The web console: the inspector's views and actions in a browser, as an axum
//! [`Router`] (mount it in your own app, or run `cano serve`).
//!
//! Pages are rendered on the server (no JavaScript build step): the runs list with
//! its filters and counts, a run's timeline, data, claims and actions with its
//! workflow's graph drawn by Mermaid, and the cluster's schedules and workers on
//! PostgreSQL. Both the list and a run's page update live over server-sent events.
//! The console is read-only unless built with actions allowed and a token, which
//! every action form must carry.
//!
//! ```
//! use cano_inspect::{Inspector, web};
//! use cano_recovery::MemoryCheckpointStore;
//!
//! let inspector = Inspector::from_memory(MemoryCheckpointStore::new());
//! // Read-only, Mermaid from its CDN: merge it into your app's router.
//! let console: axum::Router = web::console(inspector.clone(), web::ConsoleOptions::new()).unwrap();
//! // Actions need a token.
//! let refused = web::console(inspector, web::ConsoleOptions::new().with_actions(true, None));
//! assert!(refused.is_err());
//! ```

mod live;
mod pages;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use cano_core::RunId;
use cano_core::checkpoint::{PageCursor, RunFilter};

use crate::actions::{Action, Actor};
use crate::error::InspectError;
use crate::inspector::Inspector;

/// The Mermaid script pages load when none is given.
pub const MERMAID_CDN: &str = "https://cdn.jsdelivr.net/npm/mermaid@11/dist/mermaid.min.js";

/// How the console behaves.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    actions: bool,
    token: Option<String>,
    mermaid: Option<String>,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleOptions {
    /// Read-only, with Mermaid from its CDN.
    pub fn new() -> Self {
        Self {
            actions: false,
            token: None,
            mermaid: None,
        }
    }

    /// Allows actions (`allow`), each of which must carry `token`: allowing them
    /// without a token is refused when the console is built.
    pub fn with_actions(mut self, allow: bool, token: Option<String>) -> Self {
        self.actions = allow;
        self.token = token;
        self
    }

    /// Where pages load Mermaid from: a URL, or a file the console serves itself
    /// (for machines without internet). `None` keeps the CDN.
    pub fn with_mermaid(mut self, script: Option<String>) -> Self {
        self.mermaid = script;
        self
    }
}

/// What every handler shares.
pub(crate) struct Console {
    pub(crate) inspector: Inspector,
    pub(crate) token: Option<String>,
    /// The `src` of Mermaid's script in pages.
    pub(crate) mermaid_src: String,
    /// The script's bytes, when served from a file.
    mermaid_file: Option<Arc<Vec<u8>>>,
}

impl Console {
    pub(crate) fn actions_allowed(&self) -> bool {
        self.token.is_some()
    }
}

/// Builds the console over `inspector`. Errors for actions without a token (or an
/// empty one) and for a Mermaid file that cannot be read.
pub fn console(inspector: Inspector, options: ConsoleOptions) -> Result<Router, InspectError> {
    let token = match (options.actions, options.token) {
        (false, _) => None,
        (true, Some(token)) if !token.trim().is_empty() => Some(token),
        (true, _) => {
            return Err(InspectError::BadInput(
                "actions in the console need a token: pass --token (or CANO_TOKEN) with --allow-actions".into(),
            ));
        }
    };
    let (mermaid_src, mermaid_file) = match options.mermaid {
        None => (MERMAID_CDN.to_owned(), None),
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => (url, None),
        Some(path) => {
            let bytes = std::fs::read(PathBuf::from(&path)).map_err(|e| {
                InspectError::BadInput(format!(
                    "cannot read Mermaid's script at {path}: {e} (give a file, e.g. node_modules/mermaid/dist/mermaid.min.js, or a URL)"
                ))
            })?;
            ("/assets/mermaid.js".to_owned(), Some(Arc::new(bytes)))
        }
    };
    let state = Arc::new(Console {
        inspector,
        token,
        mermaid_src,
        mermaid_file,
    });
    Ok(Router::new()
        .route("/", get(list_page))
        .route("/runs/{run}", get(run_page))
        .route("/runs/{run}/actions", post(act))
        .route("/actions", post(act_on_all))
        .route("/cluster", get(cluster_page))
        .route("/events/runs", get(live::runs))
        .route("/events/runs/{run}", get(live::run))
        .route("/api/runs", get(api_runs))
        .route("/api/runs/{run}", get(api_run))
        .route("/assets/mermaid.js", get(mermaid))
        .with_state(state))
}

/// Serves `console` on `listener` until Ctrl-C.
pub async fn serve(listener: tokio::net::TcpListener, console: Router) -> std::io::Result<()> {
    axum::serve(listener, console)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

type Shared = State<Arc<Console>>;

/// An error as a page: the caller's mistakes are 4xx, the store's 5xx.
pub(crate) fn error_page(e: &InspectError) -> Response {
    let status = match e {
        InspectError::UnknownRun(_) => StatusCode::NOT_FOUND,
        e if e.is_caller_error() => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Html(pages::error(e))).into_response()
}

/// The list's query string: the filter, the page, and (after an action) a note.
pub(crate) type Params = HashMap<String, String>;

/// The filter a query string names. Unreadable values are errors, not ignored.
pub(crate) fn filter_of(params: &Params) -> Result<RunFilter, InspectError> {
    let text = |key: &str| {
        params
            .get(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let statuses = crate::query::statuses(text("status").as_deref())?;
    let version = text("version")
        .map(|v| {
            v.parse::<u32>().map_err(|_| {
                InspectError::BadInput(format!("version: {v:?} is not a version number"))
            })
        })
        .transpose()?;
    Ok(RunFilter {
        run: None,
        workflow: text("workflow"),
        version,
        statuses,
        state: text("state"),
        started_from_us: crate::query::start_time(text("since").as_deref(), "since")?,
        started_before_us: crate::query::start_time(text("until").as_deref(), "until")?,
        error_contains: text("error"),
    })
}

pub(crate) fn page_of(params: &Params) -> Result<(Option<PageCursor>, usize), InspectError> {
    let after = params
        .get("after")
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse::<PageCursor>()
                .map_err(|e| InspectError::BadInput(e.to_string()))
        })
        .transpose()?;
    let limit = match params.get("limit").filter(|l| !l.is_empty()) {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| InspectError::BadInput(format!("limit: {l:?} is not 1 to 1000")))?,
        None => 50,
    };
    Ok((after, limit))
}

fn run_of(text: &str) -> Result<RunId, InspectError> {
    text.parse()
        .map_err(|_| InspectError::BadInput(format!("{text:?} is not a run id")))
}

async fn list_page(State(console): Shared, Query(params): Query<Params>) -> Response {
    match pages::list(&console, &params).await {
        Ok(html) => Html(html).into_response(),
        Err(e) => error_page(&e),
    }
}

async fn run_page(
    State(console): Shared,
    Path(run): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    let result = async {
        let run = run_of(&run)?;
        let row = params
            .get("row")
            .filter(|r| !r.is_empty())
            .map(|r| {
                r.parse::<u64>()
                    .map_err(|_| InspectError::BadInput(format!("row: {r:?} is not a row number")))
            })
            .transpose()?;
        pages::run(&console, run, row, params.get("note").map(String::as_str)).await
    }
    .await;
    match result {
        Ok(html) => Html(html).into_response(),
        Err(e) => error_page(&e),
    }
}

async fn cluster_page(State(console): Shared) -> Response {
    match pages::cluster(&console).await {
        Ok(html) => Html(html).into_response(),
        Err(e) => error_page(&e),
    }
}

/// Compares in time independent of where the texts differ.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// `None` when `form` carries the console's token; otherwise the page refusing it.
fn refused(console: &Console, form: &Params) -> Option<Response> {
    let Some(token) = &console.token else {
        return Some(
            (
                StatusCode::FORBIDDEN,
                Html(pages::message(
                    "Actions are off",
                    "This console is read-only: start it with --allow-actions and a --token to act on runs.",
                )),
            )
                .into_response(),
        );
    };
    if !same_secret(form.get("token").map_or("", String::as_str), token) {
        return Some(
            (
                StatusCode::FORBIDDEN,
                Html(pages::message(
                    "Wrong token",
                    "The token does not match the one the console was started with.",
                )),
            )
                .into_response(),
        );
    }
    None
}

/// Who acts and why, from a form.
fn actor_of(form: &Params) -> Actor {
    let field = |k: &str| form.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let who = field("by");
    Actor {
        who: if who.is_empty() {
            "console".to_owned()
        } else {
            who
        },
        why: field("reason"),
    }
}

/// A bulk action on every run the form's filter matches, or (`dry_run`) what it
/// would do. An empty filter is refused: it would act on every run.
async fn act_on_all(State(console): Shared, Form(form): Form<Params>) -> Response {
    if let Some(refusal) = refused(&console, &form) {
        return refusal;
    }
    let result = async {
        let filter = filter_of(&form)?;
        if filter == RunFilter::default() {
            return Err(InspectError::BadInput(
                "a bulk action needs a filter (status, workflow, ...): with none it would act on every run".into(),
            ));
        }
        let action = match form.get("action").map(String::as_str) {
            Some("cancel") => Action::Cancel,
            Some("resume") => Action::Resume,
            Some("delete") => Action::Delete,
            other => {
                return Err(InspectError::BadInput(format!(
                    "{other:?} is not a bulk action (cancel, resume or delete)"
                )));
            }
        };
        let dry_run = form.get("dry_run").is_some_and(|v| !v.is_empty());
        let report = console
            .inspector
            .act_on_all(&filter, &action, &actor_of(&form), dry_run)
            .await?;
        Ok(pages::bulk(&console, &report, &form))
    }
    .await;
    match result {
        Ok(html) => Html(html).into_response(),
        Err(e) => error_page(&e),
    }
}

async fn act(
    State(console): Shared,
    Path(run): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    if let Some(refusal) = refused(&console, &form) {
        return refusal;
    }
    let result = async {
        let run = run_of(&run)?;
        let field = |k: &str| form.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
        let action = match field("action").as_str() {
            "cancel" => Action::Cancel,
            "resume" => Action::Resume,
            "delete" => Action::Delete,
            "retry" => Action::Retry {
                from_row: field("from_row").parse().map_err(|_| {
                    InspectError::BadInput("retry needs the row to retry from".into())
                })?,
            },
            "signal" => {
                let name = field("name");
                if name.is_empty() {
                    return Err(InspectError::BadInput("a signal needs a name".into()));
                }
                let text = field("text");
                let payload = if text.is_empty() {
                    Vec::new()
                } else {
                    use cano_core::checkpoint::{Bincode, Codec};
                    Bincode::encode(&text)?
                };
                let key = Some(field("key")).filter(|k| !k.is_empty());
                Action::Signal { name, payload, key }
            }
            other => {
                return Err(InspectError::BadInput(format!(
                    "{other:?} is not an action"
                )));
            }
        };
        let outcome = console
            .inspector
            .act(run, &action, &actor_of(&form))
            .await?;
        Ok::<_, InspectError>((run, action, outcome))
    }
    .await;
    match result {
        Ok((run, Action::Delete, _)) => Redirect::to(&format!(
            "/?note={}",
            pages::url_encode(&format!("run {run} deleted"))
        ))
        .into_response(),
        Ok((run, _, outcome)) => Redirect::to(&format!(
            "/runs/{run}?note={}",
            pages::url_encode(&format!("{}: {}", outcome.action, outcome.detail))
        ))
        .into_response(),
        Err(e) => error_page(&e),
    }
}

async fn api_runs(State(console): Shared, Query(params): Query<Params>) -> Response {
    let result = async {
        let filter = filter_of(&params)?;
        let (after, limit) = page_of(&params)?;
        let page = console.inspector.list(&filter, after, limit).await?;
        let counts = console.inspector.counts(&filter).await?;
        let runs: Vec<crate::RunView> = page.runs.iter().map(crate::RunView::from).collect();
        let counts: serde_json::Map<String, serde_json::Value> = counts
            .0
            .iter()
            .map(|(s, n)| (s.name().to_owned(), (*n).into()))
            .collect();
        Ok::<_, InspectError>(serde_json::json!({
            "runs": runs,
            "counts": counts,
            "next": page.next.map(|c| c.to_string()),
        }))
    }
    .await;
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => error_page(&e),
    }
}

async fn api_run(State(console): Shared, Path(run): Path<String>) -> Response {
    let result = async { console.inspector.detail(run_of(&run)?, None).await }.await;
    match result {
        Ok(detail) => axum::Json(detail).into_response(),
        Err(e) => error_page(&e),
    }
}

async fn mermaid(State(console): Shared) -> Response {
    match &console.mermaid_file {
        Some(bytes) => (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            bytes.as_ref().clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cano_core::checkpoint::LiveStatus;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("ab", "abc"));
        assert!(!same_secret("", "abc"));
    }

    #[test]
    fn bad_query_values_are_errors() {
        let params: Params = [("status".to_owned(), "done".to_owned())].into();
        assert!(
            filter_of(&params)
                .unwrap_err()
                .to_string()
                .contains("\"done\"")
        );
        let params: Params = [("since".to_owned(), "yesterday".to_owned())].into();
        assert!(filter_of(&params).is_err());
        let params: Params = [("limit".to_owned(), "0".to_owned())].into();
        assert!(page_of(&params).is_err());
        let params: Params = [("status".to_owned(), "failed,parked".to_owned())].into();
        assert_eq!(
            filter_of(&params).unwrap().statuses,
            [LiveStatus::Failed, LiveStatus::Parked]
        );
    }
}
