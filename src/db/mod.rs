//! The metadata database: one sqlx pool over SQLite (embedded, the default) or PostgreSQL (shared by several
//! nodes), chosen by the URL, with the migrations of `migrations/sqlite` or `migrations/postgres` applied at start.
//!
//! Queries are written once with `$1`-style parameters, which both drivers accept. Times are stored as Unix
//! milliseconds (`BIGINT`). Nothing on the media hot path ever waits on this module.

pub mod audit;
pub mod broadcasts;
pub mod bundles;
pub mod cluster;
pub mod jobs;
pub(crate) mod prune;
pub mod streams;
pub mod users;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor};

use crate::config::DatabaseConfig;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL session advisory lock held while migrations are listed or applied (the start of `zipiq serve`,
/// `zipiq migrate`): the ASCII bytes of "zipIQmig". Advisory locks belong to one database, so nodes of different
/// databases on one server never wait on each other. A tool that must not run during a migration can take it too:
/// `SELECT pg_advisory_lock(8820704805382875495)`.
pub const MIGRATION_LOCK_KEY: i64 = 0x7a69_7049_516d_6967;

/// Which database engine a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// `sqlite://…`
    Sqlite,
    /// `postgres://…` or `postgresql://…`
    Postgres,
}

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A query or connection failed.
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// A migration could not be applied.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names neither engine.
    #[error("database url {0:?} is neither sqlite:// nor postgres://")]
    UnsupportedUrl(String),
    /// The SQLite file or its directory could not be created.
    #[error("cannot create the SQLite database {path} or its directory: {source}")]
    CreateDir {
        /// The database file.
        path: String,
        /// Why it could not be created.
        source: std::io::Error,
    },
    /// The change clashes with what exists, such as a name already taken (the API answers 409).
    #[error("{0}")]
    Conflict(String),
    /// What the change is about does not exist (the API answers 404).
    #[error("{0}")]
    NotFound(String),
    /// An account already has as many of something as it may (the API answers 403).
    #[error("{0}")]
    Limit(String),
    /// A chunk for a broadcast that may record nothing more (ended, or its stream turned private).
    #[error("{0}")]
    NotRecordable(String),
}

/// A migration that would run, or ran.
#[derive(Debug, Clone)]
pub struct MigrationInfo {
    /// The migration's version (its file name's number).
    pub version: i64,
    /// The migration's description (the rest of its file name).
    pub description: String,
}

/// A handle on the metadata database (cheap to clone).
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    kind: DbKind,
}

