use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, StatusCode};
use axum::middleware;
use factoryops_db::Database;
use factoryops_platform::metrics::Metrics;
use factoryops_platform::shutdown::Shutdown;
use factoryops_types::Clock;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::health::{self, ReadinessCheck};
use crate::layers;

/// Everything handlers need, cheap to clone. Built once in `main`.
#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    pub shutdown: Shutdown,
    pub readiness: Arc<Vec<Arc<dyn ReadinessCheck>>>,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "FactoryOps API",
        description = "Multi-tenant industrial energy intelligence. Every error is an RFC 9457 `application/problem+json` document. Factory-scoped routes live under `/api/v1/factories/{factory_id}`; another factory's resource answers 404.",
        license(name = "Apache-2.0")
    ),
    components(schemas(crate::problem::Problem, crate::problem::FieldError)),
    tags((name = "operations", description = "Health, readiness, metrics"))
)]
pub struct ApiDoc;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
}

/// The OpenAPI document as generated from the code (checked in as `docs/openapi.json`).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

pub fn build_router(state: AppState) -> Router {
    let (routes, openapi) = api_routes().split_for_parts();
    let docs: Router<AppState> = SwaggerUi::new("/api/docs").url("/api/v1/openapi.json", openapi).into();
    let timeout = state.request_timeout;
    routes
        .merge(docs)
        .fallback(layers::not_found)
        .method_not_allowed_fallback(layers::method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                    let request_id =
                        request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
                    tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id)
                }))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(layers::panic_response))
                .layer(middleware::from_fn(layers::problem_for_bare_errors))
                .layer(middleware::from_fn_with_state(state.metrics.clone(), layers::record_metrics))
                .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
                .layer(DefaultBodyLimit::max(state.body_limit_bytes)),
        )
        .with_state(state)
}
