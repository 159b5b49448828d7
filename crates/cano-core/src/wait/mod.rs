//! Durable waits: states that park a run until a signal arrives or a deadline passes.
//!
//! A wait state is registered like any other ([`Workflow::register_wait`]) with a
//! [`Wait`]: the signals it waits for, each with a function from the signal's payload
//! to the next state, and a timeout with the state to go to when it passes. A run
//! that reaches it and finds nothing in its inbox *parks*: it writes a `Wait` row and
//! its future ends with [`CanoError::Parked`]. A parked run is a row in the store and
//! nothing else: no future, no tokio task, no lease.
//!
//! Signals go to a run's inbox in the store ([`Workflow::signal`]), from any process
//! that opens it. One sent before the run reaches its wait is kept until it gets there.
//! Taking a signal from the inbox and writing the run's `Received` row are one atomic
//! step, so a crash consumes a signal either exactly once or not at all; a run resumed
//! after its `Received` row hands the very same signal to its handler again (the
//! handler must be a plain function of the payload). [`Workflow::wake_parked`] resumes
//! the parked runs that a signal or their deadline made runnable, and
//! [`Workflow::serve_waits`] keeps doing so: at once for a signal sent from its
//! process, at the deadline for a timeout, and at start-up for what arrived while no
//! process served the store. [`Workflow::query`] reads where a run stands without
//! disturbing it.
//!
//! A task may also put its run to sleep until a time of its choosing, across restarts:
//! it calls [`wake_at`] (or [`wake_after`]) and moves to a wait state with a timeout;
//! that wait's deadline is then the time given.
//!
//! ```
//! use std::time::Duration;
//! use cano_core::wait::Wait;
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
//! enum Order { AwaitPayment, Ship, Cancelled, Expired }
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Payment { paid: bool }
//!
//! let wait = Wait::new()
//!     .on("payment", |p: Payment| if p.paid { Order::Ship } else { Order::Cancelled })
//!     .leading_to([Order::Ship, Order::Cancelled])
//!     .timeout(Duration::from_secs(3 * 24 * 3600), Order::Expired);
//! assert_eq!(wait.signal_names(), ["payment"]);
//! ```
//!
//! [`Workflow::register_wait`]: crate::Workflow::register_wait
//! [`Workflow::signal`]: crate::Workflow::signal
//! [`Workflow::wake_parked`]: crate::Workflow::wake_parked
//! [`Workflow::serve_waits`]: crate::Workflow::serve_waits
//! [`Workflow::query`]: crate::Workflow::query

mod bell;
mod handler;
mod service;

use std::any::TypeId;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;

use crate::checkpoint::{Bincode, Codec, DurableStore};
use crate::error::CanoError;
use crate::workflow::handler::SignalInfo;

pub use crate::checkpoint::{INBOX_LIMIT, Sent, Signal, WaitRecord};
pub use service::{RunView, Waiting};

/// The durable key [`wake_at`] sets for the next wait of the run.
pub(crate) const WAKE_AT_KEY: &str = "\u{0}cano/wait/wake_at";

/// Turns a signal's payload into the next state.
type Decode<S> = Arc<dyn Fn(&[u8]) -> Result<S, CanoError> + Send + Sync>;

/// One signal a wait takes.
pub(crate) struct On<S> {
    pub(crate) info: SignalInfo,
    pub(crate) decode: Decode<S>,
    pub(crate) targets: Option<Vec<S>>,
}

impl<S> Clone for On<S>
where
    S: Clone,
{
    fn clone(&self) -> Self {
        Self {
            info: self.info.clone(),
            decode: self.decode.clone(),
            targets: self.targets.clone(),
        }
    }
}

/// What a wait state waits for, and where each outcome leads (see the module docs).
pub struct Wait<S> {
    pub(crate) on: Vec<On<S>>,
    pub(crate) timeout: Option<(Duration, S)>,
    pub(crate) sent_by: Option<String>,
}

