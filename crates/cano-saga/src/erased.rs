//! [`ErasedCompensatable`]: a compensatable task whose output type is hidden behind
//! bytes, so tasks with different outputs fit one collection (cano 0.13's name).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use cano_core::checkpoint::{Bincode, Codec};
use cano_core::{CanoError, Resources, TaskConfig, TaskResult};

use crate::task::CompensatableTask;

/// The future of [`ErasedCompensatable::run`]: the next state and the encoded output.
pub type ForwardRunFuture<'a, S> =
    Pin<Box<dyn Future<Output = Result<(TaskResult<S>, Vec<u8>), CanoError>> + Send + 'a>>;

/// The future of [`ErasedCompensatable::compensate`].
pub type CompensateFuture<'a> = Pin<Box<dyn Future<Output = Result<(), CanoError>> + Send + 'a>>;

/// A [`CompensatableTask`] seen through bytes: `run` returns its output encoded (the
/// same bincode encoding a checkpointed run saves), `compensate` takes those bytes
/// back. Every compensatable task is one; the workflow engine does not need it (it
/// keeps each task's type), but code that holds compensatable tasks of several output
/// types in one place can, as `Box<dyn ErasedCompensatable<S, K>>`.
pub trait ErasedCompensatable<S, K>: Send + Sync {
    /// The task's name.
    fn name(&self) -> Cow<'static, str>;

    /// Retries and attempt timeout of the step.
    fn config(&self) -> TaskConfig;

    /// Does the step; returns the next state and the encoded output.
    fn run<'a>(&'a self, res: &'a Resources<K>) -> ForwardRunFuture<'a, S>;

    /// Decodes `output` and undoes the step that returned it. Bytes that do not decode
    /// as the task's output are a permanent error naming the task.
    fn compensate<'a>(&'a self, res: &'a Resources<K>, output: &'a [u8]) -> CompensateFuture<'a>;
}

impl<S, K, T> ErasedCompensatable<S, K> for T
where
    T: CompensatableTask<S, K>,
    S: Send + 'static,
    K: Send + Sync + 'static,
{
    fn name(&self) -> Cow<'static, str> {
        CompensatableTask::name(self)
    }

    fn config(&self) -> TaskConfig {
        CompensatableTask::config(self)
    }

    fn run<'a>(&'a self, res: &'a Resources<K>) -> ForwardRunFuture<'a, S> {
        Box::pin(async move {
            let (next, output) = CompensatableTask::run(self, res).await?;
            Ok((next, Bincode::encode(&output)?))
        })
    }

    fn compensate<'a>(&'a self, res: &'a Resources<K>, output: &'a [u8]) -> CompensateFuture<'a> {
        Box::pin(async move {
            let output: T::Output = Bincode::decode(output).map_err(|e| {
                CanoError::configuration(format!(
                    "the output given to compensate `{}` does not decode: {e}",
                    CompensatableTask::name(self)
                ))
                .with_hint("pass the bytes its own `run` returned")
                .permanent()
            })?;
            CompensatableTask::compensate(self, res, output).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Clone, PartialEq)]
    enum S {
        Book,
        Done,
    }

    #[derive(Default)]
    struct Book(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl CompensatableTask<S> for Book {
        type Output = String;
        async fn run(&self, _: &Resources) -> Result<(TaskResult<S>, String), CanoError> {
            Ok((TaskResult::Single(S::Done), "booking-7".into()))
        }
        async fn compensate(&self, _: &Resources, output: String) -> Result<(), CanoError> {
            self.0.lock().unwrap().push(output);
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_output_goes_through_bytes_and_back() {
        let task = Book::default();
        let erased: &dyn ErasedCompensatable<S, _> = &task;
        let res = Resources::empty();
        let (next, bytes) = erased.run(&res).await.unwrap();
        assert!(matches!(next, TaskResult::Single(S::Done)));
        assert_eq!(erased.name(), "Book");
        erased.compensate(&res, &bytes).await.unwrap();
        assert_eq!(*task.0.lock().unwrap(), ["booking-7"]);
        // Bytes that are not a String: a permanent error naming the task, nothing undone.
        let err = erased.compensate(&res, &[0xff, 0xff]).await.unwrap_err();
        assert!(
            err.is_permanent() && err.to_string().contains("`Book`"),
            "{err}"
        );
        assert_eq!(task.0.lock().unwrap().len(), 1);
        let _ = S::Book;
    }
}
