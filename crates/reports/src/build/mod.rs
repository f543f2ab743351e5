//! Builders: pure functions from one kind's domain input to a [`Report`]. Every figure a
//! report shows is computed here (sums, means, shares), once, so the renderers only lay out.

pub mod alerts;
pub mod analytics;
pub mod energy;
pub mod health;

use chrono::DateTime;
use chrono_tz::Tz;

use crate::format;
use crate::model::{Cell, KeyFigure, Report, ReportKind, Section, ValueType};

/// What every report's cover says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Header {
    pub factory_name: String,
    /// IANA time zone of the factory.
    pub time_zone: String,
    pub from_ms: i64,
    /// Exclusive.
    pub to_ms: i64,
    /// The job's clock at generation (injected; never read here).
    pub generated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
    #[error("the period must end after it starts")]
    Period,
    #[error("instant out of range: {0}")]
    Instant(i64),
}

impl Header {
    pub(crate) fn tz(&self) -> Result<Tz, BuildError> {
        self.time_zone.parse().map_err(|_| BuildError::TimeZone(self.time_zone.clone()))
    }

    /// The empty report of `kind` with this header.
    pub(crate) fn report(&self, kind: ReportKind, sections: Vec<Section>) -> Result<Report, BuildError> {
        self.tz()?;
        if self.to_ms <= self.from_ms {
            return Err(BuildError::Period);
        }
        let at = |ms: i64| DateTime::from_timestamp_millis(ms).ok_or(BuildError::Instant(ms));
        Ok(Report {
            factory_name: self.factory_name.clone(),
            kind,
            title: kind.title().to_owned(),
            from: at(self.from_ms)?,
            to: at(self.to_ms)?,
            time_zone: self.time_zone.clone(),
            generated_at: at(self.generated_at_ms)?,
            sections,
        })
    }
}

pub(crate) fn time(tz: Tz, ms: i64) -> Cell {
    Cell::Time(format::to_local(tz, ms))
}

pub(crate) fn figure(label: &str, kind: ValueType, value: Cell) -> KeyFigure {
    KeyFigure { label: label.to_owned(), kind, value }
}

/// Sums the present values; `None` when none is present (cost without any tariff).
pub(crate) fn sum_opt(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    values.into_iter().flatten().fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
}

pub(crate) fn section(title: &str) -> Section {
    Section { title: title.to_owned(), key_figures: vec![], tables: vec![], charts: vec![], notes: vec![] }
}
