//! A worker's finished runs, recorded in batches: one statement ends every claim
//! whose run finished while the previous statements were in flight, as checkpoint
//! rows share append statements (and paced the same way, see [`crate::pacing`]).
//! Recording each finish on its own was one statement per run, about half of what a
//! one-state run cost the server, and the statements were small enough that running
//! them cost less than starting them.

use std::collections::HashSet;
use std::sync::Arc;

use cano_core::{CanoError, RunId};
use tokio::sync::{mpsc, oneshot};

use crate::db::{Db, run_key};
use crate::pacing::{InFlight, MAX_BATCH, MAX_BATCH_BYTES, Pacer};

/// Records finishes for one worker; cheap to share, the batching runs in a task of
/// its own that ends when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct Finishes {
    sender: mpsc::UnboundedSender<Finish>,
}

/// One claim's finish, waiting for its batch.
struct Finish {
    run: RunId,
    epoch: i64,
    state: Vec<u8>,
    label: String,
    /// Whether idle workers are told of the slot of a named queue it frees.
    tell: bool,
    reply: oneshot::Sender<Result<bool, CanoError>>,
}

/// What the batching task needs to send a statement.
struct Recorder {
    db: Arc<Db>,
    /// The statement (`WorkerSql::finish`): $1 runs, $2 epochs, $3 final states,
    /// $4 labels, $5 keep rows, $6 tell; returns the runs it ended.
    sql: String,
    keep_rows: bool,
    attempts: u32,
}

