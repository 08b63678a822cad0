//! The catalog: images, their tags and disks, quota usage and import jobs, in
//! SQLite (default, `<data_dir>/catalog.db`) or PostgreSQL (`[catalog] url`).
//!
//! One code path serves both through sqlx's `Any` driver: `$n` placeholders,
//! TEXT ids, BIGINT unix-ms times, INTEGER 0/1 booleans. Only the migrations
//! (embedded, applied at start under sqlx's migration lock) are per dialect.
//! Invariants that must hold under concurrency (name uniqueness, quota) are
//! enforced by the database itself: a UNIQUE index and a conditional UPDATE.

pub mod blobs;
mod delete;
pub mod export_jobs;
pub mod exports;
pub mod images;
mod imports;
pub mod jobs;
pub mod shares;
pub mod sync;
pub mod visibility;

use crate::config::Config;
use rand::Rng;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, SqlSafeStr};
use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use images::*;

/// Which database the catalog runs on; only where dialects truly differ
/// (job claims, for instance) does code branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("catalog migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Could not draw a free random id after several attempts: the id space
    /// is nearly full or something is wrong with the random source.
    #[error("could not allocate a unique {0} id")]
    IdSpaceExhausted(&'static str),
}

/// File name of the SQLite catalog inside the data directory.
pub const SQLITE_FILE: &str = "catalog.db";

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "lifecycle",
        include_str!("../../migrations/sqlite/0002_lifecycle.sql"),
    ),
    (
        3,
        "exports",
        include_str!("../../migrations/sqlite/0003_exports.sql"),
    ),
    (
        4,
        "fair_queue",
        include_str!("../../migrations/sqlite/0004_fair_queue.sql"),
    ),
    (
        5,
        "stored_bytes",
        include_str!("../../migrations/sqlite/0005_stored_bytes.sql"),
    ),
    (
        6,
        "rate_buckets",
        include_str!("../../migrations/sqlite/0006_rate_buckets.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "lifecycle",
        include_str!("../../migrations/postgres/0002_lifecycle.sql"),
    ),
    (
        3,
        "exports",
        include_str!("../../migrations/postgres/0003_exports.sql"),
    ),
    (
        4,
        "fair_queue",
        include_str!("../../migrations/postgres/0004_fair_queue.sql"),
    ),
    (
        5,
        "stored_bytes",
        include_str!("../../migrations/postgres/0005_stored_bytes.sql"),
    ),
    (
        6,
        "rate_buckets",
        include_str!("../../migrations/postgres/0006_rate_buckets.sql"),
    ),
];

/// The catalog handle; cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Catalog {
    pool: AnyPool,
    backend: Backend,
    /// Bumped after every committed write made through this process, so
    /// read caches (DescribeImages) know when they are stale.
    changes: Arc<AtomicU64>,
    /// SQLite has one writer at a time; a second connection that tries to
    /// write waits in SQLite's busy handler, which polls with sleeps of up
    /// to 100 ms. Queueing this process's writers here instead hands the
    /// lock over as soon as it is free. PostgreSQL does not need it.
    write_gate: Arc<tokio::sync::Mutex<()>>,
    /// Group commit of ImportImage calls (see `imports`).
    batcher: Arc<imports::Batcher>,
}

impl Catalog {
    /// Connects to the configured database and applies pending migrations.
    pub async fn open(config: &Config) -> Result<Catalog, CatalogError> {
        sqlx::any::install_default_drivers();
        match config.catalog.url.as_deref() {
            Some(url) if url.starts_with("postgres") => Self::open_postgres(url).await,
            Some(url) => Self::open_sqlite_url(url).await,
            None => {
                crate::private_fs::create_dir_all(&config.data_dir).map_err(|source| {
                    CatalogError::CreateDir {
                        path: config.data_dir.clone(),
                        source,
                    }
                })?;
                Self::open_sqlite_url(&sqlite_url(&config.data_dir.join(SQLITE_FILE))).await
            }
        }
    }

