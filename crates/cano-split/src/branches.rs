//! [`Branches`]: the tasks of a split, of one type or of many.

use std::sync::Arc;

use cano_core::{DefaultKey, RegisteredTask, Task};

/// The tasks a split runs in parallel. Each branch keeps its own `TaskConfig` (retries,
/// attempt timeout), read once here.
///
/// A `Vec` or an array of one task type converts on its own (see [`IntoBranches`]);
/// build a `Branches` to mix task types:
///
/// ```
/// use std::sync::Arc;
/// use cano_core::{CanoError, Task, TaskResult};
/// use cano_split::Branches;
///
/// #[derive(Debug, Clone, PartialEq, Eq, Hash)]
/// enum Step { Fan, Join }
/// struct Cache;
/// struct Database;
/// #[async_trait::async_trait]
/// impl Task<Step> for Cache {
///     async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> { Ok(TaskResult::Single(Step::Join)) }
/// }
/// #[async_trait::async_trait]
/// impl Task<Step> for Database {
///     async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> { Ok(TaskResult::Single(Step::Join)) }
/// }
///
/// let branches = Branches::new().with(Cache).with(Database);
/// assert_eq!(branches.len(), 2);
///
/// // Tasks already behind `Arc<dyn Task>` or `Box<dyn Task>` convert too.
/// let shared: Vec<Arc<dyn Task<Step>>> = vec![Arc::new(Cache), Arc::new(Database)];
/// assert_eq!(Branches::from(shared).len(), 2);
/// let boxed: Vec<Box<dyn Task<Step>>> = vec![Box::new(Cache), Box::new(Database)];
/// assert_eq!(Branches::from(boxed).names().collect::<Vec<_>>(), ["Cache", "Database"]);
/// ```
pub struct Branches<S, K = DefaultKey> {
    pub(crate) tasks: Vec<RegisteredTask<S, K>>,
}

impl<S, K> Branches<S, K> {
    /// No branches yet.
    pub fn new() -> Self {
        Self { tasks: Vec::new() }
    }

    /// Adds `task` as the next branch.
    pub fn with<T: Task<S, K> + 'static>(mut self, task: T) -> Self {
        self.push(task);
        self
    }

    /// Adds `task` as the next branch.
    pub fn push<T: Task<S, K> + 'static>(&mut self, task: T) {
        self.tasks.push(RegisteredTask::new(task));
    }

    /// Adds a shared task as the next branch.
    pub fn push_shared(&mut self, task: Arc<dyn Task<S, K>>)
    where
        S: 'static,
        K: 'static,
    {
        self.tasks.push(RegisteredTask::from_arc(task));
    }

    /// How many branches there are.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The branches' task names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tasks.iter().map(|t| t.name().as_ref())
    }
}

impl<S, K> Default for Branches<S, K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: 'static, K: 'static> From<Vec<Arc<dyn Task<S, K>>>> for Branches<S, K> {
    fn from(tasks: Vec<Arc<dyn Task<S, K>>>) -> Self {
        Self {
            tasks: tasks.into_iter().map(RegisteredTask::from_arc).collect(),
        }
    }
}

impl<S: 'static, K: 'static> From<Vec<Box<dyn Task<S, K>>>> for Branches<S, K> {
    fn from(tasks: Vec<Box<dyn Task<S, K>>>) -> Self {
        Self {
            tasks: tasks
                .into_iter()
                .map(|task| RegisteredTask::from_arc(Arc::from(task)))
                .collect(),
        }
    }
}

impl<S, K> std::fmt::Debug for Branches<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// What `register_split` accepts as its tasks: a `Vec` or array of one task type, or
/// [`Branches`] for mixed types.
pub trait IntoBranches<S, K = DefaultKey> {
    /// Converts into branches.
    fn into_branches(self) -> Branches<S, K>;
}

impl<S, K> IntoBranches<S, K> for Branches<S, K> {
    fn into_branches(self) -> Branches<S, K> {
        self
    }
}

impl<S, K, T: Task<S, K> + 'static> IntoBranches<S, K> for Vec<T> {
    fn into_branches(self) -> Branches<S, K> {
        Branches {
            tasks: self.into_iter().map(RegisteredTask::new).collect(),
        }
    }
}

impl<S, K, T: Task<S, K> + 'static, const N: usize> IntoBranches<S, K> for [T; N] {
    fn into_branches(self) -> Branches<S, K> {
        Branches {
            tasks: self.into_iter().map(RegisteredTask::new).collect(),
        }
    }
}
