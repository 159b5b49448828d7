//! Running on tokio's paused clock: time stands still until every task waits, then
//! jumps to the next timer, so retries, timeouts, timers and schedules are tested in
//! microseconds of real time and with exact virtual durations.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// A current-thread tokio runtime whose clock starts paused.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds")
}

/// Runs `future` to completion on a fresh paused runtime; returns its output and how
/// much virtual time it took.
///
/// ```
/// use std::time::Duration;
///
/// let hour = Duration::from_secs(3_600);
/// let ((), took) = cano_testing::run_paused(async move { tokio::time::sleep(hour).await });
/// assert_eq!(took, Duration::from_secs(3_600));
/// ```
pub fn run_paused<F: Future>(future: F) -> (F::Output, Duration) {
    paused_runtime().block_on(timed(future))
}

/// Awaits `future` and says how long it took on the runtime's clock (virtual time when
/// the clock is paused).
pub async fn timed<F: Future>(future: F) -> (F::Output, Duration) {
    let started = Instant::now();
    let output = future.await;
    (output, started.elapsed())
}
