//! Property: for any run and any single failed or ambiguous append at any row,
//! resuming after the store recovers ends in the same final state with the same
//! durable data as the same run without the fault (its tasks being idempotent: a
//! state run again from the data it entered with writes the same values).

use std::sync::Arc;

use cano::checkpoint::CheckpointStore;
use cano::checkpoint::RowKind;
use cano::ext::replay;
use cano::prelude::*;
use cano::testing::FaultyStore;
use cano::{DurableStore, Retention, RunId, RunOptions};
use proptest::prelude::*;

const EXIT: u8 = u8::MAX;

/// State `me` counts its visits and the path in the run's durable data, and picks the
/// next state from its row of the table by the step count, so a resumed run goes
/// where the uninterrupted one went.
struct Walk {
    me: u8,
    table: Arc<Vec<Vec<u8>>>,
    max_steps: u32,
}

#[task]
impl Task<u8> for Walk {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<u8>, CanoError> {
        let durable = DurableStore::current()?;
        let steps = durable.update("steps", |s: Option<u32>| s.unwrap_or(0) + 1)?;
        durable.update("path", |p: Option<Vec<u8>>| {
            let mut p = p.unwrap_or_default();
            p.push(self.me);
            p
        })?;
        durable.put(format!("seen/{}", self.me), &steps)?;
        let choices = &self.table[usize::from(self.me)];
        Ok(TaskResult::Single(if steps >= self.max_steps {
            EXIT
        } else {
            choices[steps as usize % choices.len()]
        }))
    }
}

fn build(
    table: &Arc<Vec<Vec<u8>>>,
    max_steps: u32,
    compaction: u32,
    store: Arc<FaultyStore>,
) -> Workflow<u8> {
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
        .with_shared_checkpoint_store(store)
}

/// The final state and the durable data its `Finish` row leaves.
async fn outcome(store: &FaultyStore, run: RunId) -> (RowKind, Vec<(String, Vec<u8>)>) {
    let rows = store.load(run).await.unwrap();
    let end = replay(run, &rows, "walk", 1).unwrap();
    (end.last_kind, end.durable.snapshot())
}

fn tables() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (2u8..6).prop_flat_map(|states| {
        prop::collection::vec(prop::collection::vec(0..states, 1..4), usize::from(states))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn one_faulty_append_anywhere_then_resume_ends_as_without_it(
        table in tables(),
        max_steps in 1u32..12,
        compaction in 1u32..6,
        at in 0usize..32,
        ambiguous in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let table = Arc::new(table);
            let clean = FaultyStore::new();
            let run = RunId::from(1);
            let end = build(&table, max_steps, compaction, clean.clone())
                .orchestrate_with(0, RunOptions::new().with_run_id(run))
                .await
                .unwrap();
            let expected = outcome(&clean, run).await;
            let rows_written = clean.append_attempts();
            let at = at % rows_written;

            let faulty = FaultyStore::new();
            if ambiguous {
                faulty.lose_reply_of_append(at);
            } else {
                faulty.fail_append(at);
            }
            let workflow = build(&table, max_steps, compaction, faulty.clone());
            let mut result = workflow
                .orchestrate_with(0, RunOptions::new().with_run_id(run))
                .await;
            // The fault was once: the store has recovered. Resume until the run ends
            // (a resume whose own first row was the faulty one is resumed again).
            let mut resumes = 0;
            while result.is_err() && resumes < 3 {
                resumes += 1;
                result = workflow.resume_from(run).await;
            }
            prop_assert_eq!(result.unwrap(), end);
            prop_assert_eq!(outcome(&faulty, run).await, expected);
            Ok(())
        })?;
    }
}
