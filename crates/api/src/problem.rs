//! RFC 9457 problem details: every error the API returns has this shape.

use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// One invalid field of a request body or query.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `email` or `scope.devices[2]`.
    pub field: String,
    pub message: String,
}

/// An RFC 9457 problem. `type` is a stable URN clients may switch on; `detail` is for humans.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds to wait before retrying (also sent as `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Problem-specific members (RFC 9457 §3.2), e.g. the failing checks of `/readyz`.
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("urn:factoryops:problem:{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            extensions: serde_json::Map::new(),
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.extensions.insert(key.to_string(), serde_json::to_value(value).unwrap_or_default());
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 422 naming the invalid fields.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
        Self { errors, ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail) }
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError { field: field.into(), message: message.into() }])
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// The answer for both a missing resource and another factory's resource.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "too many requests; retry later")
        }
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    /// 503 for work that needs the object store while it is down (HLD §10.5): it names the
    /// storage (`dependency: object_store`) so a client can tell it from a general outage,
    /// and asks to retry later. Telemetry and rules routes never answer this.
    pub fn storage_unavailable(detail: impl Into<String>) -> Self {
        Self {
            retry_after: Some(30),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage-unavailable",
                format!("the object store is unavailable, so this cannot run now: {}", detail.into()),
            )
        }
        .with("dependency", "object_store")
    }

    /// A server-side failure. The cause is logged, never sent to the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "an internal error occurred; it has been logged")
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// A generic problem for a bare status produced outside our handlers (layers, fallbacks).
    pub fn from_status(status: StatusCode) -> Self {
        let (kind, detail) = match status {
            StatusCode::NOT_FOUND => ("not-found", "no such resource"),
            StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "this method is not allowed on this resource"),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "the request body is larger than allowed"),
            StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "expected Content-Type: application/json"),
            StatusCode::INTERNAL_SERVER_ERROR => ("internal", "an internal error occurred; it has been logged"),
            StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "the service is unavailable"),
            s if s.is_client_error() => ("bad-request", "the request is invalid"),
            _ => ("internal", "an internal error occurred"),
        };
        Self::new(status, kind, detail)
    }
}

/// Object store failures as problems: a missing object is a 404, storage down a 503
/// naming storage, a conflicting write a 409; a malformed key is our bug (500).
impl From<factoryops_objstore::StoreError> for Problem {
    fn from(error: factoryops_objstore::StoreError) -> Self {
        use factoryops_objstore::StoreError;
        match error {
            StoreError::NotFound(_) => Problem::not_found("no such file"),
            StoreError::Unavailable(detail) => Problem::storage_unavailable(detail),
            StoreError::Exists(key) => Problem::conflict(format!("{key} already exists with other content")),
            e @ StoreError::InvalidKey(_) => Problem::internal(&e),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = self.retry_after;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// `axum::Json` whose rejections are problems: syntax errors 400, wrong shapes 422
/// naming the field, a missing content type 415, an oversized body 413.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(Problem))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => {
                // axum deserialises through serde_path_to_error: the path and serde's own
                // message come apart without parsing text.
                let mut source = std::error::Error::source(&e);
                let mut path_error = None;
                while let Some(error) = source {
                    if let Some(found) = error.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
                        path_error = Some(found);
                        break;
                    }
                    source = error.source();
                }
                let (field, message) = match path_error {
                    Some(error) => field_error(&error.path().to_string(), &error.inner().to_string()),
                    None => ("body".to_string(), e.body_text()),
                };
                Problem::validation(vec![FieldError { field, message }])
            }
            JsonRejection::JsonSyntaxError(e) => {
                let text = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_else(|| e.body_text());
                Problem::new(StatusCode::BAD_REQUEST, "malformed-json", format!("the body is not valid JSON: {text}"))
            }
            JsonRejection::MissingJsonContentType(_) => Problem::from_status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            other => {
                let status = other.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::from_status(status)
                } else {
                    Problem::new(status, "bad-request", other.body_text())
                }
            }
        }
    }
}

/// A 422 for a body that deserialised as JSON but not into its type: the field named by
/// path, as [`ApiJson`] does (for handlers that parse a `serde_json::Value` themselves).
pub fn from_path_error(error: &serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let (field, message) = field_error(&error.path().to_string(), &error.inner().to_string());
    Problem::validation(vec![FieldError { field, message }])
}

