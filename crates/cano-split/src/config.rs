//! [`JoinConfig`]: the strategy, the state to join into, and the limits of a split.

use std::time::Duration;

use crate::strategy::JoinStrategy;

/// How a split state joins: which [`JoinStrategy`], which state comes next, and
/// optionally a timeout for the whole split and a bulkhead (how many branches may run
/// at once).
///
/// ```
/// use std::time::Duration;
/// use cano_split::{JoinConfig, JoinStrategy};
///
/// #[derive(Debug, Clone, PartialEq, Eq, Hash)]
/// enum Step { Fetch, Merge }
///
/// let join = JoinConfig::new(JoinStrategy::Quorum(2), Step::Merge)
///     .with_timeout(Duration::from_secs(2))
///     .with_bulkhead(4);
/// assert_eq!(join.join_state(), &Step::Merge);
/// assert_eq!(join.bulkhead(), Some(4));
/// ```
///
/// Its fields are public, as in cano 0.13; a mistake in them (a bulkhead of 0, a zero
/// timeout, `PartialTimeout` without a timeout) is reported by `Workflow::validate` and
/// by every run, naming the state.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct JoinConfig<S> {
    /// When the split moves on.
    pub strategy: JoinStrategy,
    /// The state it moves to.
    pub join_state: S,
    /// A bound on the whole split, if any.
    pub timeout: Option<Duration>,
    /// How many branches may run at once, if limited.
    pub bulkhead: Option<usize>,
}

impl<S> JoinConfig<S> {
    /// Joins with `strategy`, then moves to `join_state`.
    pub fn new(strategy: JoinStrategy, join_state: S) -> Self {
        Self {
            strategy,
            join_state,
            timeout: None,
            bulkhead: None,
        }
    }

    /// Bounds the whole split by `timeout`. When it passes, `PartialTimeout` proceeds
    /// with what finished (if anything did); otherwise the split fails with a
    /// `CanoError::Workflow` error (as in cano 0.13) saying the timeout was exceeded
    /// and how many branches succeeded, failed and were still running.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Moves to `state` once the strategy is satisfied.
    pub fn with_join_state(mut self, state: S) -> Self {
        self.join_state = state;
        self
    }

    /// Runs at most `limit` branches at a time: the next branch is started only when a
    /// running one finishes, so no more than `limit` are ever spawned at once.
    pub fn with_bulkhead(mut self, limit: usize) -> Self {
        self.bulkhead = Some(limit);
        self
    }

    /// The join strategy.
    pub fn strategy(&self) -> JoinStrategy {
        self.strategy
    }

    /// The state the split moves to once its strategy is satisfied.
    pub fn join_state(&self) -> &S {
        &self.join_state
    }

    /// The split's timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The bulkhead, if any.
    pub fn bulkhead(&self) -> Option<usize> {
        self.bulkhead
    }

    /// Mistakes that can be seen before any branch runs.
    pub(crate) fn check(&self) -> Vec<String> {
        let mut problems = self.strategy.check(self.timeout.is_some());
        if self.bulkhead == Some(0) {
            problems.push(
                "a bulkhead of 0 would never start a branch; allow at least 1 with .with_bulkhead(n)"
                    .to_owned(),
            );
        }
        if self.timeout == Some(Duration::ZERO) {
            problems.push(
                "a join timeout of zero gives no branch time to finish; give it a positive duration"
                    .to_owned(),
            );
        }
        problems
    }
}
