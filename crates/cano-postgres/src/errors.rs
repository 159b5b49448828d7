//! What a PostgreSQL driver error means for cano: which failures are transient (worth
//! retrying) and the [`CanoError`] that names the place and what was being done.

use cano_core::CanoError;

/// Maps a driver error: transient failures (see [`is_transient`]) stay retryable,
/// everything else is permanent.
pub(crate) fn pg_error(place: &str, doing: &str, e: tokio_postgres::Error) -> CanoError {
    let transient = is_transient(&e);
    // The server's own words and SQLSTATE, which the driver's `Display` leaves out.
    let said = match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => e.to_string(),
    };
    let error = CanoError::store(format!("PostgreSQL at {place} failed while {doing}: {said}"))
        .with_hint(if transient {
            "a transient failure (a lost connection, a server restart, a deadlock or serialization conflict, a statement kept from before a schema change); the call can be retried"
        } else {
            "see the database error; check the schema and the server's log"
        });
    let error = error.with_source(e);
    if transient { error } else { error.permanent() }
}

/// Whether the server refused a statement the pool kept prepared because the schema
/// changed under it (a column's type, during a rolling upgrade's migration):
/// prepared again, it runs.
pub(crate) fn is_stale_statement(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        db.code().code() == "0A000"
            && db
                .message()
                .contains("cached plan must not change result type")
    })
}

/// Whether trying the same statement again can succeed: the connection went away
/// (closed, reset, the backend terminated or the server shutting down or starting),
/// the server had no connection to spare, the statement lost a deadlock or a
/// serialization conflict, or it was kept prepared from before a schema change.
/// Anything the server refused for what the statement says is permanent.
pub(crate) fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() || is_stale_statement(e) {
        return true;
    }
    match e.code() {
        Some(code) => {
            let code = code.code();
            // Class 08: connection exceptions.
            code.starts_with("08")
                || matches!(
                    code,
                    // serialization_failure, deadlock_detected
                    "40001" | "40P01"
                    // admin_shutdown (pg_terminate_backend), crash_shutdown, cannot_connect_now
                    | "57P01" | "57P02" | "57P03"
                    // too_many_connections
                    | "53300"
                )
        }
        // No answer from the server: transient if the connection failed (I/O), not if
        // the statement could not even be built (a parameter of the wrong type).
        None => std::error::Error::source(e).is_some_and(|cause| cause.is::<std::io::Error>()),
    }
}
