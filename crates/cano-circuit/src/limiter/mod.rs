//! [`RateLimiter`]: paces calls to a dependency: a token bucket, a fixed window, or
//! several of them at once (tiered).
//!
//! [`try_acquire`](RateLimiter::try_acquire) never waits: it admits the call or says,
//! in [`CanoError::RateLimited`], how long until it could. [`acquire`](RateLimiter::acquire)
//! waits its turn: waiters are served first come, first served, and while anyone is
//! waiting `try_acquire` does not slip past them.

mod bucket;
mod window;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cano_error::CanoError;

use bucket::TokenBucket;
use window::FixedWindow;

enum Kind {
    Bucket(TokenBucket),
    Window(FixedWindow),
    Tiered(Box<[Arc<RateLimiter>]>),
}

impl Kind {
    fn capacity(&self) -> u64 {
        match self {
            Self::Bucket(b) => b.capacity(),
            Self::Window(w) => w.capacity(),
            Self::Tiered(tiers) => tiers.iter().map(|t| t.kind.capacity()).min().unwrap_or(0),
        }
    }

    /// Takes `cost` from every tier or from none; on refusal, the nanoseconds until the
    /// refusing tier would have room.
    fn try_debit(&self, cost: u64) -> Result<(), u64> {
        match self {
            Self::Bucket(b) => b.try_debit(cost),
            Self::Window(w) => w.try_debit(cost),
            Self::Tiered(tiers) => {
                for (taken, tier) in tiers.iter().enumerate() {
                    if let Err(wait) = tier.kind.try_debit(cost) {
                        for earlier in &tiers[..taken] {
                            earlier.kind.refund(cost);
                        }
                        return Err(wait);
                    }
                }
                Ok(())
            }
        }
    }

    fn wait_for(&self, cost: u64) -> u64 {
        match self {
            Self::Bucket(b) => b.wait_for(cost),
            Self::Window(w) => w.wait_for(cost),
            Self::Tiered(tiers) => tiers
                .iter()
                .map(|t| t.kind.wait_for(cost))
                .max()
                .unwrap_or(0),
        }
    }

    fn refund(&self, cost: u64) {
        match self {
            Self::Bucket(b) => b.refund(cost),
            Self::Window(w) => w.refund(cost),
            Self::Tiered(tiers) => tiers.iter().for_each(|t| t.kind.refund(cost)),
        }
    }
}

/// A rate limiter shared by every caller of one dependency (wrap it in an `Arc`).
///
/// ```
/// use std::time::Duration;
/// use cano_circuit::RateLimiter;
/// use cano_error::CanoError;
///
/// // 10 calls per second, up to 3 at once.
/// let limiter = RateLimiter::token_bucket(10, Duration::from_secs(1), 3)?;
/// for _ in 0..3 {
///     limiter.try_acquire()?;
/// }
/// let refused = limiter.try_acquire().unwrap_err();
/// assert!(matches!(refused, CanoError::RateLimited { retry_after, .. } if retry_after <= Duration::from_millis(100)));
/// # Ok::<(), CanoError>(())
/// ```
pub struct RateLimiter {
    kind: Kind,
    /// Waiters queue on this lock, which hands itself out first come, first served.
    queue: tokio::sync::Mutex<()>,
    waiting: AtomicUsize,
    name: Cow<'static, str>,
}

impl RateLimiter {
    fn build(kind: Kind) -> Self {
        Self {
            kind,
            queue: tokio::sync::Mutex::new(()),
            waiting: AtomicUsize::new(0),
            name: Cow::Borrowed("rate limiter"),
        }
    }

    /// A token bucket: `rate` tokens per `period`, holding at most `burst` (it starts
    /// full). A `Configuration` error if any of them is zero.
    pub fn token_bucket(rate: u32, period: Duration, burst: u32) -> Result<Self, CanoError> {
        let mut problems = Vec::new();
        if rate == 0 {
            problems.push("the rate is 0 tokens (nothing would ever be admitted)");
        }
        if period.is_zero() {
            problems.push("the period is 0 s (the rate would be infinite)");
        }
        if burst == 0 {
            problems.push("the burst is 0 (no call could ever start); use at least 1");
        }
        config_check("token bucket", &problems)?;
        Ok(Self::build(Kind::Bucket(TokenBucket::new(
            rate, period, burst,
        ))))
    }

