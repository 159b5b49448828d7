//! Property: resuming from any prefix of a run's checkpoint log reaches the same end
//! state, the same visited sequence and the same durable data as the uninterrupted run.

mod common;

use std::sync::Arc;

use cano_core::checkpoint::{DurableStore, replay};
use cano_core::{
    CanoError, CheckpointStore, Retention, RowKind, RunId, RunOptions, Task, TaskResult, Workflow,
};
use cano_recovery::MemoryCheckpointStore;
use proptest::prelude::*;

const EXIT: u8 = u8::MAX;

/// State `me` moves by a row of the table picked by how many steps the run has taken
/// (read from its durable data, so a resumed run chooses as the original did).
struct Walk {
    me: u8,
    table: Arc<Vec<Vec<u8>>>,
    max_steps: u32,
}

#[async_trait::async_trait]
impl Task<u8> for Walk {
    async fn run_bare(&self) -> Result<TaskResult<u8>, CanoError> {
        let durable = DurableStore::current()?;
        let steps = durable.update("steps", |s: Option<u32>| s.unwrap_or(0) + 1)?;
        durable.update("path", |p: Option<Vec<u8>>| {
            let mut p = p.unwrap_or_default();
            p.push(self.me);
            p
        })?;
        let choices = &self.table[usize::from(self.me)];
        let next = if steps >= self.max_steps {
            EXIT
        } else {
            choices[steps as usize % choices.len()]
        };
        Ok(TaskResult::Single(next))
    }
}

fn build(table: &Arc<Vec<Vec<u8>>>, max_steps: u32, compaction: u32) -> Workflow<u8> {
    (0..table.len() as u8)
        .fold(Workflow::bare(), |w, me| {
            w.register(
                me,
                Walk {
                    me,
                    table: table.clone(),
                    max_steps,
                },
            )
        })
        .add_exit_state(EXIT)
        .with_retention(Retention::KeepFinished)
        .with_compaction(compaction)
        .with_workflow_id("walk")
}

fn tables() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (2usize..6).prop_flat_map(|n| {
        prop::collection::vec(
            prop::collection::vec(prop_oneof![4 => 0..n as u8, 1 => Just(EXIT)], 1..4),
            n,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn resuming_from_any_prefix_matches_the_uninterrupted_run(
        table in tables(),
        max_steps in 1u32..25,
        compaction in 1u32..10,
    ) {
        let table = Arc::new(table);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            // Keeps every row (truncation ignored), so each prefix of the full log,
            // snapshots included, can be replayed.
            let original = Arc::new(common::FaultyStore { keep_truncated: true, ..Default::default() });
            let run = RunId::new();
            let workflow = build(&table, max_steps, compaction);
            let end = workflow
                .clone()
                .with_shared_checkpoint_store(original.clone())
                .orchestrate_with(0, RunOptions::new().with_run_id(run))
                .await
                .unwrap();
            prop_assert_eq!(end, EXIT);
            let rows = original.load(run).await.unwrap();
            let whole = replay(run, &rows, "walk", 1).unwrap();
            let path: Vec<u8> = whole.durable.get("path").unwrap();
            prop_assert!(!path.is_empty());

            // Every prefix that stops before the Finish row: the run "crashed" there.
            for cut in 1..rows.len() {
                prop_assert_ne!(rows[cut - 1].kind, RowKind::Finish);
                // The resumed run compacts its log as it goes (a real store).
                let store = MemoryCheckpointStore::new();
                for row in &rows[..cut] {
                    store.append(row.clone()).await.unwrap();
                }
                let resumed = workflow
                    .clone()
                    .with_checkpoint_store(store.clone())
                    .resume_from(run)
                    .await
                    .unwrap();
                prop_assert_eq!(resumed, EXIT);
                let after = store.load(run).await.unwrap();
                let point = replay(run, &after, "walk", 1).unwrap();
                prop_assert_eq!(point.durable.snapshot(), whole.durable.snapshot(), "cut at row {}", cut);
                let resumed_path: Vec<u8> = point.durable.get("path").unwrap();
                prop_assert_eq!(&resumed_path, &path);
            }
            Ok(())
        })?;
    }
}
