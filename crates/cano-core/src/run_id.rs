//! [`RunId`]: what names one run, in logs, checkpoint rows and observer events.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Identifies one run of a workflow. Unique within a process and, being seeded from
/// the clock and process id, very unlikely to repeat across processes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(u64);

impl RunId {
    /// A fresh id.
    pub fn new() -> Self {
        // Each thread takes counters from the shared one a block at a time, so that a
        // run started on a busy thread does not contend on a shared atomic.
        const BLOCK: u64 = 1024;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        thread_local! {
            static LOCAL: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
        }
        let counter = LOCAL.with(|local| {
            let (mut next, mut end) = local.get();
            if next == end {
                next = NEXT.fetch_add(BLOCK, Ordering::Relaxed);
                end = next + BLOCK;
            }
            local.set((next + 1, end));
            next
        });
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let seed = *SEED.get_or_init(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            nanos ^ (u64::from(std::process::id()).rotate_left(40))
        });
        // splitmix64 is a bijection: distinct counters give distinct ids.
        let mut z = seed.wrapping_add(counter.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self(z ^ (z >> 31))
    }

    /// The id named `name`: the same in every process and build (FNV-1a of the text),
    /// so a run started under a name (`RunOptions::with_run_id(RunId::named("order-42"))`)
    /// can be resumed by it (`resume_from("order-42")`). Two names may, rarely, give
    /// one id; a run's checkpoint log refuses a second run under an id it holds.
    pub fn named(name: &str) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in name.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self(hash)
    }

    /// The id as a number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl serde::Serialize for RunId {
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RunId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u64::deserialize(deserializer).map(Self)
    }
}

impl std::str::FromStr for RunId {
    type Err = crate::error::CanoError;

    /// Parses the 16 hex digits [`Display`](fmt::Display) prints (as in logs and
    /// checkpoint listings).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(text.trim(), 16).map(Self).map_err(|e| {
            crate::error::CanoError::configuration(format!("{text:?} is not a run id"))
                .with_source(e)
                .with_hint(
                    "a run id is written as up to 16 hex digits, as RunId's Display prints it",
                )
        })
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<u64> for RunId {
    fn from(id: u64) -> Self {
        Self(id)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({self})")
    }
}
