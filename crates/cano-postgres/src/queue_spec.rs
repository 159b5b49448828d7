//! [`QueueSpec`]: a named queue's limits (how many of its runs run at once in the
//! cluster, on one worker and per partition; how many start per period) and what
//! happens to a new run when its partition is full ([`WhenFull`]).

use std::time::Duration;

use cano_core::CanoError;

/// What happens to a run enqueued into a partition that is full: one whose queued and
/// running runs already reach the queue's partition limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// The run waits its turn (the default).
    #[default]
    Queue,
    /// The new run is not run: the queue records it as
    /// [`Cancelled`](crate::QueueStatus::Cancelled) at once, saying why, and
    /// [`Enqueued::skipped`](crate::Enqueued::skipped) is set.
    Skip,
    /// The partition's oldest runs make room for the newest: a queued one is
    /// cancelled at once, a running one is asked to cancel (its worker cancels it as
    /// any run is cancelled, compensations included) and its slot is free once its
    /// worker has recorded that. The new run starts then.
    CancelRunning,
}

impl WhenFull {
    pub(crate) fn as_text(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Skip => "skip",
            Self::CancelRunning => "cancel-running",
        }
    }

    pub(crate) fn parse(text: &str) -> Self {
        match text {
            "skip" => Self::Skip,
            "cancel-running" => Self::CancelRunning,
            _ => Self::Queue,
        }
    }
}

/// A named queue and its limits, declared with
/// [`RunQueue::declare`](crate::RunQueue::declare) (again, to change them: workers read
/// them at every claim). Runs go onto it with
/// [`EnqueueOptions::on_queue`](crate::EnqueueOptions::on_queue); any worker that has
/// registered a run's workflow claims it, within the limits.
///
/// Every limit is optional (none: unlimited) and at least 1. A limit counts runs that
/// hold a live lease; a run parked in a durable wait holds no slot, and a crashed
/// worker's slots come back when its leases end.
///
/// ```
/// use std::time::Duration;
/// use cano_postgres::{QueueSpec, WhenFull};
///
/// let reports = QueueSpec::new("reports")
///     .with_concurrency(20)                   // across the cluster
///     .with_worker_concurrency(4)             // on any one worker
///     .with_partition_concurrency(2)          // per tenant (partition key)
///     .with_rate_limit(100, Duration::from_secs(60))
///     .when_full(WhenFull::Queue);
/// assert_eq!(reports.name(), "reports");
/// assert!(reports.validate().is_ok());
/// assert!(QueueSpec::new("reports").with_concurrency(0).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    name: String,
    concurrency: Option<u32>,
    worker_concurrency: Option<u32>,
    partition_concurrency: Option<u32>,
    rate: Option<(u32, Duration)>,
    when_full: WhenFull,
}

/// The longest queue name (it is stored and compared on every claim).
const MAX_NAME: usize = 200;

