//! A local stand-in for Twilio's Messages API (Twilio cannot run here). It checks the
//! exact request the real API expects — path with the account SID, HTTP basic auth with
//! SID and token, a form-encoded body with `To=whatsapp:+…`, `From=whatsapp:+…` and a
//! `Body` — and answers like Twilio: 201 with a message resource, or the error shapes
//! for 400 (permanent), 429 and 500. Requests that break the contract are answered 400
//! and recorded in [`TwilioStandIn::violations`], which a test asserts empty.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use parking_lot::Mutex;

pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000001";
pub const AUTH_TOKEN: &str = "test-auth-token-0123456789";
pub const FROM: &str = "whatsapp:+14155238886";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwilioMode {
    Created,
    /// 400 with error 21211 (invalid To number): permanent.
    BadRequest,
    /// 429 with error 20429: retry.
    TooManyRequests,
    /// 500: retry.
    ServerError,
}

#[derive(Debug, Clone)]
pub struct SentMessage {
    pub sid: String,
    pub to: String,
    pub from: String,
    pub body: String,
    pub received_at: Instant,
}

#[derive(Default)]
struct Shared {
    mode: Option<TwilioMode>,
    sent: Vec<SentMessage>,
    violations: Vec<String>,
    requests: usize,
}

#[derive(Clone)]
pub struct TwilioStandIn {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl TwilioStandIn {
    pub async fn start() -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = Router::new()
            .route("/2010-04-01/Accounts/{sid}/Messages.json", post(create_message))
            .fallback(|| async {
                (
                    StatusCode::NOT_FOUND,
                    r#"{"code":20404,"message":"The requested resource was not found","status":404}"#,
                )
            })
            .with_state(shared.clone());
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("cannot bind the Twilio stand-in: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("no local address: {e}"),
        };
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared }
    }

    /// For `FACTORYOPS_TWILIO_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: TwilioMode) {
        self.shared.lock().mode = Some(mode);
    }

    pub fn sent(&self) -> Vec<SentMessage> {
        self.shared.lock().sent.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().violations.clone()
    }

    pub fn requests(&self) -> usize {
        self.shared.lock().requests
    }

    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<SentMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.sent();
            if got.len() >= n {
                return got;
            }
            if Instant::now() > deadline {
                panic!("expected {n} WhatsApp messages within {timeout:?}, got {}: {got:#?}", got.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = serde_json::json!({
        "code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

async fn create_message(
    State(shared): State<Arc<Mutex<Shared>>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = shared.lock();
    s.requests += 1;
    let mut violations = Vec::new();
    if sid != ACCOUNT_SID {
        violations.push(format!("path account SID {sid:?} is not the configured one"));
    }
    let expected_auth =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}")));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected_auth.as_str()) {
        drop(s);
        shared.lock().violations.push("missing or wrong basic auth".into());
        return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        violations.push(format!("content-type {content_type:?} is not form-encoded"));
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (to, from, text) = (field("To"), field("From"), field("Body"));
    match &to {
        Some(to) if to.starts_with("whatsapp:+") && to[10..].bytes().all(|b| b.is_ascii_digit()) => {}
        other => violations.push(format!("To {other:?} is not whatsapp:+<digits>")),
    }
    if from.as_deref() != Some(FROM) {
        violations.push(format!("From {from:?} is not {FROM:?}"));
    }
    if text.as_deref().is_none_or(str::is_empty) {
        violations.push("Body is missing or empty".into());
    } else if text.as_deref().is_some_and(|t| t.chars().count() > 1600) {
        violations.push("Body is longer than 1600 characters".into());
    }
    if !violations.is_empty() {
        let detail = violations.join("; ");
        s.violations.extend(violations);
        return error(StatusCode::BAD_REQUEST, 21604, &detail);
    }
    match s.mode.unwrap_or(TwilioMode::Created) {
        TwilioMode::Created => {
            let sid = format!("SM{:032x}", s.sent.len() as u128 + 1);
            let (to, from, text) = (to.unwrap_or_default(), from.unwrap_or_default(), text.unwrap_or_default());
            s.sent.push(SentMessage {
                sid: sid.clone(),
                to: to.clone(),
                from: from.clone(),
                body: text.clone(),
                received_at: Instant::now(),
            });
            let body = serde_json::json!({
                "sid": sid, "account_sid": ACCOUNT_SID, "to": to, "from": from, "body": text,
                "status": "queued", "num_segments": "1", "direction": "outbound-api", "api_version": "2010-04-01",
            });
            (StatusCode::CREATED, [("content-type", "application/json")], body.to_string()).into_response()
        }
        TwilioMode::BadRequest => error(StatusCode::BAD_REQUEST, 21211, "The 'To' number is not a valid phone number."),
        TwilioMode::TooManyRequests => error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests"),
        TwilioMode::ServerError => error(StatusCode::INTERNAL_SERVER_ERROR, 20500, "Internal Server Error"),
    }
}
