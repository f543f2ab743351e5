//! `Idempotency-Key` on POST requests (ADR 0012): a client that does not know whether
//! its request arrived (a timeout, a dropped connection) sends it again with the same key
//! and gets the first answer instead of a second device, a second batch of points or a
//! 409.
//!
//! - The key is scoped by the authenticated principal and its factory; a request without
//!   a valid credential passes through untouched (the handler answers 401).
//! - The request is identified by a SHA-256 of method, path and query, and body: the same key
//!   with another request is a 422 problem; while the first is still running, a 409.
//! - Only 2xx responses are stored (and replayed for 24 h, with `Idempotent-Replayed:
//!   true`). Any other outcome releases the key, so a retry runs again: 4xx answers are
//!   cheap to recompute and may change once the client fixed something, 5xx are transient.
//! - Sign-in routes (`…/auth/*`, `/platform/login|refresh|password`) ignore the header:
//!   they create sessions, and replaying tokens to whoever repeats a body is not wanted.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use factoryops_db::idempotency::{Claim, IdempotencyStore, KeyScope, StoredResponse};
use sha2::{Digest, Sha256};

use crate::problem::{FieldError, Problem};
use crate::router::AppState;

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on a replayed response.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest accepted key (a UUID is 36).
pub const MAX_KEY_LEN: usize = 255;
/// Larger responses are not stored (the key is released): nothing that creates something
/// answers with that much, and the table stays small.
pub const MAX_STORED_RESPONSE: usize = 1 << 20;

/// Whether the header applies to this route: every POST except the session routes.
fn applies(method: &Method, path: &str) -> bool {
    if method != Method::POST {
        return false;
    }
    let session = path.starts_with("/api/v1/platform/login")
        || path.starts_with("/api/v1/platform/refresh")
        || path.starts_with("/api/v1/platform/password")
        || (path.starts_with("/api/v1/factories/") && path.contains("/auth/"));
    !session
}

fn key(headers: &HeaderMap) -> Option<Result<String, Problem>> {
    let value = headers.get(HEADER)?;
    let valid =
        value.to_str().ok().map(str::trim).filter(|k| {
            !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        });
    Some(valid.map(str::to_string).ok_or_else(|| {
        Problem::bad_request(format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters"))
    }))
}

/// What identifies a request under its key: method, path with query, body.
pub fn request_hash(method: &Method, path_and_query: &str, body: &Bytes) -> String {
    let mut hash = Sha256::new();
    hash.update(method.as_str().as_bytes());
    hash.update([0]);
    hash.update(path_and_query.as_bytes());
    hash.update([0]);
    hash.update(body);
    format!("{:x}", hash.finalize())
}

/// The middleware; see the module documentation.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !applies(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let key = match key(request.headers()) {
        None => return next.run(request).await,
        Some(Err(problem)) => return problem.into_response(),
        Some(Ok(key)) => key,
    };
    let Ok(principal) = crate::auth::bearer_principal(request.headers(), &state).await else {
        return next.run(request).await;
    };
    let scope = KeyScope { factory: principal.factory_id().cloned(), principal: principal.actor(), key };
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, state.body_limit_bytes).await {
        Ok(body) => body,
        Err(_) => return Problem::from_status(StatusCode::PAYLOAD_TOO_LARGE).into_response(),
    };
    let path = parts.uri.path_and_query().map_or_else(|| parts.uri.path(), |p| p.as_str());
    let hash = request_hash(&parts.method, path, &body);
    let store = IdempotencyStore::new(state.db.clone());
    // Longer than any request may run (the timeout layer ends it), so a claim outlives its
    // request only when the process died.
    let lock_ms =
        i64::try_from(state.request_timeout.as_millis()).unwrap_or(i64::MAX / 4).saturating_mul(2).max(10_000);
    match store.claim(&scope, &hash, state.clock.now_ms(), lock_ms).await {
        Ok(Claim::Claimed) => {}
        Ok(Claim::Replay(stored)) => return replay(stored),
        Ok(Claim::InProgress) => {
            return Problem {
                retry_after: Some(1),
                ..Problem::new(
                    StatusCode::CONFLICT,
                    "idempotency-in-progress",
                    "a request with this Idempotency-Key is still being processed; retry shortly",
                )
            }
            .into_response();
        }
        Ok(Claim::Mismatch) => return mismatch().into_response(),
        Err(e) => return Problem::internal(&e).into_response(),
    }
    // Released when the request ends without storing a response, including when the
    // client goes away or the handler panics and this future is dropped midway.
    let mut guard = Release { store: Some(store), scope };
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    if !response.status().is_success() {
        guard.release().await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(e) => {
            guard.release().await;
            return Problem::internal(&e).into_response();
        }
    };
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    match (body.len() <= MAX_STORED_RESPONSE).then(|| std::str::from_utf8(&body).ok()).flatten() {
        Some(text) => {
            let stored = StoredResponse { status: parts.status.as_u16(), content_type, body: text.to_string() };
            guard.complete(&stored, state.clock.now_ms()).await;
        }
        None => guard.release().await,
    }
    Response::from_parts(parts, Body::from(body))
}

