use chrono::{DateTime, SecondsFormat, Utc};

/// RFC 3339 UTC with millisecond precision, the form every JSON time takes.
pub fn format_rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 time (any offset) into Unix milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_millis())
}

/// `#[serde(serialize_with = "…")]` for Unix-ms fields shown as RFC 3339 in JSON.
pub fn ser_time<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_rfc3339_ms(*ms))
}

/// [`ser_time`] for optional times (`null` when unset).
pub fn ser_opt_time<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&format_rfc3339_ms(*ms)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_milliseconds() {
        let ms = 1_795_000_000_123;
        let text = format_rfc3339_ms(ms);
        assert!(text.ends_with(".123Z"), "{text}");
        assert_eq!(parse_rfc3339_ms(&text), Some(ms));
    }

    #[test]
    fn accepts_offsets() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T01:00:00+01:00"), Some(0),);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
