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
    pub identity: Arc<factoryops_identity::Identity>,
    pub devices: factoryops_ingest::DeviceRegistry,
    pub rules: Arc<factoryops_rules::RulesEngine>,
    /// The delivery log and outbox of notifications.
    pub notifications: factoryops_notify::NotificationStore,
    /// Wakes the notification worker (when this process runs one) after new rows.
    pub notify_wake: Arc<tokio::sync::Notify>,
    pub ingestor: factoryops_ingest::Ingestor,
    /// Groups, energy settings and the energy computations.
    pub energy: factoryops_energy::service::EnergyService,
    /// Dashboards as data, the factory default and users' home dashboards.
    pub dashboards: factoryops_dashboards::DashboardStore,
    pub store: Arc<dyn factoryops_tsdb::TelemetryStore>,
    pub bus: Arc<dyn factoryops_platform::bus::EventBus>,
    /// Closes a device's MQTT connections; `None` when this process runs no MQTT endpoint.
    pub mqtt: Option<factoryops_ingest::mqtt::MqttHandle>,
    /// The MQTT port devices are told to use.
    pub mqtt_port: u16,
    /// Whether `GET /api/v1/factories` lists factories for the login dropdown.
    pub public_factory_list: bool,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    pub shutdown: Shutdown,
    pub readiness: Arc<Vec<Arc<dyn ReadinessCheck>>>,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    /// Datasets, results, models and reports (already wrapped with metrics).
    pub objects: Arc<dyn factoryops_objstore::ObjectStore>,
    /// Whether the object store answers; routes that start work needing it ask
    /// [`AppState::require_storage`] first.
    pub storage: factoryops_objstore::health::StorageStatus,
    /// Submit, read, cancel and retry jobs (datasets, runs, reports), factory-scoped.
    pub jobs: factoryops_jobs::Jobs,
    /// Dataset records (job state mirror, manifests) and what references them.
    pub datasets: factoryops_datasets::store::DatasetStore,
}

impl AppState {
    /// `Err(503 storage-unavailable)` while the object store is down (HLD §10.5).
    pub fn require_storage(&self) -> Result<(), crate::Problem> {
        self.storage.ensure_available().map_err(crate::Problem::from)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "FactoryOps API",
        description = "Multi-tenant industrial energy intelligence. Every error is an RFC 9457 `application/problem+json` document. Factory-scoped routes live under `/api/v1/factories/{factory_id}`; another factory's resource answers 404.",
        license(name = "Apache-2.0")
    ),
    components(schemas(crate::problem::Problem, crate::problem::FieldError)),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Health, readiness, metrics"),
        (name = "platform", description = "The platform root: factories and their first super admins"),
        (name = "entry", description = "Factory list, factory-scoped login, sessions, `/me`"),
        (name = "users", description = "Factory users, roles and permission flags"),
        (name = "api-keys", description = "Machine credentials"),
        (name = "audit", description = "The append-only audit log"),
        (name = "devices", description = "Device registry, credentials, auto-discovered properties"),
        (name = "telemetry", description = "Reads, HTTP ingestion, the live stream"),
        (name = "rules", description = "Alert rules and backtests"),
        (name = "alerts", description = "The alert inbox and lifecycle"),
        (name = "notifications", description = "Email and WhatsApp deliveries, dead letters, preferences"),
        (name = "energy", description = "Device groups, energy settings (tariff, shifts, emission factor), consumption, cost, CO2, peak demand, ranking"),
        (name = "dashboards", description = "Dashboards as data: own and shared dashboards, the factory default, each user's home dashboard"),
        (name = "analytics", description = "Datasets (immutable Parquet snapshots of telemetry), analytics runs (standard analyses and the co-pilot) and the model registry; all are jobs polled by GET"),
        (name = "reports", description = "Energy reports as PDF, XLSX or JSON files, generated as jobs polled by GET and downloaded once succeeded"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer scheme (access token or `fo_` API key) that secured routes use.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT or fo_ API key").build(),
            ),
        );
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .merge(crate::routes::identity::routes())
        .merge(crate::routes::ingest::routes())
        .merge(crate::routes::rules::routes())
        .merge(crate::routes::notifications::routes())
        .merge(crate::routes::energy::routes())
        .merge(crate::routes::dashboards::routes())
        .merge(crate::routes::analytics::routes())
        .merge(crate::routes::reports::routes())
}

/// The OpenAPI document as generated from the code (checked in as `docs/openapi.json`).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_routes_and_document().1
}

fn api_routes_and_document() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut openapi) = api_routes().split_for_parts();
    crate::idempotency::document(&mut openapi);
    (routes, openapi)
}

pub fn build_router(state: AppState) -> Router {
    let (routes, openapi) = api_routes_and_document();
    let docs: Router<AppState> = SwaggerUi::new("/api/docs").url("/api/v1/openapi.json", openapi).into();
    let timeout = state.request_timeout;
    routes
        .merge(docs)
        .fallback(crate::web::fallback)
        .method_not_allowed_fallback(layers::method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                    let request_id =
                        request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
                    // A client's path goes into every line of the request's span: clipped.
                    let path = factoryops_platform::logline::clip_to(request.uri().path(), 200);
                    tracing::info_span!("http", method = %request.method(), path = %path, request_id)
                }))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(layers::panic_response))
                .layer(middleware::from_fn(layers::problem_for_bare_errors))
                .layer(middleware::from_fn_with_state(state.metrics.clone(), layers::record_metrics))
                .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
                .layer(DefaultBodyLimit::max(state.body_limit_bytes))
                .layer(middleware::from_fn_with_state(state.clone(), crate::idempotency::layer)),
        )
        .with_state(state)
}
