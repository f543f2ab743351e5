use std::collections::BTreeSet;
use std::fmt;

use factoryops_types::FactoryId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{FieldIssue, IdentityError};

/// A factory-level role. The platform root is not a factory role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in the factory, including users, API keys and the audit log.
    SuperAdmin,
    /// Reads everything; writes only what its permission flags allow; no user management.
    Admin,
    /// Reads only.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::SuperAdmin => "super_admin",
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "super_admin" => Some(Role::SuperAdmin),
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// A permission flag. New flags are added here; stored and sent as their strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub enum Permission {
    /// Read the factory's data. Every user has it; API keys must be given it.
    #[serde(rename = "data:read")]
    DataRead,
    #[serde(rename = "devices:write")]
    DevicesWrite,
    #[serde(rename = "rules:write")]
    RulesWrite,
    #[serde(rename = "alerts:write")]
    AlertsWrite,
    #[serde(rename = "analytics:run")]
    AnalyticsRun,
    #[serde(rename = "reports:generate")]
    ReportsGenerate,
    #[serde(rename = "users:read")]
    UsersRead,
    /// Send telemetry over HTTP (API keys).
    #[serde(rename = "telemetry:write")]
    TelemetryWrite,
}

impl Permission {
    pub const ALL: [Permission; 8] = [
        Permission::DataRead,
        Permission::DevicesWrite,
        Permission::RulesWrite,
        Permission::AlertsWrite,
        Permission::AnalyticsRun,
        Permission::ReportsGenerate,
        Permission::UsersRead,
        Permission::TelemetryWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::DataRead => "data:read",
            Permission::DevicesWrite => "devices:write",
            Permission::RulesWrite => "rules:write",
            Permission::AlertsWrite => "alerts:write",
            Permission::AnalyticsRun => "analytics:run",
            Permission::ReportsGenerate => "reports:generate",
            Permission::UsersRead => "users:read",
            Permission::TelemetryWrite => "telemetry:write",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a list of permission names, naming the bad entry in `field[i]`.
pub(crate) fn parse_permissions(field: &str, names: &[String]) -> Result<BTreeSet<Permission>, FieldIssue> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            Permission::parse(name).ok_or_else(|| {
                FieldIssue::new(
                    &format!("{field}[{i}]"),
                    format!(
                        "unknown permission `{name}` (known: {})",
                        Permission::ALL.map(Permission::as_str).join(", ")
                    ),
                )
            })
        })
        .collect()
}

pub(crate) fn join_permissions(set: &BTreeSet<Permission>) -> String {
    set.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")
}

pub(crate) fn split_permissions(text: &str) -> BTreeSet<Permission> {
    text.split(',').filter_map(Permission::parse).collect()
}

/// The permissions a role grants on top of its explicit flags.
pub(crate) fn effective_permissions(role: Role, flags: &BTreeSet<Permission>) -> BTreeSet<Permission> {
    match role {
        Role::SuperAdmin => Permission::ALL.into_iter().collect(),
        Role::Admin => flags.iter().copied().chain([Permission::DataRead]).collect(),
        Role::Viewer => [Permission::DataRead].into_iter().collect(),
    }
}

/// A validated e-mail address; `key()` is the case-folded form used for uniqueness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &str, text: &str) -> Result<Self, IdentityError> {
        let text = text.trim();
        let bad = |m: &str| Err(IdentityError::invalid(field, m.to_string()));
        if text.is_empty() {
            return bad("must not be empty");
        }
        if text.len() > 254 {
            return bad("must be at most 254 characters");
        }
        let Some((local, domain)) = text.rsplit_once('@') else {
            return bad("must be an e-mail address like name@example.com");
        };
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.contains('@')
            && local.bytes().all(|b| b.is_ascii_graphic() && !b"()<>[]\\,;:\"".contains(&b));
        if !domain_ok || !local_ok {
            return bad("must be an e-mail address like name@example.com");
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

/// Validates an IANA time zone name (e.g. `Europe/Berlin`).
pub fn parse_timezone(field: &str, text: &str) -> Result<String, IdentityError> {
    text.parse::<chrono_tz::Tz>()
        .map(|tz| tz.name().to_string())
        .map_err(|_| IdentityError::invalid(field, "must be an IANA time zone name such as Europe/Berlin"))
}

/// A display name: 1–200 characters, no control characters.
pub(crate) fn check_name(field: &str, text: &str) -> Result<String, IdentityError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(IdentityError::invalid(field, "must not be empty"));
    }
    if text.chars().count() > 200 {
        return Err(IdentityError::invalid(field, "must be at most 200 characters"));
    }
    if text.chars().any(char::is_control) {
        return Err(IdentityError::invalid(field, "must not contain control characters"));
    }
    Ok(text.to_string())
}

