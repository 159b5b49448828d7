//! Forty sagas at once on one shared ledger, with the failure point swept across every
//! step: rolled-back runs net to zero, completed runs keep every effect, and no account
//! ever goes negative (the ledger refuses an overdraft, and would report it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cano_core::{
    CanoError, CheckpointStore, Resources, RunId, RunOptions, TaskConfig, TaskResult, Workflow,
};
use cano_recovery::MemoryCheckpointStore;
use cano_saga::{CompensatableTask, SagaExt};

const RUNS: usize = 40;
const OPENING: i64 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Pay {
    Hold,
    Settle,
    Fee,
    Confirm,
    Done,
}

/// The steps in order; a run failing at step `k` fails in that step's own `run`.
const STEPS: [Pay; 4] = [Pay::Hold, Pay::Settle, Pay::Fee, Pay::Confirm];

#[derive(Default)]
struct Ledger {
    balances: Mutex<HashMap<String, i64>>,
    /// Transfers refused because they would have overdrawn an account.
    overdrafts: Mutex<Vec<String>>,
}

impl Ledger {
    async fn transfer(&self, from: &str, to: &str, amount: i64) -> Result<(), CanoError> {
        // Let other runs interleave between reading and writing balances elsewhere.
        tokio::task::yield_now().await;
        let mut balances = self.balances.lock().unwrap();
        let have = balances.get(from).copied().unwrap_or(0);
        if have < amount {
            let refusal = format!("{from} has {have}, cannot pay {amount} to {to}");
            self.overdrafts.lock().unwrap().push(refusal.clone());
            return Err(CanoError::task_execution(refusal).permanent());
        }
        *balances.entry(from.to_owned()).or_default() -= amount;
        *balances.entry(to.to_owned()).or_default() += amount;
        Ok(())
    }

    fn balance(&self, account: &str) -> i64 {
        self.balances
            .lock()
            .unwrap()
            .get(account)
            .copied()
            .unwrap_or(0)
    }
}

/// A transfer as a compensatable step: undone by the reverse transfer.
struct Move {
    ledger: Arc<Ledger>,
    from: String,
    to: String,
    amount: i64,
    next: Pay,
    /// This run fails here (before moving anything).
    fails: bool,
}

#[async_trait::async_trait]
impl CompensatableTask<Pay> for Move {
    type Output = (String, String, i64);

    async fn run(&self, _: &Resources) -> Result<(TaskResult<Pay>, Self::Output), CanoError> {
        if self.fails {
            return Err(CanoError::task_execution("injected failure"));
        }
        self.ledger
            .transfer(&self.from, &self.to, self.amount)
            .await?;
        let done = (self.from.clone(), self.to.clone(), self.amount);
        Ok((TaskResult::Single(self.next.clone()), done))
    }

    async fn compensate(
        &self,
        _: &Resources,
        (from, to, amount): Self::Output,
    ) -> Result<(), CanoError> {
        self.ledger.transfer(&to, &from, amount).await
    }

    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }

    fn compensation_config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
}

/// Run `i`'s workflow: customer `i` pays 30 into escrow, escrow settles to the
/// merchant, the merchant pays a fee of 3 to the platform, then the order is confirmed
/// (a no-op transfer of 0). It fails at step `i % 5` (5 and over: it completes).
fn workflow(
    ledger: &Arc<Ledger>,
    i: usize,
    store: Option<Arc<dyn CheckpointStore>>,
) -> Workflow<Pay> {
    let fail_at = i % (STEPS.len() + 1);
    let customer = format!("customer-{i}");
    let moves = [
        (customer.as_str(), "escrow", 30, Pay::Settle),
        ("escrow", "merchant", 30, Pay::Fee),
        ("merchant", "platform", 3, Pay::Confirm),
        ("merchant", "merchant", 0, Pay::Done),
    ];
    let mut workflow = Workflow::bare().add_exit_state(Pay::Done);
    for (k, (from, to, amount, next)) in moves.into_iter().enumerate() {
        workflow = workflow.register_with_compensation(
            STEPS[k].clone(),
            Move {
                ledger: ledger.clone(),
                from: from.to_owned(),
                to: to.to_owned(),
                amount,
                next,
                fails: k == fail_at,
            },
        );
    }
    match store {
        Some(store) => workflow.with_shared_checkpoint_store(store),
        None => workflow,
    }
}

async fn sweep(store: Option<Arc<dyn CheckpointStore>>) {
    let ledger = Arc::new(Ledger::default());
    for i in 0..RUNS {
        ledger
            .balances
            .lock()
            .unwrap()
            .insert(format!("customer-{i}"), OPENING);
    }
    let runs: Vec<_> = (0..RUNS)
        .map(|i| {
            let workflow = workflow(&ledger, i, store.clone());
            tokio::spawn(async move {
                workflow
                    .orchestrate_with(
                        Pay::Hold,
                        RunOptions::new().with_run_id(RunId::from(i as u64 + 1)),
                    )
                    .await
            })
        })
        .collect();
    let mut completed = 0;
    for (i, run) in runs.into_iter().enumerate() {
        let outcome = run.await.unwrap();
        let customer = ledger.balance(&format!("customer-{i}"));
        if i % (STEPS.len() + 1) == STEPS.len() {
            assert_eq!(outcome.unwrap(), Pay::Done, "run {i} completes");
            assert_eq!(customer, OPENING - 30, "run {i} keeps its effects");
            completed += 1;
        } else {
            let err = outcome.unwrap_err();
            // A clean rollback returns the original error.
            assert!(
                err.to_string().contains("injected failure"),
                "run {i}: {err}"
            );
            assert_eq!(customer, OPENING, "run {i} nets to zero");
        }
    }
    assert!(
        ledger.overdrafts.lock().unwrap().is_empty(),
        "{:?}",
        ledger.overdrafts
    );
    assert_eq!(ledger.balance("escrow"), 0);
    assert_eq!(ledger.balance("merchant"), 27 * completed);
    assert_eq!(ledger.balance("platform"), 3 * completed);
    let total: i64 = ledger.balances.lock().unwrap().values().sum();
    assert_eq!(
        total,
        OPENING * RUNS as i64,
        "money is neither made nor lost"
    );
    assert!(ledger.balances.lock().unwrap().values().all(|b| *b >= 0));
    if let Some(store) = store {
        // Rolled-back and finished runs leave no rows behind; a run that failed in its
        // first step had nothing to undo, so it stays a failed run, resumable later.
        let mut left: Vec<u64> = store
            .unfinished()
            .await
            .unwrap()
            .iter()
            .map(|r| {
                assert_eq!(r.status, cano_core::RunStatus::Failed);
                r.run.as_u64() - 1
            })
            .collect();
        left.sort();
        let failed_first: Vec<u64> = (0..RUNS as u64).filter(|i| i % 5 == 0).collect();
        assert_eq!(left, failed_first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_sagas_net_to_zero_or_keep_all_their_effects() {
    sweep(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_with_their_outputs_checkpointed() {
    let store = Arc::new(MemoryCheckpointStore::new());
    sweep(Some(store.clone())).await;
}
