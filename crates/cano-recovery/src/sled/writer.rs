//! The writer thread: the one place that touches the sled database, so checkpoint I/O
//! never blocks tokio's worker threads and rows that arrive together share one flush.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use std::collections::HashMap;

use cano_core::checkpoint::{
    ActionRecord, Bincode, CheckpointRow, Codec, INBOX_LIMIT, ListedRun, NewestFirst, PageCursor,
    RunFilter, RunPage, RunStatus, RunSummary, Sent, Signal, StatusCounts, StoredRow,
    check_next_seq, check_signal, signal_limit_error, signal_taken_error,
};
use cano_core::{CanoError, RunId};
use sled::Transactional;
use tokio::sync::oneshot;

use super::Durability;
use super::disk::{self, DiskSync};
use crate::codec::{decode_row, encode_row};

pub(super) type Reply<T> = oneshot::Sender<Result<T, CanoError>>;

/// The answer to a write, sent once the write is as durable as the store promises.
type Pending = Box<dyn FnOnce(Result<(), CanoError>) + Send>;

/// A signal to add to a run's inbox.
pub(super) struct Outgoing {
    pub(super) run: RunId,
    pub(super) name: String,
    pub(super) payload: Vec<u8>,
    pub(super) key: Option<String>,
}

pub(super) enum Command {
    Append(Box<CheckpointRow>, Reply<()>),
    /// Append the row and take the signal from the inbox, in one transaction.
    AppendTaking(Box<CheckpointRow>, u64, Reply<()>),
    Send(Box<Outgoing>, Reply<Sent>),
    FirstFor(RunId, Vec<String>, Reply<Option<Signal>>),
    Inbox(RunId, usize, Reply<Vec<Signal>>),
    Discard(RunId, u64, Reply<bool>),
    Load(RunId, Reply<Vec<CheckpointRow>>),
    Truncate(RunId, u64, Reply<()>),
    Clear(RunId, Reply<()>),
    Unfinished(Reply<Vec<RunSummary>>),
    List(Box<RunFilter>, Option<PageCursor>, usize, Reply<RunPage>),
    Count(Box<RunFilter>, Reply<StatusCounts>),
    RecordGraph(Box<(String, u32, String)>, Reply<()>),
    Graph(Box<(String, u32)>, Reply<Option<String>>),
    RecordAction(Box<ActionRecord>, Reply<()>),
    Actions(RunId, Reply<Vec<ActionRecord>>),
    Rows(RunId, Reply<Vec<StoredRow>>),
    Prune(SystemTime, Reply<usize>),
    Flush(Reply<()>),
    /// Flush, close the database, and answer once its directory is free.
    Close(Reply<()>),
    Shutdown,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) rows: AtomicU64,
    pub(super) flushes: AtomicU64,
    pub(super) syncs: AtomicU64,
}

/// Commands taken from the queue at once: their writes share one flush.
const MAX_GROUP: usize = 1024;

pub(super) struct Writer {
    pub(super) db: sled::Db,
    pub(super) tree: sled::Tree,
    /// Signals not yet taken, keyed by run then signal id.
    pub(super) inbox: sled::Tree,
    /// Every idempotency key a run was sent, keyed by run then key: the signal's id.
    pub(super) keys: sled::Tree,
    /// Each workflow version's drawing (see [`graph_key`]).
    pub(super) graphs: sled::Tree,
    /// Operators' actions, by run then id.
    pub(super) actions: sled::Tree,
    /// How many signals each run's inbox holds, counted once per run on first use.
    pub(super) inbox_sizes: HashMap<RunId, usize>,
    pub(super) disk: DiskSync,
    pub(super) dir: PathBuf,
    pub(super) durability: Durability,
    pub(super) counters: Arc<Counters>,
}

/// Lets other stores of this process open the directory once the writer is gone, by
/// whatever way it ends (a panic included).
struct LetGo(PathBuf);

impl Drop for LetGo {
    fn drop(&mut self) {
        disk::released(&self.0);
    }
}