/// An E.164 phone number such as `+4915112345678` (WhatsApp recipients).
pub(crate) fn check_phone(field: &str, text: &str) -> Result<String, IdentityError> {
    if factoryops_types::is_e164(text) {
        Ok(text.to_string())
    } else {
        Err(IdentityError::invalid(field, "must be an E.164 number such as +4915112345678"))
    }
}

/// Who is calling, as established from a bearer credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The platform operator: manages factories, reads no factory data.
    Root,
    User {
        user_id: String,
        factory_id: FactoryId,
        role: Role,
        permissions: BTreeSet<Permission>,
    },
    ApiKey {
        key_id: String,
        factory_id: FactoryId,
        permissions: BTreeSet<Permission>,
    },
}

impl Principal {
    pub fn factory_id(&self) -> Option<&FactoryId> {
        match self {
            Principal::Root => None,
            Principal::User { factory_id, .. } | Principal::ApiKey { factory_id, .. } => Some(factory_id),
        }
    }

    pub fn has(&self, permission: Permission) -> bool {
        match self {
            Principal::Root => false,
            Principal::User { permissions, .. } | Principal::ApiKey { permissions, .. } => {
                permissions.contains(&permission)
            }
        }
    }

    pub fn is_super_admin(&self) -> bool {
        matches!(self, Principal::User { role: Role::SuperAdmin, .. })
    }

    /// The actor name written to the audit log.
    pub fn actor(&self) -> String {
        match self {
            Principal::Root => "root".into(),
            Principal::User { user_id, .. } => format!("user:{user_id}"),
            Principal::ApiKey { key_id, .. } => format!("api_key:{key_id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(Email::parse("email", "Ops@Example.com").is_ok());
        assert_eq!(Email::parse("email", "Ops@Example.com").unwrap().key(), "ops@example.com");
        for bad in ["", "no-at", "a@b", "a@.b.c", "a b@c.de", "@c.de", "a@c..de", "a@c.de."] {
            assert!(Email::parse("email", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn permissions_round_trip_and_name_the_bad_one() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        let err = parse_permissions("permissions", &["rules:write".into(), "rules:explode".into()]).unwrap_err();
        assert_eq!(err.field, "permissions[1]");
        let set = parse_permissions("p", &["rules:write".into(), "devices:write".into()]).unwrap();
        assert_eq!(split_permissions(&join_permissions(&set)), set);
    }

    #[test]
    fn roles_grant() {
        let none = BTreeSet::new();
        assert_eq!(effective_permissions(Role::SuperAdmin, &none).len(), Permission::ALL.len());
        assert_eq!(effective_permissions(Role::Viewer, &none), [Permission::DataRead].into());
        let flags = [Permission::RulesWrite].into();
        assert!(effective_permissions(Role::Admin, &flags).contains(&Permission::RulesWrite));
    }

    #[test]
    fn phones_and_zones() {
        assert!(check_phone("phone", "+4915112345678").is_ok());
        assert!(check_phone("phone", "015112345678").is_err());
        assert!(check_phone("phone", "+0123456789").is_err());
        assert_eq!(parse_timezone("tz", "Europe/Berlin").unwrap(), "Europe/Berlin");
        assert!(parse_timezone("tz", "Mars/Olympus").is_err());
    }
}
