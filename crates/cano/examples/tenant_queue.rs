//! Per-tenant flow control on PostgreSQL: one named queue of export jobs shared by
//! three tenants, where one tenant's burst must not starve the others.
//!
//! ```sh
//! export CANO_PG_URL=$(.ci/postgres start)       # or any PostgreSQL you run
//! cargo run -p cano --example tenant_queue --features postgres
//! ```
//!
//! The queue runs at most 4 exports at once across the cluster, 2 per tenant, and
//! starts at most 20 per second. Two workers (each with its own connection pool, as two
//! machines would have) drain it. `acme` submits 16 exports at once; `globex` and
//! `initech` 3 each a moment later, one of them urgent (a higher priority) and one
//! scheduled for later (a delayed start). The program prints when each export ran and
//! where, then checks the limits from the database's record of claims.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use cano::RunId;
use cano::postgres::{
    ClaimRecord, EnqueueOptions, PgOptions, PostgresCheckpointStore, QueueSpec, RunQueue, Worker,
};
use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Export {
    Query,
    Upload,
    Done,
}

/// One step of an export; the sleep stands for the database query or the upload.
struct Step {
    next: Export,
    work: Duration,
}

#[task]
impl Task<Export> for Step {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Export>, CanoError> {
        tokio::time::sleep(self.work).await;
        Ok(TaskResult::Single(self.next.clone()))
    }
}

fn export() -> Workflow<Export> {
    let step = |next, ms| Step {
        next,
        work: Duration::from_millis(ms),
    };
    Workflow::bare()
        .register(Export::Query, step(Export::Upload, 60))
        .register(Export::Upload, step(Export::Done, 40))
        .add_exit_state(Export::Done)
}

const PER_TENANT: usize = 2;
const CLUSTER: usize = 4;

/// The most claims that held at one instant.
fn most_at_once<'a>(claims: impl Iterator<Item = &'a ClaimRecord>) -> usize {
    let mut edges = Vec::new();
    for claim in claims {
        let end = claim.ended_at.unwrap_or(SystemTime::now());
        edges.push((claim.claimed_at, 1i32));
        edges.push((end, -1));
    }
    // At one instant, ends come before starts.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let Ok(url) = std::env::var("CANO_PG_URL") else {
        eprintln!(
            "Set CANO_PG_URL to a PostgreSQL server, for example a throwaway one:\n    export CANO_PG_URL=$(.ci/postgres start)"
        );
        std::process::exit(2);
    };
    let options = || PgOptions::new(&url).with_schema("cano_tenant_queue");
    let store = PostgresCheckpointStore::connect(options()).await?;
    let queue = RunQueue::new(&store);
    queue
        .declare(
            &QueueSpec::new("exports")
                .with_concurrency(CLUSTER as u32)
                .with_partition_concurrency(PER_TENANT as u32)
                .with_rate_limit(20, Duration::from_secs(1)),
        )
        .await?;

    let mut workers = Vec::new();
    for name in ["machine-a", "machine-b"] {
        let store = PostgresCheckpointStore::connect(options()).await?;
        workers.push(
            Worker::new(&store)
                .named(name)
                .register("export", export())
                .with_concurrency(8)
                .start()
                .await?,
        );
    }

    let mut runs = Vec::new();
    let mut submit = async |tenant: &str, options: EnqueueOptions| -> Result<(), CanoError> {
        let options = options.on_queue("exports").with_partition(tenant);
        let run = queue.enqueue("export", &Export::Query, options).await?.run;
        runs.push((tenant.to_owned(), run));
        Ok(())
    };
    for _ in 0..16 {
        submit("acme", EnqueueOptions::new()).await?;
    }
    for tenant in ["globex", "initech"] {
        submit(tenant, EnqueueOptions::new()).await?;
        submit(tenant, EnqueueOptions::new()).await?;
    }
    submit("globex", EnqueueOptions::new().with_priority(10)).await?;
    submit(
        "initech",
        EnqueueOptions::new().with_delay(Duration::from_millis(800)),
    )
    .await?;
    println!("submitted {} exports for 3 tenants", runs.len());

    let ids: Vec<RunId> = runs.iter().map(|(_, run)| *run).collect();
    let records = queue.wait_all(&ids, Duration::from_secs(120)).await?;
    for worker in workers {
        worker.stop(Duration::from_secs(5)).await;
    }

    let tenant_of: BTreeMap<RunId, &str> = runs.iter().map(|(t, r)| (*r, t.as_str())).collect();
    let claims = queue.claims(&ids).await?;
    let start = claims
        .first()
        .map(|c| c.claimed_at)
        .unwrap_or(SystemTime::now());
    let ms = |at: SystemTime| at.duration_since(start).unwrap_or_default().as_millis();
    println!("\nwhen each export ran (ms from the first start), in the order they started:");
    for claim in &claims {
        let end = claim.ended_at.map(ms).unwrap_or_default();
        println!(
            "  {:>5} .. {:>5}  {:<8} on {}",
            ms(claim.claimed_at),
            end,
            tenant_of[&claim.run],
            claim.worker
        );
    }

    let finished = records
        .iter()
        .filter(|r| r.status == cano::postgres::QueueStatus::Finished)
        .count();
    println!("\n{finished} of {} exports finished", records.len());
    let overall = most_at_once(claims.iter());
    println!("most at once in the cluster: {overall} (limit {CLUSTER})");
    let mut ok = finished == records.len() && overall <= CLUSTER;
    for tenant in ["acme", "globex", "initech"] {
        let mine = claims.iter().filter(|c| tenant_of[&c.run] == tenant);
        let most = most_at_once(mine);
        // The small tenants' first export starts among the first few, not after acme's 16.
        let first = claims
            .iter()
            .position(|c| tenant_of[&c.run] == tenant)
            .unwrap_or(usize::MAX);
        println!(
            "  {tenant:<8} most at once {most} (limit {PER_TENANT}), first start #{}",
            first + 1
        );
        ok &= most <= PER_TENANT && first < 6;
    }
    if !ok {
        eprintln!("a limit did not hold");
        std::process::exit(1);
    }
    Ok(())
}
