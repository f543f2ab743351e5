use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use factoryops_platform::config::DatabaseBackend;
use factoryops_platform::shutdown::Shutdown;
use prometheus_client::metrics::histogram::Histogram;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration of {component} failed: {source}")]
    Migrate { component: &'static str, source: sqlx::migrate::MigrateError },
    #[error("database url: {0}")]
    Url(String),
    #[error("stored data is malformed: {0}")]
    Malformed(String),
}

impl DbError {
    /// True for a unique-key violation (an idempotent insert that lost the race).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sqlx(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }
}

/// One component's migrations for both backends.
pub struct Migrations {
    pub component: &'static str,
    pub sqlite: Migrator,
    pub mysql: Migrator,
}

/// SQL that differs between the backends.
#[derive(Debug, Clone, Copy)]
pub struct Dialect(DatabaseBackend);

impl Dialect {
    /// `INSERT … ` that silently skips rows violating a unique key.
    pub fn insert_ignore(self) -> &'static str {
        match self.0 {
            DatabaseBackend::Sqlite => "INSERT OR IGNORE",
            DatabaseBackend::MySql => "INSERT IGNORE",
        }
    }

    /// Appended to a `SELECT` inside a write transaction whose decision the writes depend
    /// on (a count that must not change before the commit): ` FOR UPDATE` on MySQL, whose
    /// plain reads see the transaction's snapshot; nothing on SQLite, where
    /// [`Database::begin_write`] already holds the only write lock.
    pub fn lock_rows(self) -> &'static str {
        match self.0 {
            DatabaseBackend::Sqlite => "",
            DatabaseBackend::MySql => " FOR UPDATE",
        }
    }
}

/// This process's turn to write on SQLite, held until the transaction ends.
pub type WriteTurn = tokio::sync::OwnedMutexGuard<()>;

/// A write transaction from [`Database::begin_write`]: it holds this process's SQLite
/// write turn until it commits, rolls back or is dropped. Use it like a transaction
/// (`.execute(&mut *tx)`); functions that must run inside one take `&mut WriteTx`.
pub struct WriteTx {
    // Declared before the turn: fields drop in order, so a dropped transaction starts its
    // rollback before the next writer gets the turn.
    tx: Transaction<'static, Any>,
    _turn: Option<WriteTurn>,
}

impl WriteTx {
    /// Commits, then gives the write turn back.
    pub async fn commit(self) -> Result<(), DbError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Rolls back, then gives the write turn back.
    pub async fn rollback(self) -> Result<(), DbError> {
        self.tx.rollback().await?;
        Ok(())
    }
}

impl std::ops::Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx").field("turn", &self._turn.is_some()).finish()
    }
}

/// A connection pool on SQLite or MySQL/MariaDB.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    backend: DatabaseBackend,
    /// SQLite's write turn within this process; see [`Database::write_turn`].
    write_gate: Arc<tokio::sync::Mutex<()>>,
    /// How long writers waited for their turn (set once by the server, shared by clones).
    turn_wait: Arc<std::sync::OnceLock<Histogram>>,
}