impl<S> Default for Wait<S> {
    fn default() -> Self {
        Self {
            on: Vec::new(),
            timeout: None,
            sent_by: None,
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Wait<S> {
    /// A wait for nothing yet: add signals with [`on`](Self::on) and a deadline with
    /// [`timeout`](Self::timeout).
    pub fn new() -> Self {
        Self::default()
    }

    /// A durable sleep: a wait for no signal that moves to `then` once `after` has
    /// passed (or at the time a task set with [`wake_at`]).
    pub fn sleep(after: Duration, then: S) -> Self {
        Self::new().timeout(after, then)
    }

    /// Waits for the signal `name`, whose payload decodes into `T`; `next` turns it
    /// into the next state. `next` may run again for the same signal when a run is
    /// resumed after taking it, so it must be a plain function of the payload (no side
    /// effects). A name given twice keeps the first.
    pub fn on<T, F>(mut self, name: impl Into<String>, next: F) -> Self
    where
        T: DeserializeOwned + 'static,
        F: Fn(T) -> S + Send + Sync + 'static,
    {
        let name = name.into();
        if self.on.iter().any(|o| o.info.name == name) {
            return self;
        }
        let type_name = std::any::type_name::<T>();
        let decode: Decode<S> = Arc::new(move |bytes: &[u8]| {
            Bincode::decode::<T>(bytes).map(&next).map_err(|e| {
                CanoError::store(format!(
                    "its payload does not decode into {type_name}: {}",
                    e.message()
                ))
                .with_source(e)
                .permanent()
            })
        });
        self.on.push(On {
            info: SignalInfo {
                name,
                payload: type_name,
                type_id: TypeId::of::<T>(),
            },
            decode,
            targets: None,
        });
        self
    }

    /// Declares the states the signal added last may lead to, for
    /// [`Workflow::validate`](crate::Workflow::validate) and the drawings. A run whose
    /// signal leads elsewhere fails, naming both states.
    pub fn leading_to(mut self, targets: impl IntoIterator<Item = S>) -> Self {
        if let Some(last) = self.on.last_mut() {
            last.targets = Some(targets.into_iter().collect());
        }
        self
    }

    /// Stops waiting `after` the run parked (or at the time a task set with
    /// [`wake_at`]) and moves to `then`. `Duration::MAX` waits for ever.
    pub fn timeout(mut self, after: Duration, then: S) -> Self {
        self.timeout = Some((after, then));
        self
    }

    /// Says who sends this wait's signals (a person, a service), for the reader of
    /// [`Workflow::warnings`](crate::Workflow::warnings): a wait with neither a sender
    /// nor a timeout may wait for ever.
    pub fn sent_by(mut self, who: impl Into<String>) -> Self {
        self.sent_by = Some(who.into());
        self
    }

    /// The names of the signals it waits for, in the order they were added.
    pub fn signal_names(&self) -> Vec<&str> {
        self.on.iter().map(|o| o.info.name.as_str()).collect()
    }
}

/// Sets when the run's next wait with a timeout stops waiting: at `at` instead of
/// after its timeout. Call it from a task, then move to the wait state: the run sleeps
/// until `at`, across restarts of its process (a time in the past wakes it at once).
/// Fails outside a run of a workflow with a checkpoint store, or for a time past what
/// a row can hold.
pub fn wake_at(at: SystemTime) -> Result<(), CanoError> {
    let ms = millis_of(at)?;
    DurableStore::current()?.put_engine(WAKE_AT_KEY.to_owned(), ms.to_be_bytes().to_vec());
    Ok(())
}

/// Like [`wake_at`], `after` from now. `Duration::MAX` is refused (no deadline at all
/// is a wait without a timeout).
pub fn wake_after(after: Duration) -> Result<(), CanoError> {
    let at = SystemTime::now()
        .checked_add(after)
        .ok_or_else(|| too_far(after))?;
    wake_at(at)
}

/// Milliseconds since the Unix epoch of `at` (0 for times before it).
pub(crate) fn millis_of(at: SystemTime) -> Result<u64, CanoError> {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).map_err(|_| too_far(since))
}

fn too_far(after: Duration) -> CanoError {
    CanoError::configuration(format!(
        "a wait deadline {after:?} away cannot be stored: rows hold deadlines up to u64::MAX milliseconds after 1970"
    ))
    .with_hint("use Duration::MAX in Wait::timeout to wait without a deadline, or a nearer time")
}
