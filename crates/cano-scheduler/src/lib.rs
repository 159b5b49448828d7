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
//! let scheduler = Scheduler::new()
//!     .every("report", report.clone(), Report::Build, Duration::from_secs(60))?
//!     .manual("on-demand", report, Report::Build)?
//!     .start()
//!     .await?;
//! scheduler.trigger("on-demand")?;
//! tokio::time::sleep(Duration::from_secs(150)).await; // two ticks of "report"
//! assert_eq!(scheduler.status("report")?.runs, 2);
//! assert_eq!(scheduler.status("on-demand")?.runs, 1);
//! assert_eq!(scheduler.status("report")?.status, Status::Idle);
//! scheduler.stop(Duration::from_secs(5)).await?;
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
pub use scheduler::{RunningScheduler, Scheduler};
