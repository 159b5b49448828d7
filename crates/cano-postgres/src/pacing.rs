//! When a batched statement goes out: the checkpoint writer's appends and the
//! worker's run finishes gather whatever arrives while earlier statements are in
//! flight, and this decides how long a batch waits for them.
//!
//! Two statements go in flight freely; past that, a batch waits for one of them to
//! land (up to [`LINGER`]), and what arrives meanwhile goes with it. A free connection
//! for every batch instead made batches of one or two rows, each a statement for the
//! server to run (and to plan: for so few rows it keeps planning afresh). Measured
//! with 16 workers, checkpoint rows per statement went from 4.4 to 9-13 and
//! transitions per second rose by a third; one in flight at a time cost a lone
//! worker (whose server has room) a tenth of its rate, two did not. A statement
//! slower than `LINGER` (a lock wait, a busy server, a dead connection) holds the
//! rest up no longer: the next batch goes on another connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The most items one statement carries.
pub(crate) const MAX_BATCH: usize = 512;
/// The most bytes (of rows, of final states) one statement carries; an item larger
/// than this goes alone: a batch of large items must not build a statement of
/// gigabytes.
pub(crate) const MAX_BATCH_BYTES: usize = 8 << 20;
/// How many statements go in flight at once without waiting.
const FREE_IN_FLIGHT: usize = 2;
/// How long a batch waits for a statement in flight to land before it goes on a
/// connection of its own.
const LINGER: Duration = Duration::from_millis(5);

/// Paces one stream of batched statements over a pool of `connections`.
pub(crate) struct Pacer {
    /// One per statement in flight.
    permits: Arc<Semaphore>,
    /// How many permits there are: the pool's size.
    connections: usize,
    /// Told each time a statement's answer is in.
    landed: Arc<Notify>,
    last_sent: Instant,
}

/// A statement in flight: dropping it (once its answer is in) frees its place.
pub(crate) struct InFlight {
    permit: Option<OwnedSemaphorePermit>,
    landed: Arc<Notify>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The place is free before the waiters look at how many are in flight.
        drop(self.permit.take());
        self.landed.notify_waiters();
    }
}

impl Pacer {
    /// A pacer for a pool of `connections` (at least one statement goes at a time).
    pub(crate) fn new(connections: usize) -> Self {
        let connections = connections.max(1);
        Self {
            permits: Arc::new(Semaphore::new(connections)),
            connections,
            landed: Arc::new(Notify::new()),
            last_sent: Instant::now(),
        }
    }

    /// Waits until the next batch may go: at once while fewer than two statements are
    /// in flight, else until one lands or [`LINGER`] has passed since the last one
    /// went, and then for a free connection. The caller gathers its batch after this
    /// returns (whatever arrived meanwhile joins it) and keeps the [`InFlight`] until
    /// the statement's answer is in.
    pub(crate) async fn next(&mut self) -> InFlight {
        loop {
            let landed = self.landed.notified();
            let in_flight = self.connections - self.permits.available_permits();
            if in_flight < FREE_IN_FLIGHT {
                break;
            }
            if tokio::time::timeout_at(self.last_sent + LINGER, landed)
                .await
                .is_err()
            {
                break;
            }
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the pacer never closes its semaphore");
        self.last_sent = Instant::now();
        InFlight {
            permit: Some(permit),
            landed: self.landed.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn two_go_at_once_and_a_third_waits_for_one_to_land() {
        let mut pacer = Pacer::new(4);
        let first = pacer.next().await;
        let _second = pacer.next().await;
        let began = Instant::now();
        let third = tokio::spawn(async move {
            let _third = pacer.next().await;
            Instant::now()
        });
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_millis(1)).await;
        drop(first);
        let went = third.await.unwrap();
        assert!(
            went - began < LINGER,
            "the third batch waited past a landing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_third_waits_no_longer_than_linger_for_a_stuck_statement() {
        let mut pacer = Pacer::new(4);
        let (_first, _second) = (pacer.next().await, pacer.next().await);
        let sent = pacer.last_sent;
        let _third = pacer.next().await;
        assert_eq!(Instant::now() - sent, LINGER);
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_go_than_the_pool_holds() {
        let mut pacer = Pacer::new(2);
        let first = pacer.next().await;
        let _second = pacer.next().await;
        let third = tokio::spawn(async move {
            let _third = pacer.next().await;
        });
        // Far past the linger: the pool is full, so the third still waits.
        tokio::time::sleep(LINGER * 100).await;
        assert!(!third.is_finished());
        drop(first);
        third.await.unwrap();
    }
}
