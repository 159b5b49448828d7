//! One workflow per incoming request: a fresh store per request keeps requests
//! isolated, the workflow timeout keeps a slow request from hanging its caller.
//! (A web framework's handler would do exactly what `handle_request` does.)
//!
//! Run it with `cargo run --example workflow_on_request`.

use std::time::Duration;

use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Text {
    Parse,
    Count,
    Done,
}

struct Parse;
#[task]
impl Task<Text> for Parse {
    async fn run(&self, res: &Resources) -> Result<TaskResult<Text>, CanoError> {
        let store = res.get::<MemoryStore, _>("store")?;
        let body: String = store.get("body")?;
        let words: Vec<String> = body.split_whitespace().map(str::to_lowercase).collect();
        store.put("words", words)?;
        Ok(TaskResult::Single(Text::Count))
    }
}

struct Count;
#[task]
impl Task<Text> for Count {
    async fn run(&self, res: &Resources) -> Result<TaskResult<Text>, CanoError> {
        let store = res.get::<MemoryStore, _>("store")?;
        let mut words: Vec<String> = store.get("words")?;
        words.sort();
        words.dedup();
        store.put("distinct", words.len())?;
        Ok(TaskResult::Single(Text::Done))
    }
}

fn build_workflow(store: MemoryStore) -> Workflow<Text> {
    Workflow::new(Resources::new().insert("store", store))
        .register(Text::Parse, Parse)
        .register(Text::Count, Count)
        .add_exit_state(Text::Done)
        .with_timeout(Duration::from_secs(5))
}

/// What an HTTP handler would do with the request body.
async fn handle_request(body: String) -> Result<usize, CanoError> {
    let store = MemoryStore::new();
    store.put("body", body)?;
    build_workflow(store.clone())
        .orchestrate(Text::Parse)
        .await?;
    Ok(store.get("distinct")?)
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let bodies = ["the cat and the hat", "to be or not to be", "one"];
    let responses = futures_join(
        bodies
            .iter()
            .map(|b| tokio::spawn(handle_request(b.to_string()))),
    )
    .await;
    for (body, distinct) in bodies.iter().zip(responses) {
        println!("{body:?}: {} distinct words", distinct?);
    }
    Ok(())
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("request task panicked"));
    }
    out
}
