//! Shared by the task-model tests: the `Task` impl the facade's macros would write, and
//! a checkpoint store that reports each row it takes.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::SystemTime;

use cano_core::{CanoError, CheckpointRow, CheckpointStore, RowKind, RunId, RunSummary};
use tokio::sync::watch;

/// Writes `impl Task<$state> for $ty` through `$runner`, as `#[task::poll]` and its
/// siblings do in the facade.
#[macro_export]
macro_rules! as_task {
    ($ty:ty, $model:ident, $runner:path, $state:ty) => {
        impl cano_core::Task<$state> for $ty {
            fn run<'a, 'b, 'c>(
                &'a self,
                res: &'b cano_core::Resources,
            ) -> cano_core::TaskFuture<'c, $state>
            where
                'a: 'c,
                'b: 'c,
                Self: 'c,
            {
                Box::pin($runner(self, res))
            }
            fn config(&self) -> cano_core::TaskConfig {
                <$ty as $model<$state>>::config(self)
            }
            fn name(&self) -> std::borrow::Cow<'static, str> {
                <$ty as $model<$state>>::name(self)
            }
        }
    };
}

/// A store that lets a test await the rows it has taken.
pub struct Watched {
    inner: Arc<dyn CheckpointStore>,
    rows: watch::Sender<Vec<CheckpointRow>>,
}

impl Watched {
    pub fn new(inner: Arc<dyn CheckpointStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            rows: watch::channel(Vec::new()).0,
        })
    }

    /// Waits until at least `n` `Step` rows were appended.
    pub async fn steps(&self, n: usize) {
        self.until(|rows| rows.iter().filter(|r| r.kind == RowKind::Step).count() >= n)
            .await;
    }

    /// Every row appended so far, in order (truncation does not remove them here).
    pub fn appended(&self) -> Vec<CheckpointRow> {
        self.rows.borrow().clone()
    }

    /// Waits until the rows appended so far satisfy `done`.
    pub async fn until(&self, done: impl Fn(&[CheckpointRow]) -> bool) {
        let mut seen = self.rows.subscribe();
        seen.wait_for(|rows| done(rows)).await.unwrap();
    }
}

/// Where the durable tests keep their rows: in memory, or in a sled database that is
/// closed and reopened across the simulated crash.
pub enum Backend {
    Memory(cano_recovery::MemoryCheckpointStore),
    Sled(tempfile::TempDir),
}

impl Backend {
    pub fn memory() -> Self {
        Self::Memory(Default::default())
    }

    pub fn sled() -> Self {
        Self::Sled(tempfile::tempdir().unwrap())
    }

    /// The store, as a process starting now would open it.
    pub fn open(&self) -> Arc<dyn CheckpointStore> {
        match self {
            Self::Memory(store) => Arc::new(store.clone()),
            Self::Sled(dir) => {
                Arc::new(cano_recovery::SledCheckpointStore::open(dir.path()).unwrap())
            }
        }
    }
}

#[async_trait::async_trait]
impl CheckpointStore for Watched {
    async fn append(&self, row: CheckpointRow) -> Result<(), CanoError> {
        self.inner.append(row.clone()).await?;
        self.rows.send_modify(|rows| rows.push(row));
        Ok(())
    }
    async fn load(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError> {
        self.inner.load(run).await
    }
    async fn truncate(&self, run: RunId, before: u64) -> Result<(), CanoError> {
        self.inner.truncate(run, before).await
    }
    async fn clear(&self, run: RunId) -> Result<(), CanoError> {
        self.inner.clear(run).await
    }
    async fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError> {
        self.inner.unfinished().await
    }
    async fn prune(&self, older_than: SystemTime) -> Result<usize, CanoError> {
        self.inner.prune(older_than).await
    }
}