impl Finishes {
    /// Starts recording finishes with `sql` on `db`'s pool, each statement tried up
    /// to `attempts` times while the database fails for a transient reason.
    pub(crate) fn start(db: Arc<Db>, sql: String, keep_rows: bool, attempts: u32) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let pacer = Pacer::new(db.pool.status().max_size);
        let recorder = Arc::new(Recorder {
            db,
            sql,
            keep_rows,
            attempts,
        });
        tokio::spawn(recorder.run(receiver, pacer));
        Self { sender }
    }

    /// Ends claim `epoch` of `run` as finished with `state` and `label`: whether the
    /// claim still held the run (false: its lease moved on, nothing was written).
    pub(crate) async fn finish(
        &self,
        run: RunId,
        epoch: i64,
        state: Vec<u8>,
        label: String,
        tell: bool,
    ) -> Result<bool, CanoError> {
        let (reply, answer) = oneshot::channel();
        let finish = Finish {
            run,
            epoch,
            state,
            label,
            tell,
            reply,
        };
        let gone = || {
            CanoError::store(format!(
                "recording that run {run} finished: the worker's recorder has stopped"
            ))
            .with_hint("the runtime is shutting down; the run is resumed from its checkpoint once its lease expires")
        };
        self.sender.send(finish).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

impl Recorder {
    /// The batching loop: a batch goes when the pacer lets it, with every finish that
    /// arrived meanwhile (up to [`MAX_BATCH`] runs and [`MAX_BATCH_BYTES`] of state).
    async fn run(self: Arc<Self>, mut receiver: mpsc::UnboundedReceiver<Finish>, mut pacer: Pacer) {
        let mut held: Option<Finish> = None;
        loop {
            let first = match held.take() {
                Some(f) => f,
                None => match receiver.recv().await {
                    Some(f) => f,
                    None => return,
                },
            };
            let in_flight = pacer.next().await;
            let mut bytes = first.state.len();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                let Ok(next) = receiver.try_recv() else { break };
                if bytes + next.state.len() > MAX_BATCH_BYTES {
                    held = Some(next);
                    break;
                }
                bytes += next.state.len();
                batch.push(next);
            }
            tokio::spawn(self.clone().record(batch, in_flight));
        }
    }

    async fn record(self: Arc<Self>, batch: Vec<Finish>, in_flight: InFlight) {
        self.write(batch).await;
        drop(in_flight);
    }

    /// Ends `batch`'s claims in one statement and answers each. A statement the
    /// server refuses as a whole (one final state it cannot take) is split, so that
    /// only that run sees the error.
    async fn write(&self, batch: Vec<Finish>) {
        match self.send(&batch).await {
            Ok(ended) => {
                for f in batch {
                    let _ = f.reply.send(Ok(ended.contains(&run_key(f.run))));
                }
            }
            Err(e) if e.is_permanent() && batch.len() > 1 => {
                for f in batch {
                    Box::pin(self.write(vec![f])).await;
                }
            }
            Err(e) => {
                for f in batch {
                    let _ = f.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Sends the statement for `batch`: the runs it ended.
    async fn send(&self, batch: &[Finish]) -> Result<HashSet<i64>, CanoError> {
        let runs: Vec<i64> = batch.iter().map(|f| run_key(f.run)).collect();
        let epochs: Vec<i64> = batch.iter().map(|f| f.epoch).collect();
        let states: Vec<&[u8]> = batch.iter().map(|f| f.state.as_slice()).collect();
        let labels: Vec<&str> = batch.iter().map(|f| f.label.as_str()).collect();
        let tell: Vec<bool> = batch.iter().map(|f| f.tell).collect();
        let doing = match batch {
            [one] => format!("recording that run {} finished", one.run),
            [first, ..] => format!(
                "recording that {} runs finished (run {} and others)",
                batch.len(),
                first.run
            ),
            [] => return Ok(HashSet::new()),
        };
        let row = self
            .db
            .query_one(
                self.attempts,
                &doing,
                &self.sql,
                &[&runs, &epochs, &states, &labels, &self.keep_rows, &tell],
            )
            .await?;
        Ok(row.get::<_, Vec<i64>>(0).into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PgOptions, PostgresCheckpointStore};

    /// A run's id, status, final state and label, as the queue holds them.
    type RunRow = (i64, String, Option<Vec<u8>>, Option<String>);

    /// Beside the code: it hands the recorder a batch of its choosing, which only the
    /// crate can.
    #[tokio::test]
    async fn a_batch_ends_only_the_claims_that_hold_their_runs_and_one_bad_finish_fails_alone() {
        let schema = "unit_batched_finishes";
        let Some((url, admin)) = crate::db::test_server(schema).await else {
            return;
        };
        let store = PostgresCheckpointStore::connect(PgOptions::new(&url).with_schema(schema))
            .await
            .unwrap();
        // Four runs held at epoch 3 under a live lease, one of them with a claim
        // record to close; and one whose lease has expired.
        let runs = store.db().table("cano_runs");
        admin
            .batch_execute(&format!(
                "INSERT INTO {runs} (run_id, workflow, initial_state, initial_label, status, epoch, claims, worker, lease_until)
                 SELECT id, 'w', '\\x00', 'Start', 'running', 3, 1, 'unit', now() + interval '1 hour'
                 FROM generate_series(1, 4) id;
                 INSERT INTO {runs} (run_id, workflow, initial_state, initial_label, status, epoch, claims, worker, lease_until)
                 VALUES (5, 'w', '\\x00', 'Start', 'running', 3, 1, 'unit', now() - interval '1 second');
                 INSERT INTO {claims} (run_id, epoch, workflow, partition_key, worker, claimed_at)
                 VALUES (1, 3, 'w', '', 'unit', now());",
                claims = store.db().table("cano_claims"),
            ))
            .await
            .unwrap();
        let sql = crate::worker_sql::WorkerSql::new(&store).finish;
        let recorder = Recorder {
            db: store.db().clone(),
            sql,
            keep_rows: false,
            attempts: 2,
        };
        let finish = |run: u64, epoch: i64, label: &str| {
            let (reply, answer) = oneshot::channel();
            let finish = Finish {
                run: crate::db::run_of(run as i64),
                epoch,
                state: vec![run as u8, 0xff],
                label: label.to_owned(),
                tell: false,
                reply,
            };
            (finish, answer)
        };
        let (held, held_answer) = finish(1, 3, "Done");
        let (also_held, also_answer) = finish(2, 3, "Done");
        let (stale_epoch, stale_answer) = finish(3, 2, "Done");
        // PostgreSQL text cannot hold a NUL: the server refuses the whole statement.
        let (refused, refused_answer) = finish(4, 3, "Do\0ne");
        let (expired, expired_answer) = finish(5, 3, "Done");
        recorder
            .write(vec![held, stale_epoch, refused, also_held, expired])
            .await;

        assert_eq!(held_answer.await.unwrap(), Ok(true));
        assert_eq!(also_answer.await.unwrap(), Ok(true));
        assert_eq!(
            stale_answer.await.unwrap(),
            Ok(false),
            "an old epoch ends nothing"
        );
        assert_eq!(
            expired_answer.await.unwrap(),
            Ok(false),
            "an expired lease ends nothing"
        );
        let error = refused_answer.await.unwrap().unwrap_err();
        assert!(error.is_permanent(), "{error}");
        let named = format!("run {} finished", crate::db::run_of(4));
        assert!(error.to_string().contains(&named), "{error}");

        let rows = admin
            .query(
                &format!(
                    "SELECT run_id, status, final_state, final_label FROM {runs} ORDER BY run_id"
                ),
                &[],
            )
            .await
            .unwrap();
        let seen: Vec<RunRow> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        let done = |id: i64| {
            (
                id,
                "finished".to_owned(),
                Some(vec![id as u8, 0xff]),
                Some("Done".to_owned()),
            )
        };
        let untouched = |id: i64| (id, "running".to_owned(), None, None);
        assert_eq!(
            seen,
            vec![done(1), done(2), untouched(3), untouched(4), untouched(5)],
            "each finish is recorded with its own state, and the refused one leaves its run as it was"
        );
        let closed: Option<String> = admin
            .query_one(
                &format!(
                    "SELECT outcome FROM {} WHERE run_id = 1 AND epoch = 3",
                    store.db().table("cano_claims")
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(closed.as_deref(), Some("finished"));

        // The same finishes sent again, as a try whose reply was lost is retried: the
        // runs this very claim finished count as ended (with the state they were
        // given, not this one); another epoch of a finished run does not.
        let (again, again_answer) = finish(1, 3, "Again");
        let (other_epoch, other_answer) = finish(2, 2, "Again");
        let (stale_again, stale_again_answer) = finish(3, 2, "Again");
        recorder.write(vec![again, other_epoch, stale_again]).await;
        assert_eq!(again_answer.await.unwrap(), Ok(true));
        assert_eq!(other_answer.await.unwrap(), Ok(false));
        assert_eq!(stale_again_answer.await.unwrap(), Ok(false));
        let label: Option<String> = admin
            .query_one(
                &format!("SELECT final_label FROM {runs} WHERE run_id = 1"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(label.as_deref(), Some("Done"), "a retry rewrites nothing");
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }
}
