//! Resources: the typed dictionary of shared dependencies (configuration, clients,
//! stores) that a workflow hands to its tasks, with a setup / teardown lifecycle.
//!
//! Keys are strings by default ([`DefaultKey`]); any `Hash + Eq + Debug` type, such as
//! an enum of your own, can be the key type instead:
//!
//! ```
//! use std::sync::Arc;
//! use cano_core::{Resource, Resources};
//!
//! #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
//! enum Key { Config, Limits }
//!
//! struct Config { url: &'static str }
//! impl Resource for Config {}
//! struct Limits(u32);
//! impl Resource for Limits {}
//!
//! let res = Resources::<Key>::default()
//!     .insert(Key::Config, Config { url: "db://local" })
//!     .insert(Key::Limits, Limits(8));
//! let config: Arc<Config> = res.get::<Config, _>(&Key::Config).unwrap();
//! assert_eq!(config.url, "db://local");
//! // Asking for the wrong type names both types.
//! let err = res.get::<Config, _>(&Key::Limits).err().unwrap();
//! assert!(err.to_string().contains("Limits"));
//! ```

use std::any::Any;
use std::borrow::{Borrow, Cow};
use std::fmt::{self, Debug};
use std::hash::Hash;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::CanoError;
use crate::hash::FastMap;
use crate::util::short_type_name;

/// The default resource key: a string, borrowed when it is a literal.
pub type DefaultKey = Cow<'static, str>;

/// What a resource key must be. Implemented for every type that qualifies.
pub trait ResourceKey: Hash + Eq + Clone + Debug + Send + Sync + 'static {}
impl<T: Hash + Eq + Clone + Debug + Send + Sync + 'static> ResourceKey for T {}

/// How healthy a resource reports itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthStatus {
    /// Working normally.
    Healthy,
    /// Working, but impaired (slow, near a limit); the reason says how.
    Degraded(String),
    /// Not working; the reason says why.
    Unhealthy(String),
}

/// A shared dependency with an optional lifecycle.
///
/// Every method has a default, so `impl Resource for T {}` (or `#[derive(Resource)]`)
/// is enough for plain data. Implement `setup` / `teardown` with `#[resource]` on the
/// impl block to open and close connections around a run.
#[async_trait]
pub trait Resource: Send + Sync + 'static {
    /// Called before the run starts, in insertion order.
    async fn setup(&self) -> Result<(), CanoError> {
        Ok(())
    }

    /// Called after the run ends, in reverse insertion order, whether the run
    /// succeeded, failed or was cancelled.
    async fn teardown(&self) -> Result<(), CanoError> {
        Ok(())
    }

    /// Reports the resource's health.
    async fn health(&self) -> HealthStatus {
        HealthStatus::Healthy
    }
}

/// A circuit breaker in [`Resources`], for tasks that guard calls by hand; its health is
/// its state: closed is healthy, half-open degraded, open unhealthy.
#[async_trait]
impl Resource for cano_circuit::CircuitBreaker {
    async fn health(&self) -> HealthStatus {
        match self.state() {
            cano_circuit::CircuitState::Closed => HealthStatus::Healthy,
            cano_circuit::CircuitState::HalfOpen => HealthStatus::Degraded(format!(
                "circuit breaker `{}` is half-open: probing the dependency",
                self.name()
            )),
            cano_circuit::CircuitState::Open => HealthStatus::Unhealthy(format!(
                "circuit breaker `{}` is open: the dependency kept failing",
                self.name()
            )),
        }
    }
}

/// A rate limiter in [`Resources`], for tasks that pace calls by hand; degraded while
/// callers are queued for it.
#[async_trait]
impl Resource for cano_circuit::RateLimiter {
    async fn health(&self) -> HealthStatus {
        match self.waiting() {
            0 => HealthStatus::Healthy,
            n => HealthStatus::Degraded(format!(
                "rate limiter `{}` has {n} caller(s) waiting",
                self.name()
            )),
        }
    }
}

struct Entry<K> {
    key: K,
    value: Arc<dyn Any + Send + Sync>,
    lifecycle: Arc<dyn Resource>,
    type_name: &'static str,
}

/// A typed dictionary of [`Resource`]s, looked up by key and type.
///
/// Build it once with [`insert`](Self::insert); the workflow shares it between all its
/// runs. Lookups return `Arc<T>`, so a task holds a resource as long as it needs.
pub struct Resources<K = DefaultKey> {
    entries: Vec<Entry<K>>,
    index: FastMap<K, usize>,
}

impl Resources<DefaultKey> {
    /// An empty dictionary with string keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty dictionary with string keys, for workflows whose tasks need nothing.
    pub fn empty() -> Self {
        Self::default()
    }
}

impl<K> Default for Resources<K> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: FastMap::default(),
        }
    }
}

impl<K: ResourceKey> Resources<K> {
    /// Adds `value` under `key`. A value already under that key is replaced (keeping
    /// its place in the setup order); use [`try_insert`](Self::try_insert) to refuse
    /// duplicates instead.
    pub fn insert<R: Resource>(self, key: impl Into<K>, value: R) -> Self {
        self.insert_shared(key, Arc::new(value))
    }

    /// Adds an already shared resource under `key` (replacing as [`insert`](Self::insert)
    /// does), so several workflows can use one instance: a connection pool, a client.
    pub fn insert_shared<R: Resource>(mut self, key: impl Into<K>, value: Arc<R>) -> Self {
        let entry = Self::entry_shared(key.into(), value);
        match self.index.get(&entry.key) {
            Some(&i) => self.entries[i] = entry,
            None => self.push(entry),
        }
        self
    }

