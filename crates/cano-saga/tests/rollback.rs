//! Rolling back runs without a checkpoint store: the order of compensations, what
//! starts a rollback, and every way a compensation can go wrong.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cano_core::{CancellationToken, CanoError, RunOptions, Task, TaskConfig, TaskResult, Workflow};
use cano_saga::{CompensatableTask, SagaExt};
use common::{Events, LONG, Log, Order, Step, Undo, order, ship, steps};

fn payment(log: &Log, charge_undo: Undo, ship_fails: bool) -> Workflow<Order> {
    let (reserve, charge) = steps(log);
    order(reserve, charge.undo(charge_undo), ship(log, ship_fails))
}

#[tokio::test]
async fn ship_fails_then_charge_and_reserve_are_undone_in_that_order() {
    let log = Log::default();
    let err = payment(&log, Undo::Works, true)
        .orchestrate(Order::Reserve)
        .await
        .unwrap_err();
    // A clean rollback returns the original error.
    assert!(matches!(err, CanoError::TaskExecution(_)), "{err:?}");
    assert!(err.to_string().contains("carrier refused"), "{err}");
    assert_eq!(
        log.lines(),
        [
            "do Reserve",
            "do Charge",
            "ship failed",
            "undo Charge Charge-output",
            "undo Reserve Reserve-output"
        ]
    );
}

#[tokio::test]
async fn a_run_that_succeeds_compensates_nothing() {
    let log = Log::default();
    let end = payment(&log, Undo::Works, false)
        .orchestrate(Order::Reserve)
        .await
        .unwrap();
    assert_eq!(end, Order::Done);
    assert_eq!(log.lines(), ["do Reserve", "do Charge", "do Ship"]);
}

#[tokio::test]
async fn a_failure_before_any_step_completed_has_nothing_to_undo() {
    let log = Log::default();
    // A compensation that ran would show in the log (a panic would be caught and the
    // original message kept, so it could not fail this test).
    struct Broken(Log);
    #[async_trait::async_trait]
    impl CompensatableTask<Order> for Broken {
        type Output = ();
        async fn run(
            &self,
            _: &cano_core::Resources,
        ) -> Result<(TaskResult<Order>, ()), CanoError> {
            Err(CanoError::task_execution("stock service down"))
        }
        async fn compensate(&self, _: &cano_core::Resources, (): ()) -> Result<(), CanoError> {
            self.0.push("undo Broken");
            Ok(())
        }
        fn config(&self) -> TaskConfig {
            TaskConfig::minimal()
        }
    }
    let err = Workflow::bare()
        .register_with_compensation(Order::Reserve, Broken(log.clone()))
        .add_exit_state(Order::Done)
        .orchestrate(Order::Reserve)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("stock service down"), "{err}");
    assert!(log.lines().is_empty());
}

#[tokio::test(start_paused = true)]
async fn every_kind_of_failure_starts_a_rollback() {
    // A task that outlives its attempt timeout.
    struct Slow;
    #[async_trait::async_trait]
    impl Task<Order> for Slow {
        fn config(&self) -> TaskConfig {
            TaskConfig::minimal().with_attempt_timeout(Duration::from_secs(1))
        }
        async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
            tokio::time::sleep(LONG).await;
            Ok(TaskResult::Single(Order::Done))
        }
    }
    let base = |log: &Log| {
        Workflow::bare()
            .register_with_compensation(Order::Reserve, Step::new("Reserve", Order::Charge, log))
            .register_with_compensation(Order::Charge, Step::new("Charge", Order::Ship, log))
            .add_exit_state(Order::Done)
    };
    let undone = ["undo Charge Charge-output", "undo Reserve Reserve-output"];

    // Attempt timeout.
    let log = Log::default();
    let err = base(&log)
        .register(Order::Ship, Slow)
        .orchestrate(Order::Reserve)
        .await
        .unwrap_err();
    assert!(matches!(err, CanoError::Timeout(_)), "{err:?}");
    assert_eq!(log.lines()[2..], undone);

    // Workflow timeout.
    let log = Log::default();
    struct Forever;
    #[async_trait::async_trait]
    impl Task<Order> for Forever {
        async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
            std::future::pending().await
        }
    }
    let err = base(&log)
        .register(Order::Ship, Forever)
        .with_timeout(Duration::from_secs(5))
        .orchestrate(Order::Reserve)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(log.lines()[2..], undone);

    // Cancellation while the last state waits.
    let log = Log::default();
    let token = CancellationToken::new();
    let workflow = base(&log).register(Order::Ship, Forever);
    let run = workflow.orchestrate_with(
        Order::Reserve,
        RunOptions::new().with_cancellation(token.clone()),
    );
    let cancel = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        token.cancel();
    };
    let (result, ()) = tokio::join!(run, cancel);
    assert!(matches!(result, Err(CanoError::Cancelled(_))), "{result:?}");
    assert_eq!(log.lines()[2..], undone);

    // A state with no handler: Charge moves to Ship, which has none.
    let log = Log::default();
    let err = base(&log).orchestrate(Order::Reserve).await.unwrap_err();
    assert!(err.to_string().contains("no handler"), "{err}");
    assert_eq!(log.lines()[2..], undone);
}

