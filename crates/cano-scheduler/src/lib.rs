//! # cano-scheduler
//!
//! Runs [cano](https://docs.rs/cano) workflows on a schedule (facade feature
//! `scheduler`): cron expressions through `croner` (optional seconds field, named time
//! zones, daylight-saving changes handled), fixed-delay and fixed-rate intervals, and
//! manual triggers. A failing flow backs off ([`BackoffPolicy`]) and trips after too
//! many failures in a row; a tick that finds the previous run still going is skipped,
//! queued or run alongside ([`Overlap`]); a late wake-up runs the missed ticks once or
//! skips them ([`MissedFire`]). [`RunningScheduler::stop`] lets runs finish within a
//! grace period and cancels the rest.
//!
//! The API is cano 0.13's: a [`Scheduler`] for one state type, filled with
//! `every`/`every_seconds`/`cron`/`manual`/`set_backoff` on `&mut self`, consumed by
//! `start()` into a [`RunningScheduler`] whose controls are `async`.
//! [`Scheduler::flow`] takes a full [`Schedule`] (time zones, fixed rate) and
//! [`FlowPolicy`] (overlap, missed fires, trips) beside them.
//!
//! ```
//! use std::time::Duration;
//! use cano_core::{CanoError, Task, TaskResult, Workflow};
//! use cano_scheduler::{Scheduler, Status};
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! enum Report { Build, Sent }
//! struct Build;
//! #[async_trait::async_trait]
//! impl Task<Report> for Build {
//!     async fn run_bare(&self) -> Result<TaskResult<Report>, CanoError> {
//!         Ok(TaskResult::Single(Report::Sent))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), CanoError> {
//! let report = Workflow::bare().register(Report::Build, Build).add_exit_state(Report::Sent);
//! let mut scheduler = Scheduler::new();
//! scheduler.every("report", report.clone(), Report::Build, Duration::from_secs(60))?;
//! scheduler.manual("on-demand", report, Report::Build)?;
//! let running = scheduler.start().await?;
//! running.trigger("on-demand").await?;
//! tokio::time::sleep(Duration::from_secs(150)).await; // two ticks of "report"
//! let report = running.status("report").await.expect("registered");
//! assert_eq!(report.run_count, 2);
//! assert_eq!(report.status, Status::Idle);
//! assert_eq!(running.status("on-demand").await.map(|f| f.run_count), Some(1));
//! running.stop().await?;
//! # Ok(())
//! # }
//! ```

mod clock;
mod flow;
mod policy;
mod schedule;
mod scheduler;

pub use flow::{FlowInfo, SetAside, Status};
pub use policy::{BackoffPolicy, FlowPolicy, MissedFire, Overlap};
pub use schedule::Schedule;
pub use scheduler::{DEFAULT_STOP_GRACE, RunningScheduler, Scheduler};
