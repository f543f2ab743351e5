//! The report document: what every renderer draws and what the JSON format is. Builders
//! make it from domain inputs; renderers never compute a figure, they only lay out the
//! cells they are given, so the PDF, the workbook and the JSON always say the same.

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which report a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    Energy,
    Alerts,
    DeviceHealth,
    AnalyticsRun,
}

impl ReportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::Energy => "energy",
            ReportKind::Alerts => "alerts",
            ReportKind::DeviceHealth => "device_health",
            ReportKind::AnalyticsRun => "analytics_run",
        }
    }

    /// The heading a person reads on the cover.
    pub fn title(self) -> &'static str {
        match self {
            ReportKind::Energy => "Energy report",
            ReportKind::Alerts => "Alerts report",
            ReportKind::DeviceHealth => "Device health report",
            ReportKind::AnalyticsRun => "Analytics run report",
        }
    }
}

/// A whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(description = "A rendered report's content: the JSON format of every report kind.")]
pub struct Report {
    pub factory_name: String,
    pub kind: ReportKind,
    pub title: String,
    /// Start of the period (inclusive).
    pub from: DateTime<Utc>,
    /// End of the period (exclusive).
    pub to: DateTime<Utc>,
    /// IANA name of the factory's time zone: every local time in the report is in it.
    pub time_zone: String,
    /// When the report was made (the job's clock, not the renderer's); PDF and XLSX
    /// metadata carry this instant too, so identical input gives identical bytes.
    pub generated_at: DateTime<Utc>,
    pub sections: Vec<Section>,
}

/// A titled part of a report: key figures first, then tables, charts and notes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Section {
    pub title: String,
    #[serde(default)]
    pub key_figures: Vec<KeyFigure>,
    #[serde(default)]
    pub tables: Vec<Table>,
    #[serde(default)]
    pub charts: Vec<Chart>,
    /// Plain sentences: caveats (gaps, missing tariffs) and findings.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// One headline number (or text) with its type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyFigure {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: ValueType,
    pub value: Cell,
}

/// How a value is typed and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ValueType {
    Text,
    /// A number shown with `decimals` places; `unit` goes into the column header.
    Number {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
        decimals: u8,
    },
    /// An instant, shown in the factory's time zone (cells carry their UTC offset).
    Datetime,
    /// A fraction (0.25 is shown as 25.0 %).
    Percent {
        decimals: u8,
    },
}

impl ValueType {
    pub fn number(unit: &str, decimals: u8) -> Self {
        ValueType::Number { unit: (!unit.is_empty()).then(|| unit.to_owned()), decimals }
    }

    pub fn unit(&self) -> Option<&str> {
        match self {
            ValueType::Number { unit, .. } => unit.as_deref(),
            ValueType::Percent { .. } => Some("%"),
            _ => None,
        }
    }

    /// Numbers line up on the right.
    pub fn is_numeric(&self) -> bool {
        matches!(self, ValueType::Number { .. } | ValueType::Percent { .. })
    }
}

/// One value. In JSON: a number, an RFC 3339 instant with the factory's offset, a string
/// or `null` (a figure that does not exist, e.g. cost without a tariff).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cell {
    Number(f64),
    Time(DateTime<FixedOffset>),
    Text(String),
    Empty,
}

/// Written by hand: a derived `oneOf` would reject every date-time, which is a string too.
impl utoipa::PartialSchema for Cell {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
        let object = ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::Number, Type::String, Type::Null]))
            .description(Some(
                "A number, an RFC 3339 instant with the factory's UTC offset (date-time values), a text, or null \
                 (a figure that does not exist).",
            ))
            .build();
        utoipa::openapi::RefOr::T(Schema::Object(object))
    }
}

impl ToSchema for Cell {}

impl Cell {
    pub fn text(s: impl Into<String>) -> Self {
        Cell::Text(s.into())
    }

    /// A number, or empty when there is none (`None`, NaN). Rounded to 12 significant
    /// digits: sums of floats end in noise (`3600.6000000000004`) that no reader of a
    /// report should see, while 12 digits keep every figure a report shows exact.
    pub fn num(v: Option<f64>) -> Self {
        match v {
            Some(x) if x.is_finite() => Cell::Number(format!("{x:.11e}").parse().unwrap_or(x)),
            _ => Cell::Empty,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Cell::Number(x) => Some(*x),
            _ => None,
        }
    }
}

impl From<f64> for Cell {
    fn from(v: f64) -> Self {
        Cell::num(Some(v))
    }
}

/// A column of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub title: String,
    #[serde(rename = "type")]
    pub kind: ValueType,
}

impl Column {
    pub fn new(title: &str, kind: ValueType) -> Self {
        Self { title: title.to_owned(), kind }
    }

    /// The title with the unit, as headers show it: `Energy (kWh)`. Percent columns
    /// carry their sign in every cell instead.
    pub fn header(&self) -> String {
        match &self.kind {
            ValueType::Number { unit: Some(u), .. } => format!("{} ({u})", self.title),
            _ => self.title.clone(),
        }
    }
}

/// A table: typed columns, rows of cells (one per column).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// Short and unique within the report; the workbook's sheet name.
    pub id: String,
    pub title: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
    /// A last row in bold (totals); not part of `rows` so sorting and filtering a sheet
    /// leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Vec<Cell>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChartKind {
    Bar,
    StackedBar,
    Line,
}

/// A chart over categories (days, devices, shifts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Chart {
    pub title: String,
    pub kind: ChartKind,
    /// The unit of the value axis.
    pub unit: String,
    pub categories: Vec<String>,
    pub series: Vec<Series>,
}

/// One series of a chart: a value (or a hole) per category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
// `Series` is the telemetry series' schema in the API's document; one name, one schema.
#[schema(as = ChartSeries)]
pub struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

impl Report {
    pub fn tables(&self) -> impl Iterator<Item = &Table> {
        self.sections.iter().flat_map(|s| s.tables.iter())
    }

    pub fn charts(&self) -> impl Iterator<Item = &Chart> {
        self.sections.iter().flat_map(|s| s.charts.iter())
    }

    /// The zone the report's local times are in (UTC if the name is unknown, which a
    /// builder refuses before it gets here).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::UTC)
    }
}