/// Documents the header on every POST it applies to (the paths come from the routes, so
/// this runs on the assembled document).
pub fn document(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ObjectBuilder, Required, Type};
    for (path, item) in openapi.paths.paths.iter_mut() {
        let Some(operation) = item.post.as_mut().filter(|_| applies(&Method::POST, path)) else { continue };
        let parameter = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Makes a retry safe: the first 2xx answer is stored for 24 h and replayed (header \
                 `Idempotent-Replayed: true`) for the same key, method, path and body from the same \
                 principal; the key with a different request is a 422, while the first still runs a 409.",
            ))
            .schema(Some(
                ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(MAX_KEY_LEN)),
            ))
            .build();
        operation.parameters.get_or_insert_with(Vec::new).push(parameter.into());
    }
}

fn mismatch() -> Problem {
    let message = "was already used for a different request (method, path or body); use a new key";
    Problem {
        errors: vec![FieldError { field: "Idempotency-Key".into(), message: message.into() }],
        ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused", format!("Idempotency-Key {message}"))
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    match stored.content_type.as_deref().map(HeaderValue::from_str) {
        Some(Ok(value)) => {
            headers.insert(header::CONTENT_TYPE, value);
        }
        _ => {
            headers.remove(header::CONTENT_TYPE);
        }
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// A claimed key: stored with the response, released otherwise (also when dropped, i.e.
/// when the request future is cancelled or panics).
struct Release {
    store: Option<IdempotencyStore>,
    scope: KeyScope,
}

impl Release {
    /// Released before the response leaves, so an immediate retry does not see a 409.
    async fn release(&mut self) {
        if let Some(store) = self.store.take()
            && let Err(e) = store.release(&self.scope).await
        {
            tracing::warn!(error = %e, "cannot release an idempotency key; it frees itself when its lock expires");
        }
    }

    async fn complete(&mut self, response: &StoredResponse, now_ms: i64) {
        let Some(store) = self.store.take() else { return };
        if let Err(e) = store.complete(&self.scope, response, now_ms).await {
            tracing::error!(error = %e, "cannot store the response of an idempotent request; a retry will run it again");
            self.store = Some(store);
            self.release().await;
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            let scope = self.scope.clone();
            // A drop cannot await; the release is one short statement.
            tokio::spawn(async move {
                if let Err(e) = store.release(&scope).await {
                    tracing::warn!(error = %e, "cannot release an idempotency key; it frees itself when its lock expires");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_routes_and_other_methods_are_exempt() {
        assert!(applies(&Method::POST, "/api/v1/factories/plant-1/devices"));
        assert!(applies(&Method::POST, "/api/v1/platform/factories"));
        assert!(applies(&Method::POST, "/api/v1/factories/plant-1/telemetry"));
        assert!(!applies(&Method::POST, "/api/v1/factories/plant-1/auth/login"));
        assert!(!applies(&Method::POST, "/api/v1/platform/login"));
        assert!(!applies(&Method::PATCH, "/api/v1/factories/plant-1/devices/d1"));
        assert!(!applies(&Method::GET, "/api/v1/factories/plant-1/devices"));
    }

    #[test]
    fn keys_are_printable_and_bounded() {
        let mut headers = HeaderMap::new();
        assert!(key(&headers).is_none());
        headers.insert(HEADER, HeaderValue::from_static("0b6c1f6e-4d1e-4d55-9d1b-8a5e2b9f6c11"));
        assert_eq!(key(&headers).unwrap().unwrap(), "0b6c1f6e-4d1e-4d55-9d1b-8a5e2b9f6c11");
        headers.insert(HEADER, HeaderValue::from_static(""));
        assert!(key(&headers).unwrap().is_err());
        headers.insert(HEADER, HeaderValue::from_str(&"k".repeat(MAX_KEY_LEN + 1)).unwrap());
        assert!(key(&headers).unwrap().is_err());
    }

    #[test]
    fn the_hash_covers_method_path_and_body() {
        let body = Bytes::from_static(b"{\"id\":\"d1\"}");
        let base = request_hash(&Method::POST, "/a", &body);
        assert_eq!(base, request_hash(&Method::POST, "/a", &body));
        assert_ne!(base, request_hash(&Method::POST, "/b", &body));
        assert_ne!(base, request_hash(&Method::PUT, "/a", &body));
        assert_ne!(base, request_hash(&Method::POST, "/a", &Bytes::from_static(b"{\"id\":\"d2\"}")));
    }
}
