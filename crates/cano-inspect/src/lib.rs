//! # cano-inspect
//!
//! The run inspector: what operators use to see and act on the runs a cano store
//! holds, without writing SQL or opening sled by hand.
//!
//! - The `cano` command line: `cano --store sled:PATH runs list`, `runs show RUN`,
//!   `runs cancel|resume|retry|signal|delete`, bulk actions by filter with
//!   `--dry-run`, `cano cluster` (PostgreSQL: cron schedules and workers), and
//!   `cano serve` (the web console). `--store` also reads `CANO_STORE`.
//! - [`Inspector`]: the same questions and actions as a library, over a store you
//!   opened ([`Inspector::from_sled`], [`Inspector::from_postgres`]) or one named by
//!   a [`StoreSpec`] ([`Inspector::open`], which never creates a store).
//! - [`web::console`]: the web console as an axum `Router` to mount in your own app:
//!   server-rendered pages (no JavaScript build), live updates by server-sent events,
//!   each run's workflow graph drawn with Mermaid. Read-only unless built with actions
//!   and a token.
//!
//! What it reads comes from the store: runs are listed newest first through
//! [`RunCatalog`](cano_core::checkpoint::RunCatalog) (an index on PostgreSQL, one
//! run at a time on sled, never every row in memory); a workflow's graph is the
//! drawing the engine records in the store before the workflow's first run writes.
//!
//! ```
//! use cano_core::checkpoint::{LiveStatus, RunFilter};
//! use cano_core::{CanoError, RunId, Task, TaskResult, Workflow};
//! use cano_inspect::{Action, Actor, Inspector};
//! use cano_recovery::MemoryCheckpointStore;
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
//! enum Job { Fetch, Done }
//!
//! struct Fetch;
//! #[async_trait::async_trait]
//! impl Task<Job> for Fetch {
//!     async fn run_bare(&self) -> Result<TaskResult<Job>, CanoError> {
//!         Err(CanoError::task_execution("the upstream is down").permanent())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryCheckpointStore::new();
//! let workflow = Workflow::bare()
//!     .register(Job::Fetch, Fetch)
//!     .add_exit_state(Job::Done)
//!     .with_workflow_id("fetch")
//!     .with_checkpoint_store(store.clone());
//! assert!(workflow.orchestrate(Job::Fetch).await.is_err());
//!
//! let inspector = Inspector::from_memory(store);
//! let failed = RunFilter { statuses: vec![LiveStatus::Failed], ..RunFilter::default() };
//! let page = inspector.list(&failed, None, 20).await?;
//! assert_eq!(page.runs.len(), 1);
//! let run: RunId = page.runs[0].run;
//! let detail = inspector.detail(run, None).await?;
//! assert!(detail.run.error.contains("upstream is down"));
//! assert!(detail.graph.unwrap().contains("class s1 visited"));
//!
//! let by = Actor { who: "ada".into(), why: "the upstream will not come back".into() };
//! inspector.act(run, &Action::Delete, &by).await?;
//! assert!(inspector.list(&failed, None, 20).await?.runs.is_empty());
//! # Ok(())
//! # }
//! ```

mod actions;
mod cluster;
mod detail;
mod error;
pub mod graph;
mod inspector;
mod open;
pub mod query;
pub mod render;
pub mod value;
pub mod web;
mod when;

pub use actions::{Action, ActionOutcome, Actor, BulkReport, Planned};
pub use cluster::{ClusterView, ScheduleRow, WorkerRow};
pub use detail::{ActionView, ClaimView, DataEntry, RunDetail, RunView, TimelineEntry, WaitView};
pub use error::InspectError;
pub use inspector::Inspector;
pub use open::StoreSpec;
