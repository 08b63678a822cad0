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
pub mod patience;
pub mod shares;
pub mod sync;
pub mod visibility;

#[cfg(test)]
mod sql_names;

use crate::config::Config;
use rand::Rng;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Connection, Executor, SqlSafeStr};
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

impl CatalogError {
    /// Whether trying again may help: the database restarting, refusing or
    /// dropping connections, or busy; not a refusal of the statement itself.
    pub fn transience(&self) -> crate::retry::Transience {
        match self {
            CatalogError::Db(e) => db_transience(e),
            _ => crate::retry::Transience::Permanent,
        }
    }

    /// The database could not write for want of room: SQLite's SQLITE_FULL
    /// (its volume is full; the statement or transaction was rolled back,
    /// the file stays sound) or PostgreSQL's `disk_full` (53100).
    pub fn is_storage_full(&self) -> bool {
        let CatalogError::Db(sqlx::Error::Database(d)) = self else {
            return false;
        };
        match d.code() {
            Some(code) if code == POSTGRES_DISK_FULL => true,
            // SQLite reports extended codes: the primary one is the low byte.
            Some(code) => code.parse::<i32>().is_ok_and(|c| c & 0xff == SQLITE_FULL),
            None => false,
        }
    }
}

fn db_transience(e: &sqlx::Error) -> crate::retry::Transience {
    use crate::retry::Transience::{Permanent, Transient};
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => Transient,
        sqlx::Error::Database(d) => match d.code().as_deref() {
            // PostgreSQL: connection exceptions (08…), shutting down or
            // starting up (57P01–57P03), too many connections, a
            // serialization failure or deadlock.
            Some(c)
                if c.starts_with("08")
                    || c.starts_with("57P0")
                    || matches!(c, "53300" | "40001" | "40P01") =>
            {
                Transient
            }
            // SQLite: SQLITE_BUSY and its extended codes, SQLITE_LOCKED.
            Some("5" | "6" | "261" | "517") => Transient,
            _ => Permanent,
        },
        _ => Permanent,
    }
}

const SQLITE_FULL: i32 = 13;
const POSTGRES_DISK_FULL: &str = "53100";

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
        sqlx::any::install_default_drivers();
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
        // Idempotent; here too so that tests opening a catalog directly work
        // in a process of their own (nextest), not only after `open`.
        sqlx::any::install_default_drivers();
        // WAL lets readers run beside the one writer; busy_timeout makes a
        // second writer wait instead of failing; NORMAL is durable in WAL mode
        // except for the last transactions before a power cut.
        let pool = sqlite_pool_options(8).connect(url).await?;
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

    /// The pool, for the catalog's modules and the shared rate limits
    /// (which fall back to it when they have no pool of their own).
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

    /// One round trip to the database (`/readyz`).
    pub async fn ping(&self) -> Result<(), CatalogError> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    /// Versions of the migrations applied successfully (`/readyz`).
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, CatalogError> {
        let rows = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| col(r, "version"))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(CatalogError::from)
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

/// The SQLite pool: busy_timeout and synchronous on every connection, and
/// no connection back into the pool that still believes it is inside a
/// transaction.
///
/// That happens after a COMMIT that failed with SQLITE_FULL (a full volume):
/// SQLite has already rolled the transaction back, so the ROLLBACK sqlx then
/// sends fails ("no transaction is active") and sqlx keeps counting one
/// open transaction on the connection. Its next `begin` would then be a
/// SAVEPOINT and its next rollback a `ROLLBACK TO`, which leaves a real
/// transaction open, holding the write lock for good: every later write of
/// the catalog would fail with "database is locked". Such a connection is
/// closed instead (closing releases whatever it held).
fn sqlite_pool_options(max_connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                Ok(())
            })
        })
        .after_release(|conn, _meta| {
            Box::pin(async move {
                if !conn.is_in_transaction() {
                    return Ok(true);
                }
                // A rollback queued by a dropped transaction is done first.
                conn.ping().await?;
                Ok(!conn.is_in_transaction())
            })
        })
}

/// Whether a database error is a UNIQUE/PRIMARY KEY violation.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_going_away_is_transient() {
        use crate::retry::Transience;
        let db = |e| CatalogError::Db(e).transience();
        assert_eq!(db(sqlx::Error::PoolTimedOut), Transience::Transient);
        assert_eq!(
            db(sqlx::Error::Io(
                std::io::ErrorKind::ConnectionRefused.into()
            )),
            Transience::Transient
        );
        assert_eq!(db(sqlx::Error::RowNotFound), Transience::Permanent);
        assert_eq!(db(sqlx::Error::PoolClosed), Transience::Permanent);
        assert_eq!(
            CatalogError::IdSpaceExhausted("image").transience(),
            Transience::Permanent
        );
    }

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

    #[tokio::test]
    async fn a_full_database_is_told_from_other_errors() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open_sqlite_url(&sqlite_url(&dir.path().join("c.db")))
            .await
            .unwrap();
        let mut conn = c.pool().acquire().await.unwrap();
        conn.execute("CREATE TABLE t (x TEXT)").await.unwrap();
        // A database that may not grow fails a write as a full volume does.
        let pages = sqlx::query("PRAGMA page_count")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let pages: i64 = sqlx::Row::try_get(&pages, 0).unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {}",
            pages + 2
        )))
        .execute(&mut *conn)
        .await
        .unwrap();
        let mut full = None;
        for _ in 0..10_000 {
            let r = sqlx::query("INSERT INTO t (x) VALUES ($1)")
                .bind("x".repeat(4000))
                .execute(&mut *conn)
                .await;
            if let Err(e) = r {
                full = Some(CatalogError::from(e));
                break;
            }
        }
        let full = full.expect("the capped database never refused a write");
        assert!(full.is_storage_full(), "{full}");
        let other = conn.execute("SELECT * FROM missing").await.unwrap_err();
        assert!(!CatalogError::from(other).is_storage_full());
        assert!(!CatalogError::IdSpaceExhausted("image").is_storage_full());
    }

    /// The state a COMMIT failing with SQLITE_FULL leaves, made without a
    /// full disk: SQLite ends the transaction behind sqlx's back.
    #[tokio::test]
    async fn a_connection_whose_transaction_sqlite_ended_is_not_reused() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(&dir.path().join("c.db"));
        let pool = sqlite_pool_options(1).connect(&url).await.unwrap();
        pool.execute("PRAGMA journal_mode = WAL").await.unwrap();
        pool.execute("CREATE TABLE t (x INTEGER)").await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO t (x) VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        (&mut *tx).execute("COMMIT").await.unwrap();
        drop(tx); // sqlx's ROLLBACK now fails: no transaction is active
                  // The pool's one connection again: a write rolled back.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO t (x) VALUES (2)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        // Another writer is not locked out, and the rolled-back row is gone.
        let other = sqlite_pool_options(1).connect(&url).await.unwrap();
        other.execute("PRAGMA busy_timeout = 200").await.unwrap();
        other.execute("INSERT INTO t (x) VALUES (3)").await.unwrap();
        let rows = sqlx::query("SELECT COUNT(*) AS n FROM t WHERE x = 2")
            .fetch_one(&other)
            .await
            .unwrap();
        assert_eq!(col::<i64>(&rows, "n").unwrap(), 0);
    }

    #[test]
    fn sqlite_url_escapes_odd_paths() {
        assert_eq!(
            sqlite_url(Path::new("/tmp/a b?c/catalog.db")),
            "sqlite:///tmp/a%20b%3Fc/catalog.db?mode=rwc"
        );
    }
}
