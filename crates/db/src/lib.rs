//! The relational repository layer. One code path for both backends: the sqlx
//! `Any` driver with portable SQL (`?` placeholders, integers for times, text ids);
//! the few dialect differences go through [`Database::dialect`]. Migrations are kept
//! per backend and per component.

mod database;
pub mod idempotency;
pub mod jobs;
pub mod outbox;

pub use database::{Database, DbError, Dialect, Migrations, WriteTurn, WriteTx};
pub use factoryops_platform::config::DatabaseBackend;

/// This crate's own tables (jobs, outbox).
pub static MIGRATIONS: Migrations = Migrations {
    component: "platform",
    sqlite: sqlx::migrate!("migrations/sqlite"),
    mysql: sqlx::migrate!("migrations/mysql"),
};
