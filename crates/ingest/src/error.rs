use factoryops_db::DbError;

/// Errors of the repository functions (devices, properties).
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("invalid {field}: {message}")]
    Invalid { field: &'static str, message: String },
    /// Several invalid fields at once (property semantics).
    #[error("invalid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidFields(Vec<factoryops_types::SemanticsError>),
}

impl From<sqlx::Error> for RepoError {
    fn from(e: sqlx::Error) -> Self {
        RepoError::Db(DbError::from(e))
    }
}

/// Why a message could not be ingested. Each of these means "not durable": the caller
/// must not acknowledge the message (MQTT: no PUBACK, so the device redelivers).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("property registration failed: {0}")]
    Registration(#[source] RepoError),
    #[error("telemetry store write failed: {0}")]
    Store(String),
    #[error("ingestion is shutting down")]
    ShuttingDown,
}
