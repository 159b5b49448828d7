//! Tracing spans around a run, each state and each task attempt (feature `tracing`),
//! attached with `Instrument`, so no span guard is ever held across an `.await`.
//! Without the feature each function hands its future back untouched.

use std::fmt::Debug;
use std::future::Future;

use crate::run::RunId;

#[cfg(feature = "tracing")]
mod on {
    use super::*;
    use tracing::Instrument;

    /// `future` inside the span of run `run` of workflow `workflow`.
    pub(crate) fn run<F: Future>(
        future: F,
        run: RunId,
        workflow: &str,
    ) -> impl Future<Output = F::Output> {
        future.instrument(tracing::info_span!("cano.run", run_id = %run, workflow = workflow))
    }

    /// `future` inside the span of `state`.
    pub(crate) fn state<F: Future>(
        future: F,
        state: &dyn Debug,
    ) -> impl Future<Output = F::Output> {
        future.instrument(tracing::info_span!("cano.state", state = ?state))
    }

    /// `future` inside the span of attempt `attempt` of `task`.
    pub(crate) fn attempt<F: Future>(
        future: F,
        task: &str,
        attempt: usize,
    ) -> impl Future<Output = F::Output> {
        future.instrument(tracing::debug_span!(
            "cano.attempt",
            task = task,
            attempt = attempt
        ))
    }
}

#[cfg(not(feature = "tracing"))]
mod on {
    use super::*;

    pub(crate) fn run<F: Future>(future: F, _run: RunId, _workflow: &str) -> F {
        future
    }

    pub(crate) fn state<F: Future>(future: F, _state: &dyn Debug) -> F {
        future
    }

    pub(crate) fn attempt<F: Future>(future: F, _task: &str, _attempt: usize) -> F {
        future
    }
}

pub(crate) use on::{attempt, run, state};
