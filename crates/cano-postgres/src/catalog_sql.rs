//! The statements that browse runs (see `catalog`): kept apart from the code that
//! runs them, as the store, queue and worker statements are, so the store can build
//! them when it connects without depending on the catalog.

use crate::db::Db;

/// Every statement of the catalog, with the schema's table names in.
pub(crate) struct CatalogSql {
    pub(crate) list_queue: String,
    pub(crate) list_logs: String,
    pub(crate) count: String,
    pub(crate) record_graph: String,
    pub(crate) graph: String,
    pub(crate) rows: String,
    pub(crate) row_epochs: String,
    pub(crate) record_action: String,
    pub(crate) actions: String,
}

impl CatalogSql {
    pub(crate) fn new(db: &Db) -> Self {
        let (logs, runs) = (db.table("cano_logs"), db.table("cano_runs"));
        let (graphs, actions) = (db.table("cano_graphs"), db.table("cano_actions"));
        let log_status =
            "CASE l.status WHEN -1 THEN 'parked' WHEN 0 THEN 'interrupted' WHEN 1 THEN 'failed'
                               WHEN 2 THEN 'finished' ELSE 'rolled-back' END";
        // A queue's run: its status is the queue's, but a rollback that finished is
        // the log's to tell, and a lease that ran out leaves the run interrupted until
        // a worker claims it again. Leases are read against now() (the statement's
        // start), not clock_timestamp(): a volatile expression would keep the planner
        // from using the newest-first index under the filters.
        let queue_status = format!(
            "CASE WHEN q.status = 'queued' THEN 'queued'
                  WHEN q.status = 'running' AND q.lease_until > now() THEN 'running'
                  WHEN q.status = 'running' THEN 'interrupted'
                  WHEN q.status = 'parked' THEN 'parked'
                  WHEN l.status = 3 THEN 'rolled-back'
                  WHEN q.status IN ('failed', 'cancelled') THEN 'failed'
                  WHEN q.status = 'finished' THEN 'finished'
                  ELSE {log_status} END"
        );
        // The filters: $1 workflow, $2 version, $3 statuses, $4 state, $5/$6 start
        // range (µs), $7 error text, $8 the run. NULL means any. The page's
        // cursor is $9 and $10, its size $11. $12 and $13 are the wanted statuses as
        // the logs and the queue store them: predicates on the tables' own columns,
        // so partial indexes (failed, interrupted and parked runs) serve them.
        let filters = |with_status: bool| {
            format!(
                "($1::text IS NULL OR t.workflow = $1)
                 AND ($2::integer IS NULL OR t.version = $2)
                 AND {}
                 AND ($4::text IS NULL OR t.label = $4
                      OR ($4 !~ '[ ({{]' AND substring(t.label from '^[^ ({{]*') = $4))
                 AND ($5::bigint IS NULL OR t.started >= 'epoch'::timestamptz + $5 * interval '1 microsecond')
                 AND ($6::bigint IS NULL OR t.started < 'epoch'::timestamptz + $6 * interval '1 microsecond')
                 AND ($7::text IS NULL OR strpos(lower(t.error), lower($7)) > 0)
                 AND ($8::bigint IS NULL OR t.run_id = $8)",
                if with_status {
                    "($3::text[] IS NULL OR t.status = ANY($3))"
                } else {
                    "($3::text[] IS NULL OR true)"
                }
            )
        };
        // The two kinds of run, each a query of its own: the queue's runs (with their
        // logs, if any) and logs no queue record claims. Each is read newest first
        // through its index and stops at the page's end; a UNION ALL of the two is
        // planned as a sort of every run (the anti-join leg is not flattened).
        let queue_leg = |coded: bool| {
            format!(
                "SELECT q.run_id, q.workflow, coalesce(l.version, 0) AS version, l.last_seq,
                    coalesce(l.label, q.initial_label) AS label,
                    coalesce(nullif(q.error, ''), l.message, '') AS error,
                    q.enqueued_at AS started, l.updated_at_ms, {queue_status} AS status
             FROM {runs} q LEFT JOIN {logs} l ON l.run_id = q.run_id
             WHERE {}",
                if coded {
                    "($13::text[] IS NULL OR q.status = ANY($13)) AND ($12::smallint[] IS NULL OR true)"
                } else {
                    "true"
                }
            )
        };
        let log_leg = |coded: bool| {
            format!(
                "SELECT l.run_id, l.workflow, l.version, l.last_seq, l.label, l.message AS error,
                    l.created_at AS started, l.updated_at_ms, {log_status} AS status
             FROM {logs} l
             WHERE NOT EXISTS (SELECT 1 FROM {runs} q WHERE q.run_id = l.run_id) AND {}",
                if coded {
                    // A log-only run's error is its log's message: with an error
                    // filter, only logs with one are read (their own index).
                    "($12::smallint[] IS NULL OR l.status = ANY($12)) AND ($13::text[] IS NULL OR true)
                     AND ($7::text IS NULL OR l.message <> '')"
                } else {
                    "true"
                }
            )
        };
        let page = |leg: &str| {
            format!(
                "SELECT t.run_id, t.workflow, t.version, t.last_seq, t.label, t.error,
                        (extract(epoch FROM t.started) * 1000000)::bigint, t.updated_at_ms, t.status
                 FROM ({leg}) t
                 WHERE {}
                   AND (t.started, t.run_id) < ('epoch'::timestamptz + $9::bigint * interval '1 microsecond', $10::bigint)
                 ORDER BY t.started DESC, t.run_id DESC
                 LIMIT $11",
                filters(true)
            )
        };
        Self {
            list_queue: page(&queue_leg(true)),
            list_logs: page(&log_leg(true)),
            count: format!(
                "SELECT t.status, count(*) FROM ({} UNION ALL {}) t WHERE ({}) GROUP BY t.status",
                queue_leg(false),
                log_leg(false),
                filters(false)
            ),
            record_graph: format!(
                "INSERT INTO {graphs} (workflow, version, mermaid) VALUES ($1, $2, $3)
                 ON CONFLICT (workflow, version) DO UPDATE SET mermaid = $3, recorded_at = clock_timestamp()
                 WHERE {graphs}.mermaid IS DISTINCT FROM $3"
            ),
            rows: format!(
                "SELECT seq, body FROM {} WHERE run_id = $1 ORDER BY seq",
                db.table("cano_rows")
            ),
            row_epochs: format!(
                "SELECT seq, epoch FROM {} WHERE run_id = $1 ORDER BY seq",
                db.table("cano_rows")
            ),
            graph: format!(
                "SELECT mermaid FROM {graphs} WHERE workflow = $1 AND ($2 = 0 OR version = $2)
                 ORDER BY version DESC LIMIT 1"
            ),
            record_action: format!(
                "INSERT INTO {actions} (run_id, action, actor, reason, detail, at)
                 VALUES ($1, $2, $3, $4, $5, 'epoch'::timestamptz + $6::bigint * interval '1 millisecond')"
            ),
            actions: format!(
                "SELECT action, actor, reason, detail, (extract(epoch FROM at) * 1000)::bigint
                 FROM {actions} WHERE run_id = $1 ORDER BY id"
            ),
        }
    }
}
