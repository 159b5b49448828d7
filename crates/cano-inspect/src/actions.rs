//! Acting on runs: cancel, resume, retry from an earlier row, send a signal, delete.
//! Each action checks the run's status first, and is recorded in the run's action
//! log with who did it and why. Bulk actions go by filter, with a dry run that
//! changes nothing.

use cano_core::RunId;
use cano_core::checkpoint::{
    ActionRecord, CheckpointRow, DataChange, LiveStatus, PageCursor, RowKind, RunFilter, StoredRow,
};
use serde::Serialize;

use crate::detail::RunView;
use crate::error::InspectError;
use crate::inspector::{Backend, Inspector};
use crate::when::now_ms;

/// An action on one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop it: a queued, running or parked queue run gets a durable cancel request
    /// its worker honours; a run with only a log (interrupted or parked) gets a `Fail`
    /// row saying who cancelled it, so no resume picks it up by accident.
    Cancel,
    /// Send a failed or interrupted run back to the workers (PostgreSQL), resumed
    /// from its last checkpoint.
    Resume,
    /// Start a new run from row `from_row` of this one: its rows up to there are
    /// copied under a new id (PostgreSQL: and queued for the workers; sled: resumed
    /// by the program's next `resume_from` of it). Both runs record the link.
    Retry {
        /// The last row copied.
        from_row: u64,
    },
    /// Send the signal `name` with `payload` (already encoded as the wait expects)
    /// and an optional idempotency key.
    Signal {
        /// The signal's name.
        name: String,
        /// Its payload, encoded.
        payload: Vec<u8>,
        /// Its idempotency key.
        key: Option<String>,
    },
    /// Delete what is kept of a run that is over (its rows and inbox; on
    /// PostgreSQL its queue record too). The action log keeps the deletion.
    Delete,
}

impl Action {
    /// The action's name in logs and output.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Resume => "resume",
            Self::Retry { .. } => "retry",
            Self::Signal { .. } => "signal",
            Self::Delete => "delete",
        }
    }

    /// Whether a run in `status` can take the action (`Err` says why not and what
    /// would work).
    pub fn allowed(&self, status: LiveStatus) -> Result<(), &'static str> {
        use LiveStatus::*;
        let ok = match self {
            Self::Cancel => matches!(status, Queued | Running | Parked | Interrupted),
            Self::Resume => matches!(status, Failed | Interrupted),
            Self::Retry { .. } => !matches!(status, Unreadable | Queued),
            Self::Signal { .. } => matches!(status, Queued | Running | Parked | Interrupted),
            Self::Delete => matches!(status, Failed | Finished | RolledBack | Unreadable),
        };
        if ok {
            return Ok(());
        }
        Err(match self {
            Self::Cancel | Self::Signal { .. } => "only a run that is not over can take it",
            Self::Resume => "only a failed or interrupted run can be resumed",
            Self::Retry { .. } => "retry a run that has readable rows",
            Self::Delete => "cancel it first, and delete it once it is over",
        })
    }
}

/// Who acts, and why: kept in the run's action log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Who (a user name; `cano` by default on the command line).
    pub who: String,
    /// Why, in their words.
    pub why: String,
}

/// What an action did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionOutcome {
    /// The run acted on.
    pub run: String,
    /// The action.
    pub action: &'static str,
    /// What came of it.
    pub detail: String,
}

/// One run of a bulk action: what would be (or was) done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    /// The run.
    pub run: RunView,
    /// `will`/`did` act, `skip` (wrong status), or `failed`.
    pub verdict: &'static str,
    /// Why it is skipped or failed, or what was done.
    pub detail: String,
}

/// What a bulk action did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BulkReport {
    /// The action.
    pub action: &'static str,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Every run the filter matched.
    pub runs: Vec<Planned>,
}

impl BulkReport {
    /// How many runs had `verdict`.
    pub fn count(&self, verdict: &str) -> usize {
        self.runs.iter().filter(|p| p.verdict == verdict).count()
    }

    /// One sentence for people: `12 runs matched: 10 changed, 2 skipped, 0 failed`
    /// (`would change` for a dry run).
    pub fn summary(&self) -> String {
        let (done, verb) = if self.dry_run {
            ("will", "would change")
        } else {
            ("did", "changed")
        };
        format!(
            "{} runs matched: {} {verb}, {} skipped, {} failed",
            self.runs.len(),
            self.count(done),
            self.count("skip"),
            self.count("failed")
        )
    }
}

