//! Line protocol and InfluxQL text: escaping, encoding of points, query statements and
//! parsing of `/query` JSON results.
//!
//! Tag values are stored in a reversible form: `%`, `\`, CR and LF are percent-encoded
//! (`%25`, `%5C`, `%0D`, `%0A`) because InfluxDB 1.x line protocol cannot represent a
//! backslash before a special character unambiguously; the platform's ids never contain
//! these characters, so stored tags look exactly like the ids. Then `,`, `=` and space are
//! backslash-escaped for the line protocol. InfluxQL string literals escape `\` and `'`.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Deserialize;

use crate::{Agg, TsdbError, Value};

pub const MEASUREMENT: &str = "device_metrics";
pub const FIELD: &str = "value";
pub const BOOL_FIELD: &str = "value_bool";

/// InfluxDB's representable time range (int64 nanoseconds), in whole milliseconds.
pub const MIN_TS_MS: i64 = i64::MIN / 1_000_000 + 1;
pub const MAX_TS_MS: i64 = i64::MAX / 1_000_000 - 1;

/// The stored form of a tag value (see the module docs); `decode_tag` inverts it.
pub fn encode_tag(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\\' => out.push_str("%5C"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out
}

pub fn decode_tag(stored: &str) -> String {
    let mut out = String::with_capacity(stored.len());
    let mut rest = stored;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3);
        let c = match code {
            Some("25") => Some('%'),
            Some("5C") => Some('\\'),
            Some("0D") => Some('\r'),
            Some("0A") => Some('\n'),
            _ => None,
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Appends a tag value for the line protocol: stored form, then `,` `=` and space escaped.
pub fn push_tag_value(out: &mut String, raw: &str) {
    for c in encode_tag(raw).chars() {
        if matches!(c, ',' | '=' | ' ') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// An InfluxQL string literal holding the stored form of a tag value.
pub fn tag_literal(raw: &str) -> String {
    string_literal(&encode_tag(raw))
}

/// An InfluxQL single-quoted string literal.
pub fn string_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// An InfluxQL double-quoted identifier (database names).
pub fn identifier(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Appends one line: tags in key order (device_id, factory_id, property_name), field
/// `value` (booleans as 0/1) and for booleans also `value_bool`, timestamp in ms.
pub fn push_line(out: &mut String, factory: &str, device: &str, property: &str, ts_ms: i64, value: Value) {
    out.push_str(MEASUREMENT);
    out.push_str(",device_id=");
    push_tag_value(out, device);
    out.push_str(",factory_id=");
    push_tag_value(out, factory);
    out.push_str(",property_name=");
    push_tag_value(out, property);
    match value {
        Value::Float(v) => {
            // Rust's `Display` for f64 is the shortest round-trip form without exponent,
            // which InfluxDB parses as a float (no `i` suffix).
            let _ = write!(out, " value={v}");
        }
        Value::Bool(b) => {
            let _ = write!(out, " value={},value_bool={b}", u8::from(b));
        }
    }
    let _ = writeln!(out, " {ts_ms}");
}

/// `WHERE` clause selecting exactly one series of one factory.
pub fn series_where(factory: &str, device: &str, property: &str) -> String {
    format!(
        "\"factory_id\" = {} AND \"device_id\" = {} AND \"property_name\" = {}",
        tag_literal(factory),
        tag_literal(device),
        tag_literal(property)
    )
}

fn clamp(ts: i64) -> i64 {
    ts.clamp(MIN_TS_MS, MAX_TS_MS)
}

/// Raw read of `[from, to)` (with `after` = last timestamp already read, for paging).
pub fn raw_statement(where_series: &str, from_ms: i64, to_ms: i64, limit: usize) -> String {
    format!(
        "SELECT \"{FIELD}\", \"{BOOL_FIELD}\" FROM \"{MEASUREMENT}\" WHERE {where_series} AND time >= {}ms AND time < {}ms ORDER BY time ASC LIMIT {limit}",
        clamp(from_ms),
        clamp(to_ms)
    )
}

/// Aggregated read; `first`/`last` also select the boolean field so boolean series stay booleans.
pub fn agg_statement(where_series: &str, from_ms: i64, to_ms: i64, every_ms: i64, agg: Agg) -> String {
    let select = agg_select(agg);
    format!(
        "SELECT {select} FROM \"{MEASUREMENT}\" WHERE {where_series} AND time >= {}ms AND time < {}ms GROUP BY time({every_ms}ms) fill(none)",
        clamp(from_ms),
        clamp(to_ms)
    )
}

fn agg_select(agg: Agg) -> String {
    match agg {
        Agg::Avg => format!("mean(\"{FIELD}\")"),
        Agg::Min => format!("min(\"{FIELD}\")"),
        Agg::Max => format!("max(\"{FIELD}\")"),
        Agg::Sum => format!("sum(\"{FIELD}\")"),
        Agg::Count => format!("count(\"{FIELD}\")"),
        Agg::First => format!("first(\"{FIELD}\"), first(\"{BOOL_FIELD}\")"),
        Agg::Last => format!("last(\"{FIELD}\"), last(\"{BOOL_FIELD}\")"),
    }
}

/// `WHERE` clause of a bulk read: the factory, any of the devices and any of the
/// properties. For a query that is not a full devices × properties product this selects
/// a superset; the caller keeps only the series it asked for.
pub fn bulk_where(factory: &str, devices: &[&str], properties: &[&str]) -> String {
    let any = |tag: &str, values: &[&str]| {
        let alts: Vec<String> = values.iter().map(|v| format!("\"{tag}\" = {}", tag_literal(v))).collect();
        format!("({})", alts.join(" OR "))
    };
    format!(
        "\"factory_id\" = {} AND {} AND {}",
        tag_literal(factory),
        any("device_id", devices),
        any("property_name", properties)
    )
}

/// A bulk read of one window, one result series per (device, property): raw values
/// or buckets as [`agg_statement`].
pub fn bulk_statement(where_series: &str, from_ms: i64, to_ms: i64, aggregation: Option<(i64, Agg)>) -> String {
    let range = format!("time >= {}ms AND time < {}ms", clamp(from_ms), clamp(to_ms));
    match aggregation {
        None => format!(
            "SELECT \"{FIELD}\", \"{BOOL_FIELD}\" FROM \"{MEASUREMENT}\" WHERE {where_series} AND {range} GROUP BY \"device_id\", \"property_name\""
        ),
        Some((every_ms, agg)) => format!(
            "SELECT {} FROM \"{MEASUREMENT}\" WHERE {where_series} AND {range} GROUP BY time({every_ms}ms), \"device_id\", \"property_name\" fill(none)",
            agg_select(agg)
        ),
    }
}

/// Latest sample per property of one device: two statements (a single statement with two
/// selectors would lose the point's timestamp).
pub fn latest_statements(factory: &str, device: &str) -> String {
    let w = format!("\"factory_id\" = {} AND \"device_id\" = {}", tag_literal(factory), tag_literal(device));
    let range = format!("time >= {MIN_TS_MS}ms AND time <= {MAX_TS_MS}ms");
    format!(
        "SELECT last(\"{FIELD}\") FROM \"{MEASUREMENT}\" WHERE {w} AND {range} GROUP BY \"property_name\"; \
         SELECT last(\"{BOOL_FIELD}\") FROM \"{MEASUREMENT}\" WHERE {w} AND {range} GROUP BY \"property_name\""
    )
}

/// The typed value of a row holding the float field and (maybe) the boolean field: a
/// boolean wins when it agrees with the float (0/1), so a series that was always boolean
/// reads back as booleans.
pub fn row_value(float: f64, boolean: Option<bool>) -> Value {
    match boolean {
        Some(b) if float == f64::from(u8::from(b)) => Value::Bool(b),
        _ => Value::Float(float),
    }
}

#[derive(Debug, Deserialize)]
pub struct QueryResponse {
    #[serde(default)]
    pub results: Vec<StatementResult>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct StatementResult {
    #[serde(default)]
    pub series: Vec<SeriesResult>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub partial: bool,
}

#[derive(Debug, Deserialize)]
pub struct SeriesResult {
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub columns: Vec<String>,
    #[serde(default)]
    pub values: Vec<Vec<serde_json::Value>>,
}

pub fn parse_response(body: &[u8]) -> Result<Vec<StatementResult>, TsdbError> {
    let resp: QueryResponse = serde_json::from_slice(body)
        .map_err(|e| TsdbError::Unavailable(format!("influxdb returned an unreadable query result: {e}")))?;
    if let Some(e) = resp.error {
        return Err(TsdbError::InvalidQuery(format!("influxdb: {e}")));
    }
    for r in &resp.results {
        if let Some(e) = &r.error {
            return Err(TsdbError::InvalidQuery(format!("influxdb: {e}")));
        }
    }
    Ok(resp.results)
}

pub fn cell_ts(row: &[serde_json::Value]) -> Result<i64, TsdbError> {
    row.first().and_then(serde_json::Value::as_i64).ok_or_else(|| bad_row("time"))
}

pub fn cell_f64(row: &[serde_json::Value], i: usize) -> Result<Option<f64>, TsdbError> {
    match row.get(i) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| bad_row("number")),
    }
}

pub fn cell_bool(row: &[serde_json::Value], i: usize) -> Result<Option<bool>, TsdbError> {
    match row.get(i) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| bad_row("boolean")),
    }
}

/// A Go duration as InfluxDB prints retention policies: `720h0m0s`, `0s`, `1h30m`,
/// `500ms` (units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`; integers only, as InfluxDB writes them).
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let step = match &rest[..unit] {
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            "us" | "µs" => Duration::from_micros(n),
            "ns" => Duration::from_nanos(n),
            _ => return None,
        };
        total = total.checked_add(step)?;
        rest = &rest[unit..];
    }
    Some(total)
}

