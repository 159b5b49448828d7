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
//! let res = Resources::<Key>::new()
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
use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt::{self, Debug};
use std::hash::Hash;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::CanoError;
use crate::hash::FastMap;
use crate::util::short_type_name;

/// The default resource key: a string, borrowed when it is a literal.
pub type DefaultKey = Cow<'static, str>;

/// What a resource key must be: hashable, comparable and shareable between threads.
/// Implemented for every type that qualifies, so a plain `#[derive(Hash, PartialEq, Eq)]`
/// enum is a key (no `Clone` or `Debug` needed).
pub trait ResourceKey: Hash + Eq + Send + Sync + 'static {}
impl<T: Hash + Eq + Send + Sync + 'static> ResourceKey for T {}

/// A key as error messages show it, when it can be shown: string and integer keys by
/// value. Other keys (a key need not be `Debug`) are named by their resource's type.
fn key_name<K: 'static>(key: &K) -> Option<String> {
    let any = key as &dyn Any;
    if let Some(k) = any.downcast_ref::<Cow<'static, str>>() {
        return Some(format!("{k:?}"));
    }
    if let Some(k) = any.downcast_ref::<String>() {
        return Some(format!("{k:?}"));
    }
    if let Some(k) = any.downcast_ref::<&'static str>() {
        return Some(format!("{k:?}"));
    }
    macro_rules! integers {
        ($($t:ty),*) => {$(
            if let Some(k) = any.downcast_ref::<$t>() {
                return Some(k.to_string());
            }
        )*};
    }
    integers!(
        u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
    );
    None
}

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

impl HealthStatus {
    /// Whether this is [`HealthStatus::Healthy`].
    pub fn is_healthy(&self) -> bool {
        matches!(self, Self::Healthy)
    }

