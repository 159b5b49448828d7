//! The workflow's side of crash recovery: attaching a checkpoint store, and resuming
//! runs from their logs. The rows themselves are written by the engine through each
//! run's [`Journal`].

#![allow(clippy::manual_async_fn)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Workflow, WorkflowState};
use crate::checkpoint::simple::{self, SimpleAdapter, UNRECORDED_VERSION};
use crate::checkpoint::{
    Bincode, CheckpointStore, Claim, Journal, JournalConfig, ResumePoint, Retention, RowKind,
    RunStatus, RunSummary, Start, decode_state, encode_state, replay,
};
use crate::error::CanoError;
use crate::resource::ResourceKey;
use crate::run::{CancellationToken, RunContext, RunId, RunOptions};

use super::compensation::{self, Compensations, RollbackOutcome};
use super::handle::RunHandle;

/// A workflow's checkpoint store with the functions that encode its states (public only
/// as what [`IntoCheckpointing`] builds).
#[doc(hidden)]
pub struct Checkpointing<S> {
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) encode: fn(&S) -> Result<Vec<u8>, CanoError>,
    pub(crate) decode: fn(&[u8]) -> Result<S, CanoError>,
    /// A simple store (cano 0.13's) behind `store`: states go by their `Debug` text,
    /// and runs by workflow id.
    pub(crate) simple: Option<Arc<SimpleAdapter>>,
    /// Whether this workflow's graph is in the store (see `record_graph`): shared by
    /// the workflow's clones, so it is written once per store attachment.
    pub(crate) graph_recorded: Arc<std::sync::atomic::AtomicBool>,
}

impl<S: std::fmt::Debug> Checkpointing<S> {
    /// `state` encoded for a checkpoint row; the error names the state.
    pub(crate) fn encode_state(&self, state: &S) -> Result<Vec<u8>, CanoError> {
        (self.encode)(state).map_err(|e| {
            CanoError::store(format!(
                "could not encode state {state:?} for its checkpoint row: {}",
                e.message()
            ))
            .with_source(e)
            .with_hint("make the state's Serialize implementation succeed for every value")
            .permanent()
        })
    }
}

impl<S: Serialize + DeserializeOwned> Checkpointing<S> {
    /// A full store; states by their serde encoding.
    fn full(store: Arc<dyn CheckpointStore>) -> Self {
        Self {
            store,
            encode: encode_state::<Bincode, S>,
            decode: decode_state::<Bincode, S>,
            simple: None,
            graph_recorded: Default::default(),
        }
    }
}

impl<S: std::fmt::Debug> Checkpointing<S> {
    /// A simple store; states by their `Debug` text, decoded by the workflow.
    fn simple(store: Arc<dyn simple::CheckpointStore>) -> Self {
        let adapter = Arc::new(SimpleAdapter::new(store));
        Self {
            store: adapter.clone(),
            encode: |state| Ok(format!("{state:?}").into_bytes()),
            // Never called: a simple store's states are decoded by their label.
            decode: |_| {
                Err(CanoError::configuration(
                    "a simple checkpoint store's states are found by label",
                ))
            },
            simple: Some(adapter),
            graph_recorded: Default::default(),
        }
    }
}

/// What [`Workflow::with_checkpoint_store`] takes: a full [`CheckpointStore`] (by value
/// or shared; states stored by their serde encoding, hence the bounds), or a simple
/// one, cano 0.13's [`simple::CheckpointStore`], in an `Arc`. `M` only tells the two
/// apart; it is inferred.
pub trait IntoCheckpointing<S, M> {
    /// The store, with how the workflow's states are written to it.
    #[doc(hidden)]
    fn into_checkpointing(self) -> Checkpointing<S>;
}

/// Marks a full store for [`IntoCheckpointing`].
#[doc(hidden)]
pub enum FullStoreMarker {}

/// Marks a simple (cano 0.13) store for [`IntoCheckpointing`].
#[doc(hidden)]
pub enum SimpleStoreMarker {}

impl<S, T> IntoCheckpointing<S, FullStoreMarker> for T
where
    S: Serialize + DeserializeOwned,
    T: CheckpointStore,
{
    fn into_checkpointing(self) -> Checkpointing<S> {
        Checkpointing::full(Arc::new(self))
    }
}

