//! Dashboards as data (ADR 0022): a dashboard is a named list of widgets stored on the
//! server, private to its owner or shared with the whole factory. This module is the
//! pure half — the model, its validation with field paths and the access rules — and
//! [`store`] keeps dashboards, the factory default and each user's preference.
//!
//! Whether a widget's device or group exists is the caller's question (it owns the
//! device registry and the groups): [`DashboardSpec::references`] lists what to check.

pub mod store;

use factoryops_db::Migrations;
use factoryops_types::DeviceId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use store::{DashboardStore, StoreError};

/// The `dashboards` and `dashboard_preferences` tables.
pub static MIGRATIONS: Migrations = Migrations {
    component: "dashboards",
    sqlite: sqlx::migrate!("migrations/sqlite"),
    mysql: sqlx::migrate!("migrations/mysql"),
};

/// At most this many widgets on one dashboard: the page renders them all at once.
pub const MAX_WIDGETS: usize = 40;
/// At most this many series on one chart widget.
pub const MAX_SERIES: usize = 8;
/// Dashboard names and widget titles, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// The body of a `text` widget, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;
/// A property name, in characters (as the catalogue allows).
pub const MAX_PROPERTY_CHARS: usize = 200;
/// The layout grid is 12 columns wide; rows are unbounded but capped for sanity.
pub const GRID_COLUMNS: u32 = 12;
pub const MAX_ROW: u32 = 1000;
pub const MAX_HEIGHT: u32 = 12;
/// The time ranges a chart or energy widget may show.
pub const RANGES: [&str; 5] = ["1h", "6h", "24h", "7d", "30d"];

/// What a widget shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WidgetType {
    /// The latest value of `device_id`/`property`, with its unit.
    Value,
    /// Lines of one or more `series` over `range`.
    Chart,
    /// Energy per hour or day over `range`, for a device, a group or the whole factory.
    EnergyBars,
    /// The latest value of `device_id`/`property` between `min` (default 0) and `max`.
    Gauge,
    /// Open alerts, optionally of one device.
    Alerts,
    /// The status of the factory's devices, optionally of one group.
    StatusGrid,
    /// A note: `text`.
    Text,
}

impl WidgetType {
    pub fn as_str(self) -> &'static str {
        match self {
            WidgetType::Value => "value",
            WidgetType::Chart => "chart",
            WidgetType::EnergyBars => "energy_bars",
            WidgetType::Gauge => "gauge",
            WidgetType::Alerts => "alerts",
            WidgetType::StatusGrid => "status_grid",
            WidgetType::Text => "text",
        }
    }
}

/// One line of a chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WidgetSeries {
    pub device_id: String,
    pub property: String,
}

/// A widget's place on the 12-column grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WidgetLayout {
    /// Column, 0–11.
    pub x: u32,
    /// Row, 0–1000.
    pub y: u32,
    /// Width in columns, 1–12, with `x + w` ≤ 12.
    pub w: u32,
    /// Height in rows, 1–12.
    pub h: u32,
}

/// A widget. Which fields a type requires and allows (any other field is refused):
///
/// | type | requires | allows |
/// |---|---|---|
/// | `value` | `device_id`, `property` | |
/// | `gauge` | `device_id`, `property`, `max` | `min` (default 0, < `max`) |
/// | `chart` | `series` (1–8) | `range` |
/// | `energy_bars` | | `device_id` or `group_id` (neither: the whole factory), `range` |
/// | `alerts` | | `device_id` |
/// | `status_grid` | | `group_id` |
/// | `text` | `text` (≤ 2000 characters) | |
///
/// Every type takes `title` (required, ≤ 100 characters) and `layout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Widget {
    #[serde(rename = "type")]
    pub kind: WidgetType,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<Vec<WidgetSeries>>,
    /// `1h`, `6h`, `24h` (the default), `7d` or `30d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<WidgetLayout>,
    /// Gauge: the lower end of the scale (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Gauge: the upper end of the scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Text widget: the note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The body of `POST /dashboards` and `PUT /dashboards/{id}`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DashboardSpec {
    /// 1–100 characters.
    pub name: String,
    /// Readable by every user of the factory (writable still only by the owner or a super
    /// admin). Default false.
    #[serde(default)]
    pub shared: bool,
    /// The factory's default dashboard (super admins only; it must be shared). Absent on
    /// `PUT` keeps the current value; absent on `POST` means false.
    #[serde(default)]
    pub default: Option<bool>,
    /// At most 40. Default none.
    #[serde(default)]
    pub widgets: Vec<Widget>,
}

