//! The telemetry payload parser: pure, no I/O.
//!
//! A payload is a JSON object of metric → number or boolean; nested objects flatten to
//! dotted names. One bad property never costs the good ones of the same message: it is
//! returned as a [`RejectedProperty`] with a reason. Only a payload that is not a JSON
//! object at all (or breaks a message-level limit) is rejected whole.
//!
//! A device `ts` is used as sent or the message is refused (`timestamp_too_old`,
//! `timestamp_in_future`, `invalid_timestamp`): it is never replaced by the receive time, because a
//! backlog uploaded after an outage would then land as a burst "now" (ADR 0010).

use std::collections::HashSet;

use factoryops_tsdb::Value;
use factoryops_types::{PropertyName, format_rfc3339_ms, parse_rfc3339_ms};
use serde::{Deserialize, Serialize};

/// The reserved top-level key carrying the measurement time.
pub const TS_KEY: &str = "ts";

/// Configurable bounds on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PayloadLimits {
    pub max_payload_bytes: usize,
    /// Accepted properties per message; further ones are rejected.
    pub max_properties: usize,
    /// Object nesting below the top level: 1 allows `{"a": {"b": 1}}`.
    pub max_depth: usize,
    /// A device `ts` further than this ahead of the receive time is refused (`timestamp_in_future`).
    pub max_clock_skew_ms: i64,
    /// A device `ts` further than this behind the receive time is refused (`timestamp_too_old`);
    /// `None`: no bound here. The pipeline lowers it to what the store keeps as raw data
    /// for the message's factory, so a point is never acknowledged that the store would drop.
    pub max_backfill_ms: Option<i64>,
    /// Longest state label (a string value) in characters; longer ones are rejected
    /// (`state_too_long`).
    pub max_state_label_chars: usize,
}

impl Default for PayloadLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 64 * 1024,
            max_properties: 1_000,
            max_depth: 8,
            max_clock_skew_ms: 24 * 3600 * 1000,
            max_backfill_ms: None,
            max_state_label_chars: 64,
        }
    }
}

/// Why one property of a message was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    String,
    Array,
    Null,
    /// A number that is not a finite f64.
    NonFinite,
    InvalidName,
    TooDeep,
    TooManyProperties,
    /// The same flattened name twice in one message (e.g. `"a.b"` and `{"a":{"b"}}`).
    Duplicate,
    /// The device already has the maximum number of distinct properties.
    CardinalityLimit,
    /// A state label (string value) that is empty or longer than `max_state_label_chars`.
    StateTooLong,
    /// A new state label of a property that already has the maximum number of labels.
    StateCardinality,
    /// A number or boolean for a state property (whose values are labels).
    NotAState,
}

impl RejectReason {
    /// The stable label used in metrics and the last-errors list.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::String => "string",
            RejectReason::Array => "array",
            RejectReason::Null => "null",
            RejectReason::NonFinite => "non_finite",
            RejectReason::InvalidName => "invalid_name",
            RejectReason::TooDeep => "too_deep",
            RejectReason::TooManyProperties => "too_many_properties",
            RejectReason::Duplicate => "duplicate",
            RejectReason::CardinalityLimit => "cardinality_limit",
            RejectReason::StateTooLong => "state_too_long",
            RejectReason::StateCardinality => "state_cardinality",
            RejectReason::NotAState => "not_a_state",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedProperty {
    /// The flattened name as sent, truncated to [`PropertyName::MAX_LEN`] characters.
    pub name: String,
    pub reason: RejectReason,
}

/// Why a whole message was rejected. Redelivering it cannot help, so transports still
/// acknowledge it (MQTT v5 with reason 0x99) and the device's next messages flow.
///
/// A `ts` outside the accepted window refuses the message whole: `ts` is the time of every
/// property in it, so no property could be stored truthfully. Times are Unix ms (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum MessageRejection {
    #[error("payload of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("payload is not valid JSON: {detail}")]
    InvalidJson { detail: String },
    #[error("payload is JSON but not an object")]
    NotAnObject,
    /// `ts` is neither integer milliseconds nor an RFC 3339 string.
    #[error("`ts` must be integer Unix milliseconds or an RFC 3339 string")]
    InvalidTimestamp,
    /// `ts` is further in the past than the backfill window (`ingest.max_backfill_secs`,
    /// at most the store's raw retention).
    #[error(
        "`ts` {} is older than the backfill window: the earliest accepted time is {} (ingest.max_backfill_secs / raw retention)",
        rfc3339(.ts_ms),
        rfc3339(.earliest_ms)
    )]
    TimestampTooOld { ts_ms: i64, earliest_ms: i64 },
    /// `ts` is further ahead of the receive time than `ingest.max_clock_skew_secs`.
    #[error(
        "`ts` {} is in the future: the latest accepted time is {} (ingest.max_clock_skew_secs)",
        rfc3339(.ts_ms),
        rfc3339(.latest_ms)
    )]
    TimestampInFuture { ts_ms: i64, latest_ms: i64 },
}

