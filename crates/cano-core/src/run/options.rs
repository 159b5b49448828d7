//! [`RunOptions`]: how one run is started (its id, its cancellation token).

use super::cancel::CancellationToken;
use crate::run_id::RunId;

/// Options for one run: its id and cancellation token.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub(crate) run_id: Option<RunId>,
    pub(crate) cancel: Option<CancellationToken>,
}

impl RunOptions {
    /// Default options: a fresh run id, no cancellation token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `id` as the run id.
    pub fn with_run_id(mut self, id: RunId) -> Self {
        self.run_id = Some(id);
        self
    }

    /// Cancels the run when `token` is cancelled.
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// The run id chosen, if any.
    pub fn run_id(&self) -> Option<RunId> {
        self.run_id
    }

    /// The cancellation token given, if any.
    #[inline]
    pub fn cancellation_token(&self) -> Option<&CancellationToken> {
        self.cancel.as_ref()
    }
}