#[tokio::test]
async fn a_compensation_that_fails_every_retry_is_reported_and_the_rollback_goes_on() {
    let log = Log::default();
    let charge = Step::new("Charge", Order::Ship, &log)
        .undo(Undo::FailsAlways)
        .undo_config(TaskConfig::minimal().with_fixed_retry(2, Duration::ZERO));
    let attempts = charge.undo_attempts.clone();
    let err = order(
        Step::new("Reserve", Order::Charge, &log),
        charge,
        ship(&log, true),
    )
    .orchestrate(Order::Reserve)
    .await
    .unwrap_err();
    // Its own retry policy: three attempts.
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 3);
    // The rollback went on: Reserve was undone.
    assert_eq!(log.lines().last().unwrap(), "undo Reserve Reserve-output");
    let CanoError::CompensationFailed { errors } = &err else {
        panic!("expected CompensationFailed, got {err:?}");
    };
    assert!(errors[0].to_string().contains("carrier refused"));
    assert_eq!(errors.compensations().len(), 1);
    let charge_error = &errors.compensations()[0];
    assert!(
        matches!(charge_error, CanoError::RetryExhausted(_)),
        "{charge_error:?}"
    );
    assert_eq!(charge_error.state(), Some("Charge"));
    let text = err.to_string();
    assert!(
        text.contains("Charge cannot be undone") && text.contains("carrier refused"),
        "{text}"
    );
}

#[tokio::test]
async fn a_compensation_retried_until_it_works_is_a_clean_rollback() {
    let log = Log::default();
    let charge = Step::new("Charge", Order::Ship, &log)
        .undo(Undo::FailsFirst(2))
        .undo_config(TaskConfig::minimal().with_fixed_retry(3, Duration::ZERO));
    let err = order(
        Step::new("Reserve", Order::Charge, &log),
        charge,
        ship(&log, true),
    )
    .orchestrate(Order::Reserve)
    .await
    .unwrap_err();
    assert!(matches!(err, CanoError::TaskExecution(_)), "{err:?}");
    assert_eq!(log.count("undo Charge Charge-output"), 1);
    assert_eq!(log.count("undo Reserve Reserve-output"), 1);
}

#[tokio::test]
async fn a_compensation_that_panics_is_a_failed_compensation_not_a_crash() {
    let log = Log::default();
    let err = payment(&log, Undo::Panics, true)
        .orchestrate(Order::Reserve)
        .await
        .unwrap_err();
    let CanoError::CompensationFailed { errors } = &err else {
        panic!("expected CompensationFailed, got {err:?}");
    };
    assert!(
        errors.compensations()[0].to_string().contains("panic"),
        "{err}"
    );
    assert_eq!(log.count("undo Reserve Reserve-output"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_compensation_is_cut_by_its_attempt_timeout_and_the_rollback_goes_on() {
    let log = Log::default();
    let charge = Step::new("Charge", Order::Ship, &log)
        .undo(Undo::Hangs)
        .undo_config(
            TaskConfig::minimal()
                .with_attempt_timeout(Duration::from_secs(2))
                .with_fixed_retry(1, Duration::from_secs(1)),
        );
    let err = order(
        Step::new("Reserve", Order::Charge, &log),
        charge,
        ship(&log, true),
    )
    .orchestrate(Order::Reserve)
    .await
    .unwrap_err();
    let CanoError::CompensationFailed { errors } = &err else {
        panic!("expected CompensationFailed, got {err:?}");
    };
    assert_eq!(errors.compensations().len(), 1);
    assert!(
        errors.compensations()[0].to_string().contains("within 2s"),
        "{err}"
    );
    assert_eq!(log.count("undo Reserve Reserve-output"), 1);
}

#[tokio::test(start_paused = true)]
async fn the_rollback_has_a_time_bound() {
    let log = Log::default();
    // No attempt timeout: only the rollback's bound stops it.
    let err = payment(&log, Undo::Hangs, true)
        .with_compensation_timeout(Duration::from_secs(10))
        .orchestrate(Order::Reserve)
        .await
        .unwrap_err();
    let CanoError::CompensationFailed { errors } = &err else {
        panic!("expected CompensationFailed, got {err:?}");
    };
    assert!(
        errors
            .compensations()
            .iter()
            .all(|e| matches!(e, CanoError::Timeout(_)))
    );
    let errors: Vec<String> = errors
        .compensations()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("Charge") && errors[0].contains("time bound of 10s ran out"));
    // Reserve was never started: the bound had run out.
    assert!(errors[1].contains("Reserve") && errors[1].contains("not attempted"));
    assert_eq!(log.count("undo Reserve Reserve-output"), 0);
}

#[tokio::test]
async fn the_same_task_type_at_two_states_is_compensated_for_each() {
    let log = Log::default();
    // One type, `Step`, registered at Reserve and at Charge: each step is undone with
    // its own output.
    let err = payment(&log, Undo::Works, true)
        .orchestrate(Order::Reserve)
        .await
        .unwrap_err();
    assert!(matches!(err, CanoError::TaskExecution(_)));
    assert_eq!(log.count("undo Charge Charge-output"), 1);
    assert_eq!(log.count("undo Reserve Reserve-output"), 1);

    // A state visited three times (a loop) is undone three times, newest visit first.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    enum Loop {
        Take,
        Check,
        Done,
    }
    struct Take(Log, std::sync::atomic::AtomicU8);
    #[async_trait::async_trait]
    impl CompensatableTask<Loop> for Take {
        type Output = u8;
        async fn run(&self, _: &cano_core::Resources) -> Result<(TaskResult<Loop>, u8), CanoError> {
            let visit = self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok((TaskResult::Single(Loop::Check), visit))
        }
        async fn compensate(&self, _: &cano_core::Resources, visit: u8) -> Result<(), CanoError> {
            self.0.push(format!("untake {visit}"));
            Ok(())
        }
    }
    struct Check(std::sync::atomic::AtomicU8);
    #[async_trait::async_trait]
    impl Task<Loop> for Check {
        fn config(&self) -> TaskConfig {
            TaskConfig::minimal()
        }
        async fn run_bare(&self) -> Result<TaskResult<Loop>, CanoError> {
            if self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                Ok(TaskResult::Single(Loop::Take))
            } else {
                Err(CanoError::task_execution("enough"))
            }
        }
    }
    let log = Log::default();
    Workflow::bare()
        .register_with_compensation(Loop::Take, Take(log.clone(), Default::default()))
        .register(Loop::Check, Check(Default::default()))
        .add_exit_state(Loop::Done)
        .orchestrate(Loop::Take)
        .await
        .unwrap_err();
    assert_eq!(log.lines(), ["untake 2", "untake 1", "untake 0"]);
}

