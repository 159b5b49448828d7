//! A batch task: resize 24 product images, 4 at a time. Two images fail once and are
//! retried; one is corrupt and fails for good, which `finish` reports without failing
//! the whole batch. Finished images are saved in a sled checkpoint store as they
//! complete, so a crash would resume with only the unfinished ones.
//!
//! Run it with `cargo run --example batch_task`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cano::BatchConfig;
use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Catalog {
    Resize,
    Publish,
    NeedsAttention,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Thumbnail {
    image: u32,
    bytes: usize,
}

#[derive(Clone)]
struct Resize {
    flaked: Arc<Mutex<HashSet<u32>>>,
}

#[task::batch(state = Catalog)]
impl Resize {
    type Item = u32;
    type ItemOutput = Thumbnail;

    async fn load(&self, _res: &Resources) -> Result<Vec<u32>, CanoError> {
        Ok((1..=24).collect())
    }

    async fn process_item(&self, _res: &Resources, image: &u32) -> Result<Thumbnail, CanoError> {
        // Pretend to fetch and resize: images take 20-50 ms.
        tokio::time::sleep(Duration::from_millis(20 + u64::from(image % 4) * 10)).await;
        if *image == 17 {
            return Err(CanoError::task_execution("image 17 is not a valid JPEG").permanent());
        }
        if (*image == 5 || *image == 11) && self.flaked.lock().unwrap().insert(*image) {
            return Err(CanoError::task_execution(format!(
                "storage timed out on image {image}"
            )));
        }
        Ok(Thumbnail {
            image: *image,
            bytes: 1_000 + *image as usize * 37,
        })
    }

    async fn finish(
        &self,
        res: &Resources,
        results: Vec<ItemResult<Thumbnail>>,
    ) -> Result<TaskResult<Catalog>, CanoError> {
        let mut failed = Vec::new();
        let mut total = 0;
        for (i, result) in results.iter().enumerate() {
            match result {
                Ok(thumb) => total += thumb.bytes,
                Err(e) => failed.push(format!("image {}: {e}", i + 1)),
            }
        }
        let store = res.get::<MemoryStore, _>("store")?;
        store.put("bytes", total)?;
        store.put("failed", failed.clone())?;
        Ok(TaskResult::Single(if failed.is_empty() {
            Catalog::Publish
        } else {
            Catalog::NeedsAttention
        }))
    }

    fn batch_config(&self) -> BatchConfig {
        BatchConfig::new()
            .with_concurrency(4)
            .with_item_retry(RetryMode::fixed(2, Duration::from_millis(50)))
            .with_item_timeout(Duration::from_secs(2))
    }
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let dir = tempfile::tempdir().map_err(|e| CanoError::store(e.to_string()))?;
    let store = MemoryStore::new();
    let workflow = Workflow::new(Resources::new().insert("store", store.clone()))
        .register(
            Catalog::Resize,
            Resize {
                flaked: Arc::default(),
            },
        )
        .add_exit_states([Catalog::Publish, Catalog::NeedsAttention])
        .with_checkpoint_store(SledCheckpointStore::open(dir.path())?)
        .with_workflow_id("catalog");

    let started = Instant::now();
    let end = workflow.orchestrate(Catalog::Resize).await?;
    println!(
        "24 images, 4 at a time, in {} ms (one at a time would take ~840 ms)",
        started.elapsed().as_millis()
    );
    println!(
        "-> {end:?}: {} bytes of thumbnails",
        store.get::<usize>("bytes")?
    );
    for failure in store.get::<Vec<String>>("failed")? {
        println!("   {failure}");
    }
    Ok(())
}
