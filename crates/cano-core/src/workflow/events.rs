//! What a run tells its observers around a plain task, worked out once per run: which
//! fast path the run takes, its lone observer kept at hand, and the events wanted
//! before each task. Plain functions, not futures: they add nothing to a run's future.

use super::{Workflow, WorkflowState};
use crate::observer::{Interest, RunObserver};
use crate::resource::ResourceKey;
use crate::run::{RunContext, RunId};

/// Which of the events before a plain task a run's observers want told.
#[derive(Clone, Copy)]
pub(super) enum Before {
    Nothing,
    State,
    Start,
    /// Both, in one call ([`RunObserver::state_and_task_started`]).
    Both,
}

impl Before {
    /// What a run whose observers want `heard` tells before a plain task.
    pub(super) fn wanted(heard: Interest) -> Self {
        match (
            heard.contains(Interest::STATES),
            heard.contains(Interest::TASK_STARTS),
        ) {
            (false, false) => Self::Nothing,
            (true, false) => Self::State,
            (false, true) => Self::Start,
            (true, true) => Self::Both,
        }
    }
}

impl<S: WorkflowState, K: ResourceKey> Workflow<S, K> {
    /// How run `run`, whose observers want `heard`, goes through its states:
    /// `(plain, lean, single, before)`.
    ///
    /// - `plain`: no span to record and no journal to write, so a direct slot's task
    ///   is awaited inline;
    /// - `lean`: plain, with no token to check and no observer of states or tasks;
    /// - `single`: a lone observer, reached from the run's future in one load instead
    ///   of through the workflow on every event;
    /// - `before`: the events to tell before a plain task.
    #[inline(always)]
    pub(super) fn fast_paths(
        &self,
        run: &RunContext,
        heard: Interest,
    ) -> (bool, bool, Option<&dyn RunObserver>, Before) {
        let plain = !run.is_traced() && run.journal_of().is_none();
        let lean = plain
            && run.cancellation_token().is_none()
            && !heard
                .intersects(Interest::STATES | Interest::TASK_STARTS | Interest::TASK_SUCCESSES);
        let (single, before) = if lean {
            (None, Before::Nothing)
        } else {
            (self.spec.observers.single(), Before::wanted(heard))
        };
        (plain, lean, single, before)
    }

    /// Tells the events wanted before a plain task, both in one call when both are
    /// wanted.
    #[inline(always)]
    pub(super) fn tell_before(
        &self,
        single: Option<&dyn RunObserver>,
        before: Before,
        run: RunId,
        state: &S,
        task: &str,
    ) {
        match before {
            Before::Nothing => {}
            Before::State => self.tell(single, |o| o.state_entered(run, state)),
            Before::Start => self.tell(single, |o| o.task_started(run, state, task, 1)),
            Before::Both => self.tell(single, |o| o.state_and_task_started(run, state, task)),
        }
    }

    /// Tells the observers of an event: `single`, when the run keeps its lone observer
    /// at hand, or each of them.
    #[inline(always)]
    pub(super) fn tell(
        &self,
        single: Option<&dyn RunObserver>,
        mut f: impl FnMut(&dyn RunObserver),
    ) {
        match single {
            Some(observer) => f(observer),
            None => self.spec.observers.each(f),
        }
    }
}