#[tokio::test]
async fn observers_hear_each_compensation_with_the_run_id() {
    let log = Log::default();
    let events = Arc::new(Events::default());
    let run = cano_core::RunId::new();
    let _ = payment(&log, Undo::FailsAlways, true)
        .with_observer(events.clone())
        .orchestrate_with(Order::Reserve, RunOptions::new().with_run_id(run))
        .await
        .unwrap_err();
    assert_eq!(
        events.lines(),
        [
            "start Charge Charge",
            "failed Charge Charge",
            "start Reserve Reserve",
            "undone Reserve Reserve"
        ]
    );
    assert!(events.0.lock().unwrap().iter().all(|(id, _)| *id == run));
}

#[tokio::test]
async fn an_output_that_cannot_be_serialized_is_compensated_at_once_and_fails_the_run() {
    /// Serializing it always fails.
    struct Opaque(u32);
    impl serde::Serialize for Opaque {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("opaque handle cannot be written"))
        }
    }
    impl<'de> serde::Deserialize<'de> for Opaque {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            u32::deserialize(d).map(Opaque)
        }
    }
    struct Book(Log, bool);
    #[async_trait::async_trait]
    impl CompensatableTask<Order> for Book {
        type Output = Opaque;
        async fn run(
            &self,
            _: &cano_core::Resources,
        ) -> Result<(TaskResult<Order>, Opaque), CanoError> {
            self.0.push("do Book");
            Ok((TaskResult::Single(Order::Ship), Opaque(7)))
        }
        async fn compensate(&self, _: &cano_core::Resources, o: Opaque) -> Result<(), CanoError> {
            if self.1 {
                return Err(CanoError::task_execution("booking API down"));
            }
            self.0.push(format!("undo Book {}", o.0));
            Ok(())
        }
        fn config(&self) -> TaskConfig {
            TaskConfig::minimal()
        }
    }
    let workflow = |log: &Log, undo_fails: bool| {
        Workflow::bare()
            .register_with_compensation(Order::Reserve, Step::new("Reserve", Order::Charge, log))
            .register_with_compensation(Order::Charge, Book(log.clone(), undo_fails))
            .register(Order::Ship, ship(log, false))
            .add_exit_state(Order::Done)
    };
    let log = Log::default();
    let err = workflow(&log, false)
        .orchestrate(Order::Reserve)
        .await
        .unwrap_err();
    assert!(matches!(err, CanoError::TaskExecution(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("could not be serialized") && text.contains("opaque handle"),
        "{text}"
    );
    assert_eq!(err.state(), Some("Charge"));
    // Undone at once, then the step before it; Ship never ran.
    assert_eq!(
        log.lines(),
        [
            "do Reserve",
            "do Book",
            "undo Book 7",
            "undo Reserve Reserve-output"
        ]
    );

    // And if undoing it at once fails, that is in the error too.
    let log = Log::default();
    let err = workflow(&log, true)
        .orchestrate(Order::Reserve)
        .await
        .unwrap_err();
    let CanoError::CompensationFailed { errors } = &err else {
        panic!("expected CompensationFailed, got {err:?}");
    };
    assert!(errors[0].to_string().contains("could not be serialized"));
    assert!(
        errors.compensations()[0]
            .to_string()
            .contains("booking API down")
    );
    assert_eq!(log.count("undo Reserve Reserve-output"), 1);
}