    async fn open_postgres(url: &str) -> Result<Catalog, CatalogError> {
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        let catalog = Catalog {
            pool,
            backend: Backend::Postgres,
            changes: Arc::default(),
            write_gate: Arc::default(),
            batcher: Arc::default(),
        };
        catalog.migrate(POSTGRES_MIGRATIONS).await?;
        Ok(catalog)
    }

    async fn open_sqlite_url(url: &str) -> Result<Catalog, CatalogError> {
        // WAL lets readers run beside the one writer; busy_timeout makes a
        // second writer wait instead of failing; NORMAL is durable in WAL mode
        // except for the last transactions before a power cut.
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        // journal_mode is a property of the file: set once.
        pool.execute("PRAGMA journal_mode = WAL").await?;
        let catalog = Catalog {
            pool,
            backend: Backend::Sqlite,
            changes: Arc::default(),
            write_gate: Arc::default(),
            batcher: Arc::default(),
        };
        catalog.migrate(SQLITE_MIGRATIONS).await?;
        Ok(catalog)
    }

    async fn migrate(
        &self,
        list: &[(i64, &'static str, &'static str)],
    ) -> Result<(), CatalogError> {
        let migrations = list
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        // The migrator takes a database lock (an advisory lock on PostgreSQL),
        // so several nodes starting at once apply each migration once.
        Migrator::with_migrations(migrations)
            .run(&self.pool)
            .await?;
        Ok(())
    }

    /// The pool, for the other catalog modules (jobs, pipeline).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Versions of the migrations this build embeds for its back-end
    /// (`/readyz` checks that every one is applied).
    pub fn migration_versions(&self) -> Vec<i64> {
        let list = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        list.iter().map(|&(version, _, _)| version).collect()
    }

    /// Held around every write (a transaction or a lone statement): on
    /// SQLite this process's writers queue here, not in the busy handler.
    pub(crate) async fn write_gate(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.write_gate.lock().await),
            Backend::Postgres => None,
        }
    }

    /// The change counter: equal values mean no write was committed through
    /// this process in between.
    pub fn generation(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Call after committing any write that changes what DescribeImages
    /// shows (image rows, tags, disks, states).
    pub fn note_change(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// Closes every connection (tests restart the server on one data dir).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `sqlite://<path>?mode=rwc` with the path percent-encoded the way sqlx
/// decodes it (so `?`, `#` and spaces in a data dir are safe).
fn sqlite_url(path: &Path) -> String {
    let mut out = String::from("sqlite://");
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str("?mode=rwc");
    out
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `<prefix>-` + 8 of `[a-z0-9]`, Tencent's id shape.
pub fn random_id(prefix: &str) -> String {
    let mut rng = rand::rng();
    let mut id = String::with_capacity(prefix.len() + 9);
    id.push_str(prefix);
    id.push('-');
    for _ in 0..8 {
        id.push(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char);
    }
    id
}

/// True for `img-` + 8 of `[a-z0-9]`.
pub fn is_image_id(s: &str) -> bool {
    s.len() == 12
        && s.starts_with("img-")
        && s.as_bytes()[4..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Reads a column, naming it in the error.
fn col<T>(row: &AnyRow, name: &str) -> Result<T, sqlx::Error>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    sqlx::Row::try_get(row, name)
}

/// Whether a database error is a UNIQUE/PRIMARY KEY violation.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_tencent_shape() {
        for _ in 0..100 {
            let id = random_id("img");
            assert!(is_image_id(&id), "{id}");
        }
        assert!(!is_image_id("img-ABCDEFGH"));
        assert!(!is_image_id("img-1234567"));
        assert!(!is_image_id("img-123456789"));
        assert!(!is_image_id("snp-12345678"));
        assert!(!is_image_id("img-1234567é"));
    }

    #[test]
    fn sqlite_url_escapes_odd_paths() {
        assert_eq!(
            sqlite_url(Path::new("/tmp/a b?c/catalog.db")),
            "sqlite:///tmp/a%20b%3Fc/catalog.db?mode=rwc"
        );
    }
}
