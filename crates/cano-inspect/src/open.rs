//! Which store to inspect (`--store`), and opening it without creating anything.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cano_recovery::SledCheckpointStore;

use crate::error::InspectError;
use crate::inspector::Inspector;

/// A store to inspect: `sled:PATH` or a PostgreSQL URL (`postgres://...`), with the
/// schema cano's tables are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// The sled store in this directory.
    Sled(PathBuf),
    /// The PostgreSQL database at `url`, cano's tables in `schema`.
    Postgres {
        /// `postgres://user:password@host:port/database`.
        url: String,
        /// The schema (`cano` unless told).
        schema: String,
    },
}

impl StoreSpec {
    /// The spec with cano's PostgreSQL tables in `schema` (sled specs are unchanged).
    pub fn with_schema(self, schema: &str) -> Self {
        match self {
            Self::Postgres { url, .. } => Self::Postgres {
                url,
                schema: schema.to_owned(),
            },
            sled => sled,
        }
    }
}

impl FromStr for StoreSpec {
    type Err = InspectError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("sled:") {
            if path.is_empty() {
                return Err(InspectError::BadStoreSpec { given: text.into() });
            }
            return Ok(Self::Sled(PathBuf::from(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Self::Postgres {
                url: text.to_owned(),
                schema: "cano".to_owned(),
            });
        }
        Err(InspectError::BadStoreSpec { given: text.into() })
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sled(path) => write!(f, "sled:{}", path.display()),
            // Never the password.
            Self::Postgres { url, schema } => {
                let shown = match (url.find("://"), url.rfind('@')) {
                    (Some(scheme), Some(at)) if at > scheme => {
                        let user_end = url[scheme + 3..at].find(':').map_or(at, |c| scheme + 3 + c);
                        format!("{}{}", &url[..user_end], &url[at..])
                    }
                    _ => url.clone(),
                };
                write!(f, "{shown} (schema {schema})")
            }
        }
    }
}

/// Whether another process holds the sled store's lock (sled takes an exclusive
/// `flock` on `db`): probed with the same kind of lock, so the kernel answers.
fn sled_in_use(dir: &Path) -> Result<bool, InspectError> {
    let file = std::fs::File::open(dir.join("db")).map_err(|_| InspectError::NoSledStore {
        path: dir.to_path_buf(),
    })?;
    match file.try_lock() {
        Ok(()) => Ok(false),
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => Err(InspectError::BadInput(format!(
            "cannot read the lock of the sled store at {}: {e}",
            dir.display()
        ))),
    }
}

impl Inspector {
    /// Opens the store `spec` names for inspection. Nothing is created: a directory
    /// without a sled store, or a database without cano's schema (or with another
    /// version of it), is a clear error.
    pub async fn open(spec: &StoreSpec) -> Result<Self, InspectError> {
        match spec {
            StoreSpec::Sled(path) => {
                if !path.join("db").is_file() {
                    return Err(InspectError::NoSledStore { path: path.clone() });
                }
                if sled_in_use(path)? {
                    return Err(InspectError::SledInUse { path: path.clone() });
                }
                let store = SledCheckpointStore::open_async(path, Default::default())
                    .await
                    .map_err(|e| {
                        // Taken by another process between the probe and the open.
                        if sled_in_use(path).unwrap_or(false) {
                            InspectError::SledInUse { path: path.clone() }
                        } else {
                            InspectError::Store(e)
                        }
                    })?;
                Ok(Self::from_sled(store).described(spec.to_string()))
            }
            #[cfg(feature = "postgres")]
            StoreSpec::Postgres { url, schema } => {
                use cano_postgres::{PgOptions, PostgresCheckpointStore};
                let options = PgOptions::new(url.as_str())
                    .with_schema(schema.as_str())
                    .with_pool_size(4)
                    .with_application_name("cano-inspect")
                    .with_connect_timeout(std::time::Duration::from_secs(5))
                    .existing_schema_only();
                let store = PostgresCheckpointStore::connect(options).await?;
                Ok(Self::from_postgres(store).described(spec.to_string()))
            }
            #[cfg(not(feature = "postgres"))]
            StoreSpec::Postgres { .. } => Err(InspectError::NoPostgres),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_hide_passwords() {
        let sled: StoreSpec = "sled:/tmp/x".parse().unwrap();
        assert_eq!(sled, StoreSpec::Sled("/tmp/x".into()));
        let pg: StoreSpec = "postgres://ada:secret@db:5432/app".parse().unwrap();
        let shown = pg.clone().with_schema("billing").to_string();
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains("ada") && shown.contains("@db:5432/app") && shown.contains("billing")
        );
        for bad in ["", "sled:", "mysql://x", "/tmp/x"] {
            let err = bad.parse::<StoreSpec>().unwrap_err().to_string();
            assert!(err.contains("sled:PATH"), "{bad}: {err}");
        }
    }
}