impl Database {
    /// Connects to `sqlite://path?mode=rwc` or `mysql://user:pass@host:port/db`.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            DatabaseBackend::Sqlite
        } else if url.starts_with("mysql:") {
            DatabaseBackend::MySql
        } else {
            return Err(DbError::Url("must start with sqlite:// or mysql://".into()));
        };
        if backend == DatabaseBackend::Sqlite {
            create_sqlite_parent_dir(url)?;
        }
        let options: AnyConnectOptions = url.parse().map_err(|e: sqlx::Error| DbError::Url(e.to_string()))?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                DatabaseBackend::Sqlite => 8,
                DatabaseBackend::MySql => 16,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == DatabaseBackend::Sqlite {
                        // WAL: readers never block the writer; NORMAL sync is durable in WAL mode
                        // except for the last transactions on power loss, which is the trade
                        // the embedded default makes. busy_timeout serialises writers instead of failing.
                        // Checkpoints normally run in whichever commit crosses 1,000 WAL pages,
                        // which then pays the WAL and database fsyncs (an alert commit, say);
                        // the server checkpoints in the background instead
                        // (`run_checkpoints`), and 10,000 pages (~40 MB) is the backstop.
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 10000;")
                            .await?;
                    } else {
                        conn.execute("SET time_zone = '+00:00'").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self { pool, backend, write_gate: Arc::default(), turn_wait: Arc::default() })
    }

    /// Waits, first come first served, for this process's turn to write on SQLite; hold the
    /// guard until the transaction ends. SQLite has one writer: two colliding writers make
    /// the loser sleep in SQLite's busy handler (1, 2, 5, 10 … 100 ms steps), which showed
    /// up as alert-latency tails behind the `last_seen` flushes. Every write transaction
    /// ([`Database::begin_write`]) and the outbox relay's single-statement mark queue here
    /// instead; a writer must not ask for the turn again while it holds it (the turn is not
    /// re-entrant). `None` on MySQL (row locks).
    pub async fn write_turn(&self) -> Option<WriteTurn> {
        match self.backend {
            DatabaseBackend::Sqlite => {
                let asked = std::time::Instant::now();
                let turn = self.write_gate.clone().lock_owned().await;
                if let Some(wait) = self.turn_wait.get() {
                    wait.observe(asked.elapsed().as_secs_f64());
                }
                Some(turn)
            }
            DatabaseBackend::MySql => None,
        }
    }

    /// Begins a write transaction; every transaction that writes starts here. On SQLite it
    /// first waits for this process's write turn ([`Database::write_turn`]) and then takes
    /// the write lock up front (`BEGIN IMMEDIATE`): a deferred transaction that reads first
    /// fails at once with SQLITE_BUSY when another writer commits before its first write
    /// (WAL cannot upgrade a stale read snapshot), instead of waiting for the lock. On
    /// MySQL/MariaDB it is an ordinary transaction (row locks; no turn).
    pub async fn begin_write(&self) -> Result<WriteTx, DbError> {
        let turn = self.write_turn().await;
        let tx = match self.backend {
            DatabaseBackend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            DatabaseBackend::MySql => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _turn: turn })
    }

    /// Records every write-turn wait in `wait` (SQLite); the first call wins.
    pub fn observe_write_turns(&self, wait: Histogram) {
        let _ = self.turn_wait.set(wait);
    }

    /// Checkpoints SQLite's WAL into the database every `every` until shutdown, off the
    /// writers' path: a PASSIVE checkpoint waits for no reader or writer. No-op on MySQL.
    pub async fn run_checkpoints(self, every: Duration, shutdown: Shutdown) {
        if self.backend != DatabaseBackend::Sqlite {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.triggered() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&self.pool).await {
                tracing::warn!(error = %e, "SQLite checkpoint failed; retrying");
            }
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> DatabaseBackend {
        self.backend
    }

    pub fn dialect(&self) -> Dialect {
        Dialect(self.backend)
    }

    /// Applies the given components' migrations in order. Each component's migrator
    /// ignores the others' versions, so components own their tables independently.
    pub async fn migrate(&self, components: &[&Migrations]) -> Result<(), DbError> {
        for migrations in components {
            let migrator = match self.backend {
                DatabaseBackend::Sqlite => &migrations.sqlite,
                DatabaseBackend::MySql => &migrations.mysql,
            };
            let migrator =
                Migrator { migrations: migrator.migrations.clone(), ignore_missing: true, ..Migrator::DEFAULT };
            migrator
                .run(&self.pool)
                .await
                .map_err(|source| DbError::Migrate { component: migrations.component, source })?;
            tracing::debug!(component = migrations.component, "migrations applied");
        }
        Ok(())
    }

    /// A trivial round trip, for readiness.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn create_sqlite_parent_dir(url: &str) -> Result<(), DbError> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| DbError::Url(format!("cannot create {}: {e}", parent.display())))?;
    }
    Ok(())
}
