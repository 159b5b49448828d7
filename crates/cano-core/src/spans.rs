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
use std::pin::Pin;

use crate::run::RunContext;
use crate::task::TaskFuture;

#[cfg(feature = "tracing")]
mod on {
    use super::*;
    use tracing::Instrument;

    /// Runs `f` (observer calls) inside the span of `run`. An untraced run skips the
    /// span: entering even a disabled one costs more than a no-op observer's call.
    #[inline]
    pub(crate) fn in_run<T>(run: &RunContext, f: impl FnOnce() -> T) -> T {
        if run.is_traced() {
            run.span().in_scope(f)
        } else {
            f()
        }
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
    ) -> impl Future<Output = F::Output> + use<F> {
        future.instrument(tracing::debug_span!(
            "cano.attempt",
            task = task,
            attempt = attempt
        ))
    }

    /// A task's first attempt inside its span, boxed with it, in a traced run; the
    /// task's future as it is otherwise. Same type either way, so an untraced run's
    /// task futures keep no room for a span (every split branch carries one).
    pub(crate) fn first_attempt<'a, S: 'a>(
        future: TaskFuture<'a, S>,
        task: &str,
        run: &RunContext,
    ) -> TaskFuture<'a, S> {
        if run.is_traced() {
            Box::pin(attempt(future, task, 1))
        } else {
            future
        }
    }

    /// The same for an attempt already in a box of its own (an admitted attempt):
    /// the span and a pointer to it go in a second box in a traced run only.
    pub(crate) fn first_boxed_attempt<F: Future>(
        future: Pin<Box<F>>,
        task: &str,
        run: &RunContext,
    ) -> futures::future::Either<Pin<Box<F>>, Pin<Box<impl Future<Output = F::Output> + use<F>>>>
    {
        use futures::future::Either;
        if run.is_traced() {
            Either::Right(Box::pin(attempt(future, task, 1)))
        } else {
            Either::Left(future)
        }
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

    pub(crate) fn first_attempt<'a, S>(
        future: TaskFuture<'a, S>,
        _task: &str,
        _run: &RunContext,
    ) -> TaskFuture<'a, S> {
        future
    }

    pub(crate) fn first_boxed_attempt<F: Future>(
        future: Pin<Box<F>>,
        _task: &str,
        _run: &RunContext,
    ) -> Pin<Box<F>> {
        future
    }
}

pub(crate) use on::{attempt, first_attempt, first_boxed_attempt, in_run, state};

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
