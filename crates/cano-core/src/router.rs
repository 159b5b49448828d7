//! Routers: states that only decide where to go next.
//!
//! A [`RouterTask`] reads what earlier states left in the resources and returns the
//! next state. It changes nothing, so a router state writes no checkpoint row (there is
//! nothing to recover: a resumed run simply routes again) and is never retried.
//! Register it with [`Workflow::register_router`].
//!
//! ```
//! use cano_core::{CanoError, MemoryStore, Resources, TaskResult, Workflow};
//! use cano_core::router::RouterTask;
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! enum Order { Triage, Express, Standard }
//!
//! struct ByAmount;
//!
//! #[async_trait::async_trait] // what `#[cano::task::router]` expands to
//! impl RouterTask<Order> for ByAmount {
//!     async fn route(&self, res: &Resources) -> Result<TaskResult<Order>, CanoError> {
//!         let amount: u32 = res.get::<MemoryStore, _>("store")?.get("amount")?;
//!         Ok(TaskResult::Single(if amount >= 1_000 { Order::Express } else { Order::Standard }))
//!     }
//!
//!     fn targets(&self) -> Option<Vec<Order>> {
//!         Some(vec![Order::Express, Order::Standard])
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), CanoError> {
//! let store = MemoryStore::new();
//! store.put("amount", 2_500u32)?;
//! let workflow = Workflow::new(Resources::new().insert("store", store))
//!     .register_router(Order::Triage, ByAmount)
//!     .add_exit_states([Order::Express, Order::Standard]);
//! assert_eq!(workflow.orchestrate(Order::Triage).await?, Order::Express);
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;

use async_trait::async_trait;
use futures::FutureExt;

use crate::error::CanoError;
use crate::resource::{DefaultKey, ResourceKey, Resources};
use crate::task::TaskResult;
use crate::util::short_type_name;
use crate::workflow::handler::{HandlerFuture, HandlerInfo, StateContext, StateHandler};
use crate::workflow::{Workflow, WorkflowState};

/// Side-effect-free branching: look at the resources, name the next state.
///
/// Write `#[task::router]` on the impl block (through the `cano` facade) to use
/// `async fn`; it also makes the router a [`Task`](crate::Task), for the rare case where
/// it should be registered as one.
#[async_trait]
pub trait RouterTask<S, K = DefaultKey>: Send + Sync + 'static {
    /// Picks the next state, as [`TaskResult::Single`] (a router picks one state:
    /// `Split` fails the run with [`CanoError::Workflow`]). An error fails the run (a
    /// router is not retried: it has nothing transient to wait out).
    async fn route(&self, res: &Resources<K>) -> Result<TaskResult<S>, CanoError>;

    /// The states this router can pick, when known: [`Workflow::validate`] then checks
    /// that each has a handler or is an exit state, and a route outside them fails the
    /// run. `None` (the default) allows any state.
    fn targets(&self) -> Option<Vec<S>> {
        None
    }

    /// The name used in errors and observer events: the type's name by default.
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(short_type_name::<Self>())
    }
}

/// A router behind a pointer, any type (cano 0.13's name).
pub type DynRouterTask<S, K = DefaultKey> = dyn RouterTask<S, K> + Send + Sync;

/// A shared router of any type (cano 0.13's name).
pub type RouterTaskObject<S, K = DefaultKey> = std::sync::Arc<DynRouterTask<S, K>>;

impl<S: WorkflowState, K: ResourceKey> Workflow<S, K> {
    /// Routes with `router` whenever the workflow enters `state` (see [`RouterTask`]).
    /// The state writes no checkpoint row.
    pub fn register_router<R: RouterTask<S, K>>(self, state: S, router: R) -> Self {
        let handler = RouterHandler {
            name: router.name(),
            targets: router.targets(),
            router,
        };
        self.register_routing(state, handler)
    }
}

struct RouterHandler<R, S> {
    router: R,
    name: Cow<'static, str>,
    targets: Option<Vec<S>>,
}

impl<R, S, K> StateHandler<S, K> for RouterHandler<R, S>
where
    R: RouterTask<S, K>,
    S: WorkflowState,
    K: ResourceKey,
{
    fn handle<'a>(&'a self, cx: StateContext<'a, S, K>) -> HandlerFuture<'a, S> {
        Box::pin(async move {
            let (run, state, name) = (cx.run().run_id(), cx.state(), &*self.name);
            let observers = cx.env().observers();
            observers.each(|o| o.task_started(run, state, name, 1));
            let routed = AssertUnwindSafe(self.router.route(cx.resources()))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(CanoError::from_panic(panic)))
                .and_then(|routed| match routed {
                    TaskResult::Single(next) => Ok(next),
                    TaskResult::Split(states) => Err(CanoError::workflow(format!(
                        "router `{name}` returned TaskResult::Split({states:?}); a router picks one state"
                    ))
                    .with_hint("return TaskResult::Single, or register a split state to run branches")),
                })
                .and_then(|next| match &self.targets {
                    Some(targets) if !targets.contains(&next) => Err(CanoError::workflow(format!(
                        "router `{name}` picked {next:?}, which is not among the states it declares ({targets:?})"
                    ))
                    .with_hint("add the state to RouterTask::targets, or fix the route")),
                    _ => Ok(next),
                });
            match &routed {
                Ok(_) => observers.each(|o| o.task_succeeded(run, state, name)),
                Err(error) => observers.each(|o| o.task_failed(run, state, name, error)),
            }
            routed
        })
    }

    fn info(&self) -> HandlerInfo {
        HandlerInfo {
            kind: "router",
            tasks: vec![self.name.clone()],
        }
    }

    fn targets(&self) -> Option<Vec<S>> {
        self.targets.clone()
    }

    fn writes_checkpoint(&self) -> bool {
        false
    }
}
