//! Reports, pure: the document model ([`model`]), one builder per report kind from its
//! domain input ([`build`]), and renderers to PDF, XLSX and JSON bytes ([`render`]).
//! No I/O and no clock: the job that runs a report reads the data, passes the instant it
//! generates at, and stores the bytes (ADR 0021).

pub mod build;
pub mod format;
pub mod model;
pub mod render;

pub use build::{BuildError, Header};
pub use model::{Cell, Chart, ChartKind, Column, KeyFigure, Report, ReportKind, Section, Series, Table, ValueType};
pub use render::{Format, RenderError, file_name, render};
