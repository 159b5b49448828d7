//! What sled leaves to us on disk: making a flush survive power loss, and who holds a
//! store's directory.
//!
//! sled 0.34's `flush()` writes its log with `sync_file_range(WAIT_BEFORE | WRITE |
//! WAIT_AFTER)` on Linux. That pushes the written pages to the device, but syncs no
//! metadata (the log file grows, and its new size is metadata) and asks the device for
//! no cache flush, so an acknowledged row can still be lost on power loss. Values too
//! large for the log go to files under `blobs/`, written without any sync. So after
//! every sled flush the store calls `fdatasync` on the log file and on each blob file
//! written since, and `fsync` on the `blobs` directory when new files appeared there.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Syncs what a sled flush leaves unsynced.
pub(super) struct DiskSync {
    log: File,
    blobs: PathBuf,
    /// Blob files already synced (sled names them by log sequence number).
    synced_blobs: BTreeSet<u64>,
}

impl DiskSync {
    /// For the sled database in `dir`, once sled has opened it. The directory entries
    /// sled may just have created (the directory itself, its log file) are synced now.
    pub(super) fn open(dir: &Path) -> io::Result<Self> {
        let log = File::open(dir.join("db"))?;
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        let mut sync = Self {
            log,
            blobs: dir.join("blobs"),
            synced_blobs: BTreeSet::new(),
        };
        sync.sync()?;
        Ok(sync)
    }

    /// Makes what sled flushed durable; call after each successful `Db::flush`.
    pub(super) fn sync(&mut self) -> io::Result<()> {
        self.log.sync_data()?;
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = BTreeSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            let Some(lsn) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            present.insert(lsn);
            if self.synced_blobs.contains(&lsn) {
                continue;
            }
            match File::open(entry.path()) {
                Ok(blob) => blob.sync_data()?,
                // Collected by sled meanwhile: nothing left to make durable.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            new = true;
        }
        if new {
            sync_dir(&self.blobs)?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Who holds a store directory's lock, as far as this process can tell.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Holder {
    /// Nobody: the directory can be opened.
    Free,
    /// A store of this process has it open.
    ThisProcess,
    /// Another process (or a handle this process opened outside cano).
    Other,
}

/// The directories this process has open, and those whose store was dropped but whose
/// sled database has not yet let go of its lock (its background threads finish after
/// it is dropped).
static OPEN: LazyLock<(Mutex<HashMap<PathBuf, Use>>, Condvar)> =
    LazyLock::new(|| (Mutex::new(HashMap::new()), Condvar::new()));

#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Open,
    Releasing,
}

fn registry() -> MutexGuard<'static, HashMap<PathBuf, Use>> {
    OPEN.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long opening waits for a store of this process that is letting go of the same
/// directory.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Claims `dir` (an existing directory, by its canonical path) for a store of this
/// process: waits (on a condition variable, up to [`RELEASE_WAIT`]) for a store of
/// this process that is still releasing it, then probes its lock. `Free` means the
/// caller now holds the claim and must either open the database or call [`release`].
pub(super) fn claim(dir: &Path) -> io::Result<Holder> {
    let deadline = Instant::now() + RELEASE_WAIT;
    let mut open = registry();
    loop {
        match open.get(dir) {
            Some(Use::Open) => return Ok(Holder::ThisProcess),
            Some(Use::Releasing) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Holder::ThisProcess);
                }
                open = OPEN
                    .1
                    .wait_timeout(open, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            None => break,
        }
    }
    let holder = probe(dir)?;
    if holder == Holder::Free {
        open.insert(dir.to_path_buf(), Use::Open);
    }
    Ok(holder)
}

/// Whether another open file description holds the lock sled takes on `dir/db`: the
/// probe takes the same kind of lock (`flock`), so the kernel answers by error kind,
/// not by a message to parse.
fn probe(dir: &Path) -> io::Result<Holder> {
    let file = match File::open(dir.join("db")) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Holder::Free),
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => Ok(Holder::Free),
        Err(TryLockError::WouldBlock) => Ok(Holder::Other),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Whether another process holds `dir`'s lock (for an open that sled refused).
pub(super) fn claim_probe_is_other(dir: &Path) -> bool {
    probe(dir).is_ok_and(|h| h == Holder::Other)
}

/// The store of `dir` was dropped; sled is letting go of the lock.
pub(super) fn releasing(dir: &Path) {
    registry().insert(dir.to_path_buf(), Use::Releasing);
}

/// Nobody in this process holds `dir` any more: waits (briefly, polling on the calling
/// thread, which is the store's own writer thread) until sled's last file handle is
/// closed, then lets openers in.
pub(super) fn released(dir: &Path) {
    let start = Instant::now();
    while probe(dir).is_ok_and(|h| h == Holder::Other) && start.elapsed() < RELEASE_WAIT {
        std::thread::sleep(Duration::from_millis(1));
    }
    release(dir);
}

/// Gives up a claim (an open that failed after claiming).
pub(super) fn release(dir: &Path) {
    registry().remove(dir);
    OPEN.1.notify_all();
}
