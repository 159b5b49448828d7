//! Signals: the inbox a store keeps per run, and what wait states record in their rows.
//!
//! A signal is written to its run's inbox by [`SignalStore::send`] from anywhere that
//! has the store, whether the run is parked or not: a run reaching its wait takes the
//! oldest signal it waits for. Taking a signal is one atomic step with appending the
//! run's `Received` row ([`SignalStore::append_taking`]), so a crash leaves either both
//! or neither: a signal is consumed exactly once and never lost.

use serde::{Deserialize, Serialize};

use super::{Bincode, CheckpointRow, Codec, RowKind};
use crate::error::CanoError;
use crate::run_id::RunId;

/// How many signals one run's inbox holds at most. A send past it is refused with a
/// clear error instead of letting one run's inbox grow without bound.
pub const INBOX_LIMIT: usize = 10_000;

/// One signal in a run's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// The run it is for.
    pub run: RunId,
    /// Its number in the store, given by the store when it was sent; increasing in the
    /// order signals were sent.
    pub id: u64,
    /// Its name: what a wait state waits for.
    pub name: String,
    /// Its payload, encoded by the workflow's codec.
    pub payload: Vec<u8>,
    /// The idempotency key it was sent with: a second send with the same key (to the
    /// same run) is the same signal.
    pub key: Option<String>,
    /// When it was sent, in milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
}

/// What [`SignalStore::send`] did with a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sent {
    /// The run is parked waiting for this signal's name: it goes on once woken (at
    /// once, when the sender is the process serving the run's waits).
    Waiting {
        /// The signal's id in the inbox.
        id: u64,
    },
    /// The run is not waiting for it yet: the signal is kept in the inbox and taken
    /// when the run reaches a wait for its name.
    Buffered {
        /// The signal's id in the inbox.
        id: u64,
    },
    /// A signal with the same idempotency key was sent to this run before: nothing was
    /// added.
    Duplicate {
        /// The id of the signal sent first.
        id: u64,
    },
}

impl Sent {
    /// The id of the signal in the inbox (for a duplicate, the first one's).
    pub fn id(self) -> u64 {
        match self {
            Self::Waiting { id } | Self::Buffered { id } | Self::Duplicate { id } => id,
        }
    }
}

/// What a wait state records in the `cursor` of its rows: its plan when it parks
/// (`Wait` rows) and what woke it (`Received` rows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaitRecord {
    /// Parked: waiting for any of `signals` until `deadline_ms` (milliseconds since
    /// the Unix epoch; `None` waits for ever).
    Parked {
        /// The signal names that wake it.
        signals: Vec<String>,
        /// When it stops waiting.
        deadline_ms: Option<u64>,
    },
    /// Woken by the signal `id` named `name`, with its payload.
    Signal {
        /// The signal's id in the inbox it was taken from.
        id: u64,
        /// The signal's name.
        name: String,
        /// Its payload, encoded.
        payload: Vec<u8>,
    },
    /// Woken by its deadline.
    DeadlinePassed,
}

impl WaitRecord {
    /// The record as a row's `cursor`.
    pub fn encode(&self) -> Result<Vec<u8>, CanoError> {
        Bincode::encode(self)
    }

    /// The record in a `Wait` or `Received` row; `None` for rows of other kinds, an
    /// error naming the run and row when it cannot be read.
    pub fn of(row: &CheckpointRow) -> Result<Option<Self>, CanoError> {
        if !matches!(row.kind, RowKind::Wait | RowKind::Received) {
            return Ok(None);
        }
        let Some(bytes) = &row.cursor else {
            return Err(CanoError::store(format!(
                "row {} ({:?} {}) of run {} records no wait",
                row.seq, row.kind, row.label, row.run
            ))
            .permanent());
        };
        Self::decode(bytes).map(Some).map_err(|e| {
            CanoError::store(format!(
                "row {} ({:?} {}) of run {}: its wait record cannot be read: {}",
                row.seq,
                row.kind,
                row.label,
                row.run,
                e.message()
            ))
            .with_source(e)
            .permanent()
        })
    }

    /// The record from a row's `cursor` bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, CanoError> {
        Bincode::decode(bytes)
    }

    /// Whether a parked wait is woken by a signal named `name`.
    pub fn waits_for(&self, name: &str) -> bool {
        matches!(self, Self::Parked { signals, .. } if signals.iter().any(|s| s == name))
    }
}

/// A store's signal inbox, beside its checkpoint rows (see the module docs). Reached
/// through [`CheckpointStore::signals`](super::CheckpointStore::signals).
///
/// The contract the engine relies on:
///
/// - [`send`](Self::send) checks the run with [`check_signal`] against its last row,
///   atomically with adding the signal: a run without rows or whose log ended is
///   refused, never silently dropped.
/// - A key already sent to the run answers [`Sent::Duplicate`] and adds nothing, for
///   as long as the run has rows (keys go when its rows are cleared).
/// - An inbox holds at most [`INBOX_LIMIT`] signals; a send past it is refused with
///   [`signal_limit_error`].
/// - [`append_taking`](Self::append_taking) appends the row (by the rules of
///   `CheckpointStore::append`) and removes the signal in one atomic step, and fails
///   with neither done when the signal is no longer in the inbox.
/// - When a run's rows are cleared or pruned, its inbox goes with them.
#[async_trait::async_trait]
pub trait SignalStore: Send + Sync {
    /// Adds a signal named `name` with `payload` to `run`'s inbox.
    async fn send(
        &self,
        run: RunId,
        name: &str,
        payload: Vec<u8>,
        key: Option<&str>,
    ) -> Result<Sent, CanoError>;

