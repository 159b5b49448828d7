//! Tracing spans around a run, each state and each task attempt (feature `tracing`),
//! attached with `Instrument`, so no span guard is ever held across an `.await`.
//! Without the feature each function hands its future back untouched.
//!
//! The run's span is not wrapped around the run's future (that future is large, and
//! wrapping it costs more than the run's transitions): it is kept in the run's context
//! and made the parent of each state's span, and the run's own events are emitted in it.
//! A run whose span no subscriber wanted when it started records no state or attempt
//! spans either: its plain tasks then take the engine's untraced path, so compiling
//! the feature in costs next to nothing where nothing listens.

use std::fmt::Debug;
use std::future::Future;

use crate::run::RunContext;

#[cfg(feature = "tracing")]
mod on {
    use super::*;
    use crate::run::RunId;
    use tracing::Instrument;

    /// The span of run `run` of workflow `workflow`.
    pub(crate) fn run_span(run: RunId, workflow: &str) -> tracing::Span {
        tracing::info_span!("cano.run", run_id = %run, workflow = workflow)
    }

    /// Runs `f` (observer calls) inside the span of `run`.
    pub(crate) fn in_run<T>(run: &RunContext, f: impl FnOnce() -> T) -> T {
        run.span().in_scope(f)
    }

    /// `future` inside the span of `state`, a child of its run's span.
    pub(crate) fn state<F: Future>(
        future: F,
        state: &dyn Debug,
        run: &RunContext,
    ) -> impl Future<Output = F::Output> {
        future.instrument(tracing::info_span!(parent: run.span(), "cano.state", state = ?state))
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

    pub(crate) fn in_run<T>(_run: &RunContext, f: impl FnOnce() -> T) -> T {
        f()
    }

    pub(crate) fn state<F: Future>(future: F, _state: &dyn Debug, _run: &RunContext) -> F {
        future
    }

    pub(crate) fn attempt<F: Future>(future: F, _task: &str, _attempt: usize) -> F {
        future
    }
}

#[cfg(feature = "tracing")]
pub(crate) use on::run_span;
pub(crate) use on::{attempt, in_run, state};

/// Awaits `$future` inside the span of `$state` (in run `$run`). The future is pinned where it is
/// built and the span wraps a pointer to it: wrapping the future itself would copy
/// its whole state machine into the wrapper on every transition.
macro_rules! await_in_state {
    ($future:expr, $state:expr, $run:expr) => {{
        #[cfg(feature = "tracing")]
        {
            let future = std::pin::pin!($future);
            $crate::spans::state(future, $state, $run).await
        }
        #[cfg(not(feature = "tracing"))]
        {
            let _ = (&$state, &$run);
            $future.await
        }
    }};
}
pub(crate) use await_in_state;
