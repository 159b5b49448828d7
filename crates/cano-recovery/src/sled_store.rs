//! [`SledCheckpointStore`]: the embedded default. Rows live in a sled database in one
//! directory; a dedicated writer thread does every read and write, so checkpoint I/O
//! never blocks tokio's worker threads, and rows that arrive together share one flush
//! (group commit).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cano_core::checkpoint::{CheckpointRow, CheckpointStore, RunSummary, check_next_seq};
use cano_core::{CanoError, RunId};
use tokio::sync::oneshot;

use crate::codec::{decode_row, encode_row};

/// When an appended row is on disk, and what a crash can cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Each row is flushed (fsync) on its own before `append` returns. Survives a
    /// process crash and a power loss; the slowest mode.
    EveryRow,
    /// Rows (and clears) that reach the writer together are flushed once, and every
    /// `append` among them returns after that flush. The same guarantee as
    /// `EveryRow`, with the fsync shared by every run writing at the same moment. The
    /// default.
    #[default]
    GroupCommit,
    /// `append` returns once the row is in sled's buffers; sled flushes them every
    /// interval. A crash may lose the rows of the last interval: a resumed run then
    /// re-enters an earlier state, whose task runs again. Fastest; choose it only when
    /// the tasks tolerate that.
    Periodic(Duration),
}

/// What a store's writer has done since it opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SledStats {
    /// Rows appended.
    pub rows: u64,
    /// Flushes (fsyncs) done to make rows, clears and prunes durable. Under group
    /// commit this is well below `rows` whenever runs write concurrently.
    pub flushes: u64,
}

#[derive(Default)]
struct Counters {
    rows: AtomicU64,
    flushes: AtomicU64,
}

type Reply<T> = oneshot::Sender<Result<T, CanoError>>;

enum Command {
    Append(Box<CheckpointRow>, Reply<()>),
    Load(RunId, Reply<Vec<CheckpointRow>>),
    Truncate(RunId, u64, Reply<()>),
    Clear(RunId, Reply<()>),
    Unfinished(Reply<Vec<RunSummary>>),
    Prune(SystemTime, Reply<usize>),
    Shutdown,
}

/// A checkpoint store in a sled database (one directory).
///
/// Cheap to clone: clones share the database and its writer thread, which stops when
/// the last clone is dropped (after a final flush). sled lets one process open a
/// directory at a time, so a second process trying to open it gets a clear error
/// instead of a second writer on the same runs.
///
/// ```
/// use cano_recovery::{Durability, SledCheckpointStore};
///
/// # fn main() -> Result<(), cano_core::CanoError> {
/// let dir = tempfile::tempdir().unwrap();
/// let store = SledCheckpointStore::open(dir.path().join("checkpoints"))?;
/// assert_eq!(store.durability(), Durability::GroupCommit);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SledCheckpointStore {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
    durability: Durability,
    counters: Arc<Counters>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl SledCheckpointStore {
    /// Opens (or creates) the store in directory `path`, with group commit.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CanoError> {
        Self::open_with(path, Durability::default())
    }

    /// Opens (or creates) the store in directory `path` with the given durability.
    pub fn open_with(path: impl AsRef<Path>, durability: Durability) -> Result<Self, CanoError> {
        let path = path.as_ref().to_path_buf();
        let mut config = sled::Config::new().path(&path);
        if let Durability::Periodic(every) = durability {
            let ms = every.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
            config = config.flush_every_ms(Some(ms));
        }
        let db = open_when_released(&config).map_err(|e| {
            CanoError::store(format!(
                "could not open the sled checkpoint store at {}: {e}",
                path.display()
            ))
            .with_source(e)
            .with_hint("sled lets one process open a directory at a time: stop the other process, or use another path; check the directory's permissions and free space")
        })?;
        let tree = db.open_tree("rows").map_err(|e| {
            CanoError::store(format!(
                "could not open the rows of the sled checkpoint store at {}: {e}",
                path.display()
            ))
            .with_source(e)
        })?;
        let (commands, receiver) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            db,
            tree,
            durability,
            counters: counters.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("cano-sled-writer".into())
            .spawn(move || writer.serve(receiver))
            .map_err(|e| {
                CanoError::store("could not start the sled checkpoint writer thread").with_source(e)
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                commands,
                writer: Some(writer),
                path,
                durability,
                counters,
            }),
        })
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Rows appended and flushes done since the store opened.
    pub fn stats(&self) -> SledStats {
        SledStats {
            rows: self.inner.counters.rows.load(Ordering::Relaxed),
            flushes: self.inner.counters.flushes.load(Ordering::Relaxed),
        }
    }

    /// The durability the store was opened with.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, CanoError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .send(command(reply))
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }
}