/// A stored dashboard: the spec plus `id`, `owner` (the user id), `default`,
/// `created_at`, `updated_at`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Dashboard {
    pub id: String,
    /// The id of the user who created it.
    pub owner: String,
    pub name: String,
    pub shared: bool,
    /// Whether this is the factory's default dashboard.
    pub default: bool,
    pub widgets: Vec<Widget>,
    #[serde(serialize_with = "factoryops_types::ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(serialize_with = "factoryops_types::ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
}

/// A bad field, named by its path (`widgets[2].device_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldIssue {
    pub field: String,
    pub message: String,
}

impl FieldIssue {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Something a widget refers to, which must exist in the same factory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Device(String),
    Group(String),
}

/// Who is asking: dashboards belong to users, so an API key reads shared ones only and
/// writes none.
#[derive(Debug, Clone, Copy)]
pub enum Viewer<'a> {
    User { user_id: &'a str, super_admin: bool },
    ApiKey,
}

impl Viewer<'_> {
    /// Private dashboards are the owner's alone (a super admin does not see them either:
    /// private means private); shared ones are everyone's in the factory.
    pub fn can_read(&self, dashboard: &Dashboard) -> bool {
        dashboard.shared || matches!(self, Viewer::User { user_id, .. } if *user_id == dashboard.owner)
    }

    /// The owner, or a super admin (for the shared dashboards they can read).
    pub fn can_write(&self, dashboard: &Dashboard) -> bool {
        match self {
            Viewer::User { user_id, super_admin } => *super_admin || *user_id == dashboard.owner,
            Viewer::ApiKey => false,
        }
    }
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

impl DashboardSpec {
    /// Every problem with the spec, each named by its path; empty when it is valid.
    /// `current_default` is the stored dashboard's `default` (false on create), so an
    /// absent `default` on `PUT` is judged by the value it keeps.
    pub fn validate(&self, current_default: bool) -> Vec<FieldIssue> {
        let mut issues = Vec::new();
        if self.name.trim().is_empty() {
            issues.push(FieldIssue::new("name", "must not be empty"));
        } else if chars(&self.name) > MAX_NAME_CHARS {
            issues.push(FieldIssue::new("name", format!("at most {MAX_NAME_CHARS} characters")));
        }
        if self.default.unwrap_or(current_default) && !self.shared {
            issues.push(FieldIssue::new("shared", "the factory's default dashboard must be shared"));
        }
        if self.widgets.len() > MAX_WIDGETS {
            issues.push(FieldIssue::new("widgets", format!("at most {MAX_WIDGETS} widgets")));
        }
        for (i, widget) in self.widgets.iter().enumerate() {
            widget.validate(&format!("widgets[{i}]"), &mut issues);
        }
        issues
    }

    /// The devices and groups the widgets name, with the path of each mention.
    pub fn references(&self) -> Vec<(String, Reference)> {
        let mut refs = Vec::new();
        for (i, w) in self.widgets.iter().enumerate() {
            if let Some(device) = &w.device_id {
                refs.push((format!("widgets[{i}].device_id"), Reference::Device(device.clone())));
            }
            if let Some(group) = &w.group_id {
                refs.push((format!("widgets[{i}].group_id"), Reference::Group(group.clone())));
            }
            for (j, s) in w.series.iter().flatten().enumerate() {
                refs.push((format!("widgets[{i}].series[{j}].device_id"), Reference::Device(s.device_id.clone())));
            }
        }
        refs
    }
}

/// The fields a widget type requires and the optional ones it allows besides.
fn fields_of(kind: WidgetType) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        WidgetType::Value => (&["device_id", "property"], &[]),
        WidgetType::Gauge => (&["device_id", "property", "max"], &["min"]),
        WidgetType::Chart => (&["series"], &["range"]),
        WidgetType::EnergyBars => (&[], &["device_id", "group_id", "range"]),
        WidgetType::Alerts => (&[], &["device_id"]),
        WidgetType::StatusGrid => (&[], &["group_id"]),
        WidgetType::Text => (&["text"], &[]),
    }
}

