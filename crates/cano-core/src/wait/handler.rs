//! The wait state's handler: takes a signal from the inbox, or times out, or parks.

use std::borrow::Cow;
use std::time::Duration;

use super::{WAKE_AT_KEY, Wait, too_far};
use crate::checkpoint::{DurableStore, Journal, SignalStore, WaitRecord, now_ms};
use crate::error::CanoError;
use crate::resource::ResourceKey;
use crate::run::RunContext;
use crate::run_id::RunId;
use crate::workflow::WorkflowState;
use crate::workflow::handler::{
    HandlerFuture, HandlerInfo, SignalInfo, StateContext, StateHandler,
};

/// A [`Wait`] registered for a state, with how the workflow encodes its states.
pub(crate) struct WaitHandler<S> {
    pub(crate) wait: Wait<S>,
    pub(crate) names: Vec<String>,
    pub(crate) encode: fn(&S) -> Result<Vec<u8>, CanoError>,
}

impl<S: WorkflowState> WaitHandler<S> {
    pub(crate) fn new(wait: Wait<S>, encode: fn(&S) -> Result<Vec<u8>, CanoError>) -> Self {
        let names = wait.on.iter().map(|o| o.info.name.clone()).collect();
        Self {
            wait,
            names,
            encode,
        }
    }

    async fn run(&self, state: &S, run: &RunContext) -> Result<S, CanoError> {
        let journal = run.journal_of().ok_or_else(|| no_inbox(state))?;
        let signals = journal.signals().ok_or_else(|| no_inbox(state))?;
        let record = journal
            .take_resumed_cursor()
            .map(|bytes| WaitRecord::decode(&bytes))
            .transpose()
            .map_err(|e| {
                CanoError::store(format!(
                    "run {} resumed in wait state {state:?}, whose saved wait cannot be read: {}",
                    run.run_id(),
                    e.message()
                ))
                .with_source(e)
                .permanent()
            })?;
        // The workflow's timeout counts while the run is parked: past it, the run fails
        // as a live run would, whatever woke it.
        let limit = journal.run_deadline_ms();
        if limit.is_some_and(|at| at <= now_ms()) {
            return Err(self.timed_out_run(state, journal));
        }
        let (deadline, parked) = match record {
            // Resumed after its signal was taken: the same signal leads on again.
            Some(WaitRecord::Signal { name, payload, id }) => {
                return self.next_for(state, run.run_id(), &name, id, &payload);
            }
            Some(WaitRecord::DeadlinePassed) => return self.timed_out(state),
            // Woken (or resumed) while parked: the deadline set when it parked holds.
            Some(WaitRecord::Parked { deadline_ms, .. }) => (deadline_ms, false),
            None => {
                // It wakes at its own deadline or the workflow's, whichever is first.
                let deadline = match (self.deadline(state, journal.durable())?, limit) {
                    (Some(own), Some(run)) => Some(own.min(run)),
                    (own, run) => own.or(run),
                };
                self.park(journal, state, deadline).await?;
                (deadline, true)
            }
        };
        if let Some(next) = self.take_signal(journal, signals, state).await? {
            return Ok(next);
        }
        if limit.is_some_and(|at| at <= now_ms()) {
            return Err(self.timed_out_run(state, journal));
        }
        if deadline.is_some_and(|at| at <= now_ms()) {
            journal
                .received(WaitRecord::DeadlinePassed.encode()?, None)
                .await?;
            return self.timed_out(state);
        }
        if !parked {
            // Parked anew (its log ends in a `Wait` row again), then one more look: a
            // signal sent before that row was told the run was not waiting, so no one
            // was woken for it.
            self.park(journal, state, deadline).await?;
            if let Some(next) = self.take_signal(journal, signals, state).await? {
                return Ok(next);
            }
        }
        // A server of this workflow's waits in this process looks again: this run's
        // deadline may come before any it knew of.
        super::bell::bell(journal.workflow_id()).notify_one();
        Err(self.parked(state, run.run_id(), deadline))
    }

