//! [`DynBatchTask`]: a batch task behind a pointer, its items and outputs boxed as
//! `dyn Any` (cano 0.13's object-safe form, for collections of batch tasks).
//!
//! [`BatchTask`] declares its steps as native `async fn`s so an item's future is not
//! boxed; that makes it unusable as `dyn BatchTask`. A batch task whose `Item` is
//! [`DefaultBatchItem`] and whose `ItemOutput` is [`DefaultBatchItemOutput`] is also a
//! [`DynBatchTask`], and a [`BatchTaskObject`] is again a [`BatchTask`], run with
//! [`run_batch`](crate::run_batch) (from a task of your own: a shared pointer cannot
//! itself be registered as a task). Each item's future is boxed on this path.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cano_core::{CanoError, DefaultKey, Resources, TaskConfig, TaskResult};

use crate::batch::{
    BatchConfig, BatchTask, DefaultBatchItem, DefaultBatchItemOutput, ItemCodec, ItemResult,
};

/// A boxed future of a [`DynBatchTask`] step.
pub type BatchFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, CanoError>> + Send + 'a>>;

/// A batch task seen through boxed items: every [`BatchTask`] whose items and outputs
/// are [`DefaultBatchItem`] and [`DefaultBatchItemOutput`] is one.
pub trait DynBatchTask<S, K = DefaultKey>: Send + Sync + 'static {
    /// Loads the items.
    fn load_items<'a>(&'a self, res: &'a Resources<K>) -> BatchFuture<'a, Vec<DefaultBatchItem>>;

    /// Processes one item.
    fn process<'a>(
        &'a self,
        res: &'a Resources<K>,
        item: &'a DefaultBatchItem,
    ) -> BatchFuture<'a, DefaultBatchItemOutput>;

    /// Given every item's result, in load order, returns the next state.
    fn finish_items<'a>(
        &'a self,
        res: &'a Resources<K>,
        results: Vec<ItemResult<DefaultBatchItemOutput>>,
    ) -> BatchFuture<'a, TaskResult<S>>;

    /// Concurrency, per-item retries and timeout, where items run.
    fn batch_config(&self) -> BatchConfig;

    /// How the whole batch is retried.
    fn config(&self) -> TaskConfig;

    /// The task's name.
    fn name(&self) -> Cow<'static, str>;
}

impl<S, K, T> DynBatchTask<S, K> for T
where
    T: BatchTask<S, K, Item = DefaultBatchItem, ItemOutput = DefaultBatchItemOutput>,
    S: 'static,
    K: Send + Sync + 'static,
{
    fn load_items<'a>(&'a self, res: &'a Resources<K>) -> BatchFuture<'a, Vec<DefaultBatchItem>> {
        Box::pin(BatchTask::load(self, res))
    }

    fn process<'a>(
        &'a self,
        res: &'a Resources<K>,
        item: &'a DefaultBatchItem,
    ) -> BatchFuture<'a, DefaultBatchItemOutput> {
        Box::pin(BatchTask::process_item(self, res, item))
    }

    fn finish_items<'a>(
        &'a self,
        res: &'a Resources<K>,
        results: Vec<ItemResult<DefaultBatchItemOutput>>,
    ) -> BatchFuture<'a, TaskResult<S>> {
        Box::pin(BatchTask::finish(self, res, results))
    }

    fn batch_config(&self) -> BatchConfig {
        BatchTask::batch_config(self)
    }

    fn config(&self) -> TaskConfig {
        BatchTask::config(self)
    }

    fn name(&self) -> Cow<'static, str> {
        BatchTask::name(self)
    }
}

/// A shared batch task of any type (cano 0.13's name).
pub type BatchTaskObject<S, K = DefaultKey> = Arc<dyn DynBatchTask<S, K>>;

/// A shared erased batch task runs as the task it shares. Its outputs are not saved in
/// a checkpointed run (boxed values have no encoding), and it runs on the state's own
/// task, not on worker threads.
impl<S, K> BatchTask<S, K> for Arc<dyn DynBatchTask<S, K>>
where
    S: 'static,
    K: Send + Sync + 'static,
{
    type Item = DefaultBatchItem;
    type ItemOutput = DefaultBatchItemOutput;

    async fn load(&self, res: &Resources<K>) -> Result<Vec<DefaultBatchItem>, CanoError> {
        (**self).load_items(res).await
    }

    async fn process_item(
        &self,
        res: &Resources<K>,
        item: &DefaultBatchItem,
    ) -> Result<DefaultBatchItemOutput, CanoError> {
        (**self).process(res, item).await
    }

    async fn finish(
        &self,
        res: &Resources<K>,
        results: Vec<ItemResult<DefaultBatchItemOutput>>,
    ) -> Result<TaskResult<S>, CanoError> {
        (**self).finish_items(res, results).await
    }

    fn batch_config(&self) -> BatchConfig {
        (**self).batch_config()
    }

    fn config(&self) -> TaskConfig {
        (**self).config()
    }

    fn name(&self) -> Cow<'static, str> {
        (**self).name()
    }

    fn item_codec(&self) -> Option<ItemCodec<DefaultBatchItemOutput>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_batch;

    #[derive(Debug, Clone, PartialEq)]
    enum S {
        Sum,
        Done(u64),
    }

    /// Sums squares, with its items boxed.
    struct Squares(u64);

    impl BatchTask<S> for Squares {
        type Item = DefaultBatchItem;
        type ItemOutput = DefaultBatchItemOutput;

        async fn load(&self, _: &Resources) -> Result<Vec<DefaultBatchItem>, CanoError> {
            Ok((1..=self.0)
                .map(|n| Box::new(n) as DefaultBatchItem)
                .collect())
        }

        async fn process_item(
            &self,
            _: &Resources,
            item: &DefaultBatchItem,
        ) -> Result<DefaultBatchItemOutput, CanoError> {
            let n = item
                .downcast_ref::<u64>()
                .ok_or_else(|| CanoError::task_execution("an item that is not a u64"))?;
            if *n == 4 {
                return Err(CanoError::task_execution("4 is unlucky"));
            }
            Ok(Box::new(n * n))
        }

        async fn finish(
            &self,
            _: &Resources,
            results: Vec<ItemResult<DefaultBatchItemOutput>>,
        ) -> Result<TaskResult<S>, CanoError> {
            let mut sum = 0;
            for result in results.into_iter().flatten() {
                sum += *result
                    .downcast::<u64>()
                    .map_err(|_| CanoError::task_execution("not a u64"))?;
            }
            Ok(TaskResult::Single(S::Done(sum)))
        }
    }

    #[tokio::test]
    async fn a_shared_erased_batch_runs_as_the_task_it_shares() {
        let tasks: Vec<BatchTaskObject<S>> = vec![Arc::new(Squares(5))];
        assert_eq!(DynBatchTask::name(&*tasks[0]), "Squares");
        let res = Resources::empty();
        let next = run_batch(&tasks[0], &res).await.unwrap();
        // 1 + 4 + 9 + 25: the failed item reaches `finish` as an error.
        assert!(matches!(next, TaskResult::Single(S::Done(39))), "{next:?}");
        let _ = S::Sum;
    }
}