impl QueueSpec {
    /// A queue named `name` with no limits.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            concurrency: None,
            worker_concurrency: None,
            partition_concurrency: None,
            rate: None,
            when_full: WhenFull::Queue,
        }
    }

    /// At most `runs` of the queue's runs run at once, across all workers.
    pub fn with_concurrency(mut self, runs: u32) -> Self {
        self.concurrency = Some(runs);
        self
    }

    /// At most `runs` of the queue's runs run at once on any one worker (a worker's
    /// own [`with_concurrency`](crate::Worker::with_concurrency) bounds it too).
    pub fn with_worker_concurrency(mut self, runs: u32) -> Self {
        self.worker_concurrency = Some(runs);
        self
    }

    /// At most `runs` runs of one partition (one
    /// [`partition key`](crate::EnqueueOptions::with_partition)) run at once; the
    /// partitions take turns, so one tenant's burst does not starve the others. Runs
    /// without a key form one partition of their own.
    pub fn with_partition_concurrency(mut self, runs: u32) -> Self {
        self.partition_concurrency = Some(runs);
        self
    }

    /// At most `starts` claims of the queue's runs in any window of `per`, across the
    /// cluster. Every claim counts: a first start, a resume after a worker died, a
    /// wake from a durable wait. `per` of `Duration::MAX` is no rate limit.
    pub fn with_rate_limit(mut self, starts: u32, per: Duration) -> Self {
        self.rate = (per != Duration::MAX).then_some((starts, per));
        self
    }

    /// What happens to a run enqueued into a full partition ([`WhenFull::Queue`] by
    /// default). Without a partition limit no partition is ever full.
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.when_full = policy;
        self
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster-wide limit, if any.
    pub fn concurrency(&self) -> Option<u32> {
        self.concurrency
    }

    /// The per-worker limit, if any.
    pub fn worker_concurrency(&self) -> Option<u32> {
        self.worker_concurrency
    }

    /// The per-partition limit, if any.
    pub fn partition_concurrency(&self) -> Option<u32> {
        self.partition_concurrency
    }

    /// The rate limit (claims per window), if any.
    pub fn rate_limit(&self) -> Option<(u32, Duration)> {
        self.rate
    }

    /// The policy for a full partition.
    pub fn full_policy(&self) -> WhenFull {
        self.when_full
    }

    /// Checks the spec: a name of 1 to 200 characters, every limit at least 1, a rate
    /// window from 1 ms up to what PostgreSQL's intervals hold. A limit of 0 would
    /// never run anything, so it is an error rather than a queue that hangs.
    pub fn validate(&self) -> Result<(), CanoError> {
        let queue = &self.name;
        if queue.is_empty() || queue.chars().count() > MAX_NAME {
            return Err(CanoError::configuration(format!(
                "a queue name must have 1 to {MAX_NAME} characters, not {}",
                queue.chars().count()
            ))
            .with_hint("name queues after what they hold, like \"reports\""));
        }
        for (what, limit) in [
            ("with_concurrency", self.concurrency),
            ("with_worker_concurrency", self.worker_concurrency),
            ("with_partition_concurrency", self.partition_concurrency),
            ("with_rate_limit", self.rate.map(|(n, _)| n)),
        ] {
            if limit == Some(0) {
                return Err(CanoError::configuration(format!(
                    "queue {queue:?}: a limit of 0 ({what}) would never run anything"
                ))
                .with_hint("use at least 1, or leave the limit out for none"));
            }
            if limit.is_some_and(|n| n > i32::MAX as u32) {
                return Err(CanoError::configuration(format!(
                    "queue {queue:?}: the limit of {what} is above {}",
                    i32::MAX
                ))
                .with_hint("leave the limit out for none"));
            }
        }
        if let Some((_, per)) = self.rate
            && (per < Duration::from_millis(1) || per > MAX_WINDOW)
        {
            return Err(CanoError::configuration(format!(
                "queue {queue:?}: a rate window of {per:?} cannot be kept (it must be from 1 ms to {} days)",
                MAX_WINDOW.as_secs() / 86_400
            ))
            .with_hint("give the window in seconds or minutes; Duration::MAX means no rate limit"));
        }
        Ok(())
    }

    pub(crate) fn rate_ms(&self) -> (Option<i32>, Option<i64>) {
        match self.rate {
            Some((n, per)) => (Some(n as i32), Some(per.as_millis() as i64)),
            None => (None, None),
        }
    }
}

/// The longest rate window: about 100 years, well inside PostgreSQL's intervals.
const MAX_WINDOW: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Turns a stored limit back into the spec's.
pub(crate) fn limit_of(value: Option<i32>) -> Option<u32> {
    value.and_then(|n| u32::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_and_bad_windows_are_refused_with_the_setting_named() {
        let err = QueueSpec::new("q")
            .with_partition_concurrency(0)
            .validate()
            .unwrap_err();
        assert!(
            err.to_string().contains("with_partition_concurrency"),
            "{err}"
        );
        let err = QueueSpec::new("q")
            .with_rate_limit(0, Duration::from_secs(1))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("with_rate_limit"), "{err}");
        let err = QueueSpec::new("q")
            .with_rate_limit(5, Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("rate window"), "{err}");
        assert!(QueueSpec::new("").validate().is_err());
        assert!(QueueSpec::new("x".repeat(201)).validate().is_err());
        assert!(
            QueueSpec::new("q")
                .with_concurrency(u32::MAX)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn a_window_of_duration_max_is_no_rate_limit() {
        let spec = QueueSpec::new("q").with_rate_limit(3, Duration::MAX);
        assert_eq!(spec.rate_limit(), None);
        assert!(spec.validate().is_ok());
        let spec = QueueSpec::new("q").with_rate_limit(3, Duration::from_millis(1));
        assert_eq!(spec.rate_ms(), (Some(3), Some(1)));
    }

    #[test]
    fn policies_survive_the_round_trip_through_their_text() {
        for policy in [WhenFull::Queue, WhenFull::Skip, WhenFull::CancelRunning] {
            assert_eq!(WhenFull::parse(policy.as_text()), policy);
        }
    }
}