impl Writer {
    /// The thread's body: commands until the store is dropped or closed, then a last
    /// flush, the database closed, and the directory let go.
    pub(super) fn serve(self, commands: mpsc::Receiver<Command>) {
        let let_go = LetGo(self.dir.clone());
        // Returns once the database is dropped: only then does sled release its lock.
        let closing = self.run(commands);
        drop(let_go);
        if let Some(reply) = closing {
            let _ = reply.send(Ok(()));
        }
    }

    /// Serves commands; returns the reply of a `Close` that ended it, if one did.
    fn run(mut self, commands: mpsc::Receiver<Command>) -> Option<Reply<()>> {
        let mut closing = None;
        let every = match self.durability {
            Durability::Periodic(every) => Some(every),
            _ => None,
        };
        // Periodic mode: when the rows written since the last flush are due.
        let mut due: Option<Instant> = None;
        let mut waiting: Vec<Pending> = Vec::new();
        loop {
            let first = match due {
                Some(at) => {
                    match commands.recv_timeout(at.saturating_duration_since(Instant::now())) {
                        Ok(command) => command,
                        Err(RecvTimeoutError::Timeout) => {
                            let _ = self.flush();
                            due = None;
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match commands.recv() {
                    Ok(command) => command,
                    Err(_) => break,
                },
            };
            let mut next = Some(first);
            let mut taken = 0;
            let mut shutdown = false;
            let mut wrote = false;
            while let Some(command) = next.take() {
                taken += 1;
                match command {
                    Command::Shutdown => shutdown = true,
                    Command::Close(reply) => {
                        closing = Some(reply);
                        shutdown = true;
                    }
                    other => wrote |= self.handle(other, &mut waiting),
                }
                if taken < MAX_GROUP && !shutdown {
                    next = commands.try_recv().ok();
                }
            }
            self.flush_group(&mut waiting);
            if shutdown {
                break;
            }
            if let (Some(every), true, None) = (every, wrote, due) {
                // `Duration::MAX` never comes due: rows wait for an explicit flush or
                // the store's closing.
                due = Instant::now().checked_add(every);
            }
        }
        self.flush_group(&mut waiting);
        let flushed = self.flush();
        match closing {
            Some(reply) if flushed.is_err() => {
                let _ = reply.send(flushed);
                None
            }
            other => other,
        }
    }

    /// Runs one command; returns whether it wrote something a flush must cover. Writes
    /// that must be durable before their caller goes on are answered by `flush_group`
    /// (group commit) or flushed here (`EveryRow`).
    fn handle(&mut self, command: Command, waiting: &mut Vec<Pending>) -> bool {
        let mut wrote = false;
        let mut write = |this: &mut Self, result: Result<(), CanoError>, reply: Pending| {
            wrote |= result.is_ok();
            match (result, this.durability) {
                (Err(e), _) => reply(Err(e)),
                (Ok(()), Durability::EveryRow) => reply(this.flush()),
                (Ok(()), Durability::GroupCommit) => waiting.push(reply),
                (Ok(()), Durability::Periodic(_)) => reply(Ok(())),
            }
        };
        // The answer to a write that returns `value` once durable.
        fn answer<T: Send + 'static>(reply: Reply<T>, value: Option<T>) -> Pending {
            Box::new(move |result: Result<(), CanoError>| {
                let _ = reply.send(result.and_then(|()| {
                    value.ok_or_else(|| CanoError::store("the write had no result"))
                }));
            })
        }
        match command {
            Command::Append(row, reply) => {
                let result = self.append(&row);
                write(self, result, answer(reply, Some(())));
            }
            Command::AppendTaking(row, signal, reply) => {
                let result = self.append_taking(&row, signal);
                write(self, result, answer(reply, Some(())));
            }
            Command::Send(outgoing, reply) => match self.send(&outgoing) {
                // A duplicate wrote nothing.
                Ok(sent @ Sent::Duplicate { .. }) => drop(reply.send(Ok(sent))),
                Ok(sent) => write(self, Ok(()), answer(reply, Some(sent))),
                Err(e) => drop(reply.send(Err(e))),
            },
            Command::Discard(run, signal, reply) => match self.discard(run, signal) {
                Ok(true) => write(self, Ok(()), answer(reply, Some(true))),
                other => drop(reply.send(other)),
            },
            Command::FirstFor(run, names, reply) => {
                drop(reply.send(self.first_for(run, &names)));
            }
            Command::Inbox(run, limit, reply) => drop(reply.send(self.signals_of(run, limit))),
            Command::Clear(run, reply) => {
                let result = self.remove_range(run, 0, u64::MAX);
                write(self, result, answer(reply, Some(())));
            }
            Command::Truncate(run, before, reply) => {
                // Dropping superseded rows can wait for the next flush.
                let _ = reply.send(self.remove_range(run, 0, before));
            }
            Command::Load(run, reply) => drop(reply.send(self.load(run))),
            Command::Unfinished(reply) => drop(reply.send(self.unfinished())),
            Command::List(filter, after, limit, reply) => {
                drop(reply.send(self.list(&filter, after, limit)));
            }
            Command::Count(filter, reply) => drop(reply.send(self.count(&filter))),
            Command::RecordGraph(graph, reply) => {
                let (workflow, version, mermaid) = *graph;
                let result = self
                    .graphs
                    .insert(graph_key(&workflow, version), mermaid.into_bytes())
                    .map(drop)
                    .map_err(|e| {
                        io_error(
                            format!("could not keep the graph of workflow {workflow:?}"),
                            e,
                        )
                    });
                write(self, result, answer(reply, Some(())));
            }
            Command::Graph(which, reply) => {
                let (workflow, version) = *which;
                let found = if version == 0 {
                    // The highest version: the last key after the id and its zero byte.
                    let mut prefix = workflow.as_bytes().to_vec();
                    prefix.push(0);
                    self.graphs
                        .scan_prefix(prefix)
                        .values()
                        .next_back()
                        .transpose()
                } else {
                    self.graphs.get(graph_key(&workflow, version))
                };
                let found = found
                    .map(|v| v.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
                    .map_err(|e| {
                        io_error(
                            format!("could not read the graph of workflow {workflow:?}"),
                            e,
                        )
                    });
                drop(reply.send(found));
            }
            Command::RecordAction(action, reply) => {
                let result = self.record_action(&action);
                write(self, result, answer(reply, Some(())));
            }
            Command::Actions(run, reply) => drop(reply.send(self.actions_of(run))),
            Command::Rows(run, reply) => drop(reply.send(self.stored_rows(run))),
            Command::Prune(cutoff, reply) => {
                let pruned = self.prune(cutoff);
                let answer = match pruned {
                    Ok(n) => match self.durability {
                        Durability::Periodic(_) => {
                            wrote = true;
                            Ok(n)
                        }
                        _ => self.flush().map(|()| n),
                    },
                    Err(e) => Err(e),
                };
                drop(reply.send(answer));
            }
            Command::Flush(reply) => drop(reply.send(self.flush())),
            Command::Close(_) | Command::Shutdown => {}
        }
        wrote
    }

    /// Flushes sled's buffers, then syncs what the flush left unsynced (see `disk`).
    fn flush(&mut self) -> Result<(), CanoError> {
        self.db
            .flush()
            .map_err(|e| io_error("could not flush the sled checkpoint store".into(), e))?;
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        self.disk.sync().map_err(|e| {
            CanoError::store(format!(
                "could not sync the sled checkpoint store at {} to disk: {e}",
                self.dir.display()
            ))
            .with_source(e)
            .with_hint(
                "check the disk (free space, hardware errors); rows acknowledged before are kept",
            )
        })?;
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn flush_group(&mut self, waiting: &mut Vec<Pending>) {
        if waiting.is_empty() {
            return;
        }
        let flushed = self.flush();
        for reply in waiting.drain(..) {
            let answer = match &flushed {
                Ok(()) => Ok(()),
                Err(e) => Err(CanoError::store(e.message().to_owned()).with_hint(
                    "the flush shared by this row failed: the row may or may not be on disk; rows acknowledged before are kept",
                )),
            };
            reply(answer);
        }
    }

    fn last_seq(&self, run: RunId) -> Result<Option<u64>, CanoError> {
        for key in self
            .tree
            .scan_prefix(run.as_u64().to_be_bytes())
            .keys()
            .rev()
        {
            let key =
                key.map_err(|e| io_error(format!("could not read the rows of run {run}"), e))?;
            if let Some((_, seq)) = split_key(&key) {
                return Ok(Some(seq));
            }
        }
        Ok(None)
    }

    fn append(&self, row: &CheckpointRow) -> Result<(), CanoError> {
        // Only this thread writes and sled locks the directory to one process, so the
        // check and the insert below cannot be interleaved with another append.
        check_next_seq(row.run, self.last_seq(row.run)?, row.seq)?;
        let bytes = encode_row(row)?;
        self.tree
            .insert(key(row.run, row.seq), bytes)
            .map(drop)
            .map_err(|e| {
                io_error(
                    format!("could not write row {} of run {}", row.seq, row.run),
                    e,
                )
            })?;
        self.counters.rows.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn decode(run: RunId, seq: u64, bytes: &[u8]) -> Result<CheckpointRow, CanoError> {
        let row = decode_row(bytes).map_err(|e| {
            CanoError::store(format!("row {seq} of run {run}: {}", e.message())).with_source(e)
                .with_hint("the row cannot be trusted; inspect the store, or clear the run and start it again")
                .permanent()
        })?;
        if row.run != run || row.seq != seq {
            return Err(CanoError::store(format!(
                "row {seq} of run {run} holds row {} of run {}: the store is corrupt",
                row.seq, row.run
            ))
            .permanent());
        }
        Ok(row)
    }

    fn load(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError> {
        self.tree
            .scan_prefix(run.as_u64().to_be_bytes())
            .map(|entry| {
                let (k, v) = entry
                    .map_err(|e| io_error(format!("could not read the rows of run {run}"), e))?;
                let (_, seq) = split_key(&k).ok_or_else(|| {
                    CanoError::store(format!(
                        "a key of run {run} is malformed ({} bytes, not 16): the store is corrupt",
                        k.len()
                    ))
                    .permanent()
                })?;
                Self::decode(run, seq, &v)
            })
            .collect()
    }

    fn remove_range(&mut self, run: RunId, from: u64, before: u64) -> Result<(), CanoError> {
        if from == 0 && before == u64::MAX {
            // The inbox first: a crash in between leaves a run without signals, never
            // signals that a later run under the same id would read.
            self.clear_inbox(run)?;
        }
        let mut batch = sled::Batch::default();
        let prefix = run.as_u64().to_be_bytes();
        for k in self.tree.scan_prefix(prefix).keys() {
            let k = k.map_err(|e| io_error(format!("could not read the rows of run {run}"), e))?;
            // Malformed keys of the run go with it when the whole run is removed.
            let seq = split_key(&k).map(|(_, seq)| seq);
            let remove = match seq {
                Some(seq) => seq >= from && (seq < before || before == u64::MAX),
                None => from == 0 && before == u64::MAX,
            };
            if remove {
                batch.remove(k);
            }
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| io_error(format!("could not delete rows of run {run}"), e))
    }

    /// Each run's summary from its last row, run by run. A key that names no run is
    /// skipped; a run whose last row cannot be read is listed as
    /// [`RunStatus::Unreadable`], with what its readable rows say of it.
    fn each_run(&self, mut f: impl FnMut(RunSummary)) -> Result<(), CanoError> {
        self.each_run_id(|run| {
            if let Some(summary) = self.summary(run)? {
                f(summary);
            }
            Ok(())
        })
    }

    /// Each run that has a key, in key order, one range read per run: no run's rows
    /// are held beyond its turn.
    fn each_run_id(
        &self,
        mut f: impl FnMut(RunId) -> Result<(), CanoError>,
    ) -> Result<(), CanoError> {
        let listing = |e| io_error("could not list the runs".into(), e);
        let mut from: Vec<u8> = Vec::new();
        loop {
            let Some(first) = self.tree.range(from.as_slice()..).keys().next() else {
                return Ok(());
            };
            let first = first.map_err(listing)?;
            if first.len() < 8 {
                // Too short to name a run: step past it alone.
                from = first.to_vec();
                from.push(0);
                continue;
            }
            let run = RunId::from(u64::from_be_bytes(
                first[..8].try_into().unwrap_or_default(),
            ));
            f(run)?;
            match run.as_u64().checked_add(1) {
                Some(next) => from = next.to_be_bytes().to_vec(),
                None => return Ok(()),
            }
        }
    }

    /// What a listing shows of `run`: its last row, its error, and when its first
    /// (oldest kept) row was written. One range read for both ends; a run whose last
    /// row cannot be read is summarised from its readable rows as `Unreadable`.
    fn listed(&self, run: RunId) -> Result<Option<ListedRun>, CanoError> {
        let read = |e| io_error(format!("could not read the rows of run {run}"), e);
        let mut rows = self.tree.scan_prefix(run.as_u64().to_be_bytes());
        let Some(first) = rows.next() else {
            return Ok(None);
        };
        let first = first.map_err(read)?;
        let last = match rows.next_back() {
            Some(last) => last.map_err(read)?,
            None => first.clone(),
        };
        let decoded = |(k, v): &(sled::IVec, sled::IVec)| {
            split_key(k).map(|(_, seq)| Self::decode(run, seq, v))
        };
        match (decoded(&first), decoded(&last)) {
            (Some(Ok(first)), Some(Ok(last))) => {
                Ok(Some(ListedRun::from_rows(first.written_at_ms, &last)))
            }
            _ => {
                let Some(summary) = self.summary(run)? else {
                    return Ok(None);
                };
                let first_ms = match decoded(&first) {
                    Some(Ok(row)) => row.written_at_ms,
                    _ => summary.updated_at_ms,
                };
                Ok(Some(ListedRun {
                    run,
                    workflow: summary.workflow.clone(),
                    version: summary.version,
                    status: summary.status.into(),
                    last_seq: Some(summary.last_seq),
                    label: String::new(),
                    error: summary.label.clone(),
                    started_at_us: first_ms.saturating_mul(1000),
                    updated_at_ms: summary.updated_at_ms,
                }))
            }
        }
    }

    fn list(
        &self,
        filter: &RunFilter,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<RunPage, CanoError> {
        let mut page = NewestFirst::new(after, limit);
        self.each_run_id(|run| {
            if let Some(listed) = self.listed(run)?
                && filter.matches(&listed)
            {
                page.offer(listed);
            }
            Ok(())
        })?;
        Ok(page.finish())
    }

    fn count(&self, filter: &RunFilter) -> Result<StatusCounts, CanoError> {
        let mut counts = StatusCounts::default();
        self.each_run_id(|run| {
            if let Some(listed) = self.listed(run)?
                && filter.matches_ignoring_status(&listed)
            {
                counts.add(listed.status, 1);
            }
            Ok(())
        })?;
        Ok(counts)
    }

    /// What the rows of `run` say of it (`None` when it has no well-formed row).
    fn summary(&self, run: RunId) -> Result<Option<RunSummary>, CanoError> {
        let mut unreadable: Option<(u64, CanoError)> = None;
        for entry in self.tree.scan_prefix(run.as_u64().to_be_bytes()).rev() {
            let (k, v) =
                entry.map_err(|e| io_error(format!("could not read the rows of run {run}"), e))?;
            let Some((_, seq)) = split_key(&k) else {
                continue;
            };
            match Self::decode(run, seq, &v) {
                Ok(row) => {
                    let mut summary = RunSummary::from_last_row(&row);
                    if let Some((last_seq, error)) = unreadable {
                        summary.status = RunStatus::Unreadable;
                        summary.last_seq = last_seq;
                        summary.label = error.to_string();
                    }
                    return Ok(Some(summary));
                }
                Err(e) => {
                    unreadable.get_or_insert((seq, e));
                }
            }
        }
        Ok(unreadable.map(|(last_seq, error)| RunSummary {
            run,
            workflow: String::new(),
            version: 0,
            status: RunStatus::Unreadable,
            last_seq,
            label: error.to_string(),
            updated_at_ms: 0,
        }))
    }

    fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError> {
        let mut runs = Vec::new();
        self.each_run(|summary| {
            if !matches!(summary.status, RunStatus::Finished | RunStatus::RolledBack) {
                runs.push(summary);
            }
        })?;
        Ok(runs)
    }

    fn prune(&mut self, cutoff: SystemTime) -> Result<usize, CanoError> {
        let cutoff_ms = cutoff
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut stale = Vec::new();
        self.each_run(|summary| {
            // A run none of whose rows can be read has no age: it stays for a person
            // to look at.
            if summary.updated_at_ms != 0 && summary.updated_at_ms < cutoff_ms {
                stale.push(summary.run);
            }
        })?;
        for run in &stale {
            self.remove_range(*run, 0, u64::MAX)?;
        }
        Ok(stale.len())
    }
}

/// The inbox: signals per run, beside the rows.
impl Writer {
    fn last_row(&self, run: RunId) -> Result<Option<CheckpointRow>, CanoError> {
        for entry in self.tree.scan_prefix(run.as_u64().to_be_bytes()).rev() {
            let (k, v) =
                entry.map_err(|e| io_error(format!("could not read the rows of run {run}"), e))?;
            if let Some((_, seq)) = split_key(&k) {
                return Self::decode(run, seq, &v).map(Some);
            }
        }
        Ok(None)
    }

    fn inbox_size(&mut self, run: RunId) -> usize {
        let inbox = &self.inbox;
        *self
            .inbox_sizes
            .entry(run)
            .or_insert_with(|| inbox.scan_prefix(run.as_u64().to_be_bytes()).count())
    }

    fn send(&mut self, outgoing: &Outgoing) -> Result<Sent, CanoError> {
        let run = outgoing.run;
        let name = outgoing.name.as_str();
        let waiting = check_signal(run, self.last_row(run)?.as_ref(), name)?;
        let reading = |e| io_error(format!("could not read the inbox of run {run}"), e);
        if let Some(key) = &outgoing.key
            && let Some(first) = self.keys.get(text_key(run, key)).map_err(reading)?
        {
            let id = <[u8; 8]>::try_from(&*first)
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            return Ok(Sent::Duplicate { id });
        }
        if self.inbox_size(run) >= INBOX_LIMIT {
            return Err(signal_limit_error(run, name));
        }
        let id = self
            .db
            .generate_id()
            .map_err(|e| io_error("could not number a signal".into(), e))?;
        let signal = Signal {
            run,
            id,
            name: name.to_owned(),
            payload: outgoing.payload.clone(),
            key: outgoing.key.clone(),
            sent_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        };
        let bytes = encode_signal(&signal)?;
        let writing = |e| io_error(format!("could not write signal {name:?} of run {run}"), e);
        // The key and the signal together: a crash keeps both or neither.
        (&self.inbox, &self.keys)
            .transaction(|(inbox, keys)| {
                inbox.insert(&key(run, id)[..], bytes.as_slice())?;
                if let Some(k) = &signal.key {
                    keys.insert(text_key(run, k), &id.to_be_bytes()[..])?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => writing(e),
                sled::transaction::TransactionError::Abort(()) => {
                    CanoError::store(format!("writing signal {name:?} of run {run} was aborted"))
                }
            })?;
        *self.inbox_sizes.entry(run).or_default() += 1;
        Ok(if waiting {
            Sent::Waiting { id }
        } else {
            Sent::Buffered { id }
        })
    }

    fn signals_where(
        &self,
        run: RunId,
        limit: usize,
        mut keep: impl FnMut(&Signal) -> bool,
    ) -> Result<Vec<Signal>, CanoError> {
        let mut found = Vec::new();
        for entry in self.inbox.scan_prefix(run.as_u64().to_be_bytes()) {
            if found.len() >= limit {
                break;
            }
            let (k, v) =
                entry.map_err(|e| io_error(format!("could not read the inbox of run {run}"), e))?;
            let signal = decode_signal(&v).map_err(|e| {
                let id = split_key(&k).map_or(0, |(_, id)| id);
                CanoError::store(format!("signal {id} of run {run}: {}", e.message()))
                    .with_source(e)
                    .with_hint("discard it with Workflow::discard_signal")
                    .permanent()
            })?;
            if keep(&signal) {
                found.push(signal);
            }
        }
        Ok(found)
    }

    fn first_for(&self, run: RunId, names: &[String]) -> Result<Option<Signal>, CanoError> {
        Ok(self
            .signals_where(run, 1, |s| names.contains(&s.name))?
            .pop())
    }

    fn signals_of(&self, run: RunId, limit: usize) -> Result<Vec<Signal>, CanoError> {
        self.signals_where(run, limit, |_| true)
    }

    fn append_taking(&mut self, row: &CheckpointRow, signal: u64) -> Result<(), CanoError> {
        let run = row.run;
        // Only this thread writes, so the checks hold until the transaction below.
        check_next_seq(run, self.last_seq(run)?, row.seq)?;
        let inbox_key = key(run, signal);
        let present = self
            .inbox
            .contains_key(inbox_key)
            .map_err(|e| io_error(format!("could not read the inbox of run {run}"), e))?;
        if !present {
            return Err(signal_taken_error(run, signal));
        }
        let bytes = encode_row(row)?;
        (&self.tree, &self.inbox)
            .transaction(|(rows, inbox)| {
                rows.insert(&key(run, row.seq)[..], bytes.as_slice())?;
                inbox.remove(&inbox_key[..])?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => io_error(
                    format!(
                        "could not write row {} of run {run} and take signal {signal}",
                        row.seq
                    ),
                    e,
                ),
                sled::transaction::TransactionError::Abort(()) => {
                    CanoError::store(format!("writing row {} of run {run} was aborted", row.seq))
                }
            })?;
        if let Some(size) = self.inbox_sizes.get_mut(&run) {
            *size = size.saturating_sub(1);
        }
        self.counters.rows.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn discard(&mut self, run: RunId, signal: u64) -> Result<bool, CanoError> {
        let removed = self
            .inbox
            .remove(key(run, signal))
            .map_err(|e| io_error(format!("could not discard signal {signal} of run {run}"), e))?;
        if removed.is_some()
            && let Some(size) = self.inbox_sizes.get_mut(&run)
        {
            *size = size.saturating_sub(1);
        }
        Ok(removed.is_some())
    }

    fn clear_inbox(&mut self, run: RunId) -> Result<(), CanoError> {
        let prefix = run.as_u64().to_be_bytes();
        for tree in [&self.inbox, &self.keys] {
            let mut batch = sled::Batch::default();
            for k in tree.scan_prefix(prefix).keys() {
                let k =
                    k.map_err(|e| io_error(format!("could not read the inbox of run {run}"), e))?;
                batch.remove(k);
            }
            tree.apply_batch(batch)
                .map_err(|e| io_error(format!("could not clear the inbox of run {run}"), e))?;
        }
        self.inbox_sizes.remove(&run);
        Ok(())
    }
}

impl Writer {
    fn record_action(&self, action: &ActionRecord) -> Result<(), CanoError> {
        let failed = |e| {
            io_error(
                format!(
                    "could not record the {} of run {}",
                    action.action, action.run
                ),
                e,
            )
        };
        let id = self.db.generate_id().map_err(failed)?;
        let mut key = action.run.as_u64().to_be_bytes().to_vec();
        key.extend_from_slice(&id.to_be_bytes());
        let mut bytes = vec![SIGNAL_FORMAT];
        bytes.extend(Bincode::encode(action)?);
        self.actions.insert(key, bytes).map(drop).map_err(failed)
    }

    fn stored_rows(&self, run: RunId) -> Result<Vec<StoredRow>, CanoError> {
        let mut rows = Vec::new();
        for entry in self.tree.scan_prefix(run.as_u64().to_be_bytes()) {
            let (k, v) =
                entry.map_err(|e| io_error(format!("could not read the rows of run {run}"), e))?;
            let Some((_, seq)) = split_key(&k) else {
                continue;
            };
            rows.push(match Self::decode(run, seq, &v) {
                Ok(row) => StoredRow::Read(row),
                Err(e) => StoredRow::Unreadable {
                    seq,
                    error: e.to_string(),
                },
            });
        }
        Ok(rows)
    }

    fn actions_of(&self, run: RunId) -> Result<Vec<ActionRecord>, CanoError> {
        let mut actions = Vec::new();
        for entry in self
            .actions
            .scan_prefix(run.as_u64().to_be_bytes())
            .values()
        {
            let bytes = entry
                .map_err(|e| io_error(format!("could not read the actions of run {run}"), e))?;
            match bytes.split_first() {
                Some((&SIGNAL_FORMAT, body)) => actions.push(Bincode::decode(body)?),
                _ => {
                    return Err(CanoError::store(format!(
                        "an action recorded on run {run} is in a format this build does not read"
                    )));
                }
            }
        }
        Ok(actions)
    }
}

/// A workflow version's key among the graphs: its id, a zero byte, its version.
fn graph_key(workflow: &str, version: u32) -> Vec<u8> {
    let mut key = workflow.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// The format-version byte of a stored signal.
const SIGNAL_FORMAT: u8 = 1;

fn encode_signal(signal: &Signal) -> Result<Vec<u8>, CanoError> {
    let mut bytes = vec![SIGNAL_FORMAT];
    bytes.extend(Bincode::encode(signal)?);
    Ok(bytes)
}

fn decode_signal(bytes: &[u8]) -> Result<Signal, CanoError> {
    match bytes.split_first() {
        Some((&SIGNAL_FORMAT, body)) => Bincode::decode(body),
        Some((&other, _)) => Err(CanoError::store(format!(
            "the signal is in format {other}, which this build does not read"
        ))),
        None => Err(CanoError::store("the signal is empty")),
    }
}

/// An idempotency key's entry: the run, then the key's bytes.
fn text_key(run: RunId, text: &str) -> Vec<u8> {
    let mut key = run.as_u64().to_be_bytes().to_vec();
    key.extend_from_slice(text.as_bytes());
    key
}

/// Rows are keyed by run then row number, both big-endian, so a run's rows are one
/// contiguous, ordered key range.
fn key(run: RunId, seq: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&run.as_u64().to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The run and row a key names; `None` for a key that is not 16 bytes.
fn split_key(key: &[u8]) -> Option<(RunId, u64)> {
    let key: &[u8; 16] = key.try_into().ok()?;
    let (run, seq) = key.split_at(8);
    Some((
        RunId::from(u64::from_be_bytes(run.try_into().ok()?)),
        u64::from_be_bytes(seq.try_into().ok()?),
    ))
}

pub(super) fn io_error(what: String, e: sled::Error) -> CanoError {
    CanoError::store(format!("{what}: {e}"))
        .with_source(e)
        .with_hint("check the disk (free space, permissions, hardware errors); rows written before are kept")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_a_run_and_row_only_at_16_bytes() {
        let k = key(RunId::from(7), 9);
        assert_eq!(split_key(&k), Some((RunId::from(7), 9)));
        assert_eq!(split_key(&k[..12]), None);
        assert_eq!(split_key(&[k.as_slice(), &[0]].concat()), None);
        assert_eq!(split_key(&[]), None);
    }
}