    /// The oldest signal in the inbox this wait takes, taken: its `Received` row and
    /// its removal from the inbox in one step.
    async fn take_signal(
        &self,
        journal: &Journal,
        signals: &dyn SignalStore,
        state: &S,
    ) -> Result<Option<S>, CanoError> {
        if self.names.is_empty() {
            return Ok(None);
        }
        let run = journal.run_id();
        let Some(signal) = signals.first_for(run, &self.names).await? else {
            return Ok(None);
        };
        // Decoded before it is taken: a payload no handler reads stays in the inbox.
        let next = self.next_for(state, run, &signal.name, signal.id, &signal.payload)?;
        let record = WaitRecord::Signal {
            id: signal.id,
            name: signal.name,
            payload: signal.payload,
        };
        journal.received(record.encode()?, Some(signal.id)).await?;
        Ok(Some(next))
    }

    /// The state signal `name` (`id`) with `payload` leads to.
    fn next_for(
        &self,
        state: &S,
        run: RunId,
        name: &str,
        id: u64,
        payload: &[u8],
    ) -> Result<S, CanoError> {
        let Some(on) = self.wait.on.iter().find(|o| o.info.name == name) else {
            return Err(CanoError::workflow(format!(
                "run {run} took signal {name:?} in wait state {state:?}, which no longer waits for it"
            ))
            .at(state, "")
            .with_hint("resume it with the build that wrote it, or add the signal back to the wait")
            .permanent());
        };
        let next = (on.decode)(payload).map_err(|e| {
            CanoError::store(format!(
                "signal {name:?} (id {id}) to run {run} cannot be read by wait state {state:?}: {}",
                e.message()
            ))
            .with_source(e)
            .at(state, "")
            .with_hint(format!(
                "the signal stays in the inbox: send it as {}, then discard the bad one with Workflow::discard_signal({run}, {id}) and resume the run",
                on.info.payload
            ))
            .permanent()
        })?;
        if let Some(targets) = &on.targets
            && !targets.contains(&next)
        {
            return Err(CanoError::workflow(format!(
                "signal {name:?} led wait state {state:?} to {next:?}, which is not among its declared targets {targets:?}"
            ))
            .at(state, "")
            .with_hint("add the state to Wait::leading_to, or fix the signal's function")
            .permanent());
        }
        Ok(next)
    }

    /// The error of a run whose workflow timeout ended while it waited.
    fn timed_out_run(&self, state: &S, journal: &Journal) -> CanoError {
        let limit = journal.timeout().unwrap_or_default();
        CanoError::workflow(format!(
            "workflow timed out after {limit:?}, while run {} waited in state {state:?}",
            journal.run_id()
        ))
        .at(state, "")
        .with_hint("raise Workflow::with_timeout, or give the wait a shorter timeout of its own")
    }

    fn timed_out(&self, state: &S) -> Result<S, CanoError> {
        match &self.wait.timeout {
            Some((_, then)) => Ok(then.clone()),
            None => Err(CanoError::workflow(format!(
                "the deadline of wait state {state:?} passed, but the wait has no timeout state"
            ))
            .at(state, "")
            .with_hint(
                "give the wait a Wait::timeout, or resume the run with the build that wrote it",
            )
            .permanent()),
        }
    }

    /// When the wait entered now stops waiting: the time a task set with `wake_at`
    /// (taken: it is for this wait only), else its timeout from now.
    fn deadline(&self, state: &S, durable: &DurableStore) -> Result<Option<u64>, CanoError> {
        let set = durable.get_engine(WAKE_AT_KEY);
        if set.is_some() {
            durable.remove_engine(WAKE_AT_KEY);
        }
        let Some((after, _)) = &self.wait.timeout else {
            return Ok(None);
        };
        if let Some(bytes) = set
            && let Ok(at) = <[u8; 8]>::try_from(&*bytes)
        {
            return Ok(Some(u64::from_be_bytes(at)));
        }
        if *after == Duration::MAX {
            return Ok(None);
        }
        u64::try_from(after.as_millis())
            .ok()
            .and_then(|after| now_ms().checked_add(after))
            .map(Some)
            .ok_or_else(|| too_far(*after).at(state, ""))
    }

