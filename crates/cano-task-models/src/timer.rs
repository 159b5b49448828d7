//! Timer tasks: wait for a while, or until a wall-clock moment, then move on.
//!
//! A [`TimerTask`] says when it fires ([`Deadline`]) and what happens then
//! ([`fire`](TimerTask::fire)). In a workflow with a checkpoint store, the moment it
//! fires is saved as soon as it is known, so a run resumed after a crash waits only
//! for what remains (and fires at once if the moment has passed).

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cano_core::checkpoint::{Bincode, Codec};
use cano_core::{
    CanoError, DefaultKey, Resources, TaskConfig, TaskProgress, TaskResult, short_type_name,
};

use crate::util::{caught, decode};

/// When a timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// This long after the state is entered.
    After(Duration),
    /// At this wall-clock moment; one already past fires at once.
    At(SystemTime),
}

/// Waits, then fires. Write `#[task::timer]` on the impl block (through the `cano`
/// facade): it lets the block use `async fn` and makes the type a
/// [`Task`](cano_core::Task), registered with `Workflow::register`.
#[async_trait]
pub trait TimerTask<S, K = DefaultKey>: Send + Sync + 'static {
    /// When to fire; asked once per entry into the state (a resumed run uses the saved
    /// moment instead of asking again).
    async fn deadline(&self, res: &Resources<K>) -> Result<Deadline, CanoError>;

    /// Runs when the deadline is reached and returns the next state.
    async fn fire(&self, res: &Resources<K>) -> Result<TaskResult<S>, CanoError>;

    /// How the engine runs the task (wait and fire as one attempt): no retries by
    /// default. A retried attempt keeps its deadline only when the run is checkpointed.
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }

    /// The name used in errors, observer events and saved progress: the type's name by
    /// default.
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(short_type_name::<Self>())
    }
}

/// The progress key of the saved moment (milliseconds since the Unix epoch).
const FIRES_AT: &str = "fires_at_ms";

fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How long is left until `fires_at_ms` when the wall clock reads `now_ms`.
pub(crate) fn remaining(fires_at_ms: u64, now_ms: u64) -> Duration {
    Duration::from_millis(fires_at_ms.saturating_sub(now_ms))
}

/// Waits for `task`'s deadline and fires it: what the `Task` impl that
/// `#[task::timer]` writes calls.
pub async fn run_timer<T, S, K>(task: &T, res: &Resources<K>) -> Result<TaskResult<S>, CanoError>
where
    T: TimerTask<S, K> + ?Sized,
    S: Send + 'static,
    K: Send + Sync + 'static,
{
    let name = task.name();
    let progress = TaskProgress::current(&name);
    let saved = match progress.as_ref().and_then(|p| p.get(FIRES_AT)) {
        Some(bytes) => Some(decode::<u64>(&bytes, &name, "deadline")?),
        None => None,
    };
    let wait = match saved {
        Some(fires_at) => remaining(fires_at, epoch_ms(SystemTime::now())),
        None => {
            let now = SystemTime::now();
            let (wait, fires_at_ms) = match caught(task.deadline(res)).await? {
                // A wait past what the clock can name (`Duration::MAX`) never ends,
                // and is saved as such, not as "now".
                Deadline::After(wait) => (wait, now.checked_add(wait).map_or(u64::MAX, epoch_ms)),
                Deadline::At(at) => (at.duration_since(now).unwrap_or_default(), epoch_ms(at)),
            };
            if let Some(progress) = &progress {
                progress.put(FIRES_AT, Bincode::encode(&fires_at_ms)?);
                progress.save().await?;
            }
            wait
        }
    };
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let fired = caught(task.fire(res)).await?;
    if let Some(progress) = &progress {
        progress.clear();
    }
    Ok(fired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_time_never_goes_negative() {
        assert_eq!(remaining(10_000, 4_000), Duration::from_secs(6));
        assert_eq!(remaining(10_000, 10_000), Duration::ZERO);
        assert_eq!(remaining(10_000, 99_000), Duration::ZERO);
        assert_eq!(epoch_ms(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
        assert_eq!(epoch_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
