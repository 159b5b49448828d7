//! `cano`: the run inspector's command line. `cano --help` tells the commands.

use std::net::SocketAddr;
use std::process::ExitCode;

use cano_core::RunId;
use cano_core::checkpoint::{Bincode, Codec, PageCursor, RunFilter};
use cano_inspect::{Action, Actor, InspectError, Inspector, StoreSpec, query, render, web};
use clap::{Args, Parser, Subcommand};

/// Look at the runs a cano store holds, and act on them.
#[derive(Debug, Parser)]
#[command(name = "cano", version, about, long_about = None)]
struct Cli {
    /// The store: sled:PATH (a directory a program passed to SledCheckpointStore::open)
    /// or postgres://user:password@host:port/database.
    #[arg(long, env = "CANO_STORE", global = true)]
    store: Option<String>,
    /// The PostgreSQL schema cano's tables are in.
    #[arg(long, env = "CANO_SCHEMA", default_value = "cano", global = true)]
    schema: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List, show and act on runs.
    #[command(subcommand)]
    Runs(Runs),
    /// The cluster's cron schedules and workers (PostgreSQL).
    Cluster {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the web console.
    Serve(Serve),
}

#[derive(Debug, Subcommand)]
enum Runs {
    /// Runs newest first, with counts by status.
    List {
        #[command(flatten)]
        filter: Filter,
        /// Runs per page (1 to 10000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Start after this cursor (the `next` a previous page printed).
        #[arg(long)]
        after: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One run: timeline, data, what it waits for, claims, actions.
    Show {
        /// The run id.
        run: String,
        /// Show its data as of this row (its last row by default).
        #[arg(long)]
        row: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The run's workflow graph in Mermaid, with its path and current state marked.
    Graph {
        /// The run id.
        run: String,
    },
    /// Cancel a run, or every run a filter matches.
    Cancel(Bulk),
    /// Send a failed or interrupted run back to the workers (PostgreSQL).
    Resume(Bulk),
    /// Delete a run that is over, or every such run a filter matches.
    Delete(Bulk),
    /// Start a new run from an earlier row of a run.
    Retry {
        /// The run id.
        run: String,
        /// The last row copied into the new run.
        #[arg(long)]
        from_row: u64,
        #[command(flatten)]
        by: By,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send a signal to a run (its payload encoded as the wait state expects).
    Signal {
        /// The run id.
        run: String,
        /// The signal's name.
        name: String,
        /// A text payload (a Rust `String`).
        #[arg(long, conflicts_with_all = ["json_payload", "hex"])]
        text: Option<String>,
        /// A JSON payload: a boolean, number, string or array of them, encoded as
        /// the same Rust types would be (structs need --hex).
        #[arg(long = "json-payload", conflicts_with = "hex")]
        json_payload: Option<String>,
        /// The payload's encoded bytes in hex (none: an empty payload, a `()`).
        #[arg(long)]
        hex: Option<String>,
        /// An idempotency key: the same key sent twice adds one signal.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        by: By,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct Filter {
    /// Only runs of this workflow.
    #[arg(long)]
    workflow: Option<String>,
    /// Only runs of this workflow version.
    #[arg(long)]
    version: Option<u32>,
    /// Only runs in this status (repeat, or separate with commas, for several):
    /// queued, running, parked (waiting), interrupted, failed, finished, rolled-back,
    /// unreadable.
    #[arg(long = "status")]
    statuses: Vec<String>,
    /// Only runs in this state (its Debug text, or the variant's name).
    #[arg(long)]
    state: Option<String>,
    /// Only runs started at or after this time (YYYY-MM-DD[THH:MM[:SS]] UTC, or ms).
    #[arg(long)]
    since: Option<String>,
    /// Only runs started before this time.
    #[arg(long)]
    until: Option<String>,
    /// Only runs whose error contains this text (any case).
    #[arg(long)]
    error: Option<String>,
}

#[derive(Debug, Args)]
struct By {
    /// Who acts (kept in the run's action log).
    #[arg(long, env = "USER", default_value = "cano")]
    by: String,
    /// Why (kept in the run's action log).
    #[arg(long, default_value = "")]
    reason: String,
}

#[derive(Debug, Args)]
struct Bulk {
    /// The run id; without it, every run the filter matches.
    run: Option<String>,
    #[command(flatten)]
    filter: Filter,
    /// Say what would change, change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    by: By,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct Serve {
    /// Where to listen (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:7700")]
    addr: SocketAddr,
    /// Allow actions from the browser (each needs the token).
    #[arg(long)]
    allow_actions: bool,
    /// The token actions need (required with --allow-actions).
    #[arg(long, env = "CANO_TOKEN")]
    token: Option<String>,
    /// Mermaid's script: a URL, or a file to serve from this console (offline).
    #[arg(long, env = "CANO_MERMAID_JS")]
    mermaid_js: Option<String>,
}

fn run_id(text: &str) -> Result<RunId, InspectError> {
    text.parse().map_err(|_| {
        InspectError::BadInput(format!(
            "{text:?} is not a run id (16 hex digits, as `cano runs list` prints)"
        ))
    })
}

fn filter_of(f: &Filter) -> Result<RunFilter, InspectError> {
    Ok(RunFilter {
        run: None,
        workflow: f.workflow.clone(),
        version: f.version,
        statuses: query::statuses(f.statuses.iter().map(String::as_str))?,
        state: f.state.clone(),
        started_from_us: query::start_time(f.since.as_deref(), "--since")?,
        started_before_us: query::start_time(f.until.as_deref(), "--until")?,
        error_contains: f.error.clone(),
    })
}

fn is_empty(f: &RunFilter) -> bool {
    *f == RunFilter::default()
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, InspectError> {
    serde_json::to_string_pretty(value)
        .map_err(|e| InspectError::BadInput(format!("could not write JSON: {e}")))
}

fn actor(by: &By) -> Actor {
    Actor {
        who: by.by.clone(),
        why: by.reason.clone(),
    }
}

fn payload(
    text: Option<String>,
    json_payload: Option<String>,
    hex: Option<String>,
) -> Result<Vec<u8>, InspectError> {
    let bad = |e: String| InspectError::BadInput(e);
    if let Some(text) = text {
        return Ok(Bincode::encode(&text)?);
    }
    if let Some(value) = json_payload {
        let value: serde_json::Value = serde_json::from_str(&value)
            .map_err(|e| bad(format!("--json-payload is not JSON: {e}")))?;
        if value.is_object() || value.is_null() {
            return Err(bad(
                "--json-payload takes a boolean, number, string or array; encode structs and maps with --hex".into(),
            ));
        }
        return Ok(Bincode::encode(&value)?);
    }
    let Some(hex) = hex else {
        return Ok(Vec::new());
    };
    let hex = hex.trim();
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!(
            "--hex {hex:?} is not an even number of hex digits"
        )));
    }
    Ok((0..hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect())
}

async fn open(cli: &Cli) -> Result<Inspector, InspectError> {
    let Some(store) = &cli.store else {
        return Err(InspectError::BadInput(
            "no store given: pass --store sled:PATH or --store postgres://..., or set CANO_STORE"
                .into(),
        ));
    };
    let spec: StoreSpec = store.parse()?;
    Inspector::open(&spec.with_schema(&cli.schema)).await
}

async fn bulk(inspector: &Inspector, b: Bulk, action: Action) -> Result<String, InspectError> {
    let by = actor(&b.by);
    let filter = filter_of(&b.filter)?;
    if let Some(run) = &b.run {
        if !is_empty(&filter) {
            return Err(InspectError::BadInput(
                "give a run id or filters, not both".into(),
            ));
        }
        let run = run_id(run)?;
        if b.dry_run {
            let status = inspector.status(run).await?;
            return Ok(match action.allowed(status) {
                Ok(()) => format!(
                    "would {} run {run} (it is {status}); nothing changed\n",
                    action.name()
                ),
                Err(hint) => format!(
                    "would not {} run {run}: it is {status}; {hint}\n",
                    action.name()
                ),
            });
        }
        let outcome = inspector.act(run, &action, &by).await?;
        return if b.json {
            json(&outcome)
        } else {
            Ok(format!(
                "{} {}: {}\n",
                outcome.action, outcome.run, outcome.detail
            ))
        };
    }
    if is_empty(&filter) {
        return Err(InspectError::BadInput(format!(
            "`{}` without a run id acts on every run a filter matches: give a filter (--status, --workflow, ...), and try --dry-run first",
            action.name()
        )));
    }
    let report = inspector
        .act_on_all(&filter, &action, &by, b.dry_run)
        .await?;
    if b.json {
        json(&report)
    } else {
        Ok(render::bulk(&report))
    }
}

async fn runs(inspector: &Inspector, command: Runs) -> Result<String, InspectError> {
    match command {
        Runs::List {
            filter,
            limit,
            after,
            json: as_json,
        } => {
            let filter = filter_of(&filter)?;
            let after = after
                .map(|a| {
                    a.parse::<PageCursor>()
                        .map_err(|e| InspectError::BadInput(e.to_string()))
                })
                .transpose()?;
            let page = inspector.list(&filter, after, limit).await?;
            let counts = inspector.counts(&filter).await?;
            let views: Vec<cano_inspect::RunView> =
                page.runs.iter().map(cano_inspect::RunView::from).collect();
            if as_json {
                let counts: serde_json::Map<String, serde_json::Value> = counts
                    .0
                    .iter()
                    .map(|(s, n)| (s.name().to_owned(), (*n).into()))
                    .collect();
                return json(&serde_json::json!({
                    "runs": views,
                    "counts": counts,
                    "next": page.next.map(|c| c.to_string()),
                }));
            }
            let mut out = render::runs(&views);
            out.push_str(&format!("{}\n", render::counts(&counts)));
            if let Some(next) = page.next {
                out.push_str(&format!("more: --after {next}\n"));
            }
            Ok(out)
        }
        Runs::Show {
            run,
            row,
            json: as_json,
        } => {
            let detail = inspector.detail(run_id(&run)?, row).await?;
            if as_json {
                json(&detail)
            } else {
                Ok(render::detail(&detail))
            }
        }
        Runs::Graph { run } => {
            let detail = inspector.detail(run_id(&run)?, None).await?;
            detail.graph.ok_or_else(|| {
                InspectError::BadInput(format!(
                    "workflow {:?} v{} recorded no graph in this store: it is recorded when a run of it first writes, by this version of cano",
                    detail.run.workflow, detail.run.version
                ))
            })
        }
        Runs::Cancel(b) => bulk(inspector, b, Action::Cancel).await,
        Runs::Resume(b) => bulk(inspector, b, Action::Resume).await,
        Runs::Delete(b) => bulk(inspector, b, Action::Delete).await,
        Runs::Retry {
            run,
            from_row,
            by,
            json: as_json,
        } => {
            let outcome = inspector
                .act(run_id(&run)?, &Action::Retry { from_row }, &actor(&by))
                .await?;
            if as_json {
                json(&outcome)
            } else {
                Ok(format!("retry {}: {}\n", outcome.run, outcome.detail))
            }
        }
        Runs::Signal {
            run,
            name,
            text,
            json_payload,
            hex,
            key,
            by,
            json: as_json,
        } => {
            let action = Action::Signal {
                name,
                payload: payload(text, json_payload, hex)?,
                key,
            };
            let outcome = inspector.act(run_id(&run)?, &action, &actor(&by)).await?;
            if as_json {
                json(&outcome)
            } else {
                Ok(format!("signal {}: {}\n", outcome.run, outcome.detail))
            }
        }
    }
}

async fn main_result(cli: Cli) -> Result<String, InspectError> {
    let inspector = open(&cli).await?;
    let result = match cli.command {
        Command::Runs(command) => runs(&inspector, command).await,
        Command::Cluster { json: as_json } => match inspector.overview().await? {
            Some(overview) if as_json => json(&overview),
            Some(overview) => Ok(render::cluster(&overview)),
            None => Err(InspectError::Unsupported {
                action: "show the cluster",
                backend: inspector.backend_name(),
                hint: "schedules and workers live in PostgreSQL: pass --store postgres://...",
            }),
        },
        Command::Serve(serve) => {
            let options = web::ConsoleOptions::new()
                .with_actions(serve.allow_actions, serve.token)
                .with_mermaid(serve.mermaid_js);
            let console = web::console(inspector.clone(), options)?;
            let listener = tokio::net::TcpListener::bind(serve.addr)
                .await
                .map_err(|e| {
                    InspectError::BadInput(format!("cannot listen on {}: {e}", serve.addr))
                })?;
            let bound = listener.local_addr().map_err(|e| {
                InspectError::BadInput(format!("cannot read the address listened on: {e}"))
            })?;
            // Tests and scripts read this line to find the console.
            println!(
                "cano console for {} at http://{bound}/",
                inspector.describe()
            );
            web::serve(listener, console)
                .await
                .map_err(|e| InspectError::BadInput(format!("the console stopped: {e}")))?;
            Ok(String::new())
        }
    };
    let closed = inspector.close().await;
    let out = result?;
    closed?;
    Ok(out)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match main_result(cli).await {
        Ok(out) => {
            print!("{out}");
            if !out.is_empty() && !out.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
