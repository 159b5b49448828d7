//! The sled store's promises about the disk, checked from outside: the sync system
//! calls a real process makes per acknowledged group (counted with strace), a damaged
//! run that hides no other, and who may open a directory when.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::SystemTime;

use cano_core::checkpoint::{CheckpointRow, DataChange, RowKind, RunStatus};
use cano_core::{CanoError, CheckpointStore, RunId};
use cano_recovery::{Durability, SledCheckpointStore};

const CHILD_DIR: &str = "CANO_SLED_DISK_CHILD_DIR";
const CHILD_DURABILITY: &str = "CANO_SLED_DISK_CHILD_DURABILITY";
const MARK: &str = "@@";

fn row(run: u64, seq: u64, kind: RowKind, data: usize) -> CheckpointRow {
    CheckpointRow {
        run: RunId::from(run),
        seq,
        kind,
        workflow: "disk".into(),
        version: 1,
        state: vec![1],
        label: format!("At({seq})"),
        data: DataChange {
            full: seq == 0,
            entries: vec![("payload".into(), Some(vec![7; data]))],
        },
        cursor: None,
        message: String::new(),
        written_at_ms: 1_700_000_000_000 + seq,
    }
}

/// The child: `GROUPS` rounds of `PER_GROUP` concurrent appends (one per run); prints
/// the store's stats after each acknowledged round and at the end.
const GROUPS: u64 = 6;
const PER_GROUP: u64 = 8;

async fn child(dir: &Path, durability: Durability) {
    let store = SledCheckpointStore::open_with(dir.join("db"), durability).unwrap();
    for seq in 0..GROUPS {
        let appends: Vec<_> = (0..PER_GROUP)
            .map(|run| {
                let store = store.clone();
                // Every third round one large row: sled keeps it in a blob file.
                let size = if seq % 3 == 2 && run == 0 {
                    300_000
                } else {
                    64
                };
                tokio::spawn(async move { store.append(row(run, seq, RowKind::Enter, size)).await })
            })
            .collect();
        for append in appends {
            append.await.unwrap().unwrap();
        }
        let stats = store.stats();
        println!("{MARK} acknowledged {seq} syncs {}", stats.syncs);
    }
    let stats = store.stats();
    store.close().await.unwrap();
    println!("{MARK} done rows {} syncs {}", stats.rows, stats.syncs);
    let _ = std::io::stdout().flush();
}

#[test]
fn child_entry() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let durability = match std::env::var(CHILD_DURABILITY).as_deref() {
        Ok("every") => Durability::EveryRow,
        _ => Durability::GroupCommit,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(child(Path::new(&dir), durability));
}

/// Runs the child under strace; returns its marks and the sync calls it made on the
/// store's files (`fdatasync`/`fsync`, with the path each was made on).
fn traced_child(dir: &Path, durability: &str) -> (Vec<String>, Vec<String>) {
    let trace = dir.join("trace");
    let output = Command::new("strace")
        .args(["-f", "-y", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_DURABILITY, durability)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("strace could not be started ({e}): install it (apt-get install strace); .ci/run and cargo xtask test do"));
    assert!(output.status.success(), "the traced child failed");
    let marks = BufReader::new(output.stdout.as_slice())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| {
            l.find(MARK)
                .map(|at| l[at + MARK.len()..].trim().to_owned())
        })
        .collect();
    let db = dir.join("db").canonicalize().unwrap();
    let syncs = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|l| {
            (l.contains("fdatasync(") || l.contains("fsync(")) && l.contains(&*db.to_string_lossy())
        })
        .filter(|l| l.trim_end().ends_with("= 0"))
        .map(str::to_owned)
        .collect();
    (marks, syncs)
}

fn number_after(mark: &str, word: &str) -> u64 {
    let words: Vec<&str> = mark.split(' ').collect();
    let at = words.iter().position(|w| *w == word).unwrap();
    words[at + 1].parse().unwrap()
}

#[test]
fn every_acknowledged_group_is_covered_by_a_real_fdatasync_of_the_log() {
    for (durability, rows_per_sync) in [("group", PER_GROUP), ("every", 1)] {
        let dir = tempfile::tempdir().unwrap();
        let (marks, syncs) = traced_child(dir.path(), durability);
        // Syncs of sled's log file (`db/db`, not the `db` directory): the store's
        // fdatasyncs, and the fsync sled itself may make when it closes (which then
        // covers the store's last flush, so the store has none left to make).
        let log = format!(
            "{}>",
            dir.path()
                .join("db")
                .canonicalize()
                .unwrap()
                .join("db")
                .display()
        );
        let log_syncs = syncs.iter().filter(|l| l.contains(&log)).count() as u64;
        let done = marks.iter().find(|m| m.starts_with("done")).unwrap();
        let (rows, counted) = (number_after(done, "rows"), number_after(done, "syncs"));
        assert_eq!(rows, GROUPS * PER_GROUP);
        // The store's syncs are real syncs of sled's log: at least one per
        // acknowledged round, plus one at open and one when closing. (Not exactly one
        // per counted sync: two flushes at once may share one fdatasync, and sled's
        // own flusher may add one when the machine is slow; neither loses a row.)
        assert!(
            log_syncs >= GROUPS + 2,
            "{durability}: {log_syncs} real syncs of the log for {GROUPS} rounds: {syncs:#?}"
        );
        // At least one sync per acknowledged group: the rows of a round are
        // acknowledged together at best, one by one at worst.
        assert!(
            counted >= GROUPS,
            "{durability}: {counted} syncs for {GROUPS} rounds"
        );
        assert!(
            counted >= rows / rows_per_sync,
            "{durability}: {counted} syncs for {rows} rows"
        );
        let mut before = 0;
        for seq in 0..GROUPS {
            let mark = marks
                .iter()
                .find(|m| m.starts_with(&format!("acknowledged {seq} ")))
                .unwrap();
            let now = number_after(mark, "syncs");
            assert!(
                now > before,
                "{durability}: round {seq} was acknowledged without a sync"
            );
            before = now;
        }
        // The large rows went to blob files, and those were synced too, with their
        // directory.
        assert!(
            syncs.iter().any(|l| l.contains("/blobs/")),
            "{durability}: no blob file was synced: {syncs:#?}"
        );
        assert!(
            syncs
                .iter()
                .any(|l| l.contains("fsync(") && l.trim_end().contains("/blobs>")),
            "{durability}: the blob directory was not synced: {syncs:#?}"
        );
    }
}

