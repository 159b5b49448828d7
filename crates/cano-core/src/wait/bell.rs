//! The in-process wake-up call of a workflow's wait server.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::Notify;

/// One bell per workflow id, rung when one of its runs parks or a signal is sent to
/// a parked one from this process, so its `Workflow::serve_waits` looks again.
static BELLS: LazyLock<Mutex<HashMap<String, Arc<Notify>>>> = LazyLock::new(Default::default);

/// The bell of workflow `id`.
pub(crate) fn bell(id: &str) -> Arc<Notify> {
    let mut bells = BELLS.lock().unwrap_or_else(|p| p.into_inner());
    bells.entry(id.to_owned()).or_default().clone()
}
