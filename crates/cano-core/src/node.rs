//! Nodes: tasks split into three phases.
//!
//! `prep` loads and validates what the node needs, `exec` does the work and cannot fail
//! (its signature returns a value, not a `Result`), `post` writes results and picks the
//! next state. Every node is a [`Task`]: when `prep` or `post` fails, the engine retries
//! the whole node (all three phases) as its [`TaskConfig`] says.
//!
//! ```
//! use cano_core::{CanoError, MemoryStore, Node, Resources};
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! enum Step { Sum, Done }
//!
//! struct Sum;
//!
//! #[async_trait::async_trait] // what `#[cano::task]` / `#[cano::node]` expand to
//! impl Node<Step> for Sum {
//!     type PrepResult = Vec<u64>;
//!     type ExecResult = u64;
//!
//!     async fn prep(&self, res: &Resources) -> Result<Vec<u64>, CanoError> {
//!         Ok(res.get::<MemoryStore, _>("store")?.get("numbers")?)
//!     }
//!     async fn exec(&self, numbers: Vec<u64>) -> u64 {
//!         numbers.iter().sum()
//!     }
//!     async fn post(&self, res: &Resources, total: u64) -> Result<Step, CanoError> {
//!         res.get::<MemoryStore, _>("store")?.put("total", total)?;
//!         Ok(Step::Done)
//!     }
//! }
//! ```

use std::borrow::Cow;

use async_trait::async_trait;

use crate::error::CanoError;
use crate::resource::{DefaultKey, Resources};
use crate::task::{Task, TaskConfig, TaskFuture, TaskResult};
use crate::util::short_type_name;

/// A task in three phases: `prep` → `exec` → `post`. See the [module docs](self).
#[async_trait]
pub trait Node<S, K = DefaultKey>: Send + Sync
where
    S: Send + 'static,
    K: Send + Sync + 'static,
{
    /// What `prep` hands to `exec`.
    type PrepResult: Send;
    /// What `exec` hands to `post`.
    type ExecResult: Send;

    /// Loads and validates the node's input.
    async fn prep(&self, res: &Resources<K>) -> Result<Self::PrepResult, CanoError>;

    /// Does the work. Infallible: failures belong in `prep` (bad input) or `post`
    /// (results that cannot be written).
    async fn exec(&self, prep: Self::PrepResult) -> Self::ExecResult;

    /// Writes the results and returns the next state.
    async fn post(&self, res: &Resources<K>, exec: Self::ExecResult) -> Result<S, CanoError>;

    /// How the engine retries and bounds the node (all three phases as one unit).
    fn config(&self) -> TaskConfig {
        TaskConfig::default()
    }

    /// The name used in errors and observer events.
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(short_type_name::<Self>())
    }
}

impl<S, K, N> Task<S, K> for N
where
    N: Node<S, K>,
    S: Send + 'static,
    K: Send + Sync + 'static,
{
    fn run<'life0, 'life1, 'async_trait>(
        &'life0 self,
        res: &'life1 Resources<K>,
    ) -> TaskFuture<'async_trait, S>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let prepared = self.prep(res).await?;
            let executed = self.exec(prepared).await;
            Ok(TaskResult::Single(self.post(res, executed).await?))
        })
    }

    fn config(&self) -> TaskConfig {
        Node::config(self)
    }

    fn name(&self) -> Cow<'static, str> {
        Node::name(self)
    }
}