fn bad_row(what: &str) -> TsdbError {
    TsdbError::Unavailable(format!("influxdb returned a row without a valid {what} column"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_escape() {
        for raw in ["plain", "a b", "a,b=c", "q'uote\"", "back\\slash", "trail\\", "50%", "%25", "x\ny", "é"] {
            assert_eq!(decode_tag(&encode_tag(raw)), raw);
        }
        let mut s = String::new();
        push_tag_value(&mut s, "a b,c=d\\e'f\"");
        assert_eq!(s, "a\\ b\\,c\\=d%5Ce'f\"");
        assert_eq!(decode_tag("100%"), "100%");
        assert_eq!(decode_tag("%zz%25"), "%zz%");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("720h0m0s"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_go_duration("1500ms"), Some(Duration::from_millis(1_500)));
        for bad in ["", "h", "5", "5d", "1.5h", "-1h"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(string_literal("it's a\\b"), "'it\\'s a\\\\b'");
        assert_eq!(tag_literal("a\\'"), "'a%5C\\''");
        assert_eq!(identifier("my\"db"), "\"my\\\"db\"");
    }

    #[test]
    fn lines() {
        let mut s = String::new();
        push_line(&mut s, "f", "d 1", "p", 5, Value::Float(1.5));
        push_line(&mut s, "f", "d", "p", -5, Value::Bool(true));
        push_line(&mut s, "f", "d", "p", 0, Value::Float(1e300));
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "device_metrics,device_id=d\\ 1,factory_id=f,property_name=p value=1.5 5");
        assert_eq!(lines[1], "device_metrics,device_id=d,factory_id=f,property_name=p value=1,value_bool=true -5");
        assert_eq!(lines[2].split(' ').nth(1).unwrap().trim_start_matches("value=").parse::<f64>().unwrap(), 1e300);
    }

    #[test]
    fn typed_rows() {
        assert_eq!(row_value(1.0, Some(true)), Value::Bool(true));
        assert_eq!(row_value(0.0, Some(false)), Value::Bool(false));
        assert_eq!(row_value(3.5, Some(true)), Value::Float(3.5));
        assert_eq!(row_value(1.0, None), Value::Float(1.0));
    }
}
