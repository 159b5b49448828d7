//! The statements of the signal inbox (see `signals`), built once per store.

/// The statements of the inbox, built once per store.
pub(crate) struct SignalSql {
    pub(crate) lock_run: String,
    pub(crate) last_row: String,
    pub(crate) key: String,
    pub(crate) count: String,
    pub(crate) insert: String,
    pub(crate) insert_key: String,
    pub(crate) wake: String,
    pub(crate) first_for: String,
    pub(crate) inbox: String,
    pub(crate) discard: String,
    pub(crate) take: String,
}

impl SignalSql {
    pub(crate) fn new(db: &crate::db::Db) -> Self {
        let (runs, rows, signals, keys) = (
            db.table("cano_runs"),
            db.table("cano_rows"),
            db.table("cano_signals"),
            db.table("cano_signal_keys"),
        );
        let columns = "id, run_id, name, payload, key, sent_at_ms";
        Self {
            // Taken first, so a worker parking the run waits for this send (and then
            // sees its signal), or has parked it already (and this send wakes it).
            lock_run: format!(
                "SELECT status, waits_for, workflow FROM {runs} WHERE run_id = $1 FOR UPDATE"
            ),
            last_row: format!(
                "SELECT body FROM {rows} WHERE run_id = $1 ORDER BY seq DESC LIMIT 1"
            ),
            key: format!("SELECT id FROM {keys} WHERE run_id = $1 AND key = $2"),
            count: format!(
                "SELECT count(*) FROM (SELECT 1 FROM {signals} WHERE run_id = $1 LIMIT $2) c"
            ),
            insert: format!(
                "INSERT INTO {signals} (run_id, name, payload, key, sent_at_ms)
                 VALUES ($1, $2, $3, $4, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                 RETURNING id"
            ),
            insert_key: format!("INSERT INTO {keys} (run_id, key, id) VALUES ($1, $2, $3)"),
            wake: format!(
                "WITH due AS (UPDATE {runs} SET wake_at = clock_timestamp()
                              WHERE run_id = $1 AND status = 'parked' RETURNING workflow)
                 SELECT pg_notify($2, workflow) FROM due"
            ),
            first_for: format!(
                "SELECT {columns} FROM {signals} WHERE run_id = $1 AND name = ANY($2) ORDER BY id LIMIT 1"
            ),
            inbox: format!(
                "SELECT {columns} FROM {signals} WHERE run_id = $1 ORDER BY id LIMIT $2"
            ),
            discard: format!("DELETE FROM {signals} WHERE run_id = $1 AND id = $2"),
            take: format!("DELETE FROM {signals} WHERE run_id = $1 AND id = $2"),
        }
    }
}