    /// A fixed window: at most `limit` calls per `window`, counted afresh each window.
    /// A `Configuration` error if either is zero.
    pub fn windowed(limit: u32, window: Duration) -> Result<Self, CanoError> {
        let mut problems = Vec::new();
        if limit == 0 {
            problems.push("the limit is 0 calls per window (nothing would ever be admitted)");
        }
        if window.is_zero() {
            problems.push("the window is empty (0 s); give it a length such as 1 s");
        }
        config_check("windowed limiter", &problems)?;
        Ok(Self::build(Kind::Window(FixedWindow::new(limit, window))))
    }

    /// Several limiters at once (say 10 per second and 1,000 per hour): a call is
    /// admitted only if every tier has room, and then it is debited from every tier, or
    /// from none. Tiers may be shared with other limiters; a tiered limiter queues its
    /// own waiters and takes from its tiers directly.
    pub fn tiered(tiers: impl IntoIterator<Item = Arc<RateLimiter>>) -> Result<Self, CanoError> {
        let tiers: Box<[_]> = tiers.into_iter().collect();
        if tiers.is_empty() {
            config_check(
                "tiered limiter",
                &["it has no tiers; give it at least one limiter"],
            )?;
        }
        Ok(Self::build(Kind::Tiered(tiers)))
    }

    /// Names the limiter in its errors (the dependency it paces, say `"geo-api"`).
    pub fn with_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The largest cost one call can ever be granted: the burst of a bucket, the limit
    /// of a window, the smallest of a tiered limiter's tiers.
    pub fn capacity(&self) -> u64 {
        self.kind.capacity()
    }

    /// How long until a call of `cost` could be admitted, not counting the callers
    /// already waiting (zero: now).
    pub fn available_in(&self, cost: u64) -> Duration {
        Duration::from_nanos(self.kind.wait_for(cost))
    }

    /// How many callers are waiting in [`acquire`](Self::acquire) now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Admits one call now or refuses it with [`CanoError::RateLimited`]; never waits.
    #[inline]
    pub fn try_acquire(&self) -> Result<(), CanoError> {
        self.try_acquire_n(1)
    }

    /// Admits a call of `cost` tokens now or refuses it. A cost above
    /// [`capacity`](Self::capacity) is a `Configuration` error: it could never pass.
    pub fn try_acquire_n(&self, cost: u64) -> Result<(), CanoError> {
        self.check_cost(cost)?;
        if self.waiting.load(Ordering::Acquire) > 0 {
            // Waiters were here first.
            let wait = self.kind.wait_for(cost).max(1);
            return Err(self.refusal(cost, wait, " (callers are already waiting)"));
        }
        self.kind
            .try_debit(cost)
            .map_err(|wait| self.refusal(cost, wait, ""))
    }

    /// Waits until one call is admitted.
    pub async fn acquire(&self) -> Result<(), CanoError> {
        self.acquire_n(1).await
    }

    /// Waits until a call of `cost` tokens is admitted, behind every earlier waiter. A
    /// cost above [`capacity`](Self::capacity) is a `Configuration` error at once
    /// rather than a wait that could never end. Dropping the future leaves the queue.
    pub async fn acquire_n(&self, cost: u64) -> Result<(), CanoError> {
        self.check_cost(cost)?;
        if self.waiting.load(Ordering::Acquire) == 0 && self.kind.try_debit(cost).is_ok() {
            return Ok(());
        }
        let _waiter = Waiter::enter(&self.waiting);
        let _turn = self.queue.lock().await;
        loop {
            match self.kind.try_debit(cost) {
                Ok(()) => return Ok(()),
                Err(wait) => tokio::time::sleep(Duration::from_nanos(wait)).await,
            }
        }
    }

    fn check_cost(&self, cost: u64) -> Result<(), CanoError> {
        let capacity = self.capacity();
        if cost <= capacity {
            return Ok(());
        }
        Err(CanoError::configuration(format!(
            "rate limiter `{}` can never admit a call of cost {cost}: it holds at most {capacity}",
            self.name
        ))
        .with_hint("split the call into smaller costs or raise the limiter's burst / limit"))
    }

