//! The workflow's side of waits: registering them, sending signals, waking parked
//! runs, and reading where a run stands.

use std::any::TypeId;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Wait;
use super::bell::bell;
use super::handler::WaitHandler;
use crate::checkpoint::{
    Bincode, Codec, DurableStore, RowKind, RunStatus, Sent, Signal, SignalStore, Start, WaitRecord,
    encode_state, now_ms, replay, until_not_running_here,
};
use crate::error::CanoError;
use crate::resource::ResourceKey;
use crate::run::{CancellationToken, RunId};
use crate::workflow::handler::SignalInfo;
use crate::workflow::{Handler, RunRef, Workflow, WorkflowState};

/// How many inbox signals [`Workflow::query`] lists.
const QUERY_INBOX: usize = 100;

/// Where a run stands, read from its store by [`Workflow::query`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunView<S> {
    /// The run.
    pub run: RunId,
    /// The state of its last row.
    pub state: S,
    /// Where it stands.
    pub status: RunStatus,
    /// What it waits for, when it is parked.
    pub waiting: Option<Waiting>,
    /// Its durable data as of its last row.
    pub durable: DurableStore,
    /// The oldest signals in its inbox (up to 100), not yet taken.
    pub inbox: Vec<Signal>,
    /// The number of its last row.
    pub last_seq: u64,
    /// When its last row was written.
    pub updated_at: SystemTime,
    /// Why it failed, when it did.
    pub message: String,
}

/// What a parked run waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The signal names that wake it.
    pub signals: Vec<String>,
    /// When it stops waiting, if ever.
    pub deadline: Option<SystemTime>,
}

/// Parked runs of one workflow, as one look at the store found them.
struct Scan {
    /// Runs a signal or their deadline made runnable.
    runnable: Vec<RunId>,
    /// The earliest deadline of the others, in milliseconds since the Unix epoch.
    next_deadline: Option<u64>,
}

impl<S, K> Workflow<S, K>
where
    S: WorkflowState + Serialize + DeserializeOwned,
    K: ResourceKey,
{
    /// Registers `state` as a wait state (see [`wait`](crate::wait)): a run that
    /// reaches it takes a signal it waits for from its inbox, or times out, or parks
    /// until one of them happens. The workflow needs a checkpoint store with a signal
    /// inbox.
    pub fn register_wait(self, state: S, wait: Wait<S>) -> Self {
        self.register_routing(state, WaitHandler::new(wait, encode_state::<Bincode, S>))
    }
}

impl<S: WorkflowState, K: ResourceKey> Workflow<S, K> {
    /// Every signal a wait state of this workflow waits for.
    fn wait_signals(&self) -> Vec<SignalInfo> {
        let mut infos: Vec<SignalInfo> = Vec::new();
        for slot in self.spec.slots.values() {
            if let Some(Handler::Custom(custom)) = &slot.handler {
                infos.extend(custom.signals());
            }
        }
        infos
    }

    /// The store's inbox, or an error saying the workflow has none.
    fn inbox(&self) -> Result<(&dyn SignalStore, &crate::workflow::Checkpointing<S>), CanoError> {
        let checkpointing = self.checkpointing()?;
        let signals = match (&checkpointing.simple, checkpointing.store.signals()) {
            (None, Some(signals)) => signals,
            _ => {
                return Err(CanoError::configuration(
                    "this workflow's checkpoint store keeps no signal inbox",
                )
                .with_hint("use a store with one (MemoryCheckpointStore, SledCheckpointStore)"));
            }
        };
        Ok((signals, checkpointing))
    }

