//! The scheduler on tokio's paused clock: cron instants across a DST change, fixed rate
//! against fixed delay, backoff and trip, overlap and missed-fire policies, graceful
//! stop, cancel, bad input, crashed runs resumed, resources set up once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cano_core::{CanoError, Resource, Resources, RunId, RunOptions, Task, TaskResult, Workflow};
use cano_scheduler::{
    BackoffPolicy, FlowPolicy, MissedFire, Overlap, RunningScheduler, Schedule, Scheduler, Status,
};
use chrono::{TimeZone, Utc};
use tokio::time::{Instant, advance, sleep};

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum S {
    Work,
    Done,
}

/// Records when each run started (seconds on the paused clock), takes `busy`, and
/// fails while `failing` says so.
#[derive(Clone)]
struct Job {
    origin: Instant,
    starts: Arc<Mutex<Vec<u64>>>,
    busy: Duration,
    failing: Arc<AtomicU32>,
}

impl Job {
    fn new(busy: Duration) -> Self {
        Self {
            origin: Instant::now(),
            starts: Arc::default(),
            busy,
            failing: Arc::default(),
        }
    }

    fn starts(&self) -> Vec<u64> {
        self.starts.lock().unwrap().clone()
    }

    fn workflow(&self) -> Workflow<S> {
        Workflow::bare()
            .register(S::Work, self.clone())
            .add_exit_state(S::Done)
    }
}

#[async_trait::async_trait]
impl Task<S> for Job {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        self.starts
            .lock()
            .unwrap()
            .push(self.origin.elapsed().as_secs());
        sleep(self.busy).await;
        if self.failing.load(Ordering::SeqCst) > 0 {
            return Err(CanoError::task_execution("the warehouse API is down"));
        }
        Ok(TaskResult::Single(S::Done))
    }
    fn config(&self) -> cano_core::TaskConfig {
        cano_core::TaskConfig::minimal()
    }
}

