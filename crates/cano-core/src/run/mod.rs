//! One run of a workflow: its [`RunId`], its [`CancellationToken`], and the
//! [`RunContext`] a task can read while it runs.
//!
//! ```
//! use cano_core::{CancellationToken, RunContext};
//!
//! // Inside a task: stop early if the run was cancelled.
//! fn should_stop() -> bool {
//!     RunContext::current().is_some_and(|run| run.is_cancelled())
//! }
//! # assert!(!should_stop());
//! let token = CancellationToken::new();
//! assert!(!token.is_cancelled());
//! token.cancel();
//! assert!(token.is_cancelled());
//! ```
//!
//! One idea a module: [`CancellationToken`] (`cancel`), [`RunContext`] and the
//! current run (`context`), [`RunOptions`] (`options`); [`RunId`] is below them all,
//! in the crate's `run_id` module, so the checkpoint log can name runs without
//! depending on the run context that depends on it.

mod cancel;
mod context;
mod options;

pub use crate::run_id::RunId;
pub use cancel::CancellationToken;
pub use context::{DrainGuard, RunContext, RunJournal};
pub(crate) use context::{RunStart, SharedRuns};
pub use options::RunOptions;
