//! Identity and tenancy: the platform root, factories, factory-scoped users with
//! roles and permission flags, JWT access tokens with rotating refresh tokens, API
//! keys, login rate limits and the append-only audit log.
//!
//! Every function that touches tenant data takes the factory scope first. The HTTP
//! edge turns a bearer credential into a [`Principal`] with [`Identity::authenticate`]
//! and never takes a factory from anywhere else.

mod api_keys;
mod audit;
mod error;
mod factories;
mod failed_logins;
mod model;
mod password;
mod ratelimit;
mod service;
mod sessions;
mod tokens;
mod users;

pub use api_keys::{ApiKeyInfo, CreatedApiKey, NewApiKey};
pub use audit::{AuditEntry, AuditQuery, AuditRecord};
pub use error::{FieldIssue, IdentityError};
pub use factories::{Factory, FactoryStatus, FactoryUpdate, NewFactory, PublicFactory};
pub use model::{Email, Permission, Principal, Role, parse_timezone};
pub use service::{Identity, IdentityConfig, ROOT_USERNAME, RequestContext, jwt_secret_from_data_dir};
pub use sessions::{LoginResult, TokenPair};
pub use tokens::{AccessClaims, generate_secret, sha256_hex};
pub use users::{NewUser, User, UserStatus, UserUpdate};

/// This component's tables.
pub static MIGRATIONS: factoryops_db::Migrations = factoryops_db::Migrations {
    component: "identity",
    sqlite: sqlx::migrate!("migrations/sqlite"),
    mysql: sqlx::migrate!("migrations/mysql"),
};

/// A page of a list: `next_cursor` is set when more items follow.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
