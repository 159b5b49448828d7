//! Shared by the PostgreSQL tests: the server's address and a fresh schema per test.
#![allow(dead_code)]

pub mod children;

use cano_postgres::{PgOptions, PostgresCheckpointStore};

/// Set by `cargo xtask test` (and so CI): a missing server fails the PostgreSQL tests
/// there instead of skipping them.
pub const REQUIRED: &str = "CANO_PG_REQUIRED";

/// The server the tests use, from `CANO_PG_URL`.
pub fn pg_url() -> String {
    std::env::var("CANO_PG_URL").unwrap_or_else(|_| {
        panic!(
            "CANO_PG_URL is not set, so the PostgreSQL tests have no server. Run the whole \
             suite with `cargo xtask test` (it starts a throwaway server), or start one with \
             `export CANO_PG_URL=$(.ci/postgres start)` and run cargo test again"
        )
    })
}

/// Whether a server is configured. Without one, a plain `cargo test` on a machine
/// without PostgreSQL skips `test`, saying so and how to run it; under
/// `cargo xtask test` (which sets [`REQUIRED`]) a missing server is a failure.
pub fn server_for(test: &str) -> bool {
    if std::env::var_os("CANO_PG_URL").is_some() {
        return true;
    }
    if std::env::var_os(REQUIRED).is_some() {
        pg_url();
    }
    // Written to stderr directly, past the test harness's capture, so a plain
    // `cargo test` shows it.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "skipped {test}: CANO_PG_URL is not set. Run it with `cargo xtask test` (it starts a \
         throwaway PostgreSQL server), or `export CANO_PG_URL=$(.ci/postgres start)` first"
    );
    false
}

/// Returns from the test, saying it was skipped, when no PostgreSQL server is
/// configured (see [`server_for`]).
#[macro_export]
macro_rules! pg_or_skip {
    () => {
        fn here() {}
        let test = std::any::type_name_of_val(&here)
            .split("::")
            .filter(|part| *part != "here" && !part.starts_with('{'))
            .collect::<Vec<_>>()
            .join("::");
        if !$crate::common::server_for(&test) {
            return;
        }
    };
}

/// A plain connection for checks the tests make behind the store's back.
pub async fn raw() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to CANO_PG_URL");
    tokio::spawn(connection);
    client
}

/// Every lease in `schema` has expired, as if each holder had died or stalled: the
/// runs are claimable again.
pub async fn expire_leases(admin: &tokio_postgres::Client, schema: &str) {
    admin
        .execute(
            &format!("UPDATE {schema}.cano_runs SET lease_until = now() - interval '1 second'"),
            &[],
        )
        .await
        .unwrap();
}

/// Drops `schema` if an earlier run left it, so each test starts empty.
pub async fn drop_schema(schema: &str) {
    raw()
        .await
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
}

/// Options for a schema of the test's own.
pub fn options(schema: &str) -> PgOptions {
    PgOptions::new(pg_url())
        .with_schema(schema)
        .with_application_name(schema)
        .with_pool_size(8)
}

/// A store in an empty schema of the test's own.
pub async fn fresh_store(schema: &str) -> PostgresCheckpointStore {
    drop_schema(schema).await;
    PostgresCheckpointStore::connect(options(schema))
        .await
        .unwrap()
}
