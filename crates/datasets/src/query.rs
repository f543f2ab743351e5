//! The dataset query as a client sends it, its validation against the limits, and its
//! canonical form (the one stored in the manifest).

use std::collections::HashSet;

use factoryops_tsdb::{Agg, BulkQuery};
use factoryops_types::{DeviceId, PropertyName, format_rfc3339_ms, parse_rfc3339_ms};
use serde::{Deserialize, Serialize};

/// `POST /datasets` body. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetRequest {
    pub devices: Vec<String>,
    pub properties: Vec<String>,
    /// RFC 3339, inclusive.
    pub from: String,
    /// RFC 3339, exclusive.
    pub to: String,
    /// Bucket length (`30s`, `1m`, `15m`, `1h`, `1d`, `1w`), with `agg`.
    #[serde(default)]
    pub every: Option<String>,
    /// `avg`, `min`, `max`, `sum`, `count`, `first`, `last`, with `every`.
    #[serde(default)]
    pub agg: Option<String>,
}

/// Bounds of one export, so that a request cannot ask the server for an unbounded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Devices × properties, i.e. value columns.
    pub max_series: usize,
    /// Longest `to - from`.
    pub max_span_ms: i64,
    /// Values in the file (non-null cells). Aggregated queries are checked up front from
    /// their bucket count; raw exports fail when they pass it.
    pub max_values: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_series: 1000, max_span_ms: 366 * 86_400_000, max_values: 50_000_000 }
    }
}

/// One invalid field, with its path in the request (`devices[2]`, `to`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// A validated query, in canonical form: timestamps as RFC 3339 with milliseconds in UTC,
/// `every` as given (it parsed), `agg` lower case. Serialised into the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetQuery {
    pub devices: Vec<DeviceId>,
    pub properties: Vec<PropertyName>,
    #[serde(serialize_with = "factoryops_types::ser_time", deserialize_with = "de_time")]
    pub from: i64,
    #[serde(serialize_with = "factoryops_types::ser_time", deserialize_with = "de_time")]
    pub to: i64,
    pub every: Option<String>,
    pub agg: Option<Agg>,
}

fn de_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let s = String::deserialize(d)?;
    parse_rfc3339_ms(&s).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time"))
}

impl DatasetQuery {
    /// `(every_ms, agg)` of an aggregated query.
    pub fn aggregation(&self) -> Option<(i64, Agg)> {
        match (&self.every, self.agg) {
            (Some(e), Some(a)) => parse_every(e).map(|ms| (ms, a)),
            _ => None,
        }
    }

    /// Value columns in file order: device-major, as `{device_id}/{property}`.
    pub fn series(&self) -> Vec<(DeviceId, PropertyName)> {
        self.devices.iter().flat_map(|d| self.properties.iter().map(move |p| (d.clone(), p.clone()))).collect()
    }

    pub fn column_names(&self) -> Vec<String> {
        self.series().iter().map(|(d, p)| format!("{d}/{p}")).collect()
    }

    /// The bulk read of this query with `batch_values` values per batch.
    pub fn bulk_query(&self, batch_values: usize) -> BulkQuery {
        BulkQuery {
            series: self.series(),
            from_ms: self.from,
            to_ms: self.to,
            aggregation: self.aggregation(),
            batch_values,
        }
    }
}

/// Parses `30s`, `1m`, `15m`, `1h`, `1d`, `1w` into milliseconds (as `/telemetry/series`).
pub fn parse_every(text: &str) -> Option<i64> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = digits.parse().ok().filter(|n| *n > 0)?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

pub fn parse_agg(text: &str) -> Option<Agg> {
    Some(match text {
        "avg" => Agg::Avg,
        "min" => Agg::Min,
        "max" => Agg::Max,
        "sum" => Agg::Sum,
        "count" => Agg::Count,
        "first" => Agg::First,
        "last" => Agg::Last,
        _ => return None,
    })
}

fn ids<T>(
    field: &str,
    raw: &[String],
    parse: impl Fn(&str) -> Result<T, String>,
    errors: &mut Vec<FieldError>,
) -> Vec<T> {
    if raw.is_empty() {
        errors.push(FieldError::new(field, "must name at least one"));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        match parse(text) {
            Ok(v) if seen.insert(text.as_str()) => out.push(v),
            Ok(_) => errors.push(FieldError::new(format!("{field}[{i}]"), format!("{text:?} is listed twice"))),
            Err(e) => errors.push(FieldError::new(format!("{field}[{i}]"), e)),
        }
    }
    out
}