impl Db {
    /// Opens a pool on `cfg.url`. A missing SQLite file (and its directory) is created, readable by its owner only
    /// (file 0600, directory 0700).
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let (kind, url) = normalise_url(&cfg.url)?;
        let options = AnyConnectOptions::from_str(&url)?;
        let mut pool = AnyPoolOptions::new()
            .max_connections(cfg.max_connections.max(1))
            .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms));
        if kind == DbKind::Sqlite {
            pool = pool.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            });
        }
        let pool = pool.connect_with(options).await?;
        if kind == DbKind::Sqlite {
            // WAL is a property of the file: set once, readers never block the writer.
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        Ok(Db { pool, kind })
    }

    /// The pool, for modules that run their own queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The engine behind the pool.
    pub fn kind(&self) -> DbKind {
        self.kind
    }

    fn migrator(&self) -> &'static Migrator {
        match self.kind {
            DbKind::Sqlite => &SQLITE_MIGRATIONS,
            DbKind::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`): a
    /// read transaction upgraded to a write later fails with SQLITE_BUSY_SNAPSHOT when another connection wrote
    /// in between, which `busy_timeout` cannot wait out.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, DbError> {
        Ok(match self.kind {
            DbKind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            DbKind::Postgres => self.pool.begin().await?,
        })
    }

    /// Migrations not yet applied, in order (listed under the migration lock, see [`MIGRATION_LOCK_KEY`]).
    pub async fn pending_migrations(&self) -> Result<Vec<MigrationInfo>, DbError> {
        let mut conn = self.lock_migrations().await?;
        let pending = self.pending_on(&mut conn).await;
        self.unlock_migrations(conn).await;
        pending
    }

    /// Applies every pending migration (each in its own transaction) and returns what ran. On PostgreSQL the
    /// whole step, from creating `_sqlx_migrations` to the last migration, holds the migration lock (see
    /// [`MIGRATION_LOCK_KEY`]): nodes started together against an empty database migrate one after the other, and
    /// the later ones find nothing left to do.
    pub async fn migrate(&self) -> Result<Vec<MigrationInfo>, DbError> {
        let mut conn = self.lock_migrations().await?;
        let applied = async {
            let pending = self.pending_on(&mut conn).await?;
            // On the connection that holds the lock. sqlx takes its own advisory lock (another key) on this same
            // session: no other node can be holding it while waiting for ours, so the two cannot deadlock.
            // `run_direct` is what `run` calls once it has a connection; `run(&mut *conn)` itself makes futures
            // that are not `Send` for every lifetime ("implementation of `Acquire` is not general enough") and so
            // cannot be spawned.
            self.migrator().run_direct(None, &mut *conn, false).await?;
            Ok(pending)
        }
        .await;
        self.unlock_migrations(conn).await;
        applied
    }

    /// The up migrations `conn`'s database lacks, creating the migrations table when missing.
    async fn pending_on(&self, conn: &mut AnyConnection) -> Result<Vec<MigrationInfo>, DbError> {
        conn.ensure_migrations_table(&self.migrator().table_name)
            .await?;
        let applied = conn
            .list_applied_migrations(&self.migrator().table_name)
            .await?;
        Ok(self
            .migrator()
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .filter(|m| !applied.iter().any(|a| a.version == m.version))
            .map(|m| MigrationInfo {
                version: m.version,
                description: m.description.to_string(),
            })
            .collect())
    }

    /// A connection for the migration step. On PostgreSQL it holds the session advisory lock
    /// [`MIGRATION_LOCK_KEY`], waiting for another node that holds it, and is closed rather than given back to the
    /// pool when dropped: a start that fails or is cancelled mid-way ends its session, which releases the lock. On
    /// SQLite a pooled connection as it is (one file: writers already queue behind `busy_timeout`).
    async fn lock_migrations(&self) -> Result<PoolConnection<Any>, DbError> {
        let mut conn = self.pool.acquire().await?;
        if self.kind == DbKind::Postgres {
            conn.close_on_drop();
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(MIGRATION_LOCK_KEY)
                .fetch_one(&mut *conn)
                .await?;
            if !got {
                tracing::info!(
                    lock = MIGRATION_LOCK_KEY,
                    "another node is migrating the database; waiting for it"
                );
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(MIGRATION_LOCK_KEY)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(conn)
    }

    /// Releases what [`Db::lock_migrations`] took: on PostgreSQL the lock, then the connection itself.
    async fn unlock_migrations(&self, mut conn: PoolConnection<Any>) {
        if self.kind != DbKind::Postgres {
            return;
        }
        if let Err(e) = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *conn)
            .await
        {
            // Closing the session below releases it all the same.
            tracing::warn!(error = %e, "releasing the migration lock failed");
        }
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "closing the migration connection failed");
        }
    }

    /// A round trip to the database, for readiness checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Connections open and idle in the pool.
    pub fn pool_usage(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Milliseconds since the Unix epoch, as stored in every `*_at` column.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Classifies the URL and makes a SQLite URL create its file (and directory) when missing.
fn normalise_url(url: &str) -> Result<(DbKind, String), DbError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((DbKind::Postgres, url.to_owned()));
    }
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Err(DbError::UnsupportedUrl(url.to_owned()));
    };
    let path_part = rest.trim_start_matches("//");
    let (path, query) = match path_part.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_part, None),
    };
    let creates = query.is_none_or(|q| !q.contains("mode=") || q.contains("mode=rwc"));
    if path != ":memory:" && !path.is_empty() && creates {
        create_private_file(Path::new(path))?;
    }
    let query = match query {
        Some(q) if q.contains("mode=") => q.to_owned(),
        Some(q) => format!("{q}&mode=rwc"),
        None => "mode=rwc".to_owned(),
    };
    Ok((DbKind::Sqlite, format!("sqlite://{path}?{query}")))
}

/// Makes the SQLite file `path` (and its directory, 0700, when missing) readable by its owner only, whatever the
/// umask: created empty with mode 0600 (SQLite takes an empty file for a new database); when it, its `-wal` or
/// its `-shm` file exists with bits for group or others (made by an earlier version), those bits are removed.
/// SQLite gives the `-wal` and `-shm` files it makes the database file's mode.
fn create_private_file(path: &Path) -> Result<(), DbError> {
    let create_dir = |dir: &Path, source| DbError::CreateDir {
        path: dir.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::secrets::create_private_dir(dir).map_err(|e| create_dir(dir, e))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(create_dir(path, e)),
        }
        let name = path.as_os_str().to_owned();
        for suffix in ["", "-wal", "-shm"] {
            let mut file = name.clone();
            file.push(suffix);
            let file = Path::new(&file);
            let Ok(meta) = std::fs::metadata(file) else {
                continue;
            };
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0
                && let Err(e) =
                    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700))
            {
                // Another user's file (a CLI run as root against the service's database): leave it.
                tracing::warn!(file = %file.display(), error = %e, "cannot make the database file private (mode 0600)");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_url_gets_create_mode() {
        let (kind, url) = normalise_url("sqlite::memory:").unwrap();
        assert_eq!(kind, DbKind::Sqlite);
        assert_eq!(url, "sqlite://:memory:?mode=rwc");
        let (_, url) = normalise_url("sqlite://:memory:?cache=shared").unwrap();
        assert_eq!(url, "sqlite://:memory:?cache=shared&mode=rwc");
    }

    #[test]
    fn postgres_url_is_kept() {
        let (kind, url) = normalise_url("postgres://u@127.0.0.1/db").unwrap();
        assert_eq!(kind, DbKind::Postgres);
        assert_eq!(url, "postgres://u@127.0.0.1/db");
    }

    #[test]
    fn other_schemes_are_refused() {
        assert!(matches!(
            normalise_url("mysql://x"),
            Err(DbError::UnsupportedUrl(_))
        ));
    }
}