    /// How bad it is, for picking the worst of several: healthy 0, degraded 1,
    /// unhealthy 2.
    fn severity(&self) -> u8 {
        match self {
            Self::Healthy => 0,
            Self::Degraded(_) => 1,
            Self::Unhealthy(_) => 2,
        }
    }
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
            cano_circuit::CircuitState::Open { .. } => HealthStatus::Unhealthy(format!(
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

struct Entry {
    value: Arc<dyn Any + Send + Sync>,
    lifecycle: Arc<dyn Resource>,
    type_name: &'static str,
}

/// A typed dictionary of [`Resource`]s, looked up by key and type.
///
/// Build it once with [`insert`](Self::insert); the workflow shares it between all its
/// runs. Lookups return `Arc<T>`, so a task holds a resource as long as it needs.
pub struct Resources<K = DefaultKey> {
    /// In insertion order: setup runs forwards, teardown backwards.
    entries: Vec<Entry>,
    /// The only copy of each key, so a key needs no `Clone`.
    index: FastMap<K, usize>,
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
    /// An empty dictionary. The key type is a string unless the annotation says
    /// otherwise: `Resources::<MyKey>::new()`.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty dictionary, for workflows whose tasks need nothing.
    pub fn empty() -> Self {
        Self::default()
    }

    /// An empty dictionary with room for `capacity` resources.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut index = FastMap::default();
        index.reserve(capacity);
        Self {
            entries: Vec::with_capacity(capacity),
            index,
        }
    }

    /// Adds `value` under `key`. A value already under that key is replaced (keeping
    /// its place in the setup order); use [`try_insert`](Self::try_insert) to refuse
    /// duplicates instead. (cano 0.13 panicked here; a builder that cannot fail never
    /// panics in cano.)
    pub fn insert<R: Resource>(self, key: impl Into<K>, value: R) -> Self {
        self.insert_shared(key, Arc::new(value))
    }

    /// Adds an already shared resource under `key` (replacing as [`insert`](Self::insert)
    /// does), so several workflows can use one instance: a connection pool, a client.
    pub fn insert_shared<R: Resource>(mut self, key: impl Into<K>, value: Arc<R>) -> Self {
        let entry = Self::entry(value);
        match self.index.entry(key.into()) {
            MapEntry::Occupied(at) => self.entries[*at.get()] = entry,
            MapEntry::Vacant(at) => {
                at.insert(self.entries.len());
                self.entries.push(entry);
            }
        }
        self
    }

    /// Adds `value` under `key`, or fails with [`CanoError::ResourceDuplicateKey`] if
    /// the key is taken.
    pub fn try_insert<R: Resource>(
        mut self,
        key: impl Into<K>,
        value: R,
    ) -> Result<Self, CanoError> {
        match self.index.entry(key.into()) {
            MapEntry::Occupied(at) => Err(CanoError::resource_duplicate_key(format!(
                "resource key {}is already taken by a `{}`",
                key_name(at.key()).map_or_else(String::new, |k| k + " "),
                self.entries[*at.get()].type_name
            ))
            .with_hint("use a distinct key per resource, or `insert` to replace on purpose")),
            MapEntry::Vacant(at) => {
                at.insert(self.entries.len());
                self.entries.push(Self::entry(Arc::new(value)));
                Ok(self)
            }
        }
    }

    fn entry<R: Resource>(value: Arc<R>) -> Entry {
        Entry {
            value: value.clone(),
            lifecycle: value,
            type_name: short_type_name::<R>(),
        }
    }

    /// The resource of type `T` under `key`.
    ///
    /// Fails with [`CanoError::ResourceNotFound`] (listing the keys there are) when
    /// nothing is there, and with [`CanoError::ResourceTypeMismatch`] naming both
    /// types when the value has another type.
    pub fn get<T, Q>(&self, key: &Q) -> Result<Arc<T>, CanoError>
    where
        T: Send + Sync + 'static,
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(&i) = self.index.get(key) else {
            return Err(self.missing(short_type_name::<T>()));
        };
        let entry = &self.entries[i];
        entry.value.clone().downcast::<T>().map_err(|_| {
            let name = self.name_of(i);
            let key = if name.starts_with('`') {
                String::new()
            } else {
                name + " "
            };
            CanoError::resource_type_mismatch(format!(
                "the resource {key}is a `{}`, not the requested `{}`",
                entry.type_name,
                short_type_name::<T>()
            ))
            .with_hint("ask for the type that was inserted under this key, or use another key")
            .permanent()
        })
    }

    fn missing(&self, wanted: &str) -> CanoError {
        let known: Vec<String> = (0..self.entries.len()).map(|i| self.name_of(i)).collect();
        CanoError::resource_not_found(format!(
            "no resource under the requested key (wanted a `{wanted}`); there are {}: [{}]",
            known.len(),
            known.join(", ")
        ))
        .with_hint("insert it into the Resources passed to Workflow::new")
    }

    /// Entry `i` as messages show it: its key, or its type when the key cannot be
    /// shown (a scan: only on error and health paths).
    fn name_of(&self, i: usize) -> String {
        self.index
            .iter()
            .find(|(_, at)| **at == i)
            .and_then(|(key, _)| key_name(key))
            .unwrap_or_else(|| format!("`{}`", self.entries[i].type_name))
    }

    /// Entry `i` named by key and type: `"db" (`Pool`)`, or `` `Pool` ``.
    fn described(&self, i: usize) -> String {
        let name = self.name_of(i);
        let type_name = self.entries[i].type_name;
        if name.starts_with('`') {
            name
        } else {
            format!("{name} (`{type_name}`)")
        }
    }

    fn ordered_keys(&self) -> impl Iterator<Item = &K> {
        let mut keys: Vec<(&K, usize)> = self.index.iter().map(|(k, i)| (k, *i)).collect();
        keys.sort_unstable_by_key(|(_, i)| *i);
        keys.into_iter().map(|(k, _)| k)
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
        self.ordered_keys()
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
    /// are torn down again (in reverse) and its error is returned, its variant kept and
    /// its message prefixed with the failing key.
    pub async fn setup_all(&self) -> Result<(), CanoError> {
        for (i, entry) in self.entries.iter().enumerate() {
            if let Err(err) = entry.lifecycle.setup().await {
                let err = err.with_context(format_args!(
                    "setup of resource {} failed",
                    self.described(i)
                ));
                // Best effort: the setup error is the one to report.
                let _ = self.teardown_first(i).await;
                return Err(err);
            }
        }
        Ok(())
    }

    /// Tears every resource down, in reverse insertion order; every teardown runs even
    /// if an earlier one fails, and failures are logged (`tracing`, target `cano`), as
    /// in cano 0.13. [`try_teardown_all`](Self::try_teardown_all) returns them instead.
    pub async fn teardown_all(&self) {
        if let Err(err) = self.try_teardown_all().await {
            #[cfg(feature = "tracing")]
            tracing::error!(target: "cano", error = %err, "resource teardown failed");
            #[cfg(not(feature = "tracing"))]
            eprintln!("cano: {err}");
        }
    }

    /// Tears every resource down, in reverse insertion order. Every teardown runs even
    /// if an earlier one fails; the error lists every failure.
    pub async fn try_teardown_all(&self) -> Result<(), CanoError> {
        self.teardown_first(self.entries.len()).await
    }

    async fn teardown_first(&self, count: usize) -> Result<(), CanoError> {
        let mut failures = Vec::new();
        for (i, entry) in self.entries[..count].iter().enumerate().rev() {
            if let Err(err) = entry.lifecycle.teardown().await {
                failures.push(format!("{}: {err}", self.described(i)));
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

    /// Asks every resource for its health, one after another, keyed as inserted.
    pub async fn check_all_health(&self) -> HashMap<K, HealthStatus>
    where
        K: Clone,
    {
        let mut report = HashMap::with_capacity(self.entries.len());
        for (key, &i) in &self.index {
            report.insert(key.clone(), self.entries[i].lifecycle.health().await);
        }
        report
    }

    /// The worst health of all resources (`Healthy` < `Degraded` < `Unhealthy`), with
    /// the first worst resource's own reason; `Healthy` when there are none.
    pub async fn aggregate_health(&self) -> HealthStatus {
        let mut worst = HealthStatus::Healthy;
        for entry in &self.entries {
            let status = entry.lifecycle.health().await;
            if status.severity() > worst.severity() {
                worst = status;
            }
        }
        worst
    }

    /// Like [`aggregate_health`](Self::aggregate_health), but the reason names every
    /// resource at the worst level and why: `"db": pool exhausted; "cache": timeout`.
    pub async fn overall_health(&self) -> HealthStatus {
        let mut degraded = Vec::new();
        let mut unhealthy = Vec::new();
        for (i, entry) in self.entries.iter().enumerate() {
            match entry.lifecycle.health().await {
                HealthStatus::Healthy => {}
                HealthStatus::Degraded(why) => {
                    degraded.push(format!("{}: {why}", self.name_of(i)));
                }
                HealthStatus::Unhealthy(why) => {
                    unhealthy.push(format!("{}: {why}", self.name_of(i)));
                }
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

impl<K: Debug + ResourceKey> Debug for Resources<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.ordered_keys()
                    .zip(&self.entries)
                    .map(|(key, e)| (key, e.type_name)),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A key with none of `Clone`, `Copy` or `Debug`, as a 0.13 program may declare it.
    #[derive(Hash, PartialEq, Eq)]
    enum Key {
        Db,
        Cache,
        Absent,
    }

    struct Logged {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        fail_setup: bool,
        fail_teardown: bool,
    }

    impl Logged {
        fn new(name: &'static str, log: &Arc<Mutex<Vec<String>>>) -> Self {
            Self {
                name,
                log: log.clone(),
                fail_setup: false,
                fail_teardown: false,
            }
        }
    }

    #[async_trait]
    impl Resource for Logged {
        async fn setup(&self) -> Result<(), CanoError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("setup {}", self.name));
            if self.fail_setup {
                return Err(CanoError::generic(format!("{} refused", self.name)));
            }
            Ok(())
        }

        async fn teardown(&self) -> Result<(), CanoError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("teardown {}", self.name));
            if self.fail_teardown {
                return Err(CanoError::generic(format!("{} stuck", self.name)));
            }
            Ok(())
        }

        async fn health(&self) -> HealthStatus {
            match self.name {
                "slow" => HealthStatus::Degraded("slow replies".into()),
                "down" => HealthStatus::Unhealthy("no route".into()),
                "gone" => HealthStatus::Unhealthy("dns".into()),
                _ => HealthStatus::Healthy,
            }
        }
    }

    #[derive(Debug)]
    struct Plain(u32);
    impl Resource for Plain {}

    #[test]
    fn a_key_needs_neither_clone_nor_debug_and_errors_keep_their_variant() {
        let res = Resources::<Key>::with_capacity(2)
            .insert(Key::Db, Plain(1))
            .insert(Key::Cache, Plain(2));
        assert_eq!(res.get::<Plain, _>(&Key::Cache).unwrap().0, 2);

        let missing = res.get::<Plain, _>(&Key::Absent).unwrap_err();
        assert_eq!(missing.category(), "resource_not_found");
        assert!(
            missing
                .message()
                .contains("there are 2: [`Plain`, `Plain`]"),
            "{missing}"
        );

        let mismatch = res.get::<String, _>(&Key::Db).unwrap_err();
        assert!(
            matches!(mismatch, CanoError::ResourceTypeMismatch(ref m) if m.contains("`Plain`, not the requested `String`"))
        );

        let duplicate = res.try_insert(Key::Db, Plain(3)).err().unwrap();
        assert!(
            matches!(duplicate, CanoError::ResourceDuplicateKey(ref m) if m.contains("already taken by a `Plain`"))
        );
    }

    #[test]
    fn string_keys_are_named_and_insert_replaces_in_place() {
        let res: Resources = Resources::new()
            .insert("first", Plain(1))
            .insert("second", Plain(2))
            .insert("first", Plain(10));
        assert_eq!(res.len(), 2);
        assert_eq!(res.get::<Plain, str>("first").unwrap().0, 10);
        let keys: Vec<&str> = res.keys().map(|k| k.as_ref()).collect();
        assert_eq!(keys, ["first", "second"]);
        let err = res.get::<Plain, str>("thrid").unwrap_err();
        assert!(err.message().contains(r#"["first", "second"]"#), "{err}");
    }

    #[tokio::test]
    async fn a_failed_setup_undoes_what_was_set_up_and_names_the_key() {
        let log = Arc::default();
        let mut broken = Logged::new("b", &log);
        broken.fail_setup = true;
        let res: Resources = Resources::new()
            .insert("a", Logged::new("a", &log))
            .insert("b", broken)
            .insert("c", Logged::new("c", &log));
        let err = res.setup_all().await.unwrap_err();
        assert!(
            matches!(err, CanoError::Generic(ref m)
            if m.as_ref() == r#"setup of resource "b" (`Logged`) failed: b refused"#),
            "{err}"
        );
        assert_eq!(*log.lock().unwrap(), ["setup a", "setup b", "teardown a"]);
    }

    #[tokio::test]
    async fn teardown_runs_every_resource_backwards_even_past_a_failure() {
        let log = Arc::default();
        let mut stuck = Logged::new("b", &log);
        stuck.fail_teardown = true;
        let res: Resources = Resources::new()
            .insert("a", Logged::new("a", &log))
            .insert("b", stuck)
            .insert("c", Logged::new("c", &log));
        let err = res.try_teardown_all().await.unwrap_err();
        assert!(
            err.message().contains(r#""b" (`Logged`): Error: b stuck"#),
            "{err}"
        );
        assert_eq!(
            *log.lock().unwrap(),
            ["teardown c", "teardown b", "teardown a"]
        );
        log.lock().unwrap().clear();
        // The 0.13 form reports nothing and still runs them all.
        let () = res.teardown_all().await;
        assert_eq!(log.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn health_reports_by_key_worst_first_and_all_reasons() {
        let log = Arc::default();
        let res: Resources = Resources::new()
            .insert("ok", Logged::new("ok", &log))
            .insert("slow", Logged::new("slow", &log))
            .insert("down", Logged::new("down", &log))
            .insert("gone", Logged::new("gone", &log));
        let report = res.check_all_health().await;
        assert_eq!(report.len(), 4);
        assert!(report[&Cow::Borrowed("ok")].is_healthy());
        assert_eq!(
            report[&Cow::Borrowed("slow")],
            HealthStatus::Degraded("slow replies".into())
        );
        assert_eq!(
            res.aggregate_health().await,
            HealthStatus::Unhealthy("no route".into())
        );
        assert_eq!(
            res.overall_health().await,
            HealthStatus::Unhealthy(r#""down": no route; "gone": dns"#.into())
        );
        assert!(
            Resources::<Key>::empty()
                .aggregate_health()
                .await
                .is_healthy()
        );
    }
}