#[tokio::test]
async fn a_malformed_key_or_an_unreadable_row_hides_no_other_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = SledCheckpointStore::open(&path).unwrap();
    for run in 1..=4 {
        store.append(row(run, 0, RowKind::Enter, 8)).await.unwrap();
        store.append(row(run, 1, RowKind::Enter, 8)).await.unwrap();
    }
    store.close().await.unwrap();
    {
        let db = sled::open(&path).unwrap();
        let rows = db.open_tree("rows").unwrap();
        // Keys that name no run, before and among the runs' keys.
        rows.insert([0u8, 0, 0, 1], b"junk".to_vec()).unwrap();
        rows.insert([0u8, 0, 0, 0, 0, 0, 0, 2, 9], b"junk".to_vec())
            .unwrap();
        // Run 3's last row damaged.
        let mut key = 3u64.to_be_bytes().to_vec();
        key.extend_from_slice(&1u64.to_be_bytes());
        rows.insert(key, vec![1, 0xFF, 0xFF]).unwrap();
        db.flush().unwrap();
    }
    let store = open_after_raw(&path);
    let mut runs = store.unfinished().await.unwrap();
    runs.sort_by_key(|r| r.run);
    let listed: Vec<(u64, RunStatus)> = runs.iter().map(|r| (r.run.as_u64(), r.status)).collect();
    assert_eq!(
        listed,
        [
            (1, RunStatus::Interrupted),
            (2, RunStatus::Interrupted),
            (3, RunStatus::Unreadable),
            (4, RunStatus::Interrupted),
        ]
    );
    let damaged = &runs[2];
    assert_eq!((damaged.workflow.as_str(), damaged.last_seq), ("disk", 1));
    assert!(damaged.label.contains("row 1 of run"), "{}", damaged.label);
    // The damaged run is still there to inspect, and load says what is wrong.
    let err = store.load(RunId::from(3)).await.unwrap_err();
    assert!(err.to_string().contains("row 1 of run"), "{err}");
    // Pruning by age goes past it to the others.
    let later = SystemTime::now() + std::time::Duration::from_secs(3600);
    assert_eq!(store.prune(later).await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_directory_is_open_in_one_place_and_free_once_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = SledCheckpointStore::open(&path).unwrap();
    let err = SledCheckpointStore::open(&path).unwrap_err();
    assert!(
        err.to_string().contains("of this process has it open"),
        "{err}"
    );
    drop(err);
    // Dropped and opened again at once, many times: the open waits for the closing
    // store (no error, no timing luck).
    drop(store);
    for _ in 0..50 {
        let store = SledCheckpointStore::open_async(&path, Durability::GroupCommit)
            .await
            .unwrap();
        store.append(row(9, 0, RowKind::Enter, 8)).await.ok();
        drop(store);
    }
    let store = SledCheckpointStore::open(&path).unwrap();
    assert_eq!(store.load(RunId::from(9)).await.unwrap().len(), 1);
    store.close().await.unwrap();
    // Closed: sled itself can open it at once.
    drop(sled::open(&path).unwrap());
}

#[test]
fn a_store_opened_outside_a_runtime_or_on_a_current_thread_one_works() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledCheckpointStore::open(dir.path()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        store.append(row(1, 0, RowKind::Enter, 8)).await.unwrap();
        store.close().await.unwrap();
        let again = SledCheckpointStore::open(dir.path()).unwrap();
        assert_eq!(again.load(RunId::from(1)).await.unwrap().len(), 1);
        let err: CanoError = again
            .append(row(1, 0, RowKind::Enter, 8))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("already has checkpoint rows"),
            "{err}"
        );
    });
}

/// Opens the store after a raw sled handle of this test was dropped: sled lets go of
/// its lock only when its own background threads do, and offers nothing to wait on,
/// so this polls, boundedly.
fn open_after_raw(path: &Path) -> SledCheckpointStore {
    let start = std::time::Instant::now();
    loop {
        match SledCheckpointStore::open(path) {
            Err(e) if start.elapsed() < std::time::Duration::from_secs(5) => {
                assert!(e.to_string().contains("another process"), "{e}");
                std::thread::yield_now();
            }
            other => return other.unwrap(),
        }
    }
}