impl Inspector {
    /// Does `action` to `run` as `by`, once its status allows it, and records it.
    pub async fn act(
        &self,
        run: RunId,
        action: &Action,
        by: &Actor,
    ) -> Result<ActionOutcome, InspectError> {
        let listed = self.summary(run).await?;
        if let Err(hint) = action.allowed(listed.status) {
            return Err(InspectError::WrongStatus {
                action: action.name(),
                run,
                status: listed.status,
                hint,
            });
        }
        let detail = match action {
            Action::Cancel => self.cancel(run, listed.status, by).await?,
            Action::Resume => self.resume(run).await?,
            Action::Retry { from_row } => self.retry(run, *from_row, by).await?,
            Action::Signal { name, payload, key } => {
                let Some(signals) = self.store.signals() else {
                    return Err(InspectError::Unsupported {
                        action: "send a signal",
                        backend: self.backend.name(),
                        hint: "this store keeps no signal inbox",
                    });
                };
                let sent = signals
                    .send(run, name, payload.clone(), key.as_deref())
                    .await?;
                format!("signal {name:?} sent: {sent:?}")
            }
            Action::Delete => self.delete(run).await?,
        };
        self.catalog
            .record_action(&ActionRecord {
                run,
                action: action.name().to_owned(),
                actor: by.who.clone(),
                reason: by.why.clone(),
                detail: detail.clone(),
                at_ms: now_ms(),
            })
            .await
            .map_err(|e| {
                InspectError::BadInput(format!(
                    "the {} of run {run} was done ({detail}) but could not be logged: {e}; do not repeat it (check the store, then note it by hand if the log must show it)",
                    action.name()
                ))
            })?;
        Ok(ActionOutcome {
            run: run.to_string(),
            action: action.name(),
            detail,
        })
    }

    async fn cancel(
        &self,
        run: RunId,
        status: LiveStatus,
        by: &Actor,
    ) -> Result<String, InspectError> {
        // A run the queue still manages (queued, running, parked, or interrupted by a
        // lease that ran out: a worker will claim it again) is cancelled through the
        // queue. A `Fail` row alone would not stop it: its next claim resumes from
        // that row.
        #[cfg(feature = "postgres")]
        if let Backend::Postgres { queue, .. } = &self.backend
            && queue
                .status(run)
                .await?
                .is_some_and(|record| !record.status.is_over())
        {
            let reason = format!("cancelled by {}: {}", by.who, by.why);
            let was = queue.cancel(run, &reason).await?;
            return Ok(format!(
                "cancel requested (was {was:?}); its worker cancels it"
            ));
        }
        let _ = status;
        let rows = self.catalog.rows(run).await?;
        let Some(StoredRow::Read(last)) = rows.last() else {
            return Err(InspectError::BadInput(format!(
                "run {run}'s last row cannot be read, so no row can follow it: delete the run instead"
            )));
        };
        let row = CheckpointRow {
            run,
            seq: last.seq + 1,
            kind: RowKind::Fail,
            workflow: last.workflow.clone(),
            version: last.version,
            state: last.state.clone(),
            label: last.label.clone(),
            data: DataChange::default(),
            cursor: None,
            message: format!("cancelled by {}: {}", by.who, by.why),
            written_at_ms: now_ms(),
        };
        self.store.append(row).await?;
        Ok(format!("row {} records the cancel", last.seq + 1))
    }

