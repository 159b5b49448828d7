//! Signals on PostgreSQL: each run's inbox in `cano_signals`, its idempotency keys in
//! `cano_signal_keys`. A signal to a run the queue holds parked wakes it: the send
//! makes it due and tells the workers (`NOTIFY`), so one claims it at once.

use cano_core::checkpoint::{
    CheckpointRow, INBOX_LIMIT, Sent, Signal, SignalStore, check_signal, signal_limit_error,
    signal_taken_error,
};
use cano_core::{CanoError, RunId};

use crate::channels::ready_channel;
use crate::db::{retry_transient, run_key, run_of};
use crate::store::{
    APPEND_ATTEMPTS, FencedStore, PostgresCheckpointStore, decode_row, encode_row, status_code,
};

fn signal_of(row: &tokio_postgres::Row) -> Signal {
    Signal {
        id: row.get::<_, i64>(0) as u64,
        run: run_of(row.get(1)),
        name: row.get(2),
        payload: row.get(3),
        key: row.get(4),
        sent_at_ms: row.get::<_, i64>(5) as u64,
    }
}

impl PostgresCheckpointStore {
    /// Appends `row` fenced by `fence` and takes signal `signal`, in one transaction.
    pub(crate) async fn append_taking_as(
        &self,
        row: CheckpointRow,
        signal: u64,
        fence: i64,
    ) -> Result<(), CanoError> {
        let body = encode_row(&row)?;
        let db = self.db();
        let (sql, append) = (&self.signal_sql(), self.append_sql());
        let run = row.run;
        let seq = row.seq;
        retry_transient(APPEND_ATTEMPTS, || async {
            let doing = format!("writing row {seq} of run {run} and taking signal {signal}");
            let mut client = db.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(|e| db.error(&doing, e))?;
            let take = db.prepared(&tx, &sql.take, &doing).await?;
            let taken = tx
                .execute(&take, &[&run_key(run), &(signal as i64)])
                .await
                .map_err(|e| db.error(&doing, e))?;
            if taken == 0 {
                return Err(signal_taken_error(run, signal));
            }
            let append = db.prepared(&tx, append, &doing).await?;
            let written = tx
                .query(
                    &append,
                    &[
                        &vec![run_key(run)],
                        &vec![seq as i64],
                        &vec![fence],
                        &vec![body.clone()],
                        &vec![row.workflow.as_str()],
                        &vec![row.version as i32],
                        &vec![status_code(cano_core::RunStatus::after(row.kind))],
                        &vec![row.label.as_str()],
                        &vec![row.written_at_ms as i64],
                        &vec![row.message.as_str()],
                    ],
                )
                .await
                .map_err(|e| db.error(&doing, e))?;
            if written.is_empty() {
                return Err(CanoError::store(format!(
                    "row {seq} of run {run} was refused: the log has moved on, or another claim holds the run"
                ))
                .with_hint("drive a run from one place only; this one stops and the other goes on")
                .permanent());
            }
            tx.commit().await.map_err(|e| db.error(&doing, e))
        })
        .await
    }
}