/// The field path and message of a serde error at `path` (`.` is the body itself), in the
/// same form as the validation problems of the components: an unknown or missing field is
/// named by its own path (`notify.zzz`, `widgets[2].title`), not by its parent's.
fn field_error(path: &str, message: &str) -> (String, String) {
    let path = if path == "." { "" } else { path };
    let message = match message.find(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    let join = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else if path == name || path.ends_with(&format!(".{name}")) {
            path.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    let named = |prefix: &str| message.strip_prefix(prefix).and_then(|rest| rest.split('`').next());
    if let Some(name) = named("unknown field `") {
        (join(name), "unknown field".into())
    } else if let Some(name) = named("missing field `") {
        (join(name), "is required".into())
    } else {
        (if path.is_empty() { "body".into() } else { path.to_string() }, message.to_string())
    }
}

impl From<factoryops_identity::IdentityError> for Problem {
    fn from(error: factoryops_identity::IdentityError) -> Self {
        use factoryops_identity::IdentityError as E;
        match error {
            E::Invalid(issues) => Problem::validation(
                issues.into_iter().map(|i| FieldError { field: i.field, message: i.message }).collect(),
            ),
            E::Unauthorized(message) => Problem::unauthorized(message),
            E::Forbidden(message) => Problem::forbidden(message),
            E::NotFound(what) => Problem::not_found(format!("no such {what}")),
            E::Conflict(message) => Problem::conflict(message),
            E::RateLimited { retry_after_secs } => Problem::too_many_requests(retry_after_secs),
            E::Db(e) => Problem::internal(&e),
            E::Internal(message) => Problem::internal(&message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Widget {
        title: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Dashboard {
        name: String,
        #[serde(default)]
        widgets: Vec<Widget>,
    }

    fn problem_for(body: &str) -> Problem {
        let mut de = serde_json::Deserializer::from_str(body);
        let error = serde_path_to_error::deserialize::<_, Dashboard>(&mut de).unwrap_err();
        let (field, message) = field_error(&error.path().to_string(), &error.inner().to_string());
        Problem::validation(vec![FieldError { field, message }])
    }

    #[test]
    fn serde_errors_name_the_field_by_its_path() {
        let p = problem_for(r#"{"name": "d", "zzz": 1}"#);
        assert_eq!(p.status, 422);
        assert_eq!(p.errors, vec![FieldError { field: "zzz".into(), message: "unknown field".into() }]);
        let p =
            problem_for(r#"{"name": "d", "widgets": [{"title": "a"}, {"title": "b"}, {"title": "c", "titel": 1}]}"#);
        assert_eq!(p.errors[0].field, "widgets[2].titel");
        assert_eq!(p.errors[0].message, "unknown field");
        let p = problem_for(r#"{"name": "d", "widgets": [{}]}"#);
        assert_eq!(p.errors[0], FieldError { field: "widgets[0].title".into(), message: "is required".into() });
        let p = problem_for(r#"{"widgets": []}"#);
        assert_eq!(p.errors[0], FieldError { field: "name".into(), message: "is required".into() });
        let p = problem_for(r#"{"name": 5}"#);
        assert_eq!(p.errors[0].field, "name");
        assert!(p.errors[0].message.starts_with("invalid type"), "{:?}", p.errors);
        assert!(!p.errors[0].message.contains("line"), "{:?}", p.errors);
    }

    #[test]
    fn storage_down_is_a_503_naming_storage() {
        let p = Problem::from(factoryops_objstore::StoreError::Unavailable("S3 get: connection refused".into()));
        assert_eq!(p.status, 503);
        assert_eq!(p.type_uri, "urn:factoryops:problem:storage-unavailable");
        assert_eq!(p.retry_after, Some(30));
        assert_eq!(p.extensions["dependency"], "object_store");
        assert!(p.detail.contains("object store is unavailable") && p.detail.contains("connection refused"));
        let response = p.into_response();
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "30");
        assert_eq!(Problem::from(factoryops_objstore::StoreError::NotFound("k".into())).status, 404);
        assert_eq!(Problem::from(factoryops_objstore::StoreError::Exists("k".into())).status, 409);
    }
}