    /// Adds `value` under `key`, or fails with [`CanoError::Configuration`] if the key
    /// is taken.
    pub fn try_insert<R: Resource>(
        mut self,
        key: impl Into<K>,
        value: R,
    ) -> Result<Self, CanoError> {
        let key = key.into();
        if let Some(&i) = self.index.get(&key) {
            return Err(CanoError::configuration(format!(
                "resource key {key:?} is already taken by a `{}`",
                self.entries[i].type_name
            ))
            .with_hint("use a distinct key per resource, or `insert` to replace on purpose"));
        }
        self.push(Self::entry(key, value));
        Ok(self)
    }

    fn entry<R: Resource>(key: K, value: R) -> Entry<K> {
        Self::entry_shared(key, Arc::new(value))
    }

    fn entry_shared<R: Resource>(key: K, value: Arc<R>) -> Entry<K> {
        Entry {
            key,
            value: value.clone(),
            lifecycle: value,
            type_name: short_type_name::<R>(),
        }
    }

    fn push(&mut self, entry: Entry<K>) {
        // The index owns a second copy of the key; keys are small and this happens
        // only while building.
        self.index.insert(entry.key.clone(), self.entries.len());
        self.entries.push(entry);
    }

    /// The resource of type `T` under `key`.
    ///
    /// Fails with [`CanoError::Configuration`] naming the key when nothing is there, and
    /// naming both types when the value has another type.
    pub fn get<T, Q>(&self, key: &Q) -> Result<Arc<T>, CanoError>
    where
        T: Send + Sync + 'static,
        K: Borrow<Q>,
        Q: Hash + Eq + Debug + ?Sized,
    {
        let Some(&i) = self.index.get(key) else {
            return Err(self.missing(key, short_type_name::<T>()));
        };
        let entry = &self.entries[i];
        entry.value.clone().downcast::<T>().map_err(|_| {
            CanoError::configuration(format!(
                "resource {key:?} is a `{}`, not the requested `{}`",
                entry.type_name,
                short_type_name::<T>()
            ))
            .with_hint("ask for the type that was inserted under this key, or use another key")
            .permanent()
        })
    }

    fn missing<Q: Debug + ?Sized>(&self, key: &Q, wanted: &str) -> CanoError {
        let known: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{:?}", e.key))
            .collect();
        CanoError::configuration(format!(
            "no resource {key:?} (wanted a `{wanted}`); known keys: [{}]",
            known.join(", ")
        ))
        .with_hint("insert it into the Resources passed to Workflow::new")
    }

    /// Whether something is stored under `key`.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.index.contains_key(key)
    }

    /// The keys, in insertion (setup) order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().map(|e| &e.key)
    }

    /// How many resources there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets every resource up, in insertion order. If one fails, those already set up
    /// are torn down again (in reverse) and the error names the failing key.
    pub async fn setup_all(&self) -> Result<(), CanoError> {
        for (i, entry) in self.entries.iter().enumerate() {
            if let Err(err) = entry.lifecycle.setup().await {
                let err = CanoError::resource(format!(
                    "setup of resource {:?} (`{}`) failed: {err}",
                    entry.key, entry.type_name
                ))
                .with_source(err)
                .with_hint("fix what the resource needs to start (address, credentials), or manage it yourself with ResourceLifecycle::External")
                .permanent();
                // Best effort: the setup error is the one to report.
                let _ = self.teardown_first(i).await;
                return Err(err);
            }
        }
        Ok(())
    }

    /// Tears every resource down, in reverse insertion order. Every teardown runs even
    /// if an earlier one fails; the error lists every failure.
    pub async fn teardown_all(&self) -> Result<(), CanoError> {
        self.teardown_first(self.entries.len()).await
    }

    async fn teardown_first(&self, count: usize) -> Result<(), CanoError> {
        let mut failures = Vec::new();
        for entry in self.entries[..count].iter().rev() {
            if let Err(err) = entry.lifecycle.teardown().await {
                failures.push(format!("{:?} (`{}`): {err}", entry.key, entry.type_name));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(
                CanoError::resource(format!("teardown failed for {}", failures.join("; ")))
                    .with_hint(
                        "make teardown tolerate a half-initialised or already closed resource",
                    ),
            )
        }
    }

    /// Asks every resource for its health, in insertion order.
    pub async fn check_all_health(&self) -> Vec<(&K, HealthStatus)> {
        let mut report = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            report.push((&entry.key, entry.lifecycle.health().await));
        }
        report
    }

    /// The worst health of all resources: `Unhealthy` if any is, else `Degraded` if any
    /// is, else `Healthy`. Reasons name the resources.
    pub async fn overall_health(&self) -> HealthStatus {
        let mut degraded = Vec::new();
        let mut unhealthy = Vec::new();
        for (key, status) in self.check_all_health().await {
            match status {
                HealthStatus::Healthy => {}
                HealthStatus::Degraded(why) => degraded.push(format!("{key:?}: {why}")),
                HealthStatus::Unhealthy(why) => unhealthy.push(format!("{key:?}: {why}")),
            }
        }
        if !unhealthy.is_empty() {
            HealthStatus::Unhealthy(unhealthy.join("; "))
        } else if !degraded.is_empty() {
            HealthStatus::Degraded(degraded.join("; "))
        } else {
            HealthStatus::Healthy
        }
    }
}

impl<K: Debug> Debug for Resources<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|e| (&e.key, e.type_name)))
            .finish()
    }
}