/// Checks every field (all errors at once) and the limits.
pub fn validate(req: &DatasetRequest, limits: &Limits) -> Result<DatasetQuery, Vec<FieldError>> {
    let mut errors = Vec::new();
    let devices = ids("devices", &req.devices, |t| DeviceId::parse(t).map_err(|e| e.to_string()), &mut errors);
    let properties =
        ids("properties", &req.properties, |t| PropertyName::parse(t).map_err(|e| e.to_string()), &mut errors);
    let from = parse_rfc3339_ms(&req.from);
    if from.is_none() {
        errors.push(FieldError::new("from", "must be an RFC 3339 time, e.g. 2026-11-01T00:00:00Z"));
    }
    let to = parse_rfc3339_ms(&req.to);
    if to.is_none() {
        errors.push(FieldError::new("to", "must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"));
    }
    let every = match &req.every {
        Some(e) => match parse_every(e) {
            Some(ms) => Some(ms),
            None => {
                errors.push(FieldError::new("every", "must look like 30s, 1m, 5m, 15m, 1h, 1d or 1w"));
                None
            }
        },
        None => None,
    };
    let agg = match &req.agg {
        Some(a) => match parse_agg(a) {
            Some(agg) => Some(agg),
            None => {
                errors.push(FieldError::new("agg", "must be avg, min, max, sum, count, first or last"));
                None
            }
        },
        None => None,
    };
    match (&req.every, &req.agg) {
        (Some(_), None) => errors.push(FieldError::new("agg", "is required with `every`")),
        (None, Some(_)) => errors.push(FieldError::new("every", "is required with `agg`")),
        _ => {}
    }
    let series = req.devices.len().saturating_mul(req.properties.len());
    if series > limits.max_series {
        errors.push(FieldError::new(
            "properties",
            format!(
                "{} devices × {} properties = {series} columns; at most {} per dataset",
                req.devices.len(),
                req.properties.len(),
                limits.max_series
            ),
        ));
    }
    if let (Some(from), Some(to)) = (from, to) {
        if from >= to {
            errors.push(FieldError::new("to", "must be after `from`"));
        } else if to - from > limits.max_span_ms {
            errors.push(FieldError::new(
                "to",
                format!("the range spans more than {} days; export it in parts", limits.max_span_ms / 86_400_000),
            ));
        } else if let Some(every) = every {
            let buckets = ((to - from + every - 1) / every) as u64 + 1;
            let values = buckets.saturating_mul(series as u64);
            if values > limits.max_values {
                errors.push(FieldError::new(
                    "every",
                    format!(
                        "gives up to {values} values for this range; at most {} per dataset: choose a larger one",
                        limits.max_values
                    ),
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (Some(from), Some(to)) = (from, to) else { return Err(errors) };
    Ok(DatasetQuery { devices, properties, from, to, every: req.every.clone(), agg })
}

impl std::fmt::Display for DatasetQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} devices × {} properties, {} – {}",
            self.devices.len(),
            self.properties.len(),
            format_rfc3339_ms(self.from),
            format_rfc3339_ms(self.to)
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(json: serde_json::Value) -> DatasetRequest {
        serde_json::from_value(json).unwrap()
    }

    fn fields(r: Result<DatasetQuery, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_valid_query_in_canonical_form() {
        let r = req(serde_json::json!({"devices": ["press-1", "press-2"], "properties": ["power_kw"],
            "from": "2026-11-01T01:00:00+01:00", "to": "2026-11-02T00:00:00Z", "every": "15m", "agg": "avg"}));
        let q = validate(&r, &Limits::default()).unwrap();
        assert_eq!(q.from, 1_793_491_200_000, "offset normalised to UTC");
        assert_eq!(q.aggregation(), Some((900_000, Agg::Avg)));
        assert_eq!(q.column_names(), vec!["press-1/power_kw", "press-2/power_kw"]);
        let json = serde_json::to_value(&q).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"devices": ["press-1", "press-2"], "properties": ["power_kw"],
                "from": "2026-11-01T00:00:00.000Z", "to": "2026-11-02T00:00:00.000Z", "every": "15m", "agg": "avg"})
        );
        assert_eq!(serde_json::from_value::<DatasetQuery>(json).unwrap(), q, "the manifest's query reads back");
    }

    #[test]
    fn every_field_error_has_its_path() {
        let r = req(serde_json::json!({"devices": ["ok", "bad id!", "ok"], "properties": [],
            "from": "yesterday", "to": "2026-11-02T00:00:00Z", "every": "5 minutes"}));
        assert_eq!(
            fields(validate(&r, &Limits::default())),
            vec!["devices[1]", "devices[2]", "properties", "from", "every", "agg"]
        );
        let r = req(serde_json::json!({"devices": ["a"], "properties": ["p"],
            "from": "2026-11-02T00:00:00Z", "to": "2026-11-02T00:00:00Z", "agg": "median"}));
        assert_eq!(fields(validate(&r, &Limits::default())), vec!["agg", "every", "to"]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_value::<DatasetRequest>(serde_json::json!({"devices": [], "properties": [],
            "from": "", "to": "", "format": "csv"}))
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `format`"), "{e}");
    }

    #[test]
    fn limits() {
        let limits = Limits { max_series: 4, max_span_ms: 10 * 86_400_000, max_values: 1000 };
        let base = serde_json::json!({"devices": ["a", "b"], "properties": ["p", "q"],
            "from": "2026-11-01T00:00:00Z", "to": "2026-11-11T00:00:00Z"});
        assert!(validate(&req(base.clone()), &limits).is_ok(), "4 series over exactly 10 days");
        let mut three = base.clone();
        three["properties"] = serde_json::json!(["p", "q", "r"]);
        assert_eq!(fields(validate(&req(three), &limits)), vec!["properties"]);
        let mut long = base.clone();
        long["to"] = serde_json::json!("2026-11-11T00:00:00.001Z");
        assert_eq!(fields(validate(&req(long), &limits)), vec!["to"]);
        // 10 days at 1 h = 240 buckets (+1 for a range not on bucket bounds) × 4 series = 964 values: allowed.
        let mut hourly = base.clone();
        hourly["every"] = serde_json::json!("1h");
        hourly["agg"] = serde_json::json!("max");
        assert!(validate(&req(hourly.clone()), &limits).is_ok());
        hourly["every"] = serde_json::json!("30m");
        assert_eq!(fields(validate(&req(hourly), &limits)), vec!["every"]);
    }
}
