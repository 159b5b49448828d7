//! [`RunHandle`]: a run on the tokio runtime, to await or cancel.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::JoinHandle;

use crate::error::CanoError;
use crate::run::{CancellationToken, RunId};

/// A run started with [`Workflow::spawn`](crate::Workflow::spawn): await it for the result, or cancel it.
#[must_use = "dropping the handle detaches the run; await it to get its result"]
pub struct RunHandle<S> {
    join: JoinHandle<Result<S, CanoError>>,
    token: CancellationToken,
    run_id: RunId,
}

impl<S> RunHandle<S> {
    pub(crate) fn new(
        join: JoinHandle<Result<S, CanoError>>,
        token: CancellationToken,
        run_id: RunId,
    ) -> Self {
        Self {
            join,
            token,
            run_id,
        }
    }

    /// Cancels the run: it stops at its next await point, tears its resources down and
    /// returns [`CanoError::Cancelled`].
    pub fn cancel(&self) {
        self.token.cancel();
    }

    /// The run's id.
    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    /// The run's cancellation token.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.token
    }

    /// Whether the run has ended.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}

impl<S> Future for RunHandle<S> {
    type Output = Result<S, CanoError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.join)
            .poll(cx)
            .map(|joined| match joined {
                Ok(result) => result,
                Err(e) if e.is_panic() => Err(CanoError::from_panic(e.into_panic())),
                Err(_) => Err(CanoError::cancelled(
                    "the run's tokio task was aborted (its runtime shut down)",
                )
                .with_hint("keep the tokio runtime running until the spawned run has finished")),
            })
    }
}

impl<S> std::fmt::Debug for RunHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle")
            .field("run_id", &self.run_id)
            .field("cancelled", &self.token.is_cancelled())
            .finish()
    }
}