    // Without PostgreSQL support every store answers that the program resumes its runs.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    async fn resume(&self, run: RunId) -> Result<String, InspectError> {
        match &self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres { queue, .. } => Ok(match queue.requeue(run).await? {
                cano_postgres::Requeued::Again => "queued again; a worker resumes it".to_owned(),
                cano_postgres::Requeued::Adopted => {
                    "queued for the workers of its workflow, which resume it".to_owned()
                }
            }),
            backend => Err(InspectError::Unsupported {
                action: "resume a run",
                backend: backend.name(),
                hint: "the program that runs the workflow resumes it (Workflow::resume_from with the run id)",
            }),
        }
    }

    async fn retry(&self, run: RunId, from_row: u64, by: &Actor) -> Result<String, InspectError> {
        let rows = self.catalog.rows(run).await?;
        let mut copied: Vec<CheckpointRow> = Vec::new();
        for stored in &rows {
            if stored.seq() > from_row {
                break;
            }
            match stored {
                StoredRow::Read(row) => copied.push(row.clone()),
                StoredRow::Unreadable { seq, .. } => {
                    return Err(InspectError::BadInput(format!(
                        "row {seq} of run {run} cannot be read, so the run cannot be retried from row {from_row}"
                    )));
                }
            }
        }
        match copied.last() {
            // On PostgreSQL the new run goes to the workers, which adopt a run to
            // resume, not one parked in a wait (nothing would wake it there).
            #[cfg(feature = "postgres")]
            Some(last)
                if last.kind == RowKind::Wait
                    && matches!(self.backend, Backend::Postgres { .. }) =>
            {
                return Err(InspectError::BadInput(format!(
                    "row {from_row} of run {run} parks it in a wait: retry from the row before it, so the new run enters the wait itself"
                )));
            }
            Some(last) if last.seq == from_row && !last.kind.ends_run() => {}
            Some(last) if last.seq == from_row => {
                return Err(InspectError::BadInput(format!(
                    "row {from_row} of run {run} ends it ({:?}): retry from an earlier row",
                    last.kind
                )));
            }
            _ => {
                return Err(InspectError::BadInput(format!(
                    "run {run} has no row {from_row}: `cano runs show {run}` lists its rows"
                )));
            }
        }
        let new = RunId::new();
        for (i, mut row) in copied.into_iter().enumerate() {
            row.run = new;
            row.seq = i as u64;
            self.store.append(row).await?;
        }
        let mut detail = format!("new run {new} from row {from_row}");
        #[cfg(feature = "postgres")]
        if let Backend::Postgres { queue, .. } = &self.backend {
            queue.requeue(new).await?;
            detail.push_str(", queued for the workers");
        }
        self.catalog
            .record_action(&ActionRecord {
                run: new,
                action: "retry".to_owned(),
                actor: by.who.clone(),
                reason: by.why.clone(),
                detail: format!("retry of run {run} from row {from_row}"),
                at_ms: now_ms(),
            })
            .await?;
        if matches!(self.backend, Backend::Sled(_) | Backend::Memory) {
            detail.push_str("; the program resumes it with Workflow::resume_from");
        }
        Ok(detail)
    }

    async fn delete(&self, run: RunId) -> Result<String, InspectError> {
        match &self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres { queue, .. } => queue.forget(run).await?,
            _ => self.store.clear(run).await?,
        }
        Ok("deleted".to_owned())
    }

    /// Does `action` (or, with `dry_run`, only says what it would do) to every run
    /// `filter` matches. Runs in the wrong status are skipped; a run that fails is
    /// reported and the others go on.
    pub async fn act_on_all(
        &self,
        filter: &RunFilter,
        action: &Action,
        by: &Actor,
        dry_run: bool,
    ) -> Result<BulkReport, InspectError> {
        // Every matching run first: acting while paging would move runs between pages.
        let mut matched = Vec::new();
        let mut after: Option<PageCursor> = None;
        loop {
            let page = self.catalog.list_runs(filter, after, 1000).await?;
            matched.extend(page.runs);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let mut runs = Vec::with_capacity(matched.len());
        for listed in matched {
            let view = RunView::from(&listed);
            let planned = match action.allowed(listed.status) {
                Err(hint) => Planned {
                    run: view,
                    verdict: "skip",
                    detail: format!("it is {}: {hint}", listed.status),
                },
                Ok(()) if dry_run => Planned {
                    run: view,
                    verdict: "will",
                    detail: format!("would {}", action.name()),
                },
                Ok(()) => match self.act(listed.run, action, by).await {
                    Ok(outcome) => Planned {
                        run: view,
                        verdict: "did",
                        detail: outcome.detail,
                    },
                    Err(e) => Planned {
                        run: view,
                        verdict: "failed",
                        detail: e.to_string(),
                    },
                },
            };
            runs.push(planned);
        }
        Ok(BulkReport {
            action: action.name(),
            dry_run,
            runs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_action_names_the_statuses_it_takes() {
        for status in LiveStatus::ALL {
            let over = matches!(status, LiveStatus::Finished | LiveStatus::RolledBack);
            assert_eq!(
                Action::Cancel.allowed(status).is_ok(),
                !over && !matches!(status, LiveStatus::Failed | LiveStatus::Unreadable)
            );
            assert_eq!(
                Action::Delete.allowed(status).is_ok(),
                over || matches!(status, LiveStatus::Failed | LiveStatus::Unreadable)
            );
        }
        assert!(Action::Resume.allowed(LiveStatus::Finished).is_err());
        assert!(Action::Resume.allowed(LiveStatus::Failed).is_ok());
    }
}
