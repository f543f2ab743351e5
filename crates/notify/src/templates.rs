//! What a message says. Rendered when the notification is enqueued, so the delivery log
//! shows exactly what was (or will be) sent. Email gets plain text and HTML; WhatsApp
//! gets the short text.

use chrono::TimeZone;
use chrono_tz::Tz;

/// The most a WhatsApp body may carry (Twilio's limit is 1600 characters).
pub const WHATSAPP_MAX_CHARS: usize = 1600;

/// The parts of an alert notification.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertContent<'a> {
    /// opened, retriggered, reminder, escalation, resolved, acknowledged.
    pub kind: &'a str,
    pub factory_name: &'a str,
    pub rule_name: &'a str,
    pub device_id: &'a str,
    pub severity: &'a str,
    pub message: &'a str,
    pub value: Option<&'a str>,
    pub at_ms: i64,
    pub timezone: Tz,
    /// Who acknowledged or resolved it, and their note.
    pub by: Option<&'a str>,
    pub note: Option<&'a str>,
    /// A link to the alert in the portal, when the public URL is configured.
    pub link: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The short form for WhatsApp.
    pub short: String,
}

fn headline(kind: &str) -> &'static str {
    match kind {
        "opened" => "Alert",
        "retriggered" => "Alert again",
        "reminder" => "Reminder: alert still open",
        "escalation" => "Escalation: alert unacknowledged",
        "resolved" => "Resolved",
        "acknowledged" => "Acknowledged",
        _ => "Alert update",
    }
}

/// `2026-03-29 02:30 CEST` in the factory's time zone.
pub fn local_time(at_ms: i64, tz: Tz) -> String {
    match tz.timestamp_millis_opt(at_ms).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S %Z").to_string(),
        None => factoryops_types::format_rfc3339_ms(at_ms),
    }
}

pub fn render_alert(c: &AlertContent<'_>) -> Rendered {
    let severity = c.severity.to_uppercase();
    let head = headline(c.kind);
    let subject = format!("[{severity}] {head}: {} on {} ({})", c.rule_name, c.device_id, c.factory_name);
    let when = local_time(c.at_ms, c.timezone);
    let mut lines = vec![
        format!("{head}: {}", c.rule_name),
        String::new(),
        c.message.to_string(),
        String::new(),
        format!("Factory:  {}", c.factory_name),
        format!("Device:   {}", c.device_id),
        format!("Severity: {}", c.severity),
    ];
    if let Some(value) = c.value {
        lines.push(format!("Value:    {value}"));
    }
    lines.push(format!("Time:     {when}"));
    if let Some(by) = c.by {
        lines.push(format!("By:       {by}"));
    }
    if let Some(note) = c.note.filter(|n| !n.is_empty()) {
        lines.push(format!("Note:     {note}"));
    }
    if let Some(link) = &c.link {
        lines.push(String::new());
        lines.push(format!("Open in FactoryOps: {link}"));
    }
    lines.push(String::new());
    lines.push("-- FactoryOps".into());
    let text = lines.join("\n");

    let colour = match c.severity {
        "critical" => "#b91c1c",
        "warning" => "#b45309",
        _ => "#1d4ed8",
    };
    let mut rows = vec![row("Factory", c.factory_name), row("Device", c.device_id), row("Severity", c.severity)];
    if let Some(value) = c.value {
        rows.push(row("Value", value));
    }
    rows.push(row("Time", &when));
    if let Some(by) = c.by {
        rows.push(row("By", by));
    }
    if let Some(note) = c.note.filter(|n| !n.is_empty()) {
        rows.push(row("Note", note));
    }
    let link =
        c.link.as_ref().map(|l| format!("<p><a href=\"{}\">Open in FactoryOps</a></p>", escape(l))).unwrap_or_default();
    let html = format!(
        "<!doctype html><html><body style=\"font-family:system-ui,sans-serif\">\
         <h2 style=\"color:{colour}\">{} {}</h2><p>{}</p><table>{}</table>{link}\
         <p style=\"color:#6b7280\">FactoryOps</p></body></html>",
        escape(head),
        escape(c.rule_name),
        escape(c.message),
        rows.join("")
    );
    let mut short = format!("[{severity}] {head}: {} — {} ({}). {when}", c.rule_name, c.message, c.device_id);
    if let Some(by) = c.by {
        short.push_str(&format!(" by {by}"));
    }
    if let Some(note) = c.note.filter(|n| !n.is_empty()) {
        short.push_str(&format!(": {note}"));
    }
    Rendered { subject, text, html, short: truncate(&short, WHATSAPP_MAX_CHARS) }
}