impl Widget {
    fn present(&self) -> Vec<&'static str> {
        let mut present = Vec::new();
        let mut mark = |name: &'static str, is: bool| {
            if is {
                present.push(name)
            }
        };
        mark("device_id", self.device_id.is_some());
        mark("group_id", self.group_id.is_some());
        mark("property", self.property.is_some());
        mark("series", self.series.is_some());
        mark("range", self.range.is_some());
        mark("min", self.min.is_some());
        mark("max", self.max.is_some());
        mark("text", self.text.is_some());
        present
    }

    fn validate(&self, at: &str, issues: &mut Vec<FieldIssue>) {
        let path = |field: &str| format!("{at}.{field}");
        let kind = self.kind.as_str();
        if chars(&self.title) > MAX_NAME_CHARS {
            issues.push(FieldIssue::new(path("title"), format!("at most {MAX_NAME_CHARS} characters")));
        }
        let (required, optional) = fields_of(self.kind);
        let present = self.present();
        for field in required {
            if !present.contains(field) {
                issues.push(FieldIssue::new(path(field), format!("is required for a `{kind}` widget")));
            }
        }
        for field in &present {
            if !required.contains(field) && !optional.contains(field) {
                issues.push(FieldIssue::new(path(field), format!("is not used by a `{kind}` widget")));
            }
        }
        if self.kind == WidgetType::EnergyBars && self.device_id.is_some() && self.group_id.is_some() {
            issues.push(FieldIssue::new(path("group_id"), "give either `device_id` or `group_id`, not both"));
        }
        if let Some(device) = &self.device_id {
            check_device(&path("device_id"), device, issues);
        }
        if let Some(group) = &self.group_id
            && (group.is_empty() || chars(group) > 36)
        {
            issues.push(FieldIssue::new(path("group_id"), "must be a group id"));
        }
        if let Some(property) = &self.property {
            check_property(&path("property"), property, issues);
        }
        if let Some(series) = &self.series {
            if series.is_empty() || series.len() > MAX_SERIES {
                issues.push(FieldIssue::new(path("series"), format!("1 to {MAX_SERIES} series")));
            }
            for (j, s) in series.iter().enumerate() {
                check_device(&format!("{at}.series[{j}].device_id"), &s.device_id, issues);
                check_property(&format!("{at}.series[{j}].property"), &s.property, issues);
            }
        }
        if let Some(range) = &self.range
            && !RANGES.contains(&range.as_str())
        {
            issues.push(FieldIssue::new(path("range"), format!("must be one of {}", RANGES.join(", "))));
        }
        for (name, value) in [("min", self.min), ("max", self.max)] {
            if value.is_some_and(|v| !v.is_finite()) {
                issues.push(FieldIssue::new(path(name), "must be a finite number"));
            }
        }
        if let Some(max) = self.max
            && max <= self.min.unwrap_or(0.0)
        {
            issues.push(FieldIssue::new(path("max"), "must be greater than `min` (default 0)"));
        }
        if let Some(text) = &self.text
            && chars(text) > MAX_TEXT_CHARS
        {
            issues.push(FieldIssue::new(path("text"), format!("at most {MAX_TEXT_CHARS} characters")));
        }
        if let Some(l) = self.layout {
            if l.w == 0 || l.w > GRID_COLUMNS {
                issues.push(FieldIssue::new(path("layout.w"), format!("1 to {GRID_COLUMNS} columns")));
            } else if l.x + l.w > GRID_COLUMNS {
                issues.push(FieldIssue::new(path("layout.x"), format!("`x + w` must be at most {GRID_COLUMNS}")));
            }
            if l.h == 0 || l.h > MAX_HEIGHT {
                issues.push(FieldIssue::new(path("layout.h"), format!("1 to {MAX_HEIGHT} rows")));
            }
            if l.y > MAX_ROW {
                issues.push(FieldIssue::new(path("layout.y"), format!("at most {MAX_ROW}")));
            }
        }
    }
}

fn check_device(field: &str, device: &str, issues: &mut Vec<FieldIssue>) {
    if DeviceId::parse(device).is_err() {
        issues.push(FieldIssue::new(field, "must be a device id"));
    }
}