#[async_trait::async_trait]
impl SignalStore for PostgresCheckpointStore {
    async fn send(
        &self,
        run: RunId,
        name: &str,
        payload: Vec<u8>,
        key: Option<&str>,
    ) -> Result<Sent, CanoError> {
        let db = self.db();
        let sql = self.signal_sql();
        let ready = ready_channel(&db.schema);
        retry_transient(APPEND_ATTEMPTS, || async {
            let doing = format!("sending signal {name:?} to run {run}");
            let err = |e| db.error(&doing, e);
            let mut client = db.client().await?;
            let tx = client.transaction().await.map_err(err)?;
            let lock_run = db.prepared(&tx, &sql.lock_run, &doing).await?;
            let queued = tx
                .query_opt(&lock_run, &[&run_key(run)])
                .await
                .map_err(err)?;
            let last_row = db.prepared(&tx, &sql.last_row, &doing).await?;
            let last = match tx
                .query_opt(&last_row, &[&run_key(run)])
                .await
                .map_err(err)?
            {
                Some(row) => Some(decode_row(row.get(0))?),
                None => None,
            };
            let waiting = check_signal(run, last.as_ref(), name)?;
            // The queue's word is final: a run it finished or failed takes no signal.
            if let Some(status) = queued
                .as_ref()
                .map(|q| q.get::<_, String>(0))
                .filter(|s| s == "finished" || s == "failed")
            {
                return Err(CanoError::store(format!(
                    "signal {name:?} cannot be sent to run {run}: the queue has it {status}"
                ))
                .with_hint("a run that is over reads no signal; enqueue a new run instead")
                .permanent());
            }
            if let Some(key) = key
                && let Some(first) = tx
                    .query_opt(
                        &db.prepared(&tx, &sql.key, &doing).await?,
                        &[&run_key(run), &key],
                    )
                    .await
                    .map_err(err)?
            {
                return Ok(Sent::Duplicate {
                    id: first.get::<_, i64>(0) as u64,
                });
            }
            let count = db.prepared(&tx, &sql.count, &doing).await?;
            let held: i64 = tx
                .query_one(&count, &[&run_key(run), &(INBOX_LIMIT as i64)])
                .await
                .map_err(err)?
                .get(0);
            if held >= INBOX_LIMIT as i64 {
                return Err(signal_limit_error(run, name));
            }
            let insert = db.prepared(&tx, &sql.insert, &doing).await?;
            let id: i64 = tx
                .query_one(&insert, &[&run_key(run), &name, &payload, &key])
                .await
                .map_err(err)?
                .get(0);
            if let Some(key) = key {
                let insert_key = db.prepared(&tx, &sql.insert_key, &doing).await?;
                tx.execute(&insert_key, &[&run_key(run), &key, &id])
                    .await
                    .map_err(err)?;
            }
            // A run the queue holds parked for this name is due now.
            let parked_for_it = queued.as_ref().is_some_and(|q| {
                q.get::<_, &str>(0) == "parked"
                    && q.get::<_, Option<Vec<String>>>(1)
                        .is_some_and(|names| names.iter().any(|n| n == name))
            });
            if parked_for_it {
                let wake = db.prepared(&tx, &sql.wake, &doing).await?;
                tx.query(&wake, &[&run_key(run), &ready])
                    .await
                    .map_err(err)?;
            }
            tx.commit().await.map_err(err)?;
            Ok(if waiting {
                Sent::Waiting { id: id as u64 }
            } else {
                Sent::Buffered { id: id as u64 }
            })
        })
        .await
    }

    async fn first_for(&self, run: RunId, names: &[String]) -> Result<Option<Signal>, CanoError> {
        let db = self.db();
        let sql = self.signal_sql();
        let names = names.to_vec();
        let doing = format!("reading the inbox of run {run}");
        let row = db
            .query_opt(
                APPEND_ATTEMPTS,
                &doing,
                &sql.first_for,
                &[&run_key(run), &names],
            )
            .await?;
        Ok(row.as_ref().map(signal_of))
    }

    async fn inbox(&self, run: RunId, limit: usize) -> Result<Vec<Signal>, CanoError> {
        let db = self.db();
        let sql = self.signal_sql();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let doing = format!("reading the inbox of run {run}");
        let rows = db
            .query(
                APPEND_ATTEMPTS,
                &doing,
                &sql.inbox,
                &[&run_key(run), &limit],
            )
            .await?;
        Ok(rows.iter().map(signal_of).collect())
    }

    async fn append_taking(&self, row: CheckpointRow, signal: u64) -> Result<(), CanoError> {
        self.append_taking_as(row, signal, -1).await
    }

    async fn discard(&self, run: RunId, signal: u64) -> Result<bool, CanoError> {
        let db = self.db();
        let sql = self.signal_sql();
        let doing = format!("discarding signal {signal} of run {run}");
        let discarded = db
            .execute(
                APPEND_ATTEMPTS,
                &doing,
                &sql.discard,
                &[&run_key(run), &(signal as i64)],
            )
            .await?;
        Ok(discarded > 0)
    }
}

/// A claim's view: its run's `Received` rows are fenced by the claim's epoch.
#[async_trait::async_trait]
impl SignalStore for FencedStore {
    async fn send(
        &self,
        run: RunId,
        name: &str,
        payload: Vec<u8>,
        key: Option<&str>,
    ) -> Result<Sent, CanoError> {
        self.store().send(run, name, payload, key).await
    }
    async fn first_for(&self, run: RunId, names: &[String]) -> Result<Option<Signal>, CanoError> {
        self.store().first_for(run, names).await
    }
    async fn inbox(&self, run: RunId, limit: usize) -> Result<Vec<Signal>, CanoError> {
        self.store().inbox(run, limit).await
    }
    async fn append_taking(&self, row: CheckpointRow, signal: u64) -> Result<(), CanoError> {
        let fence = self.fence_of(row.run);
        self.store().append_taking_as(row, signal, fence).await
    }
    async fn discard(&self, run: RunId, signal: u64) -> Result<bool, CanoError> {
        self.store().discard(run, signal).await
    }
}
