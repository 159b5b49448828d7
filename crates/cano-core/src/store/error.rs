//! [`StoreError`]: how a [`MemoryStore`](super::MemoryStore) call fails, in cano 0.13's
//! five kinds, each with a message that names the key and the types involved.

use crate::error::CanoError;

/// What a [`MemoryStore`](super::MemoryStore) call returns.
pub type StoreResult<T> = Result<T, StoreError>;

/// Why a store call failed. Each variant carries the full message; `?` turns it into
/// [`CanoError::Store`] inside a task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Nothing is stored under the key.
    #[error("Key not found: {0}")]
    KeyNotFound(String),
    /// The value under the key has another type than the one asked for.
    #[error("Type mismatch: {0}")]
    TypeMismatch(String),
    /// A lock could not be taken (kept for 0.13 programs that match on it; the
    /// in-memory store recovers poisoned locks and never returns it).
    #[error("Lock error: {0}")]
    LockError(String),
    /// An append found something other than a `Vec` of the item's type.
    #[error("Append type mismatch: {0}")]
    AppendTypeMismatch(String),
    /// Any other failure of a store.
    #[error("Store error: {0}")]
    Generic(String),
}

impl StoreError {
    /// A [`StoreError::KeyNotFound`] for `key`.
    pub fn key_not_found(key: impl Into<String>) -> Self {
        Self::KeyNotFound(format!("Key '{}' not found in store", key.into()))
    }

    /// A [`StoreError::TypeMismatch`] with this message.
    pub fn type_mismatch(message: impl Into<String>) -> Self {
        Self::TypeMismatch(message.into())
    }

    /// A [`StoreError::LockError`] with this message.
    pub fn lock_error(message: impl Into<String>) -> Self {
        Self::LockError(message.into())
    }

    /// A [`StoreError::AppendTypeMismatch`] for `key`.
    pub fn append_type_mismatch(key: impl Into<String>) -> Self {
        Self::AppendTypeMismatch(format!(
            "Cannot append to key '{}': the value there is not a Vec of the item's type",
            key.into()
        ))
    }

    /// A [`StoreError::Generic`] with this message.
    pub fn generic(message: impl Into<String>) -> Self {
        Self::Generic(message.into())
    }

    /// The message, without the kind's prefix.
    pub fn message(&self) -> &str {
        match self {
            Self::KeyNotFound(m)
            | Self::TypeMismatch(m)
            | Self::LockError(m)
            | Self::AppendTypeMismatch(m)
            | Self::Generic(m) => m,
        }
    }
}

impl From<StoreError> for CanoError {
    /// A [`CanoError::Store`] with the error's text; a type mismatch is permanent
    /// (trying again reads the same value), a missing key is not (an earlier state
    /// may not have written it yet).
    fn from(error: StoreError) -> Self {
        let converted = CanoError::store(error.to_string());
        match error {
            StoreError::KeyNotFound(_) => {
                converted.with_hint("put it in an earlier state, or check the key's spelling")
            }
            StoreError::TypeMismatch(_) | StoreError::AppendTypeMismatch(_) => converted
                .with_hint("read it with the type it was written with, or use another key")
                .permanent(),
            StoreError::LockError(_) | StoreError::Generic(_) => converted,
        }
    }
}
