//! A tiny, lock-free pseudo-random source for jitter. Retry jitter only has to spread
//! retries of many callers apart; it needs no cryptographic quality, so a splitmix64
//! stream over a global counter is enough and avoids a dependency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ (u64::from(std::process::id()) << 32)
    })
}

/// splitmix64: a bijective mixer, so distinct inputs give distinct outputs.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform value in `[0, 1)`.
pub(crate) fn unit() -> f64 {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (mix(seed().wrapping_add(n)) >> 11) as f64 / (1u64 << 53) as f64
}
