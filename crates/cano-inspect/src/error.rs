//! What can go wrong when inspecting a store, each error saying how to fix it.

use std::path::PathBuf;

use cano_core::checkpoint::LiveStatus;
use cano_core::{CanoError, RunId};

/// An inspector error: bad input, a store that cannot be opened, or an action the run
/// is in the wrong status for. Never a panic.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// `--store` names no store this tool reads.
    #[error("{given:?} is not a store: use sled:PATH or postgres://user@host/db")]
    BadStoreSpec {
        /// What was given.
        given: String,
    },
    /// The sled directory holds no store; nothing was created.
    #[error(
        "there is no sled store at {}: nothing was created. Check the path (the directory a program passed to SledCheckpointStore::open)",
        path.display()
    )]
    NoSledStore {
        /// The directory.
        path: PathBuf,
    },
    /// Another process has the sled store open (sled lets one process in at a time).
    #[error(
        "the sled store at {} is open in another process (sled lets one process open it at a time): stop that process, or copy the directory and inspect the copy",
        path.display()
    )]
    SledInUse {
        /// The directory.
        path: PathBuf,
    },
    /// This build has no PostgreSQL support.
    #[error(
        "this cano was built without PostgreSQL support: build cano-inspect with its `postgres` feature"
    )]
    NoPostgres,
    /// The store failed (or refused, as with a schema from a newer cano).
    #[error("{0}")]
    Store(#[from] CanoError),
    /// No run has this id in the store.
    #[error("run {0} is not in this store: `cano runs list` shows the runs it holds")]
    UnknownRun(RunId),
    /// The run's status does not allow the action.
    #[error("cannot {action} run {run}: it is {status}; {hint}")]
    WrongStatus {
        /// The action.
        action: &'static str,
        /// The run.
        run: RunId,
        /// Where it stands.
        status: LiveStatus,
        /// What would work.
        hint: &'static str,
    },
    /// The action does not exist for this kind of store.
    #[error("cannot {action} on a {backend} store: {hint}")]
    Unsupported {
        /// The action.
        action: &'static str,
        /// The store's kind.
        backend: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// An argument out of range or unreadable.
    #[error("{0}")]
    BadInput(String),
}

impl InspectError {
    /// Whether the error is the caller's (bad input, unknown run, wrong status) rather
    /// than the store's: the web console answers 4xx for these.
    pub fn is_caller_error(&self) -> bool {
        !matches!(self, Self::Store(_) | Self::SledInUse { .. })
    }
}
