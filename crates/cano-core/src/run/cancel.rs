//! [`CancellationToken`]: asking a run to stop, or to be handed back untouched.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

#[derive(Default)]
struct CancelState {
    cancelled: AtomicBool,
    /// Set before `cancelled` by `hand_back`.
    handed_back: AtomicBool,
    notify: Notify,
}

/// Asks a run to stop. Clones share the same flag.
///
/// Cancelling makes the run return [`CanoError::Cancelled`](crate::CanoError::Cancelled)
/// at its next await point, after tearing its resources down; tasks that loop for long
/// can check [`RunContext::is_cancelled`](crate::RunContext::is_cancelled) to stop sooner.
#[derive(Clone, Default)]
pub struct CancellationToken {
    state: Arc<CancelState>,
}

impl CancellationToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels every run holding this token. Idempotent.
    pub fn cancel(&self) {
        if !self.state.cancelled.swap(true, Ordering::AcqRel) {
            self.state.notify.notify_waiters();
        }
    }

    /// Whether [`cancel`](Self::cancel) (or [`hand_back`](Self::hand_back)) was called.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.state.cancelled.load(Ordering::Acquire)
    }

    /// Stops every run holding this token without failing it: each returns
    /// [`CanoError::Cancelled`](crate::CanoError::Cancelled) at its next await point,
    /// as with [`cancel`](Self::cancel), but rolls none of its completed steps back
    /// and, with a checkpoint store, writes no `Fail` row: its log stays as it was, so
    /// whoever resumes it next goes on where it stopped. For a run that is not this
    /// process's to finish any more (a worker that lost its lease, or is stopping).
    pub fn hand_back(&self) {
        self.state.handed_back.store(true, Ordering::Release);
        self.cancel();
    }

    /// Whether [`hand_back`](Self::hand_back) was called.
    pub fn is_handed_back(&self) -> bool {
        self.state.handed_back.load(Ordering::Acquire)
    }

    /// A waiter that completes when the token is cancelled after this call (check
    /// [`is_cancelled`](Self::is_cancelled) too, for a cancel before it).
    pub(crate) fn waiter(&self) -> tokio::sync::futures::Notified<'_> {
        self.state.notify.notified()
    }

    /// Completes once the token is cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.state.notify.notified();
            tokio::pin!(notified);
            // Register before checking the flag, so a cancel in between is not missed.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

impl fmt::Debug for CancellationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancellationToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}
