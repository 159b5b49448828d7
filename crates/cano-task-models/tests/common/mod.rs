//! Shared by the task-model tests: the `Task` impl the facade's macros would write, and
//! the checkpoint stores the durable tests run on.
#![allow(dead_code)]

use std::sync::Arc;

use cano_core::CheckpointStore;

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
