//! The cluster at a glance (PostgreSQL): cron schedules with their last and next
//! tick and leader, workers with the runs they hold and their leases.

use serde::Serialize;

use crate::error::InspectError;
#[cfg(feature = "postgres")]
use crate::inspector::Backend;
use crate::inspector::Inspector;

/// One cron schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleRow {
    /// Its scheduler group.
    pub group: String,
    /// Its id in the group.
    pub schedule: String,
    /// The cron expression and its zone.
    pub cron: String,
    /// The workflow each tick enqueues.
    pub workflow: String,
    /// The group's leader, and whether its lease is live.
    pub leader: Option<String>,
    /// Whether the leader's lease is live.
    pub leader_live: bool,
    /// The last tick fired (ms since the Unix epoch).
    pub last_fire_ms: Option<u64>,
    /// The next tick (ms since the Unix epoch).
    pub next_fire_ms: Option<u64>,
}

/// One worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerRow {
    /// Its name.
    pub worker: String,
    /// Runs it holds under a live lease.
    pub holding: u64,
    /// The latest end of its leases (its heartbeat renews them).
    pub lease_until_ms: Option<u64>,
    /// Its latest claim.
    pub last_claim_ms: u64,
    /// Its claims in the last hour.
    pub claims_last_hour: u64,
}

/// The cluster's schedules and workers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// Cron schedules, by group and id.
    pub schedules: Vec<ScheduleRow>,
    /// Workers seen in the last day, latest first.
    pub workers: Vec<WorkerRow>,
}

impl Inspector {
    /// The cluster's schedules and workers; `None` for a store that has no cluster
    /// (sled, in-memory).
    pub async fn overview(&self) -> Result<Option<ClusterView>, InspectError> {
        #[cfg(feature = "postgres")]
        if let Backend::Postgres { store, .. } = &self.backend {
            let overview = store.overview().await?;
            return Ok(Some(ClusterView {
                schedules: overview
                    .schedules
                    .into_iter()
                    .map(|s| ScheduleRow {
                        group: s.group,
                        schedule: s.schedule,
                        cron: format!("{} ({})", s.expr, s.zone),
                        workflow: s.workflow,
                        leader: s.leader,
                        leader_live: s.leader_live,
                        last_fire_ms: s.last_fire_ms,
                        next_fire_ms: s.next_fire_ms,
                    })
                    .collect(),
                workers: overview
                    .workers
                    .into_iter()
                    .map(|w| WorkerRow {
                        worker: w.worker,
                        holding: w.holding,
                        lease_until_ms: w.lease_until_ms,
                        last_claim_ms: w.last_claim_ms,
                        claims_last_hour: w.claims_last_hour,
                    })
                    .collect(),
            }));
        }
        Ok(None)
    }
}