    async fn park(
        &self,
        journal: &Journal,
        state: &S,
        deadline: Option<u64>,
    ) -> Result<u64, CanoError> {
        let bytes = (self.encode)(state).map_err(|e| e.at(state, ""))?;
        let record = WaitRecord::Parked {
            signals: self.names.clone(),
            deadline_ms: deadline,
        };
        journal
            .park(bytes, format!("{state:?}"), record.encode()?)
            .await
            .map_err(|e| e.at(state, ""))
    }

    fn parked(&self, state: &S, run: RunId, deadline: Option<u64>) -> CanoError {
        let what = match self.names.as_slice() {
            [] => "its deadline".to_owned(),
            names => format!("signal {names:?}"),
        };
        let until = match deadline {
            Some(ms) => format!(" until {ms} ms after the Unix epoch"),
            None => String::new(),
        };
        CanoError::parked(format!("run {run} parked in wait state {state:?}, waiting for {what}{until}"))
            .at(state, "")
            .with_hint("send it a signal with Workflow::signal; Workflow::serve_waits or Workflow::wake_parked resumes it when a signal or its deadline makes it runnable")
    }
}

impl<S: WorkflowState, K: ResourceKey> StateHandler<S, K> for WaitHandler<S> {
    fn handle<'a>(&'a self, cx: StateContext<'a, S, K>) -> HandlerFuture<'a, S> {
        Box::pin(self.run(cx.state(), cx.run()))
    }

    fn info(&self) -> HandlerInfo {
        HandlerInfo {
            kind: "wait",
            tasks: self.names.iter().map(|n| Cow::Owned(n.clone())).collect(),
        }
    }

    fn check(&self) -> Vec<String> {
        if self.wait.on.is_empty() && self.wait.timeout.is_none() {
            return vec![
                "waits for no signal and has no timeout, so a run would park for ever; add Wait::on or Wait::timeout".into(),
            ];
        }
        Vec::new()
    }

    fn targets(&self) -> Option<Vec<S>> {
        <Self as StateHandler<S, K>>::labelled_targets(self)
            .map(|edges| edges.into_iter().map(|(_, s)| s).collect())
    }

    fn labelled_targets(&self) -> Option<Vec<(String, S)>> {
        let mut edges = Vec::new();
        for on in &self.wait.on {
            for target in on.targets.as_ref()? {
                edges.push((on.info.name.clone(), target.clone()));
            }
        }
        if let Some((_, then)) = &self.wait.timeout {
            edges.push(("timeout".to_owned(), then.clone()));
        }
        Some(edges)
    }

    fn signals(&self) -> Vec<SignalInfo> {
        self.wait.on.iter().map(|o| o.info.clone()).collect()
    }

    fn warnings(&self) -> Vec<String> {
        let endless = self
            .wait
            .timeout
            .as_ref()
            .is_none_or(|(after, _)| *after == Duration::MAX);
        if endless && self.wait.sent_by.is_none() && !self.names.is_empty() {
            return vec![format!(
                "waits for signal {:?} with no timeout and no declared sender, so a run may wait for ever; add Wait::timeout, or say who sends it with Wait::sent_by",
                self.names
            )];
        }
        Vec::new()
    }

    fn writes_checkpoint(&self) -> bool {
        // Its `Wait` row stands in for the `Enter` row.
        false
    }

    fn parks(&self) -> bool {
        true
    }
}

/// The error of a wait state reached without a store that keeps signals.
fn no_inbox<S: std::fmt::Debug>(state: &S) -> CanoError {
    CanoError::configuration(format!(
        "wait state {state:?} needs a checkpoint store with a signal inbox, and this run has none"
    ))
    .at(state, "")
    .with_hint("attach one with Workflow::with_checkpoint_store (MemoryCheckpointStore in tests, SledCheckpointStore on disk)")
}