    fn refusal(&self, cost: u64, wait: u64, why: &str) -> CanoError {
        let retry_after = Duration::from_nanos(wait);
        CanoError::rate_limited(
            retry_after,
            format!(
                "rate limiter `{}` has no room for a call of cost {cost} for another {retry_after:?}{why}",
                self.name
            ),
        )
        .with_hint("wait for the limiter (acquire, or a task config that allows waiting) or raise its rate")
    }
}

fn config_check(what: &str, problems: &[&str]) -> Result<(), CanoError> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(
        CanoError::configuration(format!("{what}: {}", problems.join("; ")))
            .with_hint("pass non-zero settings to the RateLimiter constructor"),
    )
}

/// Counts a caller in the queue for as long as it waits (also when its future is dropped).
struct Waiter<'a>(&'a AtomicUsize);

impl<'a> Waiter<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Bucket(_) => "token bucket",
            Kind::Window(_) => "fixed window",
            Kind::Tiered(_) => "tiered",
        };
        f.debug_struct("RateLimiter")
            .field("name", &self.name)
            .field("kind", &kind)
            .field("capacity", &self.capacity())
            .field("waiting", &self.waiting())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_refills_at_its_rate() {
        let limiter = RateLimiter::token_bucket(2, Duration::from_secs(1), 2).unwrap();
        limiter.try_acquire().unwrap();
        limiter.try_acquire().unwrap();
        let err = limiter.try_acquire().unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_millis(500)));
        tokio::time::advance(Duration::from_millis(500)).await;
        limiter.try_acquire().unwrap();
        assert!(limiter.try_acquire().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_starts_afresh() {
        let limiter = RateLimiter::windowed(3, Duration::from_secs(1)).unwrap();
        limiter.try_acquire_n(3).unwrap();
        let err = limiter.try_acquire().unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        limiter.try_acquire_n(3).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn tiers_are_debited_all_or_none() {
        let fast = Arc::new(RateLimiter::token_bucket(10, Duration::from_secs(1), 5).unwrap());
        let slow = Arc::new(RateLimiter::windowed(2, Duration::from_secs(60)).unwrap());
        let both = RateLimiter::tiered([fast.clone(), slow.clone()]).unwrap();
        both.try_acquire_n(2).unwrap();
        // The slow tier is spent; the refused call must not have eaten the fast tier.
        assert!(both.try_acquire().is_err());
        fast.try_acquire_n(3).unwrap();
        assert!(fast.try_acquire().is_err());
        assert_eq!(both.capacity(), 2);
    }

    #[test]
    fn a_cost_above_capacity_is_refused_at_once() {
        let limiter = RateLimiter::token_bucket(1, Duration::from_secs(1), 4)
            .unwrap()
            .with_name("geo");
        let err = limiter.try_acquire_n(5).unwrap_err();
        assert!(matches!(err, CanoError::Configuration(_)));
        assert!(
            err.to_string()
                .contains("`geo` can never admit a call of cost 5"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_callers_are_served_in_arrival_order() {
        let limiter = Arc::new(RateLimiter::token_bucket(1, Duration::from_secs(1), 1).unwrap());
        limiter.try_acquire().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut handles = Vec::new();
        for id in 0..5 {
            let (waiter, tx) = (limiter.clone(), tx.clone());
            handles.push(tokio::spawn(async move {
                waiter.acquire().await.unwrap();
                tx.send(id).unwrap();
            }));
            // Let this waiter join the queue before the next one is spawned.
            while limiter.waiting() < id + 1 {
                tokio::task::yield_now().await;
            }
        }
        // Someone arriving late cannot jump the queue with try_acquire.
        let late = limiter.try_acquire().unwrap_err();
        assert!(late.to_string().contains("already waiting"), "{late}");
        for h in handles {
            h.await.unwrap();
        }
        drop(tx);
        let mut order = Vec::new();
        while let Some(id) = rx.recv().await {
            order.push(id);
        }
        assert_eq!(order, [0, 1, 2, 3, 4]);
    }
}
