//! [`Inspector`]: one opened store, whatever its kind, and the questions asked of it.

use std::sync::Arc;

use cano_core::RunId;
use cano_core::checkpoint::{
    CheckpointStore, LiveStatus, PageCursor, RunCatalog, RunFilter, RunPage, StatusCounts,
};
use cano_recovery::{MemoryCheckpointStore, SledCheckpointStore};

use crate::error::InspectError;

/// The store behind an inspector, for what only one kind can do.
#[derive(Clone)]
pub(crate) enum Backend {
    Memory,
    Sled(SledCheckpointStore),
    #[cfg(feature = "postgres")]
    Postgres {
        store: cano_postgres::PostgresCheckpointStore,
        queue: cano_postgres::RunQueue,
    },
}

impl Backend {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Memory => "in-memory",
            Self::Sled(_) => "sled",
            #[cfg(feature = "postgres")]
            Self::Postgres { .. } => "PostgreSQL",
        }
    }
}

/// An opened store, read and acted on by the command line and the web console.
/// Cheap to clone.
///
/// ```
/// use cano_inspect::Inspector;
/// use cano_core::checkpoint::RunFilter;
/// use cano_recovery::MemoryCheckpointStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cano_inspect::InspectError> {
/// let inspector = Inspector::from_memory(MemoryCheckpointStore::new());
/// let page = inspector.list(&RunFilter::default(), None, 50).await?;
/// assert!(page.runs.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Inspector {
    pub(crate) catalog: Arc<dyn RunCatalog>,
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) backend: Backend,
    described: Arc<str>,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector")
            .field("store", &self.described)
            .finish()
    }
}

impl Inspector {
    /// Inspects a sled store this process has open (to mount the console in your own
    /// app beside your workflows).
    pub fn from_sled(store: SledCheckpointStore) -> Self {
        Self {
            catalog: Arc::new(store.clone()),
            described: format!("sled:{}", store.path().display()).into(),
            store: Arc::new(store.clone()),
            backend: Backend::Sled(store),
        }
    }

    /// Inspects an in-memory store (tests, demos).
    pub fn from_memory(store: MemoryCheckpointStore) -> Self {
        Self {
            catalog: Arc::new(store.clone()),
            store: Arc::new(store),
            backend: Backend::Memory,
            described: "in-memory store".into(),
        }
    }

    /// Inspects a PostgreSQL store this process has connected.
    #[cfg(feature = "postgres")]
    pub fn from_postgres(store: cano_postgres::PostgresCheckpointStore) -> Self {
        Self {
            catalog: Arc::new(store.clone()),
            store: Arc::new(store.clone()),
            described: format!("PostgreSQL (schema {})", store.schema()).into(),
            backend: Backend::Postgres {
                queue: cano_postgres::RunQueue::new(&store),
                store,
            },
        }
    }

    pub(crate) fn described(mut self, text: String) -> Self {
        self.described = text.into();
        self
    }

    /// What the inspector is looking at (`sled:/path`, a URL without its password).
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// The kind of store (`sled`, `PostgreSQL`, `in-memory`).
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The runs `filter` matches, newest first, `limit` at most (1 to 10,000),
    /// starting after `after`.
    pub async fn list(
        &self,
        filter: &RunFilter,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<RunPage, InspectError> {
        if limit == 0 || limit > 10_000 {
            return Err(InspectError::BadInput(format!(
                "a page of {limit} runs: ask for 1 to 10000"
            )));
        }
        Ok(self.catalog.list_runs(filter, after, limit).await?)
    }

    /// How many runs `filter` matches, by status.
    pub async fn counts(&self, filter: &RunFilter) -> Result<StatusCounts, InspectError> {
        Ok(self.catalog.count_runs(filter).await?)
    }

    /// Where `run` stands now (its listing), or [`InspectError::UnknownRun`].
    pub async fn status(&self, run: RunId) -> Result<LiveStatus, InspectError> {
        Ok(self.summary(run).await?.status)
    }

    /// The listing of one run.
    pub(crate) async fn summary(
        &self,
        run: RunId,
    ) -> Result<cano_core::checkpoint::ListedRun, InspectError> {
        let filter = RunFilter {
            run: Some(run),
            ..RunFilter::default()
        };
        let page = self.catalog.list_runs(&filter, None, 1).await?;
        page.runs
            .into_iter()
            .next()
            .ok_or(InspectError::UnknownRun(run))
    }

    /// Closes the store, putting what actions wrote on disk (sled); call it before a
    /// command-line process exits.
    pub async fn close(self) -> Result<(), InspectError> {
        let Self {
            catalog,
            store,
            backend,
            ..
        } = self;
        drop((catalog, store));
        if let Backend::Sled(store) = backend {
            store.close().await?;
        }
        Ok(())
    }
}
