//! [`SledCheckpointStore`]: the embedded default. Rows live in a sled database in one
//! directory; a dedicated writer thread does every read and write, so checkpoint I/O
//! never blocks tokio's worker threads, and rows that arrive together share one flush
//! (group commit).

mod disk;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use cano_core::checkpoint::{
    ActionRecord, CheckpointRow, CheckpointStore, PageCursor, RunCatalog, RunFilter, RunPage,
    RunSummary, Sent, Signal, SignalStore, StatusCounts, StoredRow,
};
use cano_core::{CanoError, RunId};
use tokio::sync::oneshot;

use disk::{DiskSync, Holder};
use writer::{Command, Counters, Outgoing, Reply, Writer, io_error};

/// When an appended row is on disk, and what a crash can cost.
///
/// "On disk" means: sled flushed it, then cano called `fdatasync` on sled's log file
/// (and on any large value sled kept in a file of its own, and `fsync` on that file's
/// directory), because sled's own flush on Linux syncs neither the file's metadata nor
/// the drive's write cache. A row on disk survives the process being killed
/// (SIGKILL), the operating system crashing and the machine losing power, as far as
/// the drive honours cache flushes (as every fsync-based database must assume).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Each row is on disk before its `append` returns. Survives a process kill, an
    /// OS crash and a power loss; the slowest mode (one sync per row).
    EveryRow,
    /// Rows (and clears) that reach the writer together are put on disk by one flush
    /// and one sync, and every `append` among them returns after it. The same
    /// guarantee as `EveryRow`, with the sync shared by every run writing at the same
    /// moment. The default.
    #[default]
    GroupCommit,
    /// `append` returns once the row is in sled's memory; the writer puts what was
    /// written on disk once the interval has passed since the first unsynced write
    /// (and when the store closes, or on [`SledCheckpointStore::flush`]). A kill, a
    /// crash or a power loss may lose the rows of the last interval: a resumed run
    /// then re-enters an earlier state, whose task runs again. Fastest; choose it only
    /// when the tasks tolerate that. `Duration::MAX` means no periodic flush at all;
    /// a zero interval is refused (use `EveryRow`).
    Periodic(Duration),
}

/// What a store's writer has done since it opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SledStats {
    /// Rows appended.
    pub rows: u64,
    /// sled flushes that succeeded. Under group commit this is well below `rows`
    /// whenever runs write concurrently.
    pub flushes: u64,
    /// Flushes whose data was then synced to the drive (`fdatasync`) successfully:
    /// every acknowledged `EveryRow` or `GroupCommit` append was covered by one.
    pub syncs: u64,
}

/// A checkpoint store in a sled database (one directory).
///
/// Cheap to clone: clones share the database and its writer thread. When the last
/// clone is dropped the writer flushes, syncs and closes the database in the
/// background; a store opened again on the same directory by this process waits for
/// that. A directory is open in one place at a time: opening it while another store
/// of this process has it open, or another process does, is a clear error.
///
/// ```
/// use cano_recovery::{Durability, SledCheckpointStore};
///
/// # fn main() -> Result<(), cano_core::CanoError> {
/// let dir = tempfile::tempdir().unwrap();
/// let store = SledCheckpointStore::open(dir.path().join("checkpoints"))?;
/// assert_eq!(store.durability(), Durability::GroupCommit);
/// // The directory is this store's until it is dropped.
/// assert!(SledCheckpointStore::open(dir.path().join("checkpoints")).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SledCheckpointStore {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    path: PathBuf,
    dir: PathBuf,
    durability: Durability,
    counters: Arc<Counters>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        disk::releasing(&self.dir);
        if self.commands.send(Command::Shutdown).is_err() {
            // The writer is gone already (and has let go of the directory).
            disk::release(&self.dir);
        }
    }
}