impl<S, T> IntoCheckpointing<S, SimpleStoreMarker> for Arc<T>
where
    S: std::fmt::Debug,
    T: simple::CheckpointStore + ?Sized,
{
    fn into_checkpointing(self) -> Checkpointing<S> {
        Checkpointing::simple(Arc::new(self))
    }
}

impl<S> Checkpointing<S> {
    /// The run `run` names, told to a simple store so it can find the run's rows.
    pub(crate) fn identify(&self, run: &RunRef) -> RunId {
        let id = run.run_id();
        if let (Some(adapter), RunRef::Named(name)) = (&self.simple, run) {
            adapter.bind(id, name);
        }
        id
    }
}

/// A run to resume: its [`RunId`], or its name (`"order-42"`), which is the workflow
/// id of a run in a simple store and the name of a [`RunId::named`] run otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunRef {
    /// The run with this id.
    Id(RunId),
    /// The run with this name.
    Named(String),
}

impl RunRef {
    /// The run's id.
    pub fn run_id(&self) -> RunId {
        match self {
            Self::Id(id) => *id,
            Self::Named(name) => RunId::named(name),
        }
    }
}

impl From<RunId> for RunRef {
    fn from(id: RunId) -> Self {
        Self::Id(id)
    }
}

impl From<&str> for RunRef {
    fn from(name: &str) -> Self {
        Self::Named(name.to_owned())
    }
}

impl From<String> for RunRef {
    fn from(name: String) -> Self {
        Self::Named(name)
    }
}

impl From<&String> for RunRef {
    fn from(name: &String) -> Self {
        Self::Named(name.clone())
    }
}

impl From<std::borrow::Cow<'_, str>> for RunRef {
    fn from(name: std::borrow::Cow<'_, str>) -> Self {
        Self::Named(name.into_owned())
    }
}

impl From<Arc<str>> for RunRef {
    fn from(name: Arc<str>) -> Self {
        Self::Named(name.to_string())
    }
}

impl From<Box<str>> for RunRef {
    fn from(name: Box<str>) -> Self {
        Self::Named(name.into())
    }
}

impl<S> Clone for Checkpointing<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            encode: self.encode,
            decode: self.decode,
            simple: self.simple.clone(),
            graph_recorded: self.graph_recorded.clone(),
        }
    }
}

/// What resuming a run means, read from its log.
enum Resumable<S> {
    /// It is over already: its exit state, or why it cannot go on.
    Over(Result<S, CanoError>),
    /// It goes on in `state`, from `point`, with its compensation stack.
    Go {
        state: S,
        point: ResumePoint,
        saga: Option<Box<Compensations<S>>>,
    },
}

/// How a workflow's runs are checkpointed; meaningful once a store is attached.
#[derive(Clone)]
pub(crate) struct RecoverySettings {
    pub(crate) workflow_id: Arc<str>,
    pub(crate) version: u32,
    pub(crate) retention: Retention,
    pub(crate) compact_after: u32,
    /// Whether `with_workflow_id` named the workflow (a simple store needs it to).
    pub(crate) named: bool,
}

impl RecoverySettings {
    pub(crate) fn new<S>() -> Self {
        Self {
            workflow_id: std::any::type_name::<S>().into(),
            version: 1,
            retention: Retention::default(),
            compact_after: DEFAULT_COMPACT_AFTER,
            named: false,
        }
    }
}

/// Rows between two snapshots of a run's durable data, by default.
pub const DEFAULT_COMPACT_AFTER: u32 = 64;

