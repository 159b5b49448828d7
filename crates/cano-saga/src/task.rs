//! [`CompensatableTask`]: a step that changes an outside system, and how to undo it.

use std::borrow::Cow;
use std::time::Duration;

use cano_core::{CanoError, DefaultKey, Resources, RetryMode, TaskConfig, TaskResult};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A step that changes something outside the workflow (reserves stock, charges a card,
/// books a parcel) together with the way to undo it. Register it with
/// [`register_with_compensation`](crate::SagaExt::register_with_compensation).
///
/// [`run`](Self::run) does the step and returns the next state *and* an
/// [`Output`](Self::Output): whatever [`compensate`](Self::compensate) will need to undo
/// this very step (a reservation id, a charge id). When a later state of the run fails,
/// the engine compensates every step the run completed, newest first, each with the
/// output its own run returned.
///
/// The output is serialized (bincode) as soon as the step succeeds, and with a
/// checkpoint store it is saved with the run: a run resumed after a crash still undoes
/// work done before it. A compensation may therefore run in another process than its
/// step, and (after a crash in the middle of it) more than once: make it idempotent,
/// for example by undoing by id.
///
/// `run` is retried by [`config`](Self::config) like any task; `compensate` by
/// [`compensation_config`](Self::compensation_config), which by default tries harder
/// (see [`default_compensation_config`]).
#[async_trait::async_trait]
pub trait CompensatableTask<S, K = DefaultKey>: Send + Sync + 'static {
    /// What undoing the step needs to know.
    type Output: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Does the step; returns the next state and what undoing it needs.
    async fn run(&self, res: &Resources<K>) -> Result<(TaskResult<S>, Self::Output), CanoError>;

    /// Undoes the step that returned `output`.
    async fn compensate(&self, res: &Resources<K>, output: Self::Output) -> Result<(), CanoError>;

    /// Retries and attempt timeout of [`run`](Self::run) (the task default: three
    /// retries with exponential backoff).
    fn config(&self) -> TaskConfig {
        TaskConfig::default()
    }

    /// Retries and attempt timeout of [`compensate`](Self::compensate); see
    /// [`default_compensation_config`].
    fn compensation_config(&self) -> TaskConfig {
        default_compensation_config()
    }

    /// The name used in errors and observer events.
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(cano_core::short_type_name::<Self>())
    }
}

/// How a compensation is retried unless its task says otherwise: up to five retries
/// with exponential backoff from 100 ms (capped at 10 s), each attempt bounded by
/// 30 s so a hung call is abandoned and tried again. A compensation is often the call
/// that matters most, so it gets more chances than a step does.
pub fn default_compensation_config() -> TaskConfig {
    TaskConfig::new()
        .with_retry(RetryMode::exponential(5).with_max_delay(Duration::from_secs(10)))
        .with_attempt_timeout(Duration::from_secs(30))
}