/// For the rejection messages (thiserror hands fields over by reference).
fn rfc3339(ms: &i64) -> String {
    format_rfc3339_ms(*ms)
}

impl MessageRejection {
    pub fn as_str(&self) -> &'static str {
        match self {
            MessageRejection::TooLarge { .. } => "too_large",
            MessageRejection::InvalidJson { .. } => "invalid_json",
            MessageRejection::NotAnObject => "not_an_object",
            MessageRejection::InvalidTimestamp => "invalid_timestamp",
            MessageRejection::TimestampTooOld { .. } => "timestamp_too_old",
            MessageRejection::TimestampInFuture { .. } => "timestamp_in_future",
        }
    }
}

/// A parsed message: every accepted property shares one timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedPayload {
    pub ts_ms: i64,
    /// `ts_ms` is the device's own `ts`; otherwise it is the receive time, which the
    /// pipeline replaces by a unique server-given stamp (ADR 0009).
    pub device_ts: bool,
    pub values: Vec<(PropertyName, Value)>,
    /// String values: state labels, stored as codes once the pipeline looked them up
    /// (ADR 0014). Empty for the usual message.
    pub states: Vec<(PropertyName, String)>,
    pub rejected: Vec<RejectedProperty>,
}

/// Parses one payload received at `received_at_ms`.
pub fn parse_payload(
    payload: &[u8],
    received_at_ms: i64,
    limits: &PayloadLimits,
) -> Result<ParsedPayload, MessageRejection> {
    if payload.len() > limits.max_payload_bytes {
        return Err(MessageRejection::TooLarge { size: payload.len(), max: limits.max_payload_bytes });
    }
    let json: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| MessageRejection::InvalidJson { detail: e.to_string() })?;
    let serde_json::Value::Object(map) = json else {
        return Err(MessageRejection::NotAnObject);
    };
    let ts_ms = match map.get(TS_KEY) {
        Some(value) => checked_device_time(value, received_at_ms, limits)?,
        None => received_at_ms,
    };
    let device_ts = map.contains_key(TS_KEY);
    let mut out = Flattener { limits, values: Vec::new(), states: Vec::new(), rejected: Vec::new(), seen: None };
    for (key, value) in &map {
        if key == TS_KEY {
            continue;
        }
        let mut name = String::with_capacity(key.len());
        name.push_str(key);
        out.visit(&mut name, value, 0);
    }
    Ok(ParsedPayload { ts_ms, device_ts, values: out.values, states: out.states, rejected: out.rejected })
}

/// The device's `ts` if it lies in `[received − max_backfill, received + max_clock_skew]`
/// (and not before the Unix epoch).
fn checked_device_time(
    value: &serde_json::Value,
    received_at_ms: i64,
    limits: &PayloadLimits,
) -> Result<i64, MessageRejection> {
    let ts_ms = device_time(value).ok_or(MessageRejection::InvalidTimestamp)?;
    let latest_ms = received_at_ms.saturating_add(limits.max_clock_skew_ms.max(0));
    if ts_ms > latest_ms {
        return Err(MessageRejection::TimestampInFuture { ts_ms, latest_ms });
    }
    // Without a backfill bound, the Unix epoch: nothing was measured before it, and a
    // clock reset to zero is the usual cause of such a time.
    let earliest_ms = limits.max_backfill_ms.map_or(0, |b| received_at_ms.saturating_sub(b.max(0)).max(0));
    if ts_ms < earliest_ms {
        return Err(MessageRejection::TimestampTooOld { ts_ms, earliest_ms });
    }
    Ok(ts_ms)
}