/// Opens the database, waiting a little for a lock that this process is releasing.
///
/// sled lets go of its directory lock only when its last background job has dropped
/// its handle, which can be shortly after the `Db` itself was dropped; a store closed
/// and reopened at once would otherwise fail now and then. A lock held for longer
/// (another process) is still refused, after the wait.
fn open_when_released(config: &sled::Config) -> sled::Result<sled::Db> {
    const WAIT: std::time::Duration = std::time::Duration::from_secs(2);
    let start = std::time::Instant::now();
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && start.elapsed() < WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn writer_gone() -> CanoError {
    CanoError::store("the sled checkpoint writer thread has stopped")
        .with_hint("it stops only if it panicked; reopen the store")
}

impl std::fmt::Debug for SledCheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledCheckpointStore")
            .field("path", &self.inner.path)
            .field("durability", &self.inner.durability)
            .finish()
    }
}

#[async_trait::async_trait]
impl CheckpointStore for SledCheckpointStore {
    async fn append(&self, row: CheckpointRow) -> Result<(), CanoError> {
        self.ask(|reply| Command::Append(Box::new(row), reply))
            .await
    }

    async fn load(&self, run: RunId) -> Result<Vec<CheckpointRow>, CanoError> {
        self.ask(|reply| Command::Load(run, reply)).await
    }

    async fn truncate(&self, run: RunId, before: u64) -> Result<(), CanoError> {
        self.ask(|reply| Command::Truncate(run, before, reply))
            .await
    }

    async fn clear(&self, run: RunId) -> Result<(), CanoError> {
        self.ask(|reply| Command::Clear(run, reply)).await
    }

    async fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError> {
        self.ask(Command::Unfinished).await
    }

    async fn prune(&self, older_than: SystemTime) -> Result<usize, CanoError> {
        self.ask(|reply| Command::Prune(older_than, reply)).await
    }
}