async fn start(job: &Job, schedule: Schedule, policy: FlowPolicy) -> RunningScheduler<S> {
    let mut scheduler = Scheduler::<S>::new();
    scheduler
        .flow("job", job.workflow(), S::Work, schedule, policy)
        .unwrap();
    scheduler.start().await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn cron_fires_at_the_local_instants_across_a_dst_change() {
    // Berlin springs forward at 02:00 CET on 29 March 2026 (01:00 UTC).
    let origin = Utc.with_ymd_and_hms(2026, 3, 28, 6, 30, 0).unwrap();
    let (job, hours) = (Job::new(Duration::ZERO), Job::new(Duration::ZERO));
    let mut scheduler = Scheduler::<S>::new().with_clock_origin(origin);
    scheduler
        .flow(
            "nine",
            job.workflow(),
            S::Work,
            Schedule::cron_in("0 9 * * *", "Europe/Berlin").unwrap(),
            FlowPolicy::new(),
        )
        .unwrap();
    scheduler
        .flow(
            "hourly",
            hours.workflow(),
            S::Work,
            Schedule::cron_in("0 * * * *", "Europe/Berlin").unwrap(),
            FlowPolicy::new(),
        )
        .unwrap();
    let scheduler = scheduler.start().await.unwrap();
    sleep(Duration::from_secs(2 * 86_400)).await;
    let nine = scheduler.status("nine").await.unwrap();
    let hourly = scheduler.status("hourly").await.unwrap();
    scheduler.stop_with_grace(Duration::ZERO).await.unwrap();
    // 09:00 CET on the 28th is 1.5 h in; 09:00 CEST on the 29th is 23 h later.
    let first_nine = 90 * 60;
    assert_eq!(job.starts(), [first_nine, first_nine + 23 * 3_600]);
    assert_eq!(nine.run_count, 2);
    // Every real hour fired once, at 30 min past the origin's hour, the day the local
    // clock skipped 02:00 included: 48 hours, 48 runs, an hour apart.
    let starts = hours.starts();
    assert_eq!(hourly.run_count, 48);
    assert_eq!(
        starts,
        (0..48).map(|h| 30 * 60 + h * 3_600).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn fixed_rate_keeps_its_grid_and_fixed_delay_counts_from_the_end() {
    let rate = Job::new(Duration::from_secs(20));
    let scheduler = start(
        &rate,
        Schedule::every_fixed_rate(Duration::from_secs(60)).unwrap(),
        FlowPolicy::new(),
    )
    .await;
    sleep(Duration::from_secs(250)).await;
    scheduler
        .stop_with_grace(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(rate.starts(), [60, 120, 180, 240]);

    let delay = Job::new(Duration::from_secs(20));
    let scheduler = start(
        &delay,
        Schedule::every(Duration::from_secs(60)).unwrap(),
        FlowPolicy::new(),
    )
    .await;
    sleep(Duration::from_secs(250)).await;
    scheduler
        .stop_with_grace(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(delay.starts(), [60, 140, 220]);
}

#[tokio::test(start_paused = true)]
async fn a_failing_flow_backs_off_then_trips_and_reset_starts_it_again() {
    let job = Job::new(Duration::ZERO);
    job.failing.store(1, Ordering::SeqCst);
    let policy = FlowPolicy::new()
        .with_backoff(BackoffPolicy::new(Duration::from_secs(30)))
        .trip_after(3);
    let scheduler = start(
        &job,
        Schedule::every(Duration::from_secs(10)).unwrap(),
        policy,
    )
    .await;
    sleep(Duration::from_secs(11)).await;
    let info = scheduler.status("job").await.unwrap();
    assert_eq!(info.failure_streak, 1);
    let Status::Backoff {
        until,
        streak: 1,
        last_error,
    } = info.status
    else {
        panic!(
            "backing off after the first failure: {:?}",
            info.status.clone()
        )
    };
    assert!(last_error.contains("warehouse API is down"), "{last_error}");
    assert_eq!(Some(until), info.next_eligible);
    assert_eq!(info.last_error.as_deref(), Some(last_error.as_str()));
    sleep(Duration::from_secs(1_000)).await;
    // 10 s; then backoff 30 s (at 40); then 60 s (at 100): the third failure trips it.
    assert_eq!(job.starts(), [10, 40, 100]);
    let tripped = scheduler.status("job").await.unwrap().status;
    assert!(
        matches!(&tripped, Status::Tripped { streak: 3, last_error } if last_error.contains("warehouse")),
        "{tripped:?}"
    );
    let err = scheduler.trigger("job").await.unwrap_err().to_string();
    assert!(
        err.contains("tripped") && err.contains("reset_flow"),
        "{err}"
    );

    job.failing.store(0, Ordering::SeqCst);
    scheduler.reset_flow("job").await.unwrap();
    sleep(Duration::from_secs(15)).await;
    let info = scheduler.status("job").await.unwrap();
    assert_eq!(
        (info.run_count, info.failure_streak, info.status.clone()),
        (4, 0, Status::Idle)
    );
    scheduler.stop_with_grace(Duration::ZERO).await.unwrap();
}

async fn overlapping(overlap: Overlap) -> Vec<u64> {
    let job = Job::new(Duration::from_secs(25));
    let policy = FlowPolicy::new().with_overlap(overlap);
    let scheduler = start(
        &job,
        Schedule::every_fixed_rate(Duration::from_secs(10)).unwrap(),
        policy,
    )
    .await;
    sleep(Duration::from_secs(65)).await;
    scheduler
        .stop_with_grace(Duration::from_secs(100))
        .await
        .unwrap();
    job.starts()
}

#[tokio::test(start_paused = true)]
async fn overlapping_ticks_are_skipped_queued_or_run_alongside() {
    // Runs take 25 s; ticks come every 10 s.
    assert_eq!(overlapping(Overlap::Skip).await, [10, 40]);
    assert_eq!(overlapping(Overlap::QueueOne).await, [10, 35, 60]);
    assert_eq!(overlapping(Overlap::Allow).await, [10, 20, 30, 40, 50, 60]);
}

async fn late(missed: MissedFire) -> Vec<u64> {
    let job = Job::new(Duration::ZERO);
    let policy = FlowPolicy::new().with_missed_fire(missed);
    let scheduler = start(
        &job,
        Schedule::every_fixed_rate(Duration::from_secs(10)).unwrap(),
        policy,
    )
    .await;
    // The clock jumps 35 s while nothing runs: ticks at 10, 20 and 30 are missed.
    advance(Duration::from_secs(35)).await;
    sleep(Duration::from_secs(10)).await;
    scheduler.stop_with_grace(Duration::ZERO).await.unwrap();
    job.starts()
}

#[tokio::test(start_paused = true)]
async fn a_late_wake_up_runs_missed_ticks_once_or_skips_them() {
    assert_eq!(late(MissedFire::RunOnce).await, [35, 40]);
    assert_eq!(late(MissedFire::Skip).await, [40]);
}

#[tokio::test(start_paused = true)]
async fn stop_waits_out_the_grace_period_then_cancels() {
    let job = Job::new(Duration::from_secs(30));
    let scheduler = start(&job, Schedule::manual(), FlowPolicy::new()).await;
    scheduler.trigger("job").await.unwrap();
    sleep(Duration::from_secs(1)).await;
    let stopped = Instant::now();
    scheduler
        .stop_with_grace(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        stopped.elapsed(),
        Duration::from_secs(29),
        "the run finished"
    );
    assert_eq!(scheduler.status("job").await.unwrap().last_error, None);

    let job = Job::new(Duration::from_secs(30));
    let scheduler = start(&job, Schedule::manual(), FlowPolicy::new()).await;
    scheduler.trigger("job").await.unwrap();
    sleep(Duration::from_secs(1)).await;
    let stopped = Instant::now();
    scheduler
        .stop_with_grace(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        stopped.elapsed(),
        Duration::from_secs(5),
        "cancelled at the end of the grace"
    );
    assert!(
        scheduler
            .status("job")
            .await
            .unwrap()
            .last_error
            .unwrap()
            .contains("cancelled")
    );
    // Stopped: commands are refused, waiting returns at once.
    assert!(scheduler.trigger("job").await.is_err());
    scheduler.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_run_is_not_a_failure() {
    let job = Job::new(Duration::from_secs(30));
    let policy = FlowPolicy::new().trip_after(1);
    let scheduler = start(&job, Schedule::manual(), policy).await;
    scheduler.trigger("job").await.unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(
        scheduler.status("job").await.unwrap().status,
        Status::Running
    );
    scheduler.cancel_flow("job").await.unwrap();
    sleep(Duration::from_secs(1)).await;
    let info = scheduler.status("job").await.unwrap();
    assert_eq!(
        (info.status.clone(), info.failure_streak),
        (Status::Idle, 0)
    );
    scheduler.stop_with_grace(Duration::ZERO).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn bad_input_is_refused_at_the_call() {
    let job = Job::new(Duration::ZERO);
    let mut twice = Scheduler::new();
    twice.manual("a", job.workflow(), S::Work).unwrap();
    let err = twice.manual("a", job.workflow(), S::Work).unwrap_err();
    assert!(
        err.to_string().contains("\"a\" is registered twice"),
        "{err}"
    );
    let err = Scheduler::new()
        .cron("bad", job.workflow(), S::Work, "every day")
        .unwrap_err();
    // An interval in minutes or hours past what u64 seconds hold never fires; it is
    // not a panic.
    Scheduler::new()
        .every_hours("never", job.workflow(), S::Work, u64::MAX)
        .unwrap();
    assert!(err.to_string().contains("invalid cron expression"), "{err}");
    let err = Scheduler::new()
        .every("zero", job.workflow(), S::Work, Duration::ZERO)
        .unwrap_err();
    assert!(err.to_string().contains("tight loop"), "{err}");
    // A workflow that cannot run is reported by start (as cano 0.13 does), before any
    // resource is set up.
    let broken = Workflow::<S>::bare().add_exit_state(S::Done);
    let mut scheduler = Scheduler::new();
    scheduler.manual("broken", broken, S::Work).unwrap();
    assert!(scheduler.contains("broken") && scheduler.len() == 1);
    let err = scheduler.start().await.unwrap_err().to_string();
    assert!(err.contains("flow \"broken\""), "{err}");
    let scheduler = start(&job, Schedule::manual(), FlowPolicy::new()).await;
    let err = scheduler.trigger("nope").await.unwrap_err().to_string();
    assert!(
        err.contains("no flow is called \"nope\" (flows: job)"),
        "{err}"
    );
    // A flood of triggers never fails on a full queue; overlapping ones are skipped.
    for _ in 0..10_000 {
        scheduler.trigger("job").await.unwrap();
    }
    sleep(Duration::from_secs(1)).await;
    assert!(scheduler.status("job").await.unwrap().run_count >= 1);
    scheduler.stop_with_grace(Duration::ZERO).await.unwrap();
}

/// Counts setups and teardowns.
#[derive(Default)]
struct Pool {
    setups: AtomicU32,
    teardowns: AtomicU32,
}

#[async_trait::async_trait]
impl Resource for Pool {
    async fn setup(&self) -> Result<(), CanoError> {
        self.setups.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn teardown(&self) -> Result<(), CanoError> {
        self.teardowns.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn resources_are_set_up_at_start_and_torn_down_at_stop_once() {
    let pool = Arc::new(Pool::default());
    let job = Job::new(Duration::ZERO);
    let resources = Resources::new().insert("pool", SharedPool(pool.clone()));
    let workflow = Workflow::new(resources)
        .register(S::Work, job.clone())
        .add_exit_state(S::Done);
    let mut scheduler = Scheduler::new();
    scheduler
        .every("a", workflow.clone(), S::Work, Duration::from_secs(1))
        .unwrap();
    scheduler.every_seconds("b", workflow, S::Work, 1).unwrap();
    let scheduler = scheduler.start().await.unwrap();
    sleep(Duration::from_millis(10_500)).await;
    assert_eq!(pool.setups.load(Ordering::SeqCst), 1);
    scheduler.stop_with_grace(Duration::ZERO).await.unwrap();
    assert_eq!(job.starts().len(), 20);
    assert_eq!(
        (
            pool.setups.load(Ordering::SeqCst),
            pool.teardowns.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
}

/// The pool as a resource the workflow owns, counted through the shared `Arc`.
struct SharedPool(Arc<Pool>);

#[async_trait::async_trait]
impl Resource for SharedPool {
    async fn setup(&self) -> Result<(), CanoError> {
        self.0.setup().await
    }
    async fn teardown(&self) -> Result<(), CanoError> {
        self.0.teardown().await
    }
}

/// Blocks its first run forever (the "crash"), then finishes.
#[derive(Clone)]
struct Once(Arc<AtomicU32>);

#[async_trait::async_trait]
impl Task<S> for Once {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            std::future::pending::<()>().await;
        }
        Ok(TaskResult::Single(S::Done))
    }
}

#[tokio::test(start_paused = true)]
async fn a_crashed_run_is_resumed_before_a_fresh_one_starts() {
    let store = cano_recovery::MemoryCheckpointStore::new();
    let calls = Arc::new(AtomicU32::new(0));
    let workflow = Workflow::bare()
        .register(S::Work, Once(calls.clone()))
        .add_exit_state(S::Done)
        .with_checkpoint_store(store.clone());
    // A run that dies inside its state: its log says it was interrupted.
    let crashed = RunId::new();
    let running = tokio::spawn({
        let workflow = workflow.clone();
        async move {
            workflow
                .orchestrate_with(S::Work, RunOptions::new().with_run_id(crashed))
                .await
        }
    });
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    running.abort();
    let _ = running.await;
    assert_eq!(workflow.unfinished_runs().await.unwrap().len(), 1);

    let mut scheduler = Scheduler::new();
    scheduler
        .manual("import", workflow.clone(), S::Work)
        .unwrap();
    let scheduler = scheduler.start().await.unwrap();
    scheduler.trigger("import").await.unwrap();
    sleep(Duration::from_secs(1)).await;
    assert!(
        workflow.unfinished_runs().await.unwrap().is_empty(),
        "resumed and finished"
    );
    assert_eq!(scheduler.status("import").await.unwrap().last_error, None);
    scheduler.stop_with_grace(Duration::ZERO).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_run_that_cannot_resume_is_set_aside_once_not_retried_every_tick() {
    let store = cano_recovery::MemoryCheckpointStore::new();
    let calls = Arc::new(AtomicU32::new(0));
    let old = Workflow::bare()
        .register(S::Work, Once(calls.clone()))
        .add_exit_state(S::Done)
        .with_checkpoint_store(store.clone())
        .with_workflow_id("import");
    // A run of version 1 dies inside its state.
    let crashed = RunId::new();
    let running = tokio::spawn({
        let old = old.clone();
        async move {
            old.orchestrate_with(S::Work, RunOptions::new().with_run_id(crashed))
                .await
        }
    });
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    running.abort();
    let _ = running.await;
    // Version 2 is deployed with the scheduler: the old run can never resume here.
    let job = Job::new(Duration::ZERO);
    let new = job
        .workflow()
        .with_checkpoint_store(store.clone())
        .with_workflow_id("import")
        .with_workflow_version(2);
    let mut scheduler = Scheduler::<S>::new();
    scheduler
        .flow(
            "import",
            new,
            S::Work,
            Schedule::every(Duration::from_secs(60)).unwrap(),
            FlowPolicy::new().trip_after(2),
        )
        .unwrap();
    let scheduler = scheduler.start().await.unwrap();
    sleep(Duration::from_secs(60 * 5 + 1)).await;
    let info = scheduler.status("import").await.unwrap();
    // Every tick ran a fresh run; the old run was reported once and left alone, and
    // the flow never tripped over it.
    assert_eq!(job.starts().len(), 5, "{info:?}");
    assert_eq!(
        (info.failure_streak, info.status.clone()),
        (0, Status::Idle),
        "{info:?}"
    );
    assert_eq!(info.set_aside.len(), 1, "{info:?}");
    assert_eq!(info.set_aside[0].run, crashed);
    assert!(info.set_aside[0].reason.contains("version 1"), "{info:?}");
    scheduler.stop_with_grace(Duration::ZERO).await.unwrap();
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Email {
    Send,
    Sent,
}

struct SendEmail;

#[async_trait::async_trait]
impl Task<Email> for SendEmail {
    async fn run_bare(&self) -> Result<TaskResult<Email>, CanoError> {
        Ok(TaskResult::Single(Email::Sent))
    }
}

#[tokio::test(start_paused = true)]
async fn flows_of_different_state_types_share_one_scheduler() {
    let job = Job::new(Duration::ZERO);
    let emails = Workflow::bare()
        .register(Email::Send, SendEmail)
        .add_exit_state(Email::Sent);
    // Five seconds past a minute: the cron flow fires 5, 15 and 25 s in.
    let mut scheduler =
        Scheduler::new().with_clock_origin(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 5).unwrap());
    scheduler
        .every("job", job.workflow(), S::Work, Duration::from_secs(5))
        .unwrap();
    scheduler
        .flow(
            "digest",
            emails,
            Email::Send,
            Schedule::cron("*/10 * * * * *").unwrap(),
            FlowPolicy::backing_off(),
        )
        .unwrap();
    let scheduler = scheduler.start().await.unwrap();
    sleep(Duration::from_secs(31)).await;
    let list = scheduler.list().await;
    assert_eq!(
        list.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
        ["job", "digest"]
    );
    assert_eq!(list[0].run_count, 6);
    assert_eq!(list[1].run_count, 3);
    assert!(list[1].next_run.is_some() && list[1].last_run.is_some());
    scheduler.stop_with_grace(Duration::ZERO).await.unwrap();
}