    /// The oldest signal in `run`'s inbox whose name is one of `names`.
    async fn first_for(&self, run: RunId, names: &[String]) -> Result<Option<Signal>, CanoError>;

    /// Up to `limit` signals of `run`'s inbox, oldest first.
    async fn inbox(&self, run: RunId, limit: usize) -> Result<Vec<Signal>, CanoError>;

    /// Appends `row` and removes signal `signal` from its run's inbox, both or neither.
    async fn append_taking(&self, row: CheckpointRow, signal: u64) -> Result<(), CanoError>;

    /// Removes signal `signal` from `run`'s inbox without anything consuming it (a
    /// payload no handler can read); whether it was there.
    async fn discard(&self, run: RunId, signal: u64) -> Result<bool, CanoError>;
}

/// The rule every [`SignalStore::send`] applies, given `run`'s last row: an error for
/// a run without rows or whose log ended, otherwise whether the run is parked waiting
/// for `name` ([`Sent::Waiting`]) or the signal is to be kept ([`Sent::Buffered`]).
pub fn check_signal(
    run: RunId,
    last: Option<&CheckpointRow>,
    name: &str,
) -> Result<bool, CanoError> {
    let Some(last) = last else {
        return Err(CanoError::store(format!(
            "signal {name:?} cannot be sent to run {run}: the store has no rows for it"
        ))
        .with_hint("the run never started with this store, or it finished and its rows were cleared; check the run id")
        .permanent());
    };
    if last.kind.ends_run() {
        return Err(CanoError::store(format!(
            "signal {name:?} cannot be sent to run {run}: the run is over ({:?} in {})",
            last.kind, last.label
        ))
        .with_hint("a finished run reads no signal; start a new run instead")
        .permanent());
    }
    Ok(WaitRecord::of(last)?.is_some_and(|w| w.waits_for(name)))
}

/// The error of a send to an inbox that holds [`INBOX_LIMIT`] signals already.
pub fn signal_limit_error(run: RunId, name: &str) -> CanoError {
    CanoError::store(format!(
        "signal {name:?} cannot be sent to run {run}: its inbox already holds {INBOX_LIMIT} signals"
    ))
    .with_hint("the run is not taking its signals (is it parked in a wait for other names, or failed?); resume or clear it, or send fewer signals")
}

/// The error of [`SignalStore::append_taking`] when the signal is gone.
pub fn signal_taken_error(run: RunId, signal: u64) -> CanoError {
    CanoError::store(format!(
        "signal {signal} of run {run} is no longer in its inbox: another process or task took it"
    ))
    .with_hint("drive a run from one place only; this one stops and the other goes on")
    .permanent()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::DataChange;

    fn row(kind: RowKind, cursor: Option<Vec<u8>>) -> CheckpointRow {
        CheckpointRow {
            run: RunId::from(5),
            seq: 1,
            kind,
            workflow: "w".into(),
            version: 1,
            state: vec![],
            label: "Approve".into(),
            data: DataChange::default(),
            cursor,
            message: String::new(),
            written_at_ms: 0,
        }
    }

    #[test]
    fn a_signal_to_a_run_without_rows_or_over_is_refused_and_names_it() {
        let run = RunId::from(5);
        let none = check_signal(run, None, "approval").unwrap_err().to_string();
        assert!(
            none.contains(&run.to_string()) && none.contains("approval"),
            "{none}"
        );
        let over = check_signal(run, Some(&row(RowKind::Finish, None)), "approval");
        assert!(over.unwrap_err().to_string().contains("over"));
    }

    #[test]
    fn a_parked_run_is_waiting_only_for_its_own_names() {
        let parked = WaitRecord::Parked {
            signals: vec!["approval".into()],
            deadline_ms: None,
        };
        let wait = row(RowKind::Wait, Some(parked.encode().unwrap()));
        assert!(check_signal(RunId::from(5), Some(&wait), "approval").unwrap());
        assert!(!check_signal(RunId::from(5), Some(&wait), "refund").unwrap());
        let entered = row(RowKind::Enter, None);
        assert!(!check_signal(RunId::from(5), Some(&entered), "approval").unwrap());
    }

    #[test]
    fn a_wait_row_without_a_readable_record_is_an_error() {
        let broken = row(RowKind::Wait, Some(vec![0xff, 0xff]));
        assert!(WaitRecord::of(&broken).is_err());
        assert!(WaitRecord::of(&row(RowKind::Wait, None)).is_err());
        assert_eq!(
            WaitRecord::of(&row(RowKind::Step, Some(vec![1]))).unwrap(),
            None
        );
    }
}
