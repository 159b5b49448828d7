//! Heap allocations per batch item, counted by a global allocator: an item's future
//! goes into the set of items in flight as it is, so each item costs that set's one
//! slot and nothing more. A count, not a timing, so it is exact.

use cano_core::{CanoError, Resources, TaskResult};
use cano_task_models::{BatchConfig, BatchTask, ItemResult, run_batch};
use cano_testing::alloc::{CountingAllocator, allocations};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[derive(Debug, Clone, PartialEq)]
enum S {
    Done,
}

/// Items that each wait once on the scheduler, as an item waiting on I/O would.
#[derive(Clone)]
struct Doubling(u64);

impl BatchTask<S> for Doubling {
    type Item = u64;
    type ItemOutput = u64;

    async fn load(&self, _res: &Resources) -> Result<Vec<u64>, CanoError> {
        Ok((0..self.0).collect())
    }

    async fn process_item(&self, _res: &Resources, item: &u64) -> Result<u64, CanoError> {
        tokio::task::yield_now().await;
        Ok(item * 2)
    }

    async fn finish(
        &self,
        _res: &Resources,
        results: Vec<ItemResult<u64>>,
    ) -> Result<TaskResult<S>, CanoError> {
        assert!(results.iter().all(Result::is_ok));
        Ok(TaskResult::Single(S::Done))
    }

    fn batch_config(&self) -> BatchConfig {
        BatchConfig::new().with_concurrency(16)
    }
}

/// Allocations made by one batch of `items` items.
fn allocations_for(rt: &tokio::runtime::Runtime, items: u64) -> usize {
    let res = Resources::empty();
    let task = Doubling(items);
    let before = allocations();
    let next = rt.block_on(run_batch(&task, &res)).unwrap();
    assert!(matches!(next, TaskResult::Single(S::Done)));
    allocations() - before
}

#[test]
fn a_plain_item_costs_at_most_one_allocation() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Warm up: first-use allocations of the runtime and thread-locals are not the batch's.
    allocations_for(&rt, 2_000);

    let small = allocations_for(&rt, 1_000);
    let large = allocations_for(&rt, 2_000);
    // The batch's own vectors grow with the item count by a few reallocations, not
    // one per item; a boxed item future would add another thousand here.
    let per_item = (large - small) as f64 / 1_000.0;
    assert!(
        per_item <= 1.05,
        "{per_item} allocations per item ({small} for 1,000 items, {large} for 2,000)"
    );
    println!("{per_item} allocations per item ({small} for 1,000 items, {large} for 2,000)");
}
