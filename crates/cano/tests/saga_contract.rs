//! Sagas through the facade, as a user writes them with `use cano::prelude::*`: both
//! macro forms, the error to match on, and resuming with the default sled store.

use std::sync::{Arc, Mutex};

use cano::prelude::*;
use cano::{RunId, RunOptions};

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Trip {
    Flight,
    Hotel,
    Car,
    Booked,
}

type Bookings = Arc<Mutex<Vec<String>>>;

/// The trait form of the macro.
struct Flight(Bookings);
#[saga::task]
impl CompensatableTask<Trip> for Flight {
    type Output = String;
    async fn run(&self, _: &Resources) -> Result<(TaskResult<Trip>, String), CanoError> {
        self.0.lock().unwrap().push("flight LH400".into());
        Ok((TaskResult::Single(Trip::Hotel), "LH400".into()))
    }
    async fn compensate(&self, _: &Resources, code: String) -> Result<(), CanoError> {
        self.0
            .lock()
            .unwrap()
            .retain(|b| *b != format!("flight {code}"));
        Ok(())
    }
}

/// The inherent form: trait items move into the impl, helpers stay inherent.
struct Hotel {
    bookings: Bookings,
    refuse_cancel: bool,
}
#[saga::task(state = Trip)]
impl Hotel {
    type Output = u32;
    async fn run(&self, _: &Resources) -> Result<(TaskResult<Trip>, u32), CanoError> {
        self.bookings.lock().unwrap().push(Self::room(12));
        Ok((TaskResult::Single(Trip::Car), 12))
    }
    async fn compensate(&self, _: &Resources, room: u32) -> Result<(), CanoError> {
        if self.refuse_cancel {
            return Err(CanoError::task_execution("the hotel's line is busy"));
        }
        self.bookings
            .lock()
            .unwrap()
            .retain(|b| *b != Self::room(room));
        Ok(())
    }
    fn compensation_config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    fn room(n: u32) -> String {
        format!("room {n}")
    }
}

struct Car;
#[task]
impl Task<Trip> for Car {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Trip>, CanoError> {
        Err(CanoError::task_execution("no cars left"))
    }
}

fn trip(bookings: &Bookings, refuse_cancel: bool) -> Workflow<Trip> {
    Workflow::bare()
        .register_with_compensation(Trip::Flight, Flight(bookings.clone()))
        .register_with_compensation(
            Trip::Hotel,
            Hotel {
                bookings: bookings.clone(),
                refuse_cancel,
            },
        )
        .register(Trip::Car, Car)
        .add_exit_state(Trip::Booked)
}

#[tokio::test]
async fn a_failed_trip_cancels_what_it_booked() {
    let bookings = Bookings::default();
    let err = trip(&bookings, false)
        .orchestrate(Trip::Flight)
        .await
        .unwrap_err();
    assert!(matches!(err, CanoError::TaskExecution(_)));
    assert!(bookings.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_cancellation_that_fails_is_matched_on_and_finished_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledCheckpointStore::open(dir.path()).unwrap();
    let bookings = Bookings::default();
    let run = RunId::new();
    let workflow = trip(&bookings, true).with_checkpoint_store(store.clone());
    let err = workflow
        .orchestrate_with(Trip::Flight, RunOptions::new().with_run_id(run))
        .await
        .unwrap_err();
    match &err {
        CanoError::CompensationFailed { errors } => {
            assert!(errors[0].to_string().contains("no cars left"));
            assert_eq!(errors.compensations().len(), 1);
            assert_eq!(errors.compensations()[0].state(), Some("Hotel"));
        }
        other => panic!("expected CompensationFailed, got {other:?}"),
    }
    // The flight was cancelled; the room is still booked.
    assert_eq!(*bookings.lock().unwrap(), ["room 12"]);

    // Later, with the hotel reachable: finish the rollback.
    let workflow = trip(&bookings, false).with_checkpoint_store(store);
    assert_eq!(workflow.unfinished_runs().await.unwrap()[0].run, run);
    workflow.resume_from(run).await.unwrap_err();
    assert!(bookings.lock().unwrap().is_empty());
    assert!(workflow.unfinished_runs().await.unwrap().is_empty());
}