impl<S: WorkflowState, K: ResourceKey> Workflow<S, K> {
    /// Checkpoints every run in `store`: a row is appended each time a run enters a
    /// state, before the state's handler runs, so a run whose process died can be
    /// continued with [`resume_from`](Self::resume_from).
    ///
    /// States are stored by their serde encoding, hence the bounds: enum variants with
    /// payloads round-trip, and a changed `Debug` impl cannot break a resume. Each run
    /// also gets a [`DurableStore`](crate::checkpoint::DurableStore) whose data is saved
    /// with its rows.
    ///
    /// ```
    /// use cano_core::checkpoint::{CheckpointRow, CheckpointStore, RunSummary};
    /// use cano_core::{CanoError, RunId, Task, TaskResult, Workflow};
    /// # use std::sync::Mutex;
    /// # use std::time::SystemTime;
    /// # #[derive(Default)]
    /// # struct Rows(Mutex<Vec<CheckpointRow>>);
    /// # #[async_trait::async_trait]
    /// # impl CheckpointStore for Rows {
    /// #     async fn append(&self, row: CheckpointRow) -> Result<(), CanoError> { self.0.lock().unwrap().push(row); Ok(()) }
    /// #     async fn load(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError> { Ok(self.0.lock().unwrap().iter().filter(|r| r.run == run).cloned().collect()) }
    /// #     async fn truncate(&self, _: RunId, _: u64) -> Result<(), CanoError> { Ok(()) }
    /// #     async fn clear(&self, run: RunId) -> Result<(), CanoError> { self.0.lock().unwrap().retain(|r| r.run != run); Ok(()) }
    /// #     async fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError> { Ok(vec![]) }
    /// #     async fn prune(&self, _: SystemTime) -> Result<usize, CanoError> { Ok(0) }
    /// # }
    ///
    /// #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
    /// enum Import { Fetch { page: u32 }, Done }
    ///
    /// struct Fetch;
    /// #[async_trait::async_trait]
    /// impl Task<Import> for Fetch {
    ///     async fn run_bare(&self) -> Result<TaskResult<Import>, CanoError> {
    ///         Ok(TaskResult::Single(Import::Done))
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), CanoError> {
    /// let workflow = Workflow::bare()
    ///     .register(Import::Fetch { page: 1 }, Fetch)
    ///     .add_exit_state(Import::Done)
    ///     .with_checkpoint_store(Rows::default())
    ///     .with_workflow_id("import");
    /// assert_eq!(workflow.orchestrate(Import::Fetch { page: 1 }).await?, Import::Done);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// It also takes a simple store, cano 0.13's three-method
    /// [`simple::CheckpointStore`] behind an `Arc` (`Arc::new(store)` or an
    /// `Arc<dyn simple::CheckpointStore>`): the run is then named by
    /// [`with_workflow_id`](Self::with_workflow_id), states are stored by their `Debug`
    /// text (no serde needed, but each state's text must be distinct), and
    /// `resume_from("that id")` resumes it. See [`simple`] for what such a store
    /// cannot do.
    pub fn with_checkpoint_store<M>(mut self, store: impl IntoCheckpointing<S, M>) -> Self {
        self.spec_mut().checkpoint = Some(store.into_checkpointing());
        self
    }

    /// Like [`with_checkpoint_store`](Self::with_checkpoint_store), with a store
    /// shared with other workflows or code.
    pub fn with_shared_checkpoint_store(mut self, store: Arc<dyn CheckpointStore>) -> Self
    where
        S: Serialize + DeserializeOwned,
    {
        self.spec_mut().checkpoint = Some(Checkpointing::full(store));
        self
    }

    /// Names the workflow in its checkpoint rows (by default, the state type's path).
    /// A run is only resumed by a workflow with the same id, so give workflows that
    /// share a store and a state type distinct ids.
    ///
    /// With a simple store (cano 0.13's), the id names the run itself: one run per id,
    /// resumed with `resume_from(id)`; such a workflow must be given one.
    pub fn with_workflow_id(mut self, id: impl Into<String>) -> Self {
        let recovery = &mut self.spec_mut().recovery;
        recovery.workflow_id = id.into().into();
        recovery.named = true;
        self
    }

    /// The workflow's version (1 by default), written in every row. Resuming a run
    /// written by another version fails with [`CanoError::WorkflowVersionMismatch`]:
    /// raise it when a change of states or tasks makes old runs unsafe to continue.
    pub fn with_workflow_version(mut self, version: u32) -> Self {
        self.spec_mut().recovery.version = version;
        self
    }

    /// What happens to a run's rows when it finishes (cleared by default).
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.spec_mut().recovery.retention = retention;
        self
    }

    /// Writes a full snapshot of a run's durable data every `rows` rows and drops the
    /// rows before it, so a looping run's log stays bounded (64 by default; 0 is taken
    /// as 1).
    pub fn with_compaction(mut self, rows: u32) -> Self {
        self.spec_mut().recovery.compact_after = rows.max(1);
        self
    }

    /// The workflow's id in checkpoint rows.
    pub fn workflow_id(&self) -> &str {
        &self.spec.recovery.workflow_id
    }

    /// The workflow's version in checkpoint rows.
    pub fn workflow_version(&self) -> u32 {
        self.spec.recovery.version
    }

    /// The attached checkpoint store, if any.
    pub fn checkpoint_store(&self) -> Option<&Arc<dyn CheckpointStore>> {
        self.spec.checkpoint.as_ref().map(|c| &c.store)
    }

    pub(crate) fn checkpointing(&self) -> Result<&Checkpointing<S>, CanoError> {
        self.spec.checkpoint.as_ref().ok_or_else(|| {
            CanoError::configuration(
                "this workflow has no checkpoint store, so there is nothing to resume from",
            )
            .with_hint(
                "attach the store the run was written to with Workflow::with_checkpoint_store",
            )
        })
    }

    /// The runs in the store written by this workflow that did not finish: interrupted
    /// ones (their process stopped) and failed ones; also runs whose last row cannot be
    /// read ([`RunStatus::Unreadable`]) when they are this workflow's or nothing
    /// readable says whose they are.
    pub async fn unfinished_runs(&self) -> Result<Vec<RunSummary>, CanoError> {
        let checkpointing = self.checkpointing()?;
        let mut runs = checkpointing.store.unfinished().await?;
        runs.retain(|r| {
            *r.workflow == *self.spec.recovery.workflow_id
                || (r.status == RunStatus::Unreadable && r.workflow.is_empty())
        });
        runs.sort_by_key(|r| (r.updated_at_ms, r.run));
        Ok(runs)
    }

    /// Resumes every interrupted run of this workflow (those whose process stopped,
    /// not those that failed), concurrently, and returns each one's outcome.
    pub async fn resume_interrupted(
        &self,
    ) -> Result<Vec<(RunId, Result<S, CanoError>)>, CanoError> {
        let runs = self.unfinished_runs().await?;
        let resumes = runs
            .iter()
            .filter(|r| r.status == RunStatus::Interrupted)
            .map(|r| async move { (r.run, self.resume_from(r.run).await) });
        Ok(futures::future::join_all(resumes).await)
    }

    /// Continues run `run` from its checkpoint log: re-enters the state of its last
    /// row (whose handler runs again), with the durable data it had saved, and drives
    /// it to an exit state like [`orchestrate`](Self::orchestrate).
    ///
    /// Fails without running anything when the log cannot be trusted: no rows, a
    /// corrupt or missing row, rows of another workflow, another version
    /// ([`CanoError::WorkflowVersionMismatch`]), a state that no longer decodes or has
    /// no handler, or another resumer that already claimed the run. A run whose rows
    /// were kept after it finished returns its exit state at once.
    ///
    /// `run` is a [`RunId`], or a run's name as text: the workflow id of a run in a
    /// simple store (as `resume_from("order-42")` in cano 0.13), or the name given
    /// with [`RunId::named`].
    pub fn resume_from(
        &self,
        run: impl Into<RunRef>,
    ) -> impl Future<Output = Result<S, CanoError>> + '_ {
        self.resume_from_with(run, None)
    }

    /// Like [`resume_from`](Self::resume_from), cancelled by `token`.
    pub fn resume_from_with(
        &self,
        run: impl Into<RunRef>,
        token: Option<CancellationToken>,
    ) -> impl Future<Output = Result<S, CanoError>> + '_ {
        let run = run.into();
        async move {
            self.validate()?;
            let checkpointing = self.checkpointing()?;
            let run = checkpointing.identify(&run);
            let claim = Claim::take(&self.spec.recovery.workflow_id, run)?;
            let (state, point, saga) = match self.prepare_resume(checkpointing, run).await? {
                Resumable::Over(outcome) => return outcome,
                Resumable::Go { state, point, saga } => (state, point, saga),
            };
            let ResumePoint {
                state: bytes,
                label,
                last_seq,
                cursor,
                durable,
                ..
            } = point;
            let journal = Arc::new(self.journal(
                checkpointing,
                run,
                Start {
                    next_seq: last_seq + 1,
                    durable,
                    resumed_cursor: cursor,
                },
            ));
            // The row's own bytes and label: the state just decoded from them.
            let seq = journal
                .resume(bytes, label)
                .await
                .map_err(|e| e.at(&state, ""))?;
            let mut options = RunOptions::new().with_run_id(run);
            options.cancel = token;
            self.run_checkpointed(
                checkpointing,
                state,
                options,
                journal,
                Some(seq),
                claim,
                saga,
            )
            .await
        }
    }

    /// Whether run `run` can be resumed by this workflow, checked without claiming or
    /// running it: its log reads, was written by this workflow and version, and names a
    /// state this build can decode and has a handler for. `Ok` also for a run that
    /// finished (its resume returns the exit state). A scheduler uses it to set aside a
    /// run that can never resume instead of trying it again on every tick.
    pub async fn check_resume(&self, run: impl Into<RunRef>) -> Result<(), CanoError> {
        self.validate()?;
        let checkpointing = self.checkpointing()?;
        let run = checkpointing.identify(&run.into());
        match self.prepare_resume(checkpointing, run).await? {
            Resumable::Over(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Reads run `run`'s log and decides what resuming it means; runs nothing.
    async fn prepare_resume(
        &self,
        checkpointing: &Checkpointing<S>,
        run: RunId,
    ) -> Result<Resumable<S>, CanoError> {
        let settings = &self.spec.recovery;
        let rows = checkpointing.store.load(run).await.map_err(|e| {
            let message = format!(
                "could not read the checkpoint rows of run {run}: {}",
                e.message()
            );
            // A simple store reports its failures as cano 0.13 did.
            match checkpointing.simple {
                Some(_) => CanoError::checkpoint_store(message),
                None => CanoError::store(message),
            }
            .with_source(e)
        })?;
        let rows = match checkpointing.simple {
            Some(_) if rows.is_empty() => {
                return Err(CanoError::checkpoint_store(format!(
                    "no checkpoint rows for run {run} in the simple checkpoint store"
                ))
                .with_hint(
                    "it finished (its rows were cleared), or never ran under that workflow id",
                )
                .permanent());
            }
            Some(_) => self.simple_rows(rows),
            None => rows,
        };
        let point = replay(run, &rows, &settings.workflow_id, settings.version)?;
        drop(rows);
        let state = self.decode_checkpointed(checkpointing, &point.state).map_err(|e| {
            let message = format!(
                "row {} of run {run} holds state {}, which this build cannot resume: {}",
                point.last_seq,
                point.label,
                e.message()
            );
            let hint = "the state type changed since the run was written (a variant inserted, reordered, renamed or removed, or a payload changed): resume it with the build that wrote it, and give such changes a new Workflow::with_workflow_version";
            match e {
                // Nothing was run: the run stays as it was, for the right build.
                CanoError::WorkflowVersionMismatch(_) => {
                    CanoError::workflow_version_mismatch(message).with_source(e)
                }
                _ => CanoError::store(message).with_source(e).permanent(),
            }
            .with_hint(hint)
        })?;
        match point.last_kind {
            RowKind::Finish => return Ok(Resumable::Over(Ok(state))),
            RowKind::RolledBack => {
                return Ok(Resumable::Over(Err(CanoError::workflow(format!(
                    "run {run} was rolled back after it failed: {}",
                    point.last_message
                ))
                .at(&state, "")
                .with_hint("a rolled-back run is over; start a new run instead")
                .permanent())));
            }
            _ => {}
        }
        let saga = if self.spec.compensating || compensation::saved_in(&point.durable) {
            Some(Box::new(Compensations::restore(
                &point.durable,
                run,
                &|bytes| self.decode_checkpointed(checkpointing, bytes),
            )?))
        } else {
            None
        };
        let rolling_back = saga
            .as_ref()
            .is_some_and(|s| s.resumed_rollback().is_some());
        // A run rolling back may have failed in a state without a handler.
        let known = rolling_back || self.validate_initial_state(&state).is_ok();
        if !known {
            return Err(CanoError::configuration(format!(
                "row {} of run {run} re-enters state {state:?}, which has no handler in this workflow",
                point.last_seq
            ))
            .with_hint("register a task for it again, or resume with the build that wrote the run"));
        }
        Ok(Resumable::Go { state, point, saga })
    }

    /// Resumes run `run` on the tokio runtime (see [`resume_from`](Self::resume_from))
    /// and returns a handle to await or cancel it.
    pub fn spawn_resume(&self, run: impl Into<RunRef>) -> RunHandle<S> {
        let run = run.into();
        let id = run.run_id();
        let token = CancellationToken::new();
        let workflow = self.clone();
        let cancel = token.clone();
        let join = tokio::spawn(async move { workflow.resume_from_with(run, Some(cancel)).await });
        RunHandle::new(join, token, id)
    }

    /// A state as a checkpoint row stored it: by the store's codec, or for a simple
    /// store by its `Debug` text among this workflow's states.
    pub(crate) fn decode_checkpointed(
        &self,
        checkpointing: &Checkpointing<S>,
        bytes: &[u8],
    ) -> Result<S, CanoError> {
        if checkpointing.simple.is_none() {
            return (checkpointing.decode)(bytes);
        }
        let label = String::from_utf8_lossy(bytes);
        self.states()
            .into_iter()
            .map(|(state, _)| state)
            .chain(self.exit_states())
            .find(|state| format!("{state:?}") == label)
            .ok_or_else(|| {
                CanoError::workflow(format!(
                    "checkpointed state {label} is not a registered or exit state of this workflow"
                ))
                .with_hint("resume it with the workflow that wrote it")
                .permanent()
            })
    }

    /// Rows read from a simple store, as the run resuming them expects: the store keys
    /// the run, so every row is taken as this workflow's; plain state-entry rows (which
    /// store no version) as this version's.
    fn simple_rows(
        &self,
        mut rows: Vec<crate::checkpoint::CheckpointRow>,
    ) -> Vec<crate::checkpoint::CheckpointRow> {
        let settings = &self.spec.recovery;
        for row in &mut rows {
            row.workflow = settings.workflow_id.to_string();
            if row.version == UNRECORDED_VERSION && row.written_at_ms == 0 {
                row.version = settings.version;
            }
        }
        rows
    }

    pub(crate) fn journal(
        &self,
        checkpointing: &Checkpointing<S>,
        run: RunId,
        start: Start,
    ) -> Journal {
        let settings = &self.spec.recovery;
        Journal::new(
            &JournalConfig {
                store: checkpointing.store.clone(),
                workflow: settings.workflow_id.clone(),
                version: settings.version,
                compact_after: settings.compact_after,
                retention: settings.retention,
                timeout: self.spec.timeout,
            },
            run,
            start,
        )
    }

    /// Keeps this workflow's drawing in its store before its first run there writes, so
    /// tools (the `cano` inspector) can draw its runs without its code. One atomic load
    /// per run after that. A store that fails to keep it fails no run: the next run
    /// tries again.
    async fn record_graph_once(&self, checkpointing: &Checkpointing<S>) {
        use std::sync::atomic::Ordering;
        if checkpointing.graph_recorded.load(Ordering::Relaxed) {
            return;
        }
        let settings = &self.spec.recovery;
        let drawing = || self.to_mermaid();
        if checkpointing
            .store
            .record_graph(&settings.workflow_id, settings.version, &drawing)
            .await
            .is_ok()
        {
            checkpointing.graph_recorded.store(true, Ordering::Relaxed);
        }
    }

    /// A run of a checkpointed workflow: the ordinary run, then its log closed
    /// (cleared or finished on success, cleared or `RolledBack` after a clean rollback,
    /// a `Fail` row otherwise).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_checkpointed<'a>(
        &'a self,
        checkpointing: &'a Checkpointing<S>,
        initial: S,
        options: RunOptions,
        journal: Arc<Journal>,
        resumed: Option<u64>,
        claim: Claim,
        saga: Option<Box<Compensations<S>>>,
    ) -> Pin<Box<dyn Future<Output = Result<S, CanoError>> + Send + 'a>> {
        Box::pin(async move {
            self.record_graph_once(checkpointing).await;
            let run = self.run_context(journal.run_id(), options.cancel, Some(journal.clone()));
            let mut state = initial;
            let result = self
                .run_observed(&mut state, &run, resumed, saga.as_deref())
                .await;
            // Keep the claim until the log is closed below.
            let _claim = claim;
            let label = format!("{state:?}");
            let encoded = (checkpointing.encode)(&state);
            match (result, encoded) {
                (Ok(()), Ok(bytes)) => {
                    if let Some(uncleared) = journal.finish(bytes, label).await? {
                        self.tell_clear_failed(&run, &uncleared);
                    }
                    Ok(state)
                }
                (Ok(()), Err(e)) => Err(e.at(&state, "")),
                // Handed back: the log stays as it is, for the run's next owner.
                (Err(error @ CanoError::Cancelled(_)), _) if run.is_handed_back() => Err(error),
                // Parked: its `Wait` row is the log's last word until a signal or its
                // deadline wakes it.
                (Err(error @ CanoError::Parked(_)), _) => Err(error),
                (Err(error), _)
                    if saga.as_ref().and_then(|s| s.outcome()) == Some(RollbackOutcome::Clean) =>
                {
                    // Rolled back: nothing is left to resume. A store that fails here
                    // leaves a log whose resume only reports the rollback again.
                    if let Ok(Some(uncleared)) = journal.rolled_back(&error.to_string()).await {
                        self.tell_clear_failed(&run, &uncleared);
                    }
                    Err(error)
                }
                (Err(error), Ok(bytes)) => {
                    journal.fail(bytes, label, &error).await;
                    Err(error)
                }
                (Err(error), Err(_)) => Err(error),
            }
        })
    }

    /// Tells the observers that a finished run's log could not be cleared.
    #[cold]
    fn tell_clear_failed(&self, run: &RunContext, error: &CanoError) {
        let observers = &self.spec.observers;
        if !observers.is_empty() {
            let workflow = &self.spec.recovery.workflow_id;
            observers.each(|o| o.checkpoint_clear_failed(run.run_id(), workflow, error));
        }
    }

    /// Writes the `Enter` row of `state`; boxed, as only checkpointed runs need it.
    pub(crate) fn checkpoint_enter<'a>(
        &'a self,
        journal: &'a Journal,
        state: &'a S,
        run: &'a RunContext,
    ) -> Pin<Box<dyn Future<Output = Result<(), CanoError>> + Send + 'a>> {
        Box::pin(async move {
            let Some(checkpointing) = &self.spec.checkpoint else {
                return Ok(());
            };
            let bytes = checkpointing.encode_state(state)?;
            if let Some(seq) = journal.enter(bytes, format!("{state:?}")).await? {
                let observers = &self.spec.observers;
                if !observers.is_empty() {
                    observers.each(|o| {
                        o.checkpointed(run.run_id(), &self.spec.recovery.workflow_id, state, seq)
                    });
                }
            }
            Ok(())
        })
    }

    /// A fresh run of a checkpointed workflow, as one boxed future: `orchestrate`
    /// holds only the box, so runs without a store do not carry this path's locals.
    pub(crate) fn start_checkpointed<'a>(
        &'a self,
        checkpointing: &'a Checkpointing<S>,
        initial: S,
        options: RunOptions,
    ) -> Pin<Box<dyn Future<Output = Result<S, CanoError>> + Send + 'a>> {
        let run_id = match &checkpointing.simple {
            None => options.run_id.unwrap_or_default(),
            Some(adapter) => {
                let settings = &self.spec.recovery;
                if !settings.named {
                    return Box::pin(std::future::ready(Err(CanoError::configuration(
                        "this workflow checkpoints to a simple store, which keys each run by its workflow id, but it has none",
                    )
                    .with_hint("name the run with Workflow::with_workflow_id(\"order-42\") before orchestrating it"))));
                }
                let run = options
                    .run_id
                    .unwrap_or_else(|| RunId::named(&settings.workflow_id));
                adapter.bind(run, &settings.workflow_id);
                run
            }
        };
        let claim = match Claim::take(&self.spec.recovery.workflow_id, run_id) {
            Ok(claim) => claim,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let journal = Arc::new(self.journal(checkpointing, run_id, Start::fresh()));
        journal.mark_started();
        let saga = self
            .spec
            .compensating
            .then(|| Box::new(Compensations::new()));
        self.run_checkpointed(
            checkpointing,
            initial,
            options.with_run_id(run_id),
            journal,
            None,
            claim,
            saga,
        )
    }
}
