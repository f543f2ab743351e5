//! Rule validation: every problem with the path of the field (for a 422 problem), plus
//! warnings that do not block saving (properties the factory has not seen yet).

use std::collections::HashSet;

use serde::Serialize;

use crate::model::{Condition, MAX_CONDITION_LEAVES, RuleSpec, Scope, Severity};
use crate::schedule::CompiledSchedule;

/// One invalid field: `field` is a path such as `condition.all[1].any[0].op`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Something worth telling the author that does not make the rule invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub field: String,
    pub message: String,
}

/// A rule that passed validation, with its warnings.
#[derive(Debug, Clone)]
pub struct ValidRule {
    pub spec: RuleSpec,
    pub warnings: Vec<Warning>,
}

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_MESSAGE_LEN: usize = 2_000;
pub const MAX_SCOPE_DEVICES: usize = 10_000;
pub const MAX_TARGETS: usize = 100;
pub const MAX_DURATION_SECONDS: u64 = 7 * 86_400;
pub const MAX_COOLDOWN_SECONDS: u64 = 30 * 86_400;
pub const MAX_REMIND_MINUTES: u64 = 7 * 24 * 60;
/// The placeholders a message template may use.
pub const PLACEHOLDERS: [&str; 6] = ["device", "property", "value", "threshold", "time", "rule"];

/// Parses and validates a rule body. `known_properties` is the factory's property
/// catalogue: a condition on any other property is accepted with a warning.
pub fn validate_rule(
    body: &serde_json::Value,
    known_properties: &HashSet<String>,
) -> Result<ValidRule, Vec<FieldError>> {
    let mut errors = Vec::new();
    if !body.is_object() {
        return Err(vec![FieldError::new("", "the rule must be a JSON object")]);
    }
    // The condition first, with exact paths; serde's error for it would only say "condition".
    let condition_errors = match body.get("condition") {
        Some(c) => Condition::parse(c, "condition").err().unwrap_or_default(),
        None => vec![FieldError::new("condition", "is required")],
    };
    let had_condition_errors = !condition_errors.is_empty();
    errors.extend(condition_errors);
    let spec: Option<RuleSpec> = match serde_path_to_error::deserialize(body) {
        Ok(spec) => Some(spec),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let inner = e.into_inner().to_string();
            if !(had_condition_errors && path.starts_with("condition")) {
                // serde reports missing fields at the parent: put them on the field itself.
                let (field, message) = match inner.strip_prefix("missing field `") {
                    Some(rest) => {
                        let name = rest.split('`').next().unwrap_or_default();
                        (
                            if path.is_empty() { name.to_string() } else { format!("{path}.{name}") },
                            "is required".into(),
                        )
                    }
                    None => match inner.strip_prefix("unknown field `") {
                        Some(rest) => {
                            let name = rest.split('`').next().unwrap_or_default();
                            let field = if path == name || path.ends_with(&format!(".{name}")) {
                                path
                            } else if path.is_empty() {
                                name.to_string()
                            } else {
                                format!("{path}.{name}")
                            };
                            (field, "unknown field".into())
                        }
                        None => (path, strip_position(&inner)),
                    },
                };
                errors.push(FieldError::new(field, message));
            }
            None
        }
    };
    let Some(spec) = spec else {
        return Err(errors);
    };
    let warnings = check_spec(&spec, known_properties, &mut errors);
    if errors.is_empty() { Ok(ValidRule { spec, warnings }) } else { Err(errors) }
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Semantic checks of an already parsed rule; returns the warnings.
pub fn check_spec(spec: &RuleSpec, known_properties: &HashSet<String>, errors: &mut Vec<FieldError>) -> Vec<Warning> {
    let mut warnings = Vec::new();
    if spec.name.trim().is_empty() {
        errors.push(FieldError::new("name", "must not be empty"));
    } else if spec.name.chars().count() > MAX_NAME_LEN {
        errors.push(FieldError::new("name", format!("must be at most {MAX_NAME_LEN} characters")));
    }
    match &spec.scope {
        Scope::Devices { devices } => {
            if devices.is_empty() {
                errors.push(FieldError::new("scope.devices", "must name at least one device"));
            } else if devices.len() > MAX_SCOPE_DEVICES {
                errors.push(FieldError::new("scope.devices", format!("at most {MAX_SCOPE_DEVICES} devices")));
            }
        }
        Scope::DeviceType { device_type } => {
            if device_type.trim().is_empty() || device_type.len() > 64 {
                errors.push(FieldError::new("scope.device_type", "must be 1 to 64 characters"));
            }
        }
        Scope::All { all } => {
            if !all {
                errors.push(FieldError::new("scope.all", "must be true"));
            }
        }
    }
    let mut leaves = 0usize;
    spec.condition.visit_leaves(&mut |_| leaves += 1);
    if leaves > MAX_CONDITION_LEAVES {
        errors.push(FieldError::new("condition", format!("at most {MAX_CONDITION_LEAVES} leaf conditions")));
    }
    for (key, v) in [("for_seconds", spec.for_seconds), ("clear_for_seconds", spec.clear_for_seconds)] {
        if v > MAX_DURATION_SECONDS {
            errors.push(FieldError::new(key, format!("must be at most {MAX_DURATION_SECONDS}")));
        }
    }
    if spec.cooldown_seconds > MAX_COOLDOWN_SECONDS {
        errors.push(FieldError::new("cooldown_seconds", format!("must be at most {MAX_COOLDOWN_SECONDS}")));
    }
    if let Some(d) = spec.deadband
        && !(d.is_finite() && d >= 0.0)
    {
        errors.push(FieldError::new("deadband", "must be a finite number ≥ 0"));
    }
    if spec.clear_for_seconds > 0 && !spec.auto_resolve {
        warnings.push(Warning::new("clear_for_seconds", "has no effect without auto_resolve"));
    }
    if let Some(schedule) = &spec.schedule
        && let Err((field, message)) = CompiledSchedule::compile(schedule)
    {
        errors.push(FieldError::new(format!("schedule.{field}"), message));
    }
    if spec.message.chars().count() > MAX_MESSAGE_LEN {
        errors.push(FieldError::new("message", format!("must be at most {MAX_MESSAGE_LEN} characters")));
    }
    for name in placeholders(&spec.message) {
        if !PLACEHOLDERS.contains(&name) {
            errors.push(FieldError::new(
                "message",
                format!("unknown placeholder {{{name}}}; use {}", PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(" ")),
            ));
        }
    }
    check_targets("notify", &spec.notify.users, &spec.notify.emails, &spec.notify.whatsapp, errors);
    if let Some(to) = &spec.notify.escalate_to {
        check_targets("notify.escalate_to", &to.users, &to.emails, &to.whatsapp, errors);
    }
    match (spec.notify.escalate_after_minutes, &spec.notify.escalate_to) {
        (Some(m), Some(to)) => {
            if m == 0 || m > MAX_REMIND_MINUTES {
                errors.push(FieldError::new(
                    "notify.escalate_after_minutes",
                    format!("must be from 1 to {MAX_REMIND_MINUTES}"),
                ));
            }
            if to.is_empty() {
                errors.push(FieldError::new("notify.escalate_to", "must name at least one target"));
            }
        }
        (Some(_), None) => {
            errors.push(FieldError::new("notify.escalate_to", "is required with escalate_after_minutes"))
        }
        (None, Some(_)) => {
            errors.push(FieldError::new("notify.escalate_after_minutes", "is required with escalate_to"))
        }
        (None, None) => {}
    }
    if let Some(m) = spec.notify.remind_every_minutes {
        if m == 0 || m > MAX_REMIND_MINUTES {
            errors.push(FieldError::new(
                "notify.remind_every_minutes",
                format!("must be from 1 to {MAX_REMIND_MINUTES}"),
            ));
        } else if spec.severity != Severity::Critical {
            warnings.push(Warning::new("notify.remind_every_minutes", "reminders are sent for critical alerts only"));
        }
    }
    let mut path = Vec::new();
    condition_warnings(&spec.condition, "condition", known_properties, &mut path, &mut warnings);
    warnings
}