/// A platform-health message to the operators.
pub fn render_health(component: &str, status: &str, detail: &str, since_ms: i64, at_ms: i64) -> Rendered {
    let (head, body) = match status {
        "recovered" => (
            format!("Recovered: {component}"),
            format!("{component} is healthy again (degraded since {}).", factoryops_types::format_rfc3339_ms(since_ms)),
        ),
        "repeated" => (
            format!("Still degraded: {component}"),
            format!("{component} has been degraded since {}: {detail}", factoryops_types::format_rfc3339_ms(since_ms)),
        ),
        _ => (format!("Degraded: {component}"), format!("{component} is degraded: {detail}")),
    };
    let subject = format!("[FactoryOps platform] {head}");
    let text = format!(
        "{body}\n\nReported at {}.\n\n-- FactoryOps platform health",
        factoryops_types::format_rfc3339_ms(at_ms)
    );
    let html = format!(
        "<!doctype html><html><body style=\"font-family:system-ui,sans-serif\"><h2>{}</h2><p>{}</p>\
         <p style=\"color:#6b7280\">Reported at {} — FactoryOps platform health</p></body></html>",
        escape(&head),
        escape(&body),
        factoryops_types::format_rfc3339_ms(at_ms)
    );
    Rendered { short: truncate(&format!("{subject}: {body}"), WHATSAPP_MAX_CHARS), subject, text, html }
}

/// The "send me a test message" body.
pub fn render_test(factory_name: &str, requested_by: &str, at_ms: i64) -> Rendered {
    let subject = format!("FactoryOps test notification ({factory_name})");
    let body = format!(
        "This is a test notification from FactoryOps for {factory_name}, requested by {requested_by} at {}. \
         If you can read this, the channel works.",
        factoryops_types::format_rfc3339_ms(at_ms)
    );
    Rendered {
        subject: subject.clone(),
        text: format!("{body}\n\n-- FactoryOps"),
        html: format!(
            "<!doctype html><html><body style=\"font-family:system-ui,sans-serif\"><h2>{}</h2><p>{}</p></body></html>",
            escape(&subject),
            escape(&body)
        ),
        short: truncate(&body, WHATSAPP_MAX_CHARS),
    }
}

fn row(label: &str, value: &str) -> String {
    format!("<tr><td style=\"color:#6b7280;padding-right:1em\">{}</td><td>{}</td></tr>", escape(label), escape(value))
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> AlertContent<'static> {
        AlertContent {
            kind: "opened",
            factory_name: "Plant <1>",
            rule_name: "Overheat",
            device_id: "press-1",
            severity: "critical",
            message: "temp_c = 85 (limit 80)",
            value: Some("85"),
            at_ms: 1_790_000_000_000,
            timezone: chrono_tz::Europe::Berlin,
            by: None,
            note: None,
            link: None,
        }
    }

    #[test]
    fn alert_subject_and_bodies_name_rule_device_and_factory() {
        let r = render_alert(&content());
        assert_eq!(r.subject, "[CRITICAL] Alert: Overheat on press-1 (Plant <1>)");
        assert!(r.text.contains("temp_c = 85 (limit 80)"));
        assert!(r.text.contains("Device:   press-1"));
        assert!(r.text.contains("CEST") || r.text.contains("CET"), "local time of the factory: {}", r.text);
        assert!(r.html.contains("Plant &lt;1&gt;"), "escaped: {}", r.html);
        assert!(!r.html.contains("Plant <1>"));
        assert!(r.short.starts_with("[CRITICAL] Alert: Overheat"));
    }

    #[test]
    fn acknowledgement_carries_who_and_note() {
        let mut c = content();
        c.kind = "acknowledged";
        c.by = Some("ana@example.com");
        c.note = Some("on it");
        let r = render_alert(&c);
        assert!(r.subject.contains("Acknowledged"));
        assert!(r.text.contains("By:       ana@example.com") && r.text.contains("Note:     on it"));
        assert!(r.short.ends_with("by ana@example.com: on it"));
    }

    #[test]
    fn whatsapp_text_is_capped() {
        let long = "x".repeat(5000);
        let mut c = content();
        c.message = &long;
        let r = render_alert(&c);
        assert_eq!(r.short.chars().count(), WHATSAPP_MAX_CHARS);
    }

    #[test]
    fn health_messages_cover_raise_repeat_and_recovery() {
        assert_eq!(render_health("tsdb", "degraded", "down", 0, 0).subject, "[FactoryOps platform] Degraded: tsdb");
        assert!(render_health("tsdb", "repeated", "down", 0, 60_000).text.contains("since 1970-01-01T00:00:00.000Z"));
        assert!(render_health("tsdb", "recovered", "", 0, 1).subject.contains("Recovered: tsdb"));
    }
}
