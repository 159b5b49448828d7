//! A run's state loop under its workflow timeout and cancellation token.
//!
//! Written as a plain future rather than a `select!` over async blocks: every run of a
//! cancellable workflow (every spawned run) carries this in its future, and as fields of
//! one struct the loop, the token's waiter and the timer take no more room than their
//! own sizes.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::sync::futures::Notified;
use tokio::time::Sleep;

use crate::error::CanoError;
use crate::run::RunContext;

/// How the states of a run stopped, before it is turned into an error that names the
/// state (which the loop no longer borrows by then).
pub(crate) enum Stop {
    Finished(Result<(), CanoError>),
    /// The workflow timeout `limit` ran out, `elapsed` after the run started.
    TimedOut {
        limit: Duration,
        elapsed: Duration,
    },
    Cancelled,
    /// Something in the loop panicked outside a task's own guard (a plain task's first
    /// attempt is not guarded on its own: the loop is); the loop cannot go on.
    Panicked(Box<dyn std::any::Any + Send>),
}

pin_project! {
    /// The state loop `states`, stopped early by the run's token or the workflow
    /// timeout. Checks cancellation first, then the deadline, then polls the states.
    pub(crate) struct Bounded<'a, F> {
        // Pinned where it was built: moving a future copies all of it, however little of
        // it is in use yet.
        states: Pin<&'a mut F>,
        // Created before the token's flag is first read, so a cancel in between still
        // wakes the run.
        #[pin]
        cancel: Option<Notified<'a>>,
        // Boxed: most workflows have no timeout and carry one null pointer.
        timer: Option<Pin<Box<Sleep>>>,
        // Borrowed from the workflow: a copy would take two words in every run.
        limit: &'a Option<Duration>,
        run: &'a RunContext,
        cancel_seen: bool,
    }
}

impl<'a, F> Bounded<'a, F> {
    /// Bounds `states` by `run`'s token (if it has one) and by `limit` from now.
    #[inline]
    pub(crate) fn new(
        states: Pin<&'a mut F>,
        run: &'a RunContext,
        limit: &'a Option<Duration>,
    ) -> Self {
        Self {
            states,
            cancel: run.cancellation_token().map(|token| token.waiter()),
            timer: limit.map(|limit| Box::pin(tokio::time::sleep(limit))),
            limit,
            run,
            cancel_seen: false,
        }
    }
}

impl<F: Future<Output = Result<(), CanoError>>> Future for Bounded<'_, F> {
    type Output = Stop;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Stop> {
        let this = self.project();
        if this.cancel.is_none() && this.timer.is_none() {
            return poll_caught(this.states.as_mut(), cx);
        }
        if !*this.cancel_seen
            && let Some(waiter) = this.cancel.as_pin_mut()
        {
            // Only a cancel notifies the token, so a woken waiter means cancelled.
            if this.run.is_cancelled() || waiter.poll(cx).is_ready() {
                *this.cancel_seen = true;
            }
        }
        let cancel_seen = *this.cancel_seen;
        // A task holding a drain guard finishes its work in hand first.
        if cancel_seen && !this.run.is_draining() {
            return Poll::Ready(Stop::Cancelled);
        }
        if let Some(timer) = this.timer
            && timer.as_mut().poll(cx).is_ready()
        {
            let limit = this.limit.unwrap_or_default();
            let late = timer.deadline().elapsed();
            return Poll::Ready(Stop::TimedOut {
                limit,
                elapsed: limit.saturating_add(late),
            });
        }
        match poll_caught(this.states.as_mut(), cx) {
            Poll::Ready(_) if cancel_seen => Poll::Ready(Stop::Cancelled),
            Poll::Ready(stop) => Poll::Ready(stop),
            // The drain ended while the state went on: stop now.
            Poll::Pending if cancel_seen && !this.run.is_draining() => Poll::Ready(Stop::Cancelled),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The state loop of a run with neither token nor timeout: only a panic stops it
/// early. A fraction of [`Bounded`]'s size, which a light run's future would carry.
pub(crate) struct Caught<'a, F>(pub(crate) Pin<&'a mut F>);

impl<F: Future<Output = Result<(), CanoError>>> Future for Caught<'_, F> {
    type Output = Stop;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Stop> {
        poll_caught(self.0.as_mut(), cx)
    }
}

/// Polls the state loop, turning a panic into [`Stop::Panicked`].
#[inline]
fn poll_caught<F: Future<Output = Result<(), CanoError>>>(
    states: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<Stop> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| states.poll(cx))) {
        Ok(poll) => poll.map(Stop::Finished),
        Err(panic) => Poll::Ready(Stop::Panicked(panic)),
    }
}
