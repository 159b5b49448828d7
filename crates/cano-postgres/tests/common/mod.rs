//! Shared by the PostgreSQL tests: the server's address and a fresh schema per test.
#![allow(dead_code)]

pub mod children;

use cano_postgres::{PgOptions, PostgresCheckpointStore};

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

/// A plain connection for checks the tests make behind the store's back.
pub async fn raw() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to CANO_PG_URL");
    tokio::spawn(connection);
    client
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