fn check_property(field: &str, property: &str, issues: &mut Vec<FieldIssue>) {
    if property.trim().is_empty() || chars(property) > MAX_PROPERTY_CHARS {
        issues.push(FieldIssue::new(field, format!("1 to {MAX_PROPERTY_CHARS} characters")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(body: serde_json::Value) -> DashboardSpec {
        serde_json::from_value(body).unwrap()
    }

    fn fields(issues: Vec<FieldIssue>) -> Vec<String> {
        issues.into_iter().map(|i| i.field).collect()
    }

    #[test]
    fn the_documented_shape_is_valid() {
        let s = spec(json!({"name": "Energy overview", "shared": true, "widgets": [
            {"type": "value", "title": "Press power", "device_id": "press-1", "property": "power_kw",
             "layout": {"x": 0, "y": 0, "w": 3, "h": 2}},
            {"type": "chart", "title": "Power", "series": [{"device_id": "press-1", "property": "power_kw"}], "range": "24h"},
            {"type": "energy_bars", "title": "Energy", "group_id": "g1", "range": "7d"},
            {"type": "gauge", "title": "Temp", "device_id": "press-1", "property": "temp_c", "max": 120},
            {"type": "alerts", "title": "Alerts"},
            {"type": "status_grid", "title": "Status"},
            {"type": "text", "title": "Note", "text": "Shift handover at 14:00"}
        ]}));
        assert_eq!(s.validate(false), vec![]);
        assert_eq!(s.references().len(), 4);
        assert_eq!(s.references()[2], ("widgets[2].group_id".into(), Reference::Group("g1".into())));
    }

    #[test]
    fn each_type_requires_and_refuses_its_fields() {
        let s = spec(json!({"name": "x", "widgets": [
            {"type": "value", "title": "t", "device_id": "press-1"},
            {"type": "text", "title": "t", "text": "hi", "device_id": "press-1"},
            {"type": "gauge", "title": "t", "device_id": "d", "property": "p", "min": 10, "max": 5},
            {"type": "chart", "title": "t", "series": []},
            {"type": "energy_bars", "title": "t", "device_id": "d", "group_id": "g", "range": "2d"},
            {"type": "text", "title": "t"}
        ]}));
        assert_eq!(
            fields(s.validate(false)),
            vec![
                "widgets[0].property",
                "widgets[1].device_id",
                "widgets[2].max",
                "widgets[3].series",
                "widgets[4].group_id",
                "widgets[4].range",
                "widgets[5].text"
            ]
        );
    }

    #[test]
    fn bounds_on_names_widgets_text_and_layout() {
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        let widgets: Vec<_> = (0..=MAX_WIDGETS).map(|_| json!({"type": "alerts", "title": "a"})).collect();
        let s = spec(json!({"name": long, "widgets": widgets}));
        assert_eq!(fields(s.validate(false)), vec!["name", "widgets"]);
        let s = spec(json!({"name": " ", "widgets": [
            {"type": "text", "title": "t", "text": "é".repeat(MAX_TEXT_CHARS)},
            {"type": "text", "title": "t", "text": "é".repeat(MAX_TEXT_CHARS + 1), "layout": {"x": 8, "y": 0, "w": 5, "h": 13}}
        ]}));
        assert_eq!(
            fields(s.validate(false)),
            vec!["name", "widgets[1].text", "widgets[1].layout.x", "widgets[1].layout.h"]
        );
    }

    #[test]
    fn a_default_must_be_shared_and_absent_keeps_the_current_value() {
        let s = spec(json!({"name": "x", "default": true}));
        assert_eq!(fields(s.validate(false)), vec!["shared"]);
        let s = spec(json!({"name": "x"}));
        assert_eq!(fields(s.validate(true)), vec!["shared"]);
        assert!(s.validate(false).is_empty());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_value::<DashboardSpec>(json!({"name": "x", "colour": 1})).is_err());
        assert!(
            serde_json::from_value::<DashboardSpec>(
                json!({"name": "x", "widgets": [{"type": "text", "title": "t", "text": "a", "font": 1}]})
            )
            .is_err()
        );
        assert!(
            serde_json::from_value::<DashboardSpec>(json!({"name": "x", "widgets": [{"type": "pie", "title": "t"}]}))
                .is_err()
        );
    }

    #[test]
    fn access_private_is_the_owners_shared_is_everyones_writes_are_owner_or_super_admin() {
        let d = Dashboard {
            id: "d".into(),
            owner: "u1".into(),
            name: "n".into(),
            shared: false,
            default: false,
            widgets: vec![],
            created_at: 0,
            updated_at: 0,
        };
        let owner = Viewer::User { user_id: "u1", super_admin: false };
        let other = Viewer::User { user_id: "u2", super_admin: false };
        let admin = Viewer::User { user_id: "u3", super_admin: true };
        assert!(owner.can_read(&d) && !other.can_read(&d) && !admin.can_read(&d) && !Viewer::ApiKey.can_read(&d));
        let d = Dashboard { shared: true, ..d };
        assert!(other.can_read(&d) && Viewer::ApiKey.can_read(&d));
        assert!(owner.can_write(&d) && admin.can_write(&d) && !other.can_write(&d) && !Viewer::ApiKey.can_write(&d));
    }
}