/// Rows are keyed by run then row number, both big-endian, so a run's rows are one
/// contiguous, ordered key range.
fn key(run: RunId, seq: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&run.as_u64().to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn split_key(key: &[u8]) -> Option<(RunId, u64)> {
    let run = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(key.get(8..16)?.try_into().ok()?);
    Some((RunId::from(run), seq))
}

fn io_error(what: String, e: sled::Error) -> CanoError {
    CanoError::store(format!("{what}: {e}"))
        .with_source(e)
        .with_hint("check the disk (free space, permissions, hardware errors); rows written before are kept")
}

/// The writer thread's side.
struct Writer {
    db: sled::Db,
    tree: sled::Tree,
    durability: Durability,
    counters: Arc<Counters>,
}

/// Commands taken from the queue at once: their writes share one flush.
const MAX_GROUP: usize = 1024;

impl Writer {
    fn serve(self, commands: mpsc::Receiver<Command>) {
        let mut waiting: Vec<Reply<()>> = Vec::new();
        while let Ok(first) = commands.recv() {
            let mut next = Some(first);
            let mut taken = 0;
            let mut shutdown = false;
            while let Some(command) = next.take() {
                taken += 1;
                match command {
                    Command::Shutdown => shutdown = true,
                    other => self.handle(other, &mut waiting),
                }
                if taken < MAX_GROUP && !shutdown {
                    next = commands.try_recv().ok();
                }
            }
            self.flush_group(&mut waiting);
            if shutdown {
                break;
            }
        }
        self.flush_group(&mut waiting);
        let _ = self.db.flush();
    }

    /// Runs one command. Writes that must be durable before their caller goes on are
    /// answered by `flush_group` (group commit) or flushed here (`EveryRow`).
    fn handle(&self, command: Command, waiting: &mut Vec<Reply<()>>) {
        let write = |result: Result<(), CanoError>, reply: Reply<()>, waiting: &mut Vec<_>| match (
            result,
            self.durability,
        ) {
            (Err(e), _) => drop(reply.send(Err(e))),
            (Ok(()), Durability::EveryRow) => drop(reply.send(self.flush())),
            (Ok(()), Durability::GroupCommit) => waiting.push(reply),
            (Ok(()), Durability::Periodic(_)) => drop(reply.send(Ok(()))),
        };
        match command {
            Command::Append(row, reply) => write(self.append(&row), reply, waiting),
            Command::Clear(run, reply) => {
                write(self.remove_range(run, 0, u64::MAX), reply, waiting)
            }
            Command::Truncate(run, before, reply) => {
                // Dropping superseded rows can wait for the next flush.
                let _ = reply.send(self.remove_range(run, 0, before));
            }
            Command::Load(run, reply) => drop(reply.send(self.load(run))),
            Command::Unfinished(reply) => drop(reply.send(self.unfinished())),
            Command::Prune(cutoff, reply) => {
                let pruned = self.prune(cutoff);
                match pruned {
                    Ok(n) => {
                        let flushed = match self.durability {
                            Durability::Periodic(_) => Ok(()),
                            _ => self.flush(),
                        };
                        drop(reply.send(flushed.map(|()| n)));
                    }
                    Err(e) => drop(reply.send(Err(e))),
                }
            }
            Command::Shutdown => {}
        }
    }

    fn flush(&self) -> Result<(), CanoError> {
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        self.db
            .flush()
            .map(drop)
            .map_err(|e| io_error("could not flush the sled checkpoint store".into(), e))
    }

    fn flush_group(&self, waiting: &mut Vec<Reply<()>>) {
        if waiting.is_empty() {
            return;
        }
        let flushed = self.flush();
        for reply in waiting.drain(..) {
            let answer = match &flushed {
                Ok(()) => Ok(()),
                Err(e) => Err(CanoError::store(e.message().to_owned()).with_hint(
                    "the flush shared by this row failed; rows written before are kept",
                )),
            };
            let _ = reply.send(answer);
        }
    }

    fn last_seq(&self, run: RunId) -> Result<Option<u64>, CanoError> {
        let last = self
            .tree
            .scan_prefix(run.as_u64().to_be_bytes())
            .keys()
            .next_back()
            .transpose()
            .map_err(|e| io_error(format!("could not read the rows of run {run}"), e))?;
        Ok(last.and_then(|k| split_key(&k)).map(|(_, seq)| seq))
    }

    fn append(&self, row: &CheckpointRow) -> Result<(), CanoError> {
        // Only this thread writes and sled locks the directory to one process, so the
        // check and the insert below cannot be interleaved with another append.
        check_next_seq(row.run, self.last_seq(row.run)?, row.seq)?;
        let bytes = encode_row(row)?;
        self.counters.rows.fetch_add(1, Ordering::Relaxed);
        self.tree
            .insert(key(row.run, row.seq), bytes)
            .map(drop)
            .map_err(|e| {
                io_error(
                    format!("could not write row {} of run {}", row.seq, row.run),
                    e,
                )
            })
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
                        "a key of run {run} is malformed: the store is corrupt"
                    ))
                })?;
                Self::decode(run, seq, &v)
            })
            .collect()
    }

    fn remove_range(&self, run: RunId, from: u64, before: u64) -> Result<(), CanoError> {
        let mut batch = sled::Batch::default();
        for k in self.tree.range(key(run, from)..key(run, before)).keys() {
            let k = k.map_err(|e| io_error(format!("could not read the rows of run {run}"), e))?;
            batch.remove(k);
        }
        if before == u64::MAX {
            batch.remove(&key(run, u64::MAX));
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| io_error(format!("could not delete rows of run {run}"), e))
    }

    /// The last row of each run, run by run.
    fn each_last_row(
        &self,
        mut f: impl FnMut(CheckpointRow) -> Result<(), CanoError>,
    ) -> Result<(), CanoError> {
        let mut from = [0u8; 8];
        loop {
            let first = self
                .tree
                .range(from..)
                .keys()
                .next()
                .transpose()
                .map_err(|e| io_error("could not list the runs".into(), e))?;
            let Some((run, _)) = first.as_deref().and_then(split_key) else {
                return Ok(());
            };
            let last = self
                .tree
                .scan_prefix(run.as_u64().to_be_bytes())
                .next_back()
                .transpose()
                .map_err(|e| io_error(format!("could not read the rows of run {run}"), e))?;
            if let Some((k, v)) = last {
                let (_, seq) = split_key(&k).unwrap_or((run, 0));
                f(Self::decode(run, seq, &v)?)?;
            }
            match run.as_u64().checked_add(1) {
                Some(next) => from = next.to_be_bytes(),
                None => return Ok(()),
            }
        }
    }

    fn unfinished(&self) -> Result<Vec<RunSummary>, CanoError> {
        let mut runs = Vec::new();
        self.each_last_row(|last| {
            if !last.kind.ends_run() {
                runs.push(RunSummary::from_last_row(&last));
            }
            Ok(())
        })?;
        Ok(runs)
    }

    fn prune(&self, cutoff: SystemTime) -> Result<usize, CanoError> {
        let cutoff_ms = cutoff
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut stale = Vec::new();
        self.each_last_row(|last| {
            if last.written_at_ms < cutoff_ms {
                stale.push(last.run);
            }
            Ok(())
        })?;
        for run in &stale {
            self.remove_range(*run, 0, u64::MAX)?;
        }
        Ok(stale.len())
    }
}