impl SledCheckpointStore {
    /// Opens (or creates) the store in directory `path`, with group commit.
    ///
    /// Opening reads the database from disk. Called on a worker thread of tokio's
    /// multi-threaded runtime, it tells tokio first (`block_in_place`), so the
    /// worker's other tasks move elsewhere; on a current-thread runtime prefer
    /// [`open_async`](Self::open_async).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CanoError> {
        Self::open_with(path, Durability::default())
    }

    /// Opens (or creates) the store in directory `path` with the given durability
    /// (see [`open`](Self::open)).
    pub fn open_with(path: impl AsRef<Path>, durability: Durability) -> Result<Self, CanoError> {
        let path = path.as_ref();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| Self::open_here(path, durability))
            }
            _ => Self::open_here(path, durability),
        }
    }

    /// Opens (or creates) the store in directory `path` on tokio's blocking threads,
    /// so that no worker thread waits for the disk.
    pub async fn open_async(
        path: impl AsRef<Path>,
        durability: Durability,
    ) -> Result<Self, CanoError> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_here(&path, durability))
            .await
            .map_err(|e| {
                CanoError::store("opening the sled checkpoint store did not finish").with_source(e)
            })?
    }

    fn open_here(path: &Path, durability: Durability) -> Result<Self, CanoError> {
        if durability == Durability::Periodic(Duration::ZERO) {
            return Err(CanoError::configuration(
                "Durability::Periodic(0s): the flush interval of the sled checkpoint store must be above zero",
            )
            .with_hint("use Durability::EveryRow to put every row on disk, or give Periodic an interval"));
        }
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            CanoError::store(format!(
                "could not open the sled checkpoint store at {}: {what}: {e}",
                path.display()
            ))
            .with_hint("check the directory's permissions and the disk's free space")
        };
        std::fs::create_dir_all(path)
            .map_err(|e| failed("cannot create its directory", &e).with_source(e))?;
        let dir = std::fs::canonicalize(path)
            .map_err(|e| failed("cannot resolve its directory", &e).with_source(e))?;
        match disk::claim(&dir).map_err(|e| failed("cannot read its lock", &e).with_source(e))? {
            Holder::Free => {}
            holder => return Err(locked(path, &holder)),
        }
        let opened = Self::open_claimed(path, &dir, durability);
        if opened.is_err() {
            disk::release(&dir);
        }
        opened
    }

    fn open_claimed(path: &Path, dir: &Path, durability: Durability) -> Result<Self, CanoError> {
        let mut config = sled::Config::new().path(dir);
        if let Durability::Periodic(_) = durability {
            // The writer flushes (and syncs) on its own schedule.
            config = config.flush_every_ms(None);
        }
        let db = config.open().map_err(|e| {
            // Taken by another process between the probe and sled's own lock?
            if disk::claim_probe_is_other(dir) {
                return locked(path, &Holder::Other);
            }
            CanoError::store(format!(
                "could not open the sled checkpoint store at {}: {e}",
                path.display()
            ))
            .with_source(e)
            .with_hint("check the directory's permissions and free space; a database written by another sled version cannot be read")
        })?;
        let tree = db.open_tree("rows").map_err(|e| {
            io_error(
                format!(
                    "could not open the rows of the sled checkpoint store at {}",
                    path.display()
                ),
                e,
            )
        })?;
        let open_tree = |name: &str| {
            db.open_tree(name).map_err(|e| {
                io_error(
                    format!(
                        "could not open the {name} of the sled checkpoint store at {}",
                        path.display()
                    ),
                    e,
                )
            })
        };
        let inbox = open_tree("inbox")?;
        let keys = open_tree("signal_keys")?;
        let graphs = open_tree("graphs")?;
        let actions = open_tree("actions")?;
        let disk = DiskSync::open(dir).map_err(|e| {
            CanoError::store(format!(
                "could not sync the sled checkpoint store at {} to disk: {e}",
                path.display()
            ))
            .with_source(e)
        })?;
        let (commands, receiver) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            db,
            tree,
            inbox,
            keys,
            graphs,
            actions,
            inbox_sizes: Default::default(),
            disk,
            dir: dir.to_path_buf(),
            durability,
            counters: counters.clone(),
        };
        std::thread::Builder::new()
            .name("cano-sled-writer".into())
            .spawn(move || writer.serve(receiver))
            .map_err(|e| {
                CanoError::store("could not start the sled checkpoint writer thread").with_source(e)
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                commands,
                path: path.to_path_buf(),
                dir: dir.to_path_buf(),
                durability,
                counters,
            }),
        })
    }

    /// The directory of the database, as given when it was opened.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Rows appended, flushes and syncs done since the store opened.
    pub fn stats(&self) -> SledStats {
        let counters = &self.inner.counters;
        SledStats {
            rows: counters.rows.load(Ordering::Relaxed),
            flushes: counters.flushes.load(Ordering::Relaxed),
            syncs: counters.syncs.load(Ordering::Relaxed),
        }
    }

    /// The durability the store was opened with.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// Puts everything written so far on disk (flush and sync), whatever the
    /// durability: under `Periodic`, call it before the process exits.
    pub async fn flush(&self) -> Result<(), CanoError> {
        self.ask(Command::Flush).await
    }

    /// Closes the store: puts everything on disk, closes the database, and returns
    /// once the directory can be opened again (by this process or another). Clones of
    /// this store fail from then on. Dropping the last clone does the same in the
    /// background.
    pub async fn close(self) -> Result<(), CanoError> {
        self.ask(Command::Close).await
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

/// The error of a directory someone else holds.
fn locked(path: &Path, holder: &Holder) -> CanoError {
    let (who, hint) = match holder {
        Holder::ThisProcess => (
            "another SledCheckpointStore of this process has it open",
            "clone the store you have (clones share one database) instead of opening the directory again",
        ),
        _ => (
            "another process has it open",
            "sled lets one process open a directory at a time: stop the other process, or use another directory",
        ),
    };
    CanoError::store(format!(
        "could not open the sled checkpoint store at {}: {who}",
        path.display()
    ))
    .with_hint(hint)
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

    fn signals(&self) -> Option<&dyn SignalStore> {
        Some(self)
    }

    async fn record_graph(
        &self,
        workflow: &str,
        version: u32,
        drawing: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<(), CanoError> {
        let graph = Box::new((workflow.to_owned(), version, drawing()));
        self.ask(|reply| Command::RecordGraph(graph, reply)).await
    }
}

/// Listings read each run's first and last rows, one run at a time, on the writer
/// thread: memory stays at one page whatever the store holds, and appends wait for a
/// listing to finish (it is an operator's read, not the engine's).
#[async_trait::async_trait]
impl RunCatalog for SledCheckpointStore {
    async fn list_runs(
        &self,
        filter: &RunFilter,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<RunPage, CanoError> {
        let filter = Box::new(filter.clone());
        self.ask(|reply| Command::List(filter, after, limit, reply))
            .await
    }

    async fn count_runs(&self, filter: &RunFilter) -> Result<StatusCounts, CanoError> {
        let filter = Box::new(filter.clone());
        self.ask(|reply| Command::Count(filter, reply)).await
    }

    async fn rows(&self, run: RunId) -> Result<Vec<StoredRow>, CanoError> {
        self.ask(|reply| Command::Rows(run, reply)).await
    }

    async fn graph(&self, workflow: &str, version: u32) -> Result<Option<String>, CanoError> {
        let which = Box::new((workflow.to_owned(), version));
        self.ask(|reply| Command::Graph(which, reply)).await
    }

    async fn record_action(&self, action: &ActionRecord) -> Result<(), CanoError> {
        let action = Box::new(action.clone());
        self.ask(|reply| Command::RecordAction(action, reply)).await
    }

    async fn actions(&self, run: RunId) -> Result<Vec<ActionRecord>, CanoError> {
        self.ask(|reply| Command::Actions(run, reply)).await
    }
}

/// Signals live in two more trees of the same database (`inbox` and `signal_keys`):
/// a signal is on disk, by the store's [`Durability`], before `send` returns, and a
/// row that takes one is written in one sled transaction with its removal.
#[async_trait::async_trait]
impl SignalStore for SledCheckpointStore {
    async fn send(
        &self,
        run: RunId,
        name: &str,
        payload: Vec<u8>,
        key: Option<&str>,
    ) -> Result<Sent, CanoError> {
        let outgoing = Box::new(Outgoing {
            run,
            name: name.to_owned(),
            payload,
            key: key.map(str::to_owned),
        });
        self.ask(|reply| Command::Send(outgoing, reply)).await
    }

    async fn first_for(&self, run: RunId, names: &[String]) -> Result<Option<Signal>, CanoError> {
        let names = names.to_vec();
        self.ask(|reply| Command::FirstFor(run, names, reply)).await
    }

    async fn inbox(&self, run: RunId, limit: usize) -> Result<Vec<Signal>, CanoError> {
        self.ask(|reply| Command::Inbox(run, limit, reply)).await
    }

    async fn append_taking(&self, row: CheckpointRow, signal: u64) -> Result<(), CanoError> {
        self.ask(|reply| Command::AppendTaking(Box::new(row), signal, reply))
            .await
    }

    async fn discard(&self, run: RunId, signal: u64) -> Result<bool, CanoError> {
        self.ask(|reply| Command::Discard(run, signal, reply)).await
    }
}
