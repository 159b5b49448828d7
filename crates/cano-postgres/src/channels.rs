//! The LISTEN/NOTIFY channels of a schema: new or due runs (workers wake to claim),
//! runs that are over (waiters wake), and cancel requests (the driving worker hears).

/// The channel a worker listens on for new runs in `schema`.
pub(crate) fn ready_channel(schema: &str) -> String {
    format!("cano_ready_{schema}")
}

/// The channel on which finished and failed runs in `schema` are announced.
pub(crate) fn done_channel(schema: &str) -> String {
    format!("cano_done_{schema}")
}

/// The channel on which workers hear that a run they drive is asked to cancel.
pub(crate) fn cancel_channel(schema: &str) -> String {
    format!("cano_cancel_{schema}")
}