impl Warning {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

fn condition_warnings(
    condition: &Condition,
    path: &str,
    known: &HashSet<String>,
    seen: &mut Vec<String>,
    warnings: &mut Vec<Warning>,
) {
    match condition {
        Condition::All(items) | Condition::Any(items) => {
            let key = if matches!(condition, Condition::All(_)) { "all" } else { "any" };
            for (i, c) in items.iter().enumerate() {
                condition_warnings(c, &format!("{path}.{key}[{i}]"), known, seen, warnings);
            }
        }
        Condition::Not(inner) => condition_warnings(inner, &format!("{path}.not"), known, seen, warnings),
        leaf => {
            if let Some(p) = leaf.property()
                && !known.contains(p.as_str())
                && !seen.iter().any(|s| s == p.as_str())
            {
                seen.push(p.as_str().to_string());
                warnings.push(Warning::new(
                    format!("{path}.property"),
                    format!("property {p:?} has not been seen in this factory yet; the rule waits for it"),
                ));
            }
        }
    }
}

fn check_targets(prefix: &str, users: &[String], emails: &[String], whatsapp: &[String], errors: &mut Vec<FieldError>) {
    for (key, list) in [("users", users), ("emails", emails), ("whatsapp", whatsapp)] {
        if list.len() > MAX_TARGETS {
            errors.push(FieldError::new(format!("{prefix}.{key}"), format!("at most {MAX_TARGETS} entries")));
        }
    }
    for (i, u) in users.iter().enumerate() {
        if u.trim().is_empty() || u.len() > 64 {
            errors.push(FieldError::new(format!("{prefix}.users[{i}]"), "must be a user id"));
        }
    }
    for (i, e) in emails.iter().enumerate() {
        if !factoryops_types::is_email(e) {
            errors.push(FieldError::new(format!("{prefix}.emails[{i}]"), "must be an email address"));
        }
    }
    for (i, w) in whatsapp.iter().enumerate() {
        if !factoryops_types::is_e164(w) {
            errors.push(FieldError::new(
                format!("{prefix}.whatsapp[{i}]"),
                "must be a phone number in E.164 form (+, then 7–15 digits, no leading 0)",
            ));
        }
    }
}

/// The `{name}` placeholders of a template.
pub fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                if !name.contains('{') && !name.is_empty() {
                    out.push(name);
                }
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}
