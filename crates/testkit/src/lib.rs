//! Test support shared by the crates' integration tests.
//!
//! Every test gets its own database: a SQLite file in a fresh temp dir, or a uniquely
//! named MariaDB database that is dropped afterwards. A service that is not reachable
//! skips the test with a loud message on a developer machine, and fails it in CI
//! (`CI=true`), so CI never silently skips a backend.

pub mod s3;
pub mod smtp;
pub mod tls;
pub mod twilio;

use std::path::Path;

use sqlx::Connection;
use sqlx::mysql::MySqlConnection;

pub use tempfile::TempDir;

/// Admin URL of the MariaDB server that test databases are created on.
pub fn mysql_admin_url() -> String {
    std::env::var("FACTORYOPS_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MariaDb,
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Skips (returns `None`) with a loud message, or panics under CI.
pub fn unavailable<T>(service: &str, why: &str) -> Option<T> {
    let message = format!("{service} is not available ({why})");
    if in_ci() {
        panic!(
            "{message}: CI must run every backend; install and start it (`make test` runs scripts/test-deps.sh, which does)"
        );
    }
    eprintln!("\n!!! SKIPPED: {message}. Run `make test` to install and start test services. !!!\n");
    None
}

/// A database for one test, removed when dropped.
pub struct TestDatabase {
    pub backend: Backend,
    pub url: String,
    /// Scratch space owned by the test (also holds the SQLite file).
    pub dir: TempDir,
    mysql_name: Option<String>,
}

impl TestDatabase {
    /// A fresh, empty database on `backend`; `None` when the backend is absent (not in CI).
    pub async fn create(backend: Backend) -> Option<Self> {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("cannot create a temp dir: {e}"),
        };
        match backend {
            Backend::Sqlite => {
                let url = sqlite_url(&dir.path().join("test.db"));
                Some(Self { backend, url, dir, mysql_name: None })
            }
            Backend::MariaDb => {
                let admin = mysql_admin_url();
                let mut conn = match MySqlConnection::connect(&admin).await {
                    Ok(conn) => conn,
                    Err(e) => return unavailable("MariaDB", &format!("{admin}: {e}")),
                };
                let name = format!("fo_test_{}", uuid::Uuid::now_v7().simple());
                if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )))
                .execute(&mut conn)
                .await
                {
                    panic!("cannot create test database {name}: {e}");
                }
                let _ = conn.close().await;
                let base = admin.rsplit_once('/').map(|(base, _)| base.to_string()).unwrap_or(admin);
                Some(Self { backend, url: format!("{base}/{name}"), dir, mysql_name: Some(name) })
            }
        }
    }
}

pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.mysql_name.take() else { return };
        let admin = mysql_admin_url();
        // Drop runs inside the test's runtime; do the async clean-up on a thread of its own.
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(mut conn) = MySqlConnection::connect(&admin).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = handle.join();
    }
}

/// Generates one `#[tokio::test]` per backend for each listed `async fn name(db: TestDatabase)`:
/// `sqlite::name` and `mariadb::name`.
#[macro_export]
macro_rules! backend_matrix {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = $crate::TestDatabase::create($crate::Backend::Sqlite).await {
                        super::$name(db).await;
                    }
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = $crate::TestDatabase::create($crate::Backend::MariaDb).await {
                        super::$name(db).await;
                    }
                }
            )*
        }
    };
}
