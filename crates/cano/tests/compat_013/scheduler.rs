//! The scheduler as cano 0.13 programs drive it: a `Scheduler<State>` filled on
//! `&mut self`, `start()` into a `RunningScheduler` whose controls are awaited,
//! `BackoffPolicy` written as a struct literal, `Status` matched with a wildcard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Job {
    Start,
    Done,
}

#[derive(Clone)]
struct Work {
    runs: Arc<AtomicU32>,
    failing: Arc<AtomicBool>,
}

impl Work {
    fn new(failing: bool) -> Self {
        Self {
            runs: Arc::default(),
            failing: Arc::new(AtomicBool::new(failing)),
        }
    }

    fn workflow(&self) -> Workflow<Job> {
        Workflow::bare()
            .register(Job::Start, self.clone())
            .add_exit_state(Job::Done)
    }
}

#[task(state = Job)]
impl Work {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }

    async fn run_bare(&self) -> Result<TaskResult<Job>, CanoError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(CanoError::TaskExecution("the ledger is locked".into()));
        }
        Ok(TaskResult::Single(Job::Done))
    }
}

#[tokio::test(start_paused = true)]
async fn flows_run_report_and_stop_as_in_0_13() -> CanoResult<()> {
    let (tick, manual, failing) = (Work::new(false), Work::new(false), Work::new(true));
    let mut scheduler: Scheduler<Job> = Scheduler::new();
    assert!(scheduler.is_empty());
    scheduler.every_seconds("tick", tick.workflow(), Job::Start, 5)?;
    scheduler.every_minutes("slow", tick.workflow(), Job::Start, 10)?;
    scheduler.every_hours("hourly", tick.workflow(), Job::Start, 1)?;
    scheduler.cron("nightly", tick.workflow(), Job::Start, "0 0 3 * * *")?;
    scheduler.manual("manual", manual.workflow(), Job::Start)?;
    scheduler.every(
        "failing",
        failing.workflow(),
        Job::Start,
        Duration::from_secs(1),
    )?;
    scheduler.set_backoff(
        "failing",
        BackoffPolicy {
            initial: Duration::from_secs(10),
            multiplier: 2.0,
            max_delay: Duration::from_secs(60),
            jitter: 0.0,
            streak_limit: Some(2),
        },
    )?;
    assert!(
        scheduler
            .set_backoff("nope", BackoffPolicy::default())
            .is_err()
    );
    // 0.13's seven-field form (a year last) is taken; a wrong expression is refused.
    scheduler.cron("in-2027", tick.workflow(), Job::Start, "0 0 3 * * * 2027")?;
    match scheduler.cron("bad", tick.workflow(), Job::Start, "every night") {
        Err(CanoError::Configuration(msg)) => assert!(msg.contains("cron"), "{msg}"),
        other => panic!("a wrong expression is refused: {other:?}"),
    }
    let duplicate = scheduler.manual("manual", manual.workflow(), Job::Start);
    assert!(matches!(duplicate, Err(CanoError::Configuration(_))));
    assert_eq!(scheduler.len(), 7);
    assert!(scheduler.contains("tick") && !scheduler.contains("nope"));

    let running: RunningScheduler<Job> = scheduler.start().await?;
    let handle = running.clone();
    running.trigger("manual").await?;
    tokio::time::sleep(Duration::from_millis(12_500)).await;

    let info = running.status("tick").await.expect("tick is registered");
    assert_eq!(info.id, "tick");
    assert_eq!(info.run_count, 2, "{info:?}");
    assert!(info.last_run.is_some());
    assert_eq!(info.failure_streak, 0);
    match info.status {
        Status::Idle => {}
        other => panic!("tick waits for its next run: {other:?}"),
    }
    assert_eq!(manual.runs.load(Ordering::SeqCst), 1);
    assert!(running.status("nope").await.is_none());

    // 1 s: the first failure backs off 10 s; 11 s: the second trips it.
    let failing_info = running.status("failing").await.unwrap();
    assert_eq!(failing_info.failure_streak, 2);
    match &failing_info.status {
        Status::Tripped { streak, last_error } => {
            assert_eq!(*streak, 2);
            assert!(last_error.contains("ledger is locked"), "{last_error}");
        }
        other => panic!("tripped after two failures: {other:?}"),
    }
    match running.trigger("failing").await {
        Err(CanoError::Workflow(msg)) => assert!(msg.contains("tripped"), "{msg}"),
        other => panic!("a tripped flow refuses a trigger: {other:?}"),
    }
    failing.failing.store(false, Ordering::SeqCst);
    running.reset_flow("failing").await?;
    running.trigger("failing").await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let failing_info = running.status("failing").await.unwrap();
    assert_eq!(
        (failing_info.failure_streak, failing_info.run_count),
        (0, 3)
    );

    let ids: Vec<String> = running.list().await.into_iter().map(|f| f.id).collect();
    assert_eq!(
        ids,
        [
            "tick", "slow", "hourly", "nightly", "manual", "failing", "in-2027"
        ]
    );
    assert!(!running.has_running_flows().await);

    let waiter = tokio::spawn(async move { handle.wait().await });
    running.stop().await?;
    waiter.await.expect("the waiter ends")?;
    // Stopping again returns the first stop's result.
    running.stop().await?;
    assert!(running.trigger("tick").await.is_err());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_flow_that_cannot_run_fails_start_not_registration() {
    let broken: Workflow<Job> = Workflow::bare().add_exit_state(Job::Done);
    let mut scheduler = Scheduler::new();
    scheduler
        .every_seconds("broken", broken, Job::Start, 60)
        .expect("registration only records the flow");
    let err = scheduler
        .start()
        .await
        .expect_err("start checks every flow");
    assert!(matches!(err, CanoError::Configuration(_)), "{err}");
}

#[test]
fn backoff_policy_reads_like_0_13() {
    let policy = BackoffPolicy::with_trip(3);
    assert_eq!(policy.streak_limit, Some(3));
    assert_eq!(policy.initial, Duration::from_secs(1));
    assert_eq!(policy.max_delay, Duration::from_secs(300));
    assert!(policy.is_tripped(3) && !policy.is_tripped(2));
    assert!(!BackoffPolicy::default().is_tripped(u32::MAX));
    let exact = BackoffPolicy {
        jitter: 0.0,
        ..BackoffPolicy::default()
    };
    assert_eq!(exact.compute_delay(1), Duration::from_secs(1));
    assert_eq!(exact.compute_delay(3), Duration::from_secs(4));
    assert_eq!(exact.compute_delay(60), Duration::from_secs(300));
    // With the default ± 10 % jitter a wait stays within it and under the cap.
    for streak in 1..20 {
        let wait = BackoffPolicy::default().compute_delay(streak);
        let base = exact.compute_delay(streak).as_secs_f64();
        assert!(wait.as_secs_f64() >= base * 0.9 - 1e-9, "{wait:?}");
        assert!(wait <= Duration::from_secs(300), "{wait:?}");
    }
    // Values out of range never panic.
    let odd = BackoffPolicy {
        multiplier: f64::NAN,
        jitter: 7.0,
        max_delay: Duration::MAX,
        ..BackoffPolicy::default()
    };
    assert!(odd.compute_delay(u32::MAX) <= Duration::from_secs(2));
}
