//! Rules and alerts (issue 7): the rule model and its validation, the event-driven
//! evaluator with its per (rule, device) state machine, schedules in the factory's time
//! zone, the alert store (rules, alerts, history; effects applied with outbox events on
//! the `alerts` topic), the [`RulesEngine`] that ties them together, and the backtest.
//!
//! The HTTP layer uses [`RulesEngine`] for everything that changes state (so the
//! in-memory evaluator stays in sync) and [`RulesStore`] (via [`RulesEngine::store`]) for reads.
//! See README.md for the rule JSON reference and the evaluation semantics.

pub mod backtest;
pub mod effects;
pub mod energy;
pub mod engine;
pub mod eval;
pub mod model;
pub mod schedule;
pub mod states;
pub mod store;
pub mod validate;

pub use backtest::{BacktestDevice, BacktestRequest, BacktestResult, backtest};
pub use effects::{AlertLedger, AlertRecord, AlertRef, Effect, Notification, NotifyKind, OpenAlert, ResolveReason};
pub use energy::{
    BaselineTarget, EnergyConfig, EnergyFacts, IdleDefinition, PERIOD_SETTLE_MS, Period, PeriodFigures, PowerSource,
    SpecificEnergy, SpecificFigures, SpecificKey,
};
pub use engine::{EngineConfig, RuleWithWarnings, RulesEngine};
pub use eval::{Evaluator, EvaluatorStats, Observation, RestoredAlert};
pub use model::{
    CmpOp, Condition, Day, DemandWhen, ExpectedPerUnit, Notify, OutsideSchedule, RatePer, RuleSpec, Schedule, Scope,
    Severity, SpecificPeriod, Targets, TimeWindow,
};
pub use states::{StateCode, StateLabels};
pub use store::{Alert, AlertHistoryEntry, AlertQuery, AlertStatus, ApplySummary, RulesStore, StoredRule};
pub use validate::{FieldError, ValidRule, Warning, validate_rule};

/// This component's tables: `rules`, `alerts`, `alert_history`.
pub static MIGRATIONS: factoryops_db::Migrations = factoryops_db::Migrations {
    component: "rules",
    sqlite: sqlx::migrate!("migrations/sqlite"),
    mysql: sqlx::migrate!("migrations/mysql"),
};

/// A page of a list: `next_cursor` is set when more items follow.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The rule body is invalid: 422 with these field errors.
    #[error("invalid rule: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// Missing, or another factory's (404).
    #[error("not found")]
    NotFound,
    /// The transition is not allowed from the current state (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A bad parameter other than the rule body (400/422).
    #[error("{field}: {message}")]
    BadRequest { field: String, message: String },
    #[error(transparent)]
    Db(#[from] factoryops_db::DbError),
    #[error("telemetry store: {0}")]
    Tsdb(#[from] factoryops_tsdb::TsdbError),
    #[error("stored data is malformed: {0}")]
    Malformed(String),
}

impl From<factoryops_notify::NotifyError> for RulesError {
    fn from(e: factoryops_notify::NotifyError) -> Self {
        match e {
            factoryops_notify::NotifyError::Database(db) => RulesError::Db(db),
            other => RulesError::Malformed(format!("notification: {other}")),
        }
    }
}

impl RulesError {
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        RulesError::BadRequest { field: field.into(), message: message.into() }
    }
}

pub(crate) use factoryops_types::{ser_opt_time, ser_time};
