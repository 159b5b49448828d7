//! Small pieces the task models share.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use cano_core::CanoError;
use cano_core::checkpoint::{Bincode, Codec};
use futures::FutureExt;
use serde::de::DeserializeOwned;

/// A user future with a panic turned into an error.
pub(crate) async fn caught<T>(
    future: impl Future<Output = Result<T, CanoError>>,
) -> Result<T, CanoError> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(CanoError::from_panic(panic)))
}

/// Decodes saved progress; a failure means the type changed since the run was written.
pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    task: &str,
    what: &str,
) -> Result<T, CanoError> {
    Bincode::decode(bytes).map_err(|e| {
        CanoError::store(format!(
            "the saved {what} of task `{task}` does not decode as a `{}`: {}",
            std::any::type_name::<T>(),
            e.message()
        ))
        .with_source(e)
        .with_hint(
            "the type changed since the run was written; resume with the build that wrote it",
        )
        .permanent()
    })
}