    /// Sends signal `name` with `payload` to run `run`: written to its inbox in the
    /// store, and taken by the run's wait for `name` (now, if it is parked there, or
    /// when it gets there). Says whether the run was [waiting](Sent::Waiting) for it
    /// or the signal is [kept](Sent::Buffered) for later.
    ///
    /// Refused with a clear error, and nothing written: a name no wait state of this
    /// workflow waits for, a payload of another type than that wait reads, a run the
    /// store has no rows for (never started, or finished and cleared), a run that is
    /// over, an inbox already holding [`INBOX_LIMIT`](crate::wait::INBOX_LIMIT)
    /// signals.
    pub async fn signal<T: Serialize + 'static>(
        &self,
        run: impl Into<RunRef>,
        name: &str,
        payload: &T,
    ) -> Result<Sent, CanoError> {
        self.send_signal(run.into(), name, payload, None).await
    }

    /// Like [`signal`](Self::signal), with an idempotency key: a second send with the
    /// same key to the same run is the same signal ([`Sent::Duplicate`]), even after
    /// the first was taken.
    pub async fn signal_once<T: Serialize + 'static>(
        &self,
        run: impl Into<RunRef>,
        name: &str,
        payload: &T,
        key: &str,
    ) -> Result<Sent, CanoError> {
        self.send_signal(run.into(), name, payload, Some(key)).await
    }

    async fn send_signal<T: Serialize + 'static>(
        &self,
        run: RunRef,
        name: &str,
        payload: &T,
        key: Option<&str>,
    ) -> Result<Sent, CanoError> {
        let infos = self.wait_signals();
        let Some(info) = infos.iter().find(|i| i.name == name) else {
            let mut known: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
            known.sort_unstable();
            known.dedup();
            return Err(CanoError::configuration(format!(
                "no wait state of workflow {:?} waits for signal {name:?} (it waits for {known:?})",
                self.workflow_id()
            ))
            .with_hint("check the signal's name, or add it to a wait with Wait::on"));
        };
        if info.type_id != TypeId::of::<T>() {
            return Err(CanoError::configuration(format!(
                "signal {name:?} carries a {}, not a {}",
                info.payload,
                std::any::type_name::<T>()
            ))
            .with_hint("send the payload type the wait's Wait::on reads"));
        }
        let (signals, checkpointing) = self.inbox()?;
        let run = checkpointing.identify(&run);
        let bytes = Bincode::encode(payload).map_err(|e| {
            CanoError::store(format!(
                "signal {name:?} to run {run}: its payload cannot be encoded: {}",
                e.message()
            ))
            .with_source(e)
        })?;
        let sent = signals.send(run, name, bytes, key).await?;
        if let Sent::Waiting { .. } = sent {
            bell(self.workflow_id()).notify_one();
        }
        Ok(sent)
    }

    /// Removes signal `id` from run `run`'s inbox without any wait taking it (one
    /// whose payload no wait can read); whether it was there.
    pub async fn discard_signal(&self, run: impl Into<RunRef>, id: u64) -> Result<bool, CanoError> {
        let (signals, checkpointing) = self.inbox()?;
        let run = checkpointing.identify(&run.into());
        signals.discard(run, id).await
    }

    /// Resumes every parked run of this workflow that a signal in its inbox or its
    /// passed deadline made runnable, concurrently, and returns each one's outcome:
    /// its exit state, [`CanoError::Parked`] at its next wait, or its failure.
    pub async fn wake_parked(&self) -> Result<Vec<(RunId, Result<S, CanoError>)>, CanoError> {
        let scan = self.scan_parked().await?;
        let wakes = scan
            .runnable
            .iter()
            .map(|&run| async move { (run, self.wake(run, None).await) });
        Ok(futures::future::join_all(wakes).await)
    }

    /// Serves this workflow's waits until `token` is cancelled: resumes each parked run
    /// once a signal or its deadline makes it runnable, each on a tokio task of its own.
    /// It looks at the store as it starts (signals sent while no process served it),
    /// at once when a run of this process parks or is sent a signal from this process,
    /// at the next deadline, and when a run it resumed ends. Runs' outcomes go to the
    /// workflow's observers.
    ///
    /// When `token` is cancelled, the runs it resumed are handed back (their logs stay
    /// as they are, for the next process to go on) and it returns once they stopped.
    /// It returns early with the error of a look at the store that failed.
    pub async fn serve_waits(&self, token: CancellationToken) -> Result<(), CanoError> {
        let bell = bell(self.workflow_id());
        let mut running = tokio::task::JoinSet::new();
        let mut tokens: HashMap<RunId, CancellationToken> = HashMap::new();
        let outcome = loop {
            let scan = match self.scan_parked().await {
                Ok(scan) => scan,
                Err(e) => break Err(e),
            };
            for run in scan.runnable {
                if tokens.contains_key(&run) {
                    continue;
                }
                let cancel = CancellationToken::new();
                tokens.insert(run, cancel.clone());
                let workflow = self.clone();
                running.spawn(async move {
                    let _ = workflow.wake(run, Some(cancel)).await;
                    run
                });
            }
            let sleep = scan
                .next_deadline
                .map(|at| Duration::from_millis(at.saturating_sub(now_ms())));
            tokio::select! {
                () = token.cancelled() => break Ok(()),
                () = bell.notified() => {}
                () = tokio::time::sleep(sleep.unwrap_or(Duration::MAX)), if sleep.is_some() => {}
                Some(done) = running.join_next(), if !running.is_empty() => {
                    if let Ok(run) = done {
                        tokens.remove(&run);
                    }
                }
            }
        };
        for cancel in tokens.values() {
            cancel.hand_back();
        }
        while running.join_next().await.is_some() {}
        outcome
    }

    /// Sends signal `name` to run `run` and drives the run on from it, here: returns
    /// its exit state, [`CanoError::Parked`] naming the wait it reached next, or its
    /// failure. (Temporal calls this an update.)
    pub async fn update<T: Serialize + 'static>(
        &self,
        run: impl Into<RunRef>,
        name: &str,
        payload: &T,
    ) -> Result<S, CanoError> {
        let run = run.into();
        self.send_signal(run.clone(), name, payload, None).await?;
        let run = self.checkpointing()?.identify(&run);
        self.wake(run, None).await
    }

    /// Resumes parked run `run` once no task of this process drives it.
    async fn wake(&self, run: RunId, token: Option<CancellationToken>) -> Result<S, CanoError> {
        until_not_running_here(self.workflow_id(), run).await;
        self.resume_from_with(run, token).await
    }

    /// Finds the parked runs a signal or their deadline made runnable. A run whose
    /// rows cannot be read is left out here: resuming it would only fail the same way,
    /// and `unfinished_runs` lists it for a person to look at.
    async fn scan_parked(&self) -> Result<Scan, CanoError> {
        let (signals, checkpointing) = self.inbox()?;
        let now = now_ms();
        let mut scan = Scan {
            runnable: Vec::new(),
            next_deadline: None,
        };
        for summary in self.unfinished_runs().await? {
            if summary.status != RunStatus::Parked {
                continue;
            }
            let Ok(rows) = checkpointing.store.load(summary.run).await else {
                continue;
            };
            let Some(Ok(Some(WaitRecord::Parked {
                signals: names,
                deadline_ms,
            }))) = rows
                .last()
                .filter(|r| r.kind == RowKind::Wait)
                .map(WaitRecord::of)
            else {
                continue;
            };
            let due = deadline_ms.is_some_and(|at| at <= now);
            if due || (!names.is_empty() && signals.first_for(summary.run, &names).await?.is_some())
            {
                scan.runnable.push(summary.run);
            } else if let Some(at) = deadline_ms {
                scan.next_deadline = Some(scan.next_deadline.map_or(at, |next| next.min(at)));
            }
        }
        Ok(scan)
    }

    /// Where run `run` stands, read from the store without a worker and without
    /// disturbing it: its state, status, what it waits for, its durable data and its
    /// inbox. Fails for a run without rows, or one written by another workflow or
    /// version.
    pub async fn query(&self, run: impl Into<RunRef>) -> Result<RunView<S>, CanoError> {
        let checkpointing = self.checkpointing()?;
        let run = checkpointing.identify(&run.into());
        let rows = checkpointing.store.load(run).await?;
        let settings = &self.spec.recovery;
        let point = replay(run, &rows, &settings.workflow_id, settings.version)?;
        let last = rows.last();
        let waiting = match last.map(WaitRecord::of).transpose()?.flatten() {
            Some(WaitRecord::Parked {
                signals,
                deadline_ms,
            }) if point.last_kind == RowKind::Wait => Some(Waiting {
                signals,
                deadline: deadline_ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
            }),
            _ => None,
        };
        let state = self.decode_checkpointed(checkpointing, &point.state)?;
        let inbox = match checkpointing.store.signals() {
            Some(signals) => signals.inbox(run, QUERY_INBOX).await?,
            None => Vec::new(),
        };
        Ok(RunView {
            run,
            state,
            status: RunStatus::after(point.last_kind),
            waiting,
            durable: point.durable,
            inbox,
            last_seq: point.last_seq,
            updated_at: last.map_or(UNIX_EPOCH, |r| r.written_at()),
            message: point.last_message,
        })
    }

    /// Cancels parked run `run`: writes its `Fail` row (cancelled while parked), so no
    /// signal or deadline wakes it. Like any failed run, it can be resumed later in its
    /// wait, with the deadline it had. Fails for a run that is not parked. (A run a
    /// PostgreSQL queue holds is cancelled through the queue: `RunQueue::cancel_parked`.)
    pub async fn cancel_parked(&self, run: impl Into<RunRef>) -> Result<(), CanoError> {
        let checkpointing = self.checkpointing()?;
        let run = checkpointing.identify(&run.into());
        let claim = crate::checkpoint::Claim::take(&self.spec.recovery.workflow_id, run)?;
        let rows = checkpointing.store.load(run).await?;
        let settings = &self.spec.recovery;
        let point = replay(run, &rows, &settings.workflow_id, settings.version)?;
        if point.last_kind != RowKind::Wait {
            return Err(CanoError::workflow(format!(
                "run {run} is not parked (its last row is {:?} in {})",
                point.last_kind, point.label
            ))
            .with_hint("cancel a running run through its RunHandle or cancellation token"));
        }
        let journal = self.journal(
            checkpointing,
            run,
            Start {
                next_seq: point.last_seq + 1,
                durable: point.durable,
                resumed_cursor: None,
            },
        );
        let why = CanoError::cancelled(format!("run {run} was cancelled while parked"));
        journal
            .fail_recorded(point.state, point.label, &why)
            .await?;
        drop(claim);
        Ok(())
    }
}
