//! How values read on paper: one place, so the PDF and a test's expected text agree.

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use chrono_tz::Tz;

use crate::model::{Cell, ValueType};

/// `1234567.891` with 2 decimals → `1,234,567.89`.
pub fn number(v: f64, decimals: u8) -> String {
    // Halves round away from zero as on paper (0.8875 → 0.888), not as the binary value
    // just below them would (0.88749999… → 0.887).
    let scale = 10f64.powi(i32::from(decimals));
    let rounded = (v.abs() * scale).round() / scale;
    let text = format!("{:.*}", usize::from(decimals), rounded);
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text.as_str(), None),
    };
    let mut grouped = String::with_capacity(int.len() + int.len() / 3 + 4);
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    // `-0.00` reads as noise: a value that rounds to zero has no sign.
    let negative = v < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0');
    let mut out = String::with_capacity(grouped.len() + 6);
    if negative {
        out.push('-');
    }
    out.push_str(&grouped);
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// An instant as the factory's wall clock: `2026-03-29 03:15`.
pub fn local_time(t: &DateTime<FixedOffset>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

/// The instant `ms` in `tz`, with its offset kept (so JSON says which offset applied).
pub fn to_local(tz: Tz, ms: i64) -> DateTime<FixedOffset> {
    let utc = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    tz.from_utc_datetime(&utc.naive_utc()).fixed_offset()
}

/// A cell as text in a column of type `kind` (no unit: headers carry units).
pub fn cell(value: &Cell, kind: &ValueType) -> String {
    match (value, kind) {
        (Cell::Empty, _) => "–".to_owned(),
        (Cell::Number(v), ValueType::Number { decimals, .. }) => number(*v, *decimals),
        (Cell::Number(v), ValueType::Percent { decimals }) => format!("{} %", number(v * 100.0, *decimals)),
        (Cell::Number(v), _) => number(*v, 2),
        (Cell::Time(t), _) => local_time(t),
        (Cell::Text(s), _) => s.clone(),
    }
}

/// A key figure with its unit: `1,234.5 kWh`.
pub fn figure(value: &Cell, kind: &ValueType) -> String {
    let text = cell(value, kind);
    match (value, kind) {
        (Cell::Number(_), ValueType::Number { unit: Some(u), .. }) => format!("{text} {u}"),
        _ => text,
    }
}

/// Milliseconds as a duration a person reads: `1 h 05 min`, `12 min`, `45 s`.
pub fn duration_ms(ms: f64) -> String {
    let secs = (ms / 1000.0).round() as i64;
    if secs < 60 {
        format!("{secs} s")
    } else if secs < 3600 {
        format!("{} min", secs / 60)
    } else {
        format!("{} h {:02} min", secs / 3600, (secs % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_and_rounded() {
        assert_eq!(number(1_234_567.891, 2), "1,234,567.89");
        assert_eq!(number(999.5, 0), "1,000");
        assert_eq!(number(-1234.5, 1), "-1,234.5");
        assert_eq!(number(-0.001, 2), "0.00");
        assert_eq!(number(12.0, 0), "12");
        assert_eq!(number(0.8875, 3), "0.888");
        assert_eq!(number(102.25, 1), "102.3");
    }

    #[test]
    fn local_times_follow_dst() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-03-29 01:00 UTC is 03:00 CEST, the hour after the spring change.
        let t = to_local(tz, 1_774_746_000_000);
        assert_eq!(local_time(&t), "2026-03-29 03:00");
        assert_eq!(t.offset().local_minus_utc(), 7200);
        assert_eq!(duration_ms(3_900_000.0), "1 h 05 min");
    }
}