/// `ts` as integer milliseconds or an RFC 3339 string.
fn device_time(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => parse_rfc3339_ms(s),
        _ => None,
    }
}

struct Flattener<'a> {
    limits: &'a PayloadLimits,
    values: Vec<(PropertyName, Value)>,
    states: Vec<(PropertyName, String)>,
    rejected: Vec<RejectedProperty>,
    /// Names accepted so far, once there are too many to compare one by one.
    seen: Option<HashSet<String>>,
}

/// Up to this many properties a duplicate is found by comparing with each accepted name
/// (typical messages have 5–30: no hashing, no copies); beyond it a set takes over.
const LINEAR_DUPLICATE_CHECK: usize = 32;

impl Flattener<'_> {
    fn visit(&mut self, name: &mut String, value: &serde_json::Value, depth: usize) {
        use serde_json::Value as J;
        let leaf = match value {
            J::Object(map) => {
                if depth >= self.limits.max_depth {
                    self.reject(name, RejectReason::TooDeep);
                    return;
                }
                let base = name.len();
                for (key, child) in map {
                    name.truncate(base);
                    name.push('.');
                    name.push_str(key);
                    self.visit(name, child, depth + 1);
                }
                name.truncate(base);
                return;
            }
            J::Number(n) => match n.as_f64() {
                Some(v) if v.is_finite() => Value::Float(v),
                _ => return self.reject(name, RejectReason::NonFinite),
            },
            J::Bool(b) => Value::Bool(*b),
            J::String(label) => return self.visit_state(name, label),
            J::Array(_) => return self.reject(name, RejectReason::Array),
            J::Null => return self.reject(name, RejectReason::Null),
        };
        let Ok(property) = PropertyName::parse(name.as_str()) else {
            return self.reject(name, RejectReason::InvalidName);
        };
        if self.is_duplicate(&property) {
            return self.reject(name, RejectReason::Duplicate);
        }
        if self.accepted() >= self.limits.max_properties {
            return self.reject(name, RejectReason::TooManyProperties);
        }
        self.remember(&property);
        self.values.push((property, leaf));
    }

    /// A string value: a state label, checked like any property plus its length.
    fn visit_state(&mut self, name: &str, label: &str) {
        let max = self.limits.max_state_label_chars;
        // Bytes bound characters from above: most labels skip the count.
        if label.is_empty() || (label.len() > max && label.chars().nth(max).is_some()) {
            return self.reject(name, RejectReason::StateTooLong);
        }
        let Ok(property) = PropertyName::parse(name) else {
            return self.reject(name, RejectReason::InvalidName);
        };
        if self.is_duplicate(&property) {
            return self.reject(name, RejectReason::Duplicate);
        }
        if self.accepted() >= self.limits.max_properties {
            return self.reject(name, RejectReason::TooManyProperties);
        }
        self.remember(&property);
        self.states.push((property, label.to_string()));
    }

    fn accepted(&self) -> usize {
        self.values.len() + self.states.len()
    }

    fn remember(&mut self, property: &PropertyName) {
        if let Some(seen) = &mut self.seen {
            seen.insert(property.as_str().to_string());
        } else if self.accepted() + 1 >= LINEAR_DUPLICATE_CHECK {
            let mut seen: HashSet<String> = self
                .values
                .iter()
                .map(|(n, _)| n.as_str().to_string())
                .chain(self.states.iter().map(|(n, _)| n.as_str().to_string()))
                .collect();
            seen.insert(property.as_str().to_string());
            self.seen = Some(seen);
        }
    }

    fn is_duplicate(&self, property: &PropertyName) -> bool {
        match &self.seen {
            Some(seen) => seen.contains(property.as_str()),
            None => self.values.iter().any(|(n, _)| n == property) || self.states.iter().any(|(n, _)| n == property),
        }
    }

    fn reject(&mut self, name: &str, reason: RejectReason) {
        // The payload-size limit already bounds how many of these a message can produce.
        self.rejected.push(RejectedProperty { name: truncate_chars(name, PropertyName::MAX_LEN), reason });
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_795_000_000_000;

    fn parse(text: &str) -> ParsedPayload {
        parse_payload(text.as_bytes(), NOW, &PayloadLimits::default()).unwrap()
    }

    fn names(p: &ParsedPayload) -> Vec<&str> {
        p.values.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn numbers_and_booleans() {
        let p = parse(r#"{"power_kw": 12.5, "running": true, "count": 3}"#);
        assert_eq!(p.ts_ms, NOW);
        assert!(p.rejected.is_empty());
        assert!(p.values.contains(&(PropertyName::parse("power_kw").unwrap(), Value::Float(12.5))));
        assert!(p.values.contains(&(PropertyName::parse("running").unwrap(), Value::Bool(true))));
        assert!(p.values.contains(&(PropertyName::parse("count").unwrap(), Value::Float(3.0))));
    }

    #[test]
    fn nested_objects_flatten_with_dots() {
        let p = parse(r#"{"phase": {"l1": {"v": 231, "a": 4.5}, "l2": {"v": 229}}}"#);
        let mut n = names(&p);
        n.sort_unstable();
        assert_eq!(n, ["phase.l1.a", "phase.l1.v", "phase.l2.v"]);
    }

    #[test]
    fn bad_properties_are_rejected_good_ones_kept() {
        let p = parse(r#"{"a": 1, "b": "", "c": [1], "d": null, "e": false, "bad name": 2, "": 3, "x": {"": 1}}"#);
        assert_eq!(names(&p).len(), 2);
        let mut reasons: Vec<(String, RejectReason)> = p.rejected.iter().map(|r| (r.name.clone(), r.reason)).collect();
        reasons.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            reasons,
            vec![
                ("".into(), RejectReason::InvalidName),
                ("b".into(), RejectReason::StateTooLong),
                ("bad name".into(), RejectReason::InvalidName),
                ("c".into(), RejectReason::Array),
                ("d".into(), RejectReason::Null),
                ("x.".into(), RejectReason::InvalidName),
            ]
        );
    }

    #[test]
    fn strings_are_state_labels_within_the_length_bound() {
        let limits = PayloadLimits { max_state_label_chars: 5, ..PayloadLimits::default() };
        let text = r#"{"state": "idle", "mode": "übung", "long": "running", "power": 2, "n": {"s": "off"}}"#;
        let p = parse_payload(text.as_bytes(), NOW, &limits).unwrap();
        let mut states: Vec<(&str, &str)> = p.states.iter().map(|(n, l)| (n.as_str(), l.as_str())).collect();
        states.sort_unstable();
        // "übung" is 5 characters (6 bytes): within the bound.
        assert_eq!(states, [("mode", "übung"), ("n.s", "off"), ("state", "idle")]);
        assert_eq!(names(&p), ["power"]);
        assert_eq!(p.rejected, [RejectedProperty { name: "long".into(), reason: RejectReason::StateTooLong }]);
        // A state name counts against duplicates and the per-message maximum like any other.
        let p = parse(r#"{"a.b": "x", "a": {"b": 1}}"#);
        // (Keys are visited in order: `a` before `a.b`.)
        assert_eq!((p.states.len(), p.values.len(), p.rejected[0].reason), (0, 1, RejectReason::Duplicate));
        let p = parse(r#"{"a": {"b": "x"}, "a.b": 1}"#);
        assert_eq!((p.states.len(), p.values.len(), p.rejected[0].reason), (1, 0, RejectReason::Duplicate));
        let limits = PayloadLimits { max_properties: 1, ..PayloadLimits::default() };
        let p = parse_payload(br#"{"a": "x", "b": "y"}"#, NOW, &limits).unwrap();
        assert_eq!((p.states.len(), p.rejected[0].reason), (1, RejectReason::TooManyProperties));
    }

    #[test]
    fn device_timestamps_within_the_window_are_used() {
        let p = parse(&format!(r#"{{"ts": {}, "v": 1}}"#, NOW - 5_000));
        assert_eq!(p.ts_ms, NOW - 5_000);
        let p = parse(r#"{"ts": "2026-11-19T07:33:20.000Z", "v": 1}"#);
        assert_eq!(p.ts_ms, parse_rfc3339_ms("2026-11-19T07:33:20.000Z").unwrap());
        // A backlog days old keeps its own time (it used to become the receive time).
        let three_days = 3 * 86_400_000;
        let p = parse(&format!(r#"{{"v": 1, "ts": {}}}"#, NOW - three_days));
        assert_eq!((p.ts_ms, names(&p)), (NOW - three_days, vec!["v"]));
        // Both ends of the window are inclusive.
        let limits =
            PayloadLimits { max_backfill_ms: Some(three_days), max_clock_skew_ms: 60_000, ..PayloadLimits::default() };
        for ts in [NOW - three_days, NOW + 60_000] {
            let p = parse_payload(format!(r#"{{"ts": {ts}, "v": 1}}"#).as_bytes(), NOW, &limits).unwrap();
            assert_eq!(p.ts_ms, ts);
        }
    }

    #[test]
    fn timestamps_outside_the_window_refuse_the_message_never_restamp_it() {
        let day = 86_400_000;
        let limits =
            PayloadLimits { max_backfill_ms: Some(30 * day), max_clock_skew_ms: day, ..PayloadLimits::default() };
        let refuse =
            |ts: &str| parse_payload(format!(r#"{{"ts": {ts}, "v": 1}}"#).as_bytes(), NOW, &limits).unwrap_err();

        let old = NOW - 30 * day - 1;
        assert_eq!(
            refuse(&old.to_string()),
            MessageRejection::TimestampTooOld { ts_ms: old, earliest_ms: NOW - 30 * day }
        );
        let ahead = NOW + day + 1;
        assert_eq!(
            refuse(&ahead.to_string()),
            MessageRejection::TimestampInFuture { ts_ms: ahead, latest_ms: NOW + day }
        );
        let e = refuse(r#""2020-01-01T00:00:00Z""#);
        assert_eq!(e.as_str(), "timestamp_too_old");
        assert!(e.to_string().contains("2020-01-01T00:00:00.000Z"), "the reason names the time: {e}");
        for bad in [r#""yesterday""#, "1.5", "true", "null", "[1]", "1e30"] {
            assert_eq!(refuse(bad), MessageRejection::InvalidTimestamp, "{bad}");
        }
        // Far-out values never overflow the window arithmetic.
        assert_eq!(refuse(&i64::MAX.to_string()).as_str(), "timestamp_in_future");
        assert_eq!(refuse(&i64::MIN.to_string()).as_str(), "timestamp_too_old");

        // Without a backfill bound, times before the Unix epoch (a reset clock) are still refused.
        let unbounded = PayloadLimits::default();
        assert_eq!(
            parse_payload(br#"{"ts": -1, "v": 1}"#, NOW, &unbounded).unwrap_err(),
            MessageRejection::TimestampTooOld { ts_ms: -1, earliest_ms: 0 }
        );
        assert_eq!(parse_payload(br#"{"ts": 0, "v": 1}"#, NOW, &unbounded).unwrap().ts_ms, 0);
    }

    #[test]
    fn timestamp_rejections_serialise_with_their_reason() {
        let e = MessageRejection::TimestampTooOld { ts_ms: 5, earliest_ms: 10 };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"reason": "timestamp_too_old", "ts_ms": 5, "earliest_ms": 10})
        );
        let e = MessageRejection::InvalidTimestamp;
        assert_eq!(serde_json::to_value(&e).unwrap(), serde_json::json!({"reason": "invalid_timestamp"}));
    }

    #[test]
    fn whole_message_rejections() {
        let limits = PayloadLimits::default();
        for (text, reason) in [
            ("[1, 2]", "not_an_object"),
            ("42", "not_an_object"),
            ("{", "invalid_json"),
            ("{\"a\": NaN}", "invalid_json"),
            ("", "invalid_json"),
        ] {
            let e = parse_payload(text.as_bytes(), NOW, &limits).unwrap_err();
            assert_eq!(e.as_str(), reason, "{text}");
        }
        let small = PayloadLimits { max_payload_bytes: 8, ..limits };
        assert_eq!(parse_payload(br#"{"abc": 12345}"#, NOW, &small).unwrap_err().as_str(), "too_large");
    }

    #[test]
    fn limits_on_depth_and_count() {
        let limits = PayloadLimits { max_properties: 2, max_depth: 1, ..PayloadLimits::default() };
        let p = parse_payload(br#"{"a": 1, "b": {"c": 2, "d": {"e": 3}}, "f": 4}"#, NOW, &limits).unwrap();
        assert_eq!(p.values.len(), 2);
        let reasons: HashSet<RejectReason> = p.rejected.iter().map(|r| r.reason).collect();
        assert!(reasons.contains(&RejectReason::TooDeep));
        assert!(reasons.contains(&RejectReason::TooManyProperties));
    }

    #[test]
    fn duplicates_after_flattening_are_rejected() {
        let p = parse(r#"{"a.b": 1, "a": {"b": 2}}"#);
        assert_eq!(p.values.len(), 1);
        assert_eq!(p.rejected[0].reason, RejectReason::Duplicate);
    }

    #[test]
    fn duplicates_are_found_in_large_messages_too() {
        // Past LINEAR_DUPLICATE_CHECK names the check switches to a set: duplicates of
        // names accepted before and after the switch are both caught.
        let flat: Vec<String> = (0..60).map(|i| format!(r#""g.p{i:02}": {i}"#)).collect();
        let nested: Vec<String> = [1, 45].iter().map(|i| format!(r#""p{i:02}": -1"#)).collect();
        let p = parse(&format!("{{{}, \"g\": {{{}}}}}", flat.join(", "), nested.join(", ")));
        assert_eq!(p.values.len(), 60);
        assert_eq!(p.rejected.len(), 2);
        assert!(p.rejected.iter().all(|r| r.reason == RejectReason::Duplicate));
        let mut rejected: Vec<&str> = p.rejected.iter().map(|r| r.name.as_str()).collect();
        rejected.sort_unstable();
        assert_eq!(rejected, ["g.p01", "g.p45"]);
    }

    #[test]
    fn long_names_are_truncated_in_rejections() {
        let long = "x".repeat(300);
        let p = parse(&format!(r#"{{"{long}": 1}}"#));
        assert_eq!(p.rejected[0].reason, RejectReason::InvalidName);
        assert_eq!(p.rejected[0].name.len(), PropertyName::MAX_LEN);
    }

    fn json_tree() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            any::<f64>().prop_filter("finite", |v| v.is_finite()).prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            "[a-z]{0,3}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop::collection::btree_map("[a-zA-Z0-9_:.-]{0,6}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
        })
    }

    /// Reference flattening: every leaf with its dotted path.
    fn leaves(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    leaves(&name, v, out);
                }
            }
            other => out.push((prefix.to_string(), other.clone())),
        }
    }

    proptest! {
        #[test]
        fn every_leaf_is_accepted_or_rejected_once(
            map in prop::collection::btree_map("[a-zA-Z0-9_]{1,6}", json_tree(), 0..8)
        ) {
            let object = serde_json::Value::Object(map.into_iter().filter(|(k, _)| k != TS_KEY).collect());
            let text = object.to_string();
            let p = parse_payload(text.as_bytes(), NOW, &PayloadLimits::default()).unwrap();
            // serde_json's float parsing may differ from the printed value by one ULP:
            // the reference is the text parsed back, as the parser sees it.
            let reparsed: serde_json::Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut expected = Vec::new();
            leaves("", &reparsed, &mut expected);
            // Empty objects contribute no leaves.
            let expected: Vec<_> = expected.into_iter().filter(|(_, v)| !v.as_object().is_some_and(|m| m.is_empty())).collect();
            prop_assert_eq!(p.values.len() + p.states.len() + p.rejected.len(), expected.len());
            for (name, value) in &p.values {
                // Dotted keys can collide with nested paths, so any leaf of that name may be the source.
                let matched = expected.iter().filter(|(n, _)| n == name.as_str()).any(|(_, original)| match value {
                    Value::Float(v) => Some(*v) == original.as_f64(),
                    Value::Bool(b) => Some(*b) == original.as_bool(),
                });
                prop_assert!(matched, "{} has no matching leaf", name);
            }
            for r in &p.rejected {
                if matches!(r.reason, RejectReason::StateTooLong | RejectReason::Null) {
                    prop_assert!(expected.iter().any(|(n, _)| n == &r.name));
                }
            }
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_payload(&bytes, NOW, &PayloadLimits::default());
        }
    }
}
