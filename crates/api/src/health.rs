//! Liveness and readiness. `/healthz` answers while the process runs; `/readyz` asks
//! every dependency and answers 503 naming the degraded ones.

use std::time::Duration;

use async_trait::async_trait;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use factoryops_db::Database;
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::Problem;
use crate::router::AppState;

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct DependencyState {
    pub name: String,
    /// `up`, `degraded` (working around a failing dependency: `/readyz` stays 200) or
    /// `down` (`/readyz` answers 503).
    pub status: String,
    pub detail: String,
}

impl DependencyState {
    pub fn up(name: &str, detail: impl Into<String>) -> Self {
        Self { name: name.into(), status: "up".into(), detail: detail.into() }
    }

    pub fn down(name: &str, detail: impl Into<String>) -> Self {
        Self { name: name.into(), status: "down".into(), detail: detail.into() }
    }

    /// Usable, though it may be working around a failure (e.g. a notification provider is down
    /// and messages wait in the outbox).
    pub fn degraded(name: &str, detail: impl Into<String>) -> Self {
        Self { name: name.into(), status: "degraded".into(), detail: detail.into() }
    }

    pub fn is_up(&self) -> bool {
        self.status == "up"
    }

    pub fn is_down(&self) -> bool {
        self.status == "down"
    }
}

/// A dependency `/readyz` asks about.
#[async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    async fn check(&self) -> DependencyState;
}

#[async_trait]
impl ReadinessCheck for Database {
    async fn check(&self) -> DependencyState {
        let backend = format!("{:?}", self.backend()).to_lowercase();
        match tokio::time::timeout(Duration::from_secs(2), self.ping()).await {
            Ok(Ok(())) => DependencyState::up("database", backend),
            Ok(Err(e)) => DependencyState::down("database", format!("{backend}: {e}")),
            Err(_) => DependencyState::down("database", format!("{backend}: no answer within 2 s")),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, or `degraded` when a dependency is degraded but none is down (a server
    /// with a dependency down answers 503 with a problem).
    pub status: String,
    pub checks: Vec<DependencyState>,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() })
}

/// Every dependency is usable; 503 names the degraded ones.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready, or degraded (`status`: a dependency works around a failure, e.g. a notification provider is failing and messages wait)", body = Readiness),
              (status = 503, description = "degraded: a problem whose `degraded` member names the dependencies that are down and whose `checks` member lists every check", body = Problem, content_type = "application/problem+json")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut checks = futures::future::join_all(state.readiness.iter().map(|c| c.check())).await;
    if state.shutdown.is_triggered() {
        checks.push(DependencyState::down("server", "shutting down"));
    }
    for check in &checks {
        state
            .metrics
            .dependency_up
            .get_or_create(&factoryops_platform::metrics::DependencyLabels { dependency: check.name.clone() })
            .set(i64::from(check.is_up()));
    }
    let degraded: Vec<String> = checks.iter().filter(|c| c.is_down()).map(|c| c.name.clone()).collect();
    if degraded.is_empty() {
        let status = if checks.iter().all(DependencyState::is_up) { "ready" } else { "degraded" };
        return (StatusCode::OK, Json(Readiness { status: status.into(), checks })).into_response();
    }
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "degraded", format!("degraded: {}", degraded.join(", ")))
        .with("degraded", &degraded)
        .with("checks", &checks)
        .into_response()
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "metrics in OpenMetrics text format", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}
