//! The connection to PostgreSQL: options, a pool that waits for the server at start,
//! the schema migration, and error mapping. Everything else in the crate goes through
//! [`Db`].

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cano_core::{CanoError, RunId};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Statement};

use crate::errors::pg_error;

/// How to reach the database and how to behave while it is away.
///
/// ```
/// use std::time::Duration;
/// use cano_postgres::PgOptions;
///
/// let options = PgOptions::new("postgres://cano@127.0.0.1:5432/app")
///     .with_schema("billing")
///     .with_pool_size(8)
///     .with_connect_timeout(Duration::from_secs(60));
/// assert_eq!(options.schema(), "billing");
/// ```
#[derive(Debug, Clone)]
pub struct PgOptions {
    url: String,
    schema: String,
    pool_size: usize,
    connect_timeout: Duration,
    application_name: String,
    create: bool,
}

impl PgOptions {
    /// Options for the database at `url` (`postgres://user:password@host:port/db`, or
    /// the `key=value` form), with cano's tables in schema `cano`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: "cano".to_owned(),
            pool_size: 2,
            connect_timeout: Duration::from_secs(30),
            application_name: "cano".to_owned(),
            create: true,
        }
    }

    /// Connects only to a schema that exists at this build's version: nothing is
    /// created or migrated, and a missing, older or newer schema is a clear error.
    /// For tools that read what processes wrote (the `cano` inspector).
    pub fn existing_schema_only(mut self) -> Self {
        self.create = false;
        self
    }

    /// Puts cano's tables in `schema` (created if missing). Processes that share runs
    /// must use the same schema; separate schemas keep separate clusters apart.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most connections the pool opens (2 by default). Appends of concurrent runs
    /// share statements, and so do finishes, so a few connections serve many runs.
    ///
    /// Keep pools small where many processes share a server: each worker process
    /// holds its pool and two connections of its own (claims, heartbeats); the server
    /// pays for every connection (each plans its statements and fills its caches, and
    /// statements in flight at once make smaller batches) and refuses connections
    /// past its `max_connections` (100 by default: 16 workers with pools of 2 hold
    /// 64). Measured on one queue (`pg_queues` bench, 2 cores, 4,000 one-state runs,
    /// runs started/s), 16 workers with pools of 2 started 5,234 and 5,398 runs a
    /// second, with pools of 4, 4,126 and 4,111; with one or four workers the two
    /// sizes measured within noise of each other. Runs of ten states (`postgres`
    /// bench, transitions/s): one worker 16,016 and 13,696 against 13,607 and
    /// 13,655; 16 workers 9,256 and 9,465 against 7,598 and 8,230. A lone worker on
    /// a server with cores to spare may do better with more.
    pub fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// How long [`connect`](crate::PostgresCheckpointStore::connect) keeps retrying,
    /// with backoff, while the server cannot be reached (30 s by default).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The `application_name` the connections report (shown in `pg_stat_activity`).
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// The schema cano's tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    fn check(&self) -> Result<tokio_postgres::Config, CanoError> {
        let valid = !self.schema.is_empty()
            && self.schema.len() <= 48
            && self
                .schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !self.schema.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(CanoError::configuration(format!(
                "{:?} is not a usable schema name for cano's tables",
                self.schema
            ))
            .with_hint("use lower-case letters, digits and underscores, starting with a letter, at most 48 characters"));
        }
        if self.pool_size == 0 {
            return Err(CanoError::configuration(
                "a PostgreSQL pool of 0 connections could never run a statement",
            )
            .with_hint("give PgOptions::with_pool_size at least 1"));
        }
        let mut config = tokio_postgres::Config::from_str(&self.url).map_err(|e| {
            CanoError::configuration(format!("the PostgreSQL URL cannot be read: {e}"))
                .with_source(e)
                .with_hint("write it as postgres://user:password@host:port/database")
        })?;
        config.application_name(&self.application_name);
        config.connect_timeout(Duration::from_secs(5));
        // A connection whose peer vanished (a network partition, a host gone) is
        // found dead in seconds, not after the kernel's two hours.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(5));
        config.keepalives_interval(Duration::from_secs(2));
        config.keepalives_retries(3);
        Ok(config)
    }
}

/// The database as the crate uses it: a pool and the schema-qualified table names.
pub(crate) struct Db {
    pub(crate) pool: Pool,
    pub(crate) config: tokio_postgres::Config,
    pub(crate) schema: String,
    /// Where the server is, for error messages (never the password).
    pub(crate) place: String,
}

