//! Errors of the analytics crate. The API maps [`RequestError`] to a 422 problem with
//! one entry per field, and [`AnalysisError`] to a failed run with its message.

use serde::Serialize;

/// One invalid field of a request: a JSON-pointer-like dotted path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Dotted path from the request's root, e.g. `hyperparameters.threshold`.
    pub path: String,
    pub message: String,
}

/// A request refused before any work: every bad field at once, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid analytics request: {}", summary(.errors))]
pub struct RequestError {
    pub errors: Vec<FieldError>,
}

fn summary(errors: &[FieldError]) -> String {
    errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>().join("; ")
}

/// A frame that cannot be built from the given columns or Arrow batches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("column {column:?} has {got} values, the time stamps {expected}")]
    Length { column: String, expected: usize, got: usize },
    #[error("time stamps must be strictly increasing (position {index})")]
    Unsorted { index: usize },
    #[error("column name {0:?} is empty or repeated")]
    Name(String),
    #[error("no `ts` time stamp column")]
    NoTimestamp,
    #[error("column {column:?} has type {data_type}, expected {expected}")]
    Type { column: String, data_type: String, expected: &'static str },
    #[error("the `ts` column has a missing value at row {0}")]
    NullTimestamp(usize),
    #[error("record batches have different schemas")]
    SchemaMismatch,
}

/// Why an analysis could not produce a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalysisError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("the dataset has no column {0:?}")]
    UnknownColumn(String),
    #[error("the dataset has {0} columns: name the `target`")]
    TargetRequired(usize),
    #[error("not enough data: {0}")]
    InsufficientData(String),
    #[error("cancelled")]
    Cancelled,
    #[error("model artifact cannot be scored: {0}")]
    Unscorable(String),
}