impl Db {
    /// Connects (retrying with backoff until the options' timeout), then creates or
    /// checks the schema.
    pub(crate) async fn connect(options: &PgOptions) -> Result<Arc<Self>, CanoError> {
        let config = options.check()?;
        let place = describe(&config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .build()
            .map_err(|e| {
                CanoError::configuration(format!("could not build the PostgreSQL pool: {e}"))
                    .with_source(e)
            })?;
        let db = Arc::new(Self {
            pool,
            config,
            schema: options.schema.clone(),
            place,
        });
        // A timeout past what the clock can name (`Duration::MAX`): retry for ever.
        let deadline = tokio::time::Instant::now().checked_add(options.connect_timeout);
        let mut delay = Duration::from_millis(50);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match db.pool.get().await {
                Ok(client) => {
                    if options.create {
                        crate::schema::migrate(&client, &db.schema).await?;
                    } else {
                        crate::schema::check_existing(&client, &db.schema, &db.place).await?;
                    }
                    return Ok(db);
                }
                Err(e) if deadline.is_some_and(|d| tokio::time::Instant::now() + delay >= d) => {
                    return Err(CanoError::store(format!(
                        "could not reach PostgreSQL at {} after {attempts} attempts over {:?}: {e}",
                        db.place, options.connect_timeout
                    ))
                    .with_source(e)
                    .with_hint("is the server running and the URL's host, port, user and database right? Start a throwaway one with `.ci/postgres start`, or wait longer with PgOptions::with_connect_timeout")
                    .permanent());
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<Object, CanoError> {
        self.pool.get().await.map_err(|e| {
            CanoError::store(format!(
                "could not get a PostgreSQL connection to {}: {e}",
                self.place
            ))
            .with_source(e)
            .with_hint("check that the server is up and accepts connections (max_connections)")
        })
    }

    /// `name` qualified by the schema.
    pub(crate) fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.schema)
    }

    /// A connection of its own, outside the pool (for LISTEN and advisory locks, which
    /// belong to a session), driven on a task that reports notifications.
    pub(crate) async fn dedicated(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
        ),
        CanoError,
    > {
        let (client, mut connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| self.error("connecting", e))?;
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            use tokio_postgres::AsyncMessage;
            while let Some(message) =
                futures::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                match message {
                    Ok(AsyncMessage::Notification(note)) => {
                        if sender.send(note).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        Ok((client, receiver))
    }

    /// A database error while `doing` something, naming the server. A statement kept
    /// from before a schema change empties every connection's kept statements, so the
    /// retry prepares it afresh (rare: a migration while the pool is in use).
    pub(crate) fn error(&self, doing: &str, e: tokio_postgres::Error) -> CanoError {
        if crate::errors::is_stale_statement(&e) {
            self.pool.manager().statement_caches.clear();
        }
        pg_error(&self.place, doing, e)
    }

    /// `sql` prepared on `client`'s connection: at its first use there, then kept
    /// with the connection. Every statement of this crate is fixed text (values are
    /// parameters), so the cache stays small. Sent as text each time instead, a
    /// statement is parsed and planned at every call and costs two round trips:
    /// measured, planning cost the server more than running the statements that
    /// finish runs and write checkpoints.
    pub(crate) async fn prepared<C: GenericClient>(
        &self,
        client: &C,
        sql: &str,
        doing: &str,
    ) -> Result<Statement, CanoError> {
        client
            .prepare_cached(sql)
            .await
            .map_err(|e| self.error(doing, e))
    }

    /// Runs the statement `sql` on a pooled connection and returns its rows, again on
    /// a fresh connection while it fails for a transient reason (up to `attempts`
    /// tries in all).
    pub(crate) async fn query(
        &self,
        attempts: u32,
        doing: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, CanoError> {
        self.rows(attempts, doing, sql, params, true).await
    }

    /// [`query`](Self::query) for a statement whose best plan depends on its values
    /// (optional filters, `$1 IS NULL OR ...`): planned afresh for the values of each
    /// call, as a statement sent as text is. Kept, the server would settle on one
    /// plan for every value after a few calls, which reads whole indexes where the
    /// values' plan reads a few entries.
    pub(crate) async fn query_planned_each_time(
        &self,
        attempts: u32,
        doing: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, CanoError> {
        self.rows(attempts, doing, sql, params, false).await
    }

    async fn rows(
        &self,
        attempts: u32,
        doing: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        keep: bool,
    ) -> Result<Vec<Row>, CanoError> {
        retry_transient(attempts, || async {
            let client = self.client().await?;
            let rows = if keep {
                let statement = self.prepared(&client, sql, doing).await?;
                client.query(&statement, params).await
            } else {
                client.query(sql, params).await
            };
            rows.map_err(|e| self.error(doing, e))
        })
        .await
    }

    /// [`query`](Self::query) for a statement that returns exactly one row.
    pub(crate) async fn query_one(
        &self,
        attempts: u32,
        doing: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, CanoError> {
        match self.query_opt(attempts, doing, sql, params).await? {
            Some(row) => Ok(row),
            None => Err(CanoError::store(format!(
                "{doing} on {}: the statement returned no row where it always returns one",
                self.place
            ))
            .with_hint("the schema may have been changed by hand: compare it with this version's migration")
            .permanent()),
        }
    }

    /// [`query`](Self::query) for a statement that returns at most one row.
    pub(crate) async fn query_opt(
        &self,
        attempts: u32,
        doing: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, CanoError> {
        let mut rows = self.query(attempts, doing, sql, params).await?;
        if rows.len() > 1 {
            return Err(CanoError::store(format!(
                "{doing} on {}: the statement returned {} rows where it returns at most one",
                self.place,
                rows.len()
            ))
            .with_hint("the schema may have been changed by hand: compare it with this version's migration")
            .permanent());
        }
        Ok(rows.pop())
    }

    /// [`query`](Self::query) for a statement whose rows are not read: returns how
    /// many it changed.
    pub(crate) async fn execute(
        &self,
        attempts: u32,
        doing: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, CanoError> {
        retry_transient(attempts, || async {
            let client = self.client().await?;
            let statement = self.prepared(&client, sql, doing).await?;
            client
                .execute(&statement, params)
                .await
                .map_err(|e| self.error(doing, e))
        })
        .await
    }
}

/// A run id as the `bigint` columns hold it (the same 64 bits, read as signed).
pub(crate) fn run_key(run: RunId) -> i64 {
    run.as_u64() as i64
}

/// The run id in a `bigint` column.
pub(crate) fn run_of(key: i64) -> RunId {
    RunId::from(key as u64)
}

/// `unnest` over a batch statement's array parameters (`"$1::bigint[]"`, ...), each
/// read through a scalar subquery. The planner then sizes a batch the same way
/// whether it plans for the values or not: seeing the arrays, it costed its plan
/// for them below the kept plan, and so planned the statement afresh at every
/// call (a third of the server's time ending runs, measured once an ANALYZE had run).
pub(crate) fn unnest_batch(arrays: &[&str]) -> String {
    let hidden: Vec<String> = arrays.iter().map(|a| format!("(SELECT {a})")).collect();
    format!("unnest({})", hidden.join(", "))
}

fn describe(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("(default database)");
    format!("{host}:{port}/{db}")
}

/// Retries `op` while it fails for a transient reason (see [`is_transient`](crate::errors::is_transient)), up to
/// `attempts` times with a short backoff (the pool hands out a fresh connection each
/// time).
pub(crate) async fn retry_transient<T, F, Fut>(attempts: u32, mut op: F) -> Result<T, CanoError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CanoError>>,
{
    let mut delay = Duration::from_millis(20);
    let mut tried = 1;
    loop {
        match op().await {
            Err(e) if !e.is_permanent() && tried < attempts => {
                tried += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

/// For the crate's unit tests that need a server: the URL and an admin connection
/// to it, with `schema` dropped; `None` (the test is skipped) without `CANO_PG_URL`,
/// as every PostgreSQL test is, except under `cargo xtask test` (which requires it).
#[cfg(test)]
pub(crate) async fn test_server(schema: &str) -> Option<(String, tokio_postgres::Client)> {
    let Ok(url) = std::env::var("CANO_PG_URL") else {
        assert!(
            std::env::var_os("CANO_PG_REQUIRED").is_none(),
            "CANO_PG_URL is not set"
        );
        return None;
    };
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    Some((url, admin))
}

/// For the crate's unit tests: a store in a fresh `schema` of the test server and an
/// admin connection (see `test_server`).
#[cfg(test)]
pub(crate) async fn test_store(
    schema: &str,
) -> Option<(crate::PostgresCheckpointStore, tokio_postgres::Client)> {
    let (url, admin) = test_server(schema).await?;
    let options = PgOptions::new(&url).with_schema(schema);
    let store = crate::PostgresCheckpointStore::connect(options)
        .await
        .unwrap();
    Some((store, admin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_clear_errors_before_any_connection() {
        let bad_schema = PgOptions::new("postgres://cano@127.0.0.1/app").with_schema("drop table;");
        let err = bad_schema.check().unwrap_err().to_string();
        assert!(
            err.contains("\"drop table;\" is not a usable schema name"),
            "{err}"
        );
        let digits_first = PgOptions::new("postgres://cano@127.0.0.1/app").with_schema("1cano");
        assert!(digits_first.check().is_err());

        let empty_pool = PgOptions::new("postgres://cano@127.0.0.1/app").with_pool_size(0);
        let err = empty_pool.check().unwrap_err().to_string();
        assert!(err.contains("pool of 0 connections"), "{err}");

        let err = PgOptions::new("postgres://cano@127.0.0.1:notaport/app")
            .check()
            .unwrap_err()
            .to_string();
        assert!(err.contains("the PostgreSQL URL cannot be read"), "{err}");
    }

    #[test]
    fn the_server_is_named_without_the_password() {
        let config = PgOptions::new("postgres://cano:s3cret@db.internal:6543/billing")
            .check()
            .unwrap();
        let place = describe(&config);
        assert_eq!(place, "db.internal:6543/billing");
        assert!(!place.contains("s3cret"));
    }

    #[tokio::test]
    async fn only_transient_failures_are_retried() {
        let mut calls = 0;
        let result: Result<(), CanoError> = retry_transient(3, || {
            calls += 1;
            async { Err(CanoError::store("connection reset")) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 3);

        let mut calls = 0;
        let result: Result<(), CanoError> = retry_transient(3, || {
            calls += 1;
            async { Err(CanoError::store("syntax error").permanent()) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1);
    }
}
