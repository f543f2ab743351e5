//! Dashboards as data (ADR 0022): CRUD, the factory default and each user's home
//! dashboard. Read: the caller's own and the shared ones (another user's private
//! dashboard is a 404, as a missing one); write: the owner or a super admin (403).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use factoryops_dashboards::{Dashboard, DashboardSpec, Reference, StoreError, Viewer};
use factoryops_identity::Principal;
use factoryops_types::DeviceId;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{CanRead, Tenant};
use crate::problem::{ApiJson, FieldError, Problem};
use crate::router::AppState;
use crate::routes::audit;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_dashboards, create_dashboard))
        .routes(routes!(get_home, set_home))
        .routes(routes!(get_dashboard, replace_dashboard, delete_dashboard))
}

type ApiResult<T> = Result<T, Problem>;

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => not_found(),
            StoreError::Conflict(message) => Problem::conflict(message),
            StoreError::Db(e) => Problem::internal(&e),
        }
    }
}

fn not_found() -> Problem {
    Problem::not_found("no such dashboard")
}

/// The dashboards the caller can see.
#[derive(Serialize, ToSchema)]
pub struct DashboardList {
    pub items: Vec<Dashboard>,
}

/// The Dashboard page's starting point: the user's preference (`dashboard_id`, null when
/// unset) and the dashboard it resolves to — the preference if still readable, else the
/// factory default, else null (the portal then shows its built-in overview).
#[derive(Serialize, ToSchema)]
pub struct DashboardHome {
    #[schema(required = true)]
    pub dashboard_id: Option<String>,
    #[schema(required = true)]
    pub dashboard: Option<Dashboard>,
}

/// Sets (a dashboard id the user can read) or clears (`null`) the user's home dashboard.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DashboardHomeChoice {
    #[schema(required = true)]
    pub dashboard_id: Option<String>,
}

fn viewer(principal: &Principal) -> Viewer<'_> {
    match principal {
        Principal::User { user_id, .. } => Viewer::User { user_id, super_admin: principal.is_super_admin() },
        _ => Viewer::ApiKey,
    }
}

/// Dashboards belong to people: API keys may read shared ones but own none.
fn owner(principal: &Principal) -> ApiResult<&str> {
    match principal {
        Principal::User { user_id, .. } => Ok(user_id),
        _ => Err(Problem::forbidden("dashboards belong to users: an API key cannot create or change them")),
    }
}

/// The dashboard if the caller may read it; another user's private one is a 404.
async fn readable(state: &AppState, t: &Tenant<CanRead>, id: &str) -> ApiResult<Dashboard> {
    match state.dashboards.get(&t.factory, id).await? {
        Some(d) if viewer(&t.principal).can_read(&d) => Ok(d),
        _ => Err(not_found()),
    }
}

/// Validates the spec, the default flag's permission and that every device and group it
/// names exists in this factory (another factory's look the same as missing ones).
async fn check(state: &AppState, t: &Tenant<CanRead>, spec: &DashboardSpec, current_default: bool) -> ApiResult<()> {
    let issues = spec.validate(current_default);
    if !issues.is_empty() {
        return Err(Problem::validation(
            issues.into_iter().map(|i| FieldError { field: i.field, message: i.message }).collect(),
        ));
    }
    if spec.default.is_some_and(|d| d != current_default) && !t.principal.is_super_admin() {
        return Err(Problem::forbidden("only a super admin sets the factory's default dashboard"));
    }
    let mut errors = Vec::new();
    for (field, reference) in spec.references() {
        let exists = match &reference {
            // validate() has already checked the id's syntax.
            Reference::Device(id) => match DeviceId::parse(id) {
                Ok(device) => state.devices.get(&t.factory, &device).await?.is_some(),
                Err(_) => false,
            },
            Reference::Group(id) => state.energy.store().get_group(&t.factory, id).await?.is_some(),
        };
        if !exists {
            let what = if matches!(reference, Reference::Device(_)) { "device" } else { "group" };
            errors.push(FieldError { field, message: format!("no such {what}") });
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(Problem::validation(errors)) }
}

/// The caller's dashboards and the shared ones, by name.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/dashboards", tag = "dashboards",
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = DashboardList)))]
async fn list_dashboards(State(state): State<AppState>, t: Tenant<CanRead>) -> ApiResult<Response> {
    let user = match &t.principal {
        Principal::User { user_id, .. } => Some(user_id.as_str()),
        _ => None,
    };
    let items = state.dashboards.list_visible(&t.factory, user).await?;
    Ok(Json(DashboardList { items }).into_response())
}

/// Creates a dashboard owned by the caller (a user). `"default": true` (super admins
/// only) makes it the factory's default.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/dashboards", tag = "dashboards",
    params(("factory_id" = String, Path)), security(("bearer" = [])), request_body = DashboardSpec,
    responses((status = 201, body = Dashboard), (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn create_dashboard(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    ApiJson(spec): ApiJson<DashboardSpec>,
) -> ApiResult<Response> {
    let owner = owner(&t.principal)?.to_string();
    check(&state, &t, &spec, false).await?;
    let dashboard = state.dashboards.create(&t.factory, &owner, &spec, state.clock.now_ms()).await?;
    audit(
        &state,
        &t,
        "dashboard.created",
        &dashboard.id,
        json!({ "name": dashboard.name, "shared": dashboard.shared }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(dashboard)).into_response())
}

/// The user's home dashboard (see `DashboardHome`).
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/dashboards/home", tag = "dashboards",
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = DashboardHome)))]
async fn get_home(State(state): State<AppState>, t: Tenant<CanRead>) -> ApiResult<Response> {
    Ok(Json(home(&state, &t).await?).into_response())
}

async fn home(state: &AppState, t: &Tenant<CanRead>) -> ApiResult<DashboardHome> {
    let preference = match &t.principal {
        Principal::User { user_id, .. } => state.dashboards.preference(&t.factory, user_id).await?,
        _ => None,
    };
    let mut dashboard = None;
    if let Some(id) = &preference {
        // A preferred dashboard made private by its owner or deleted falls back quietly.
        dashboard = state.dashboards.get(&t.factory, id).await?.filter(|d| viewer(&t.principal).can_read(d));
    }
    if dashboard.is_none() {
        dashboard = state.dashboards.factory_default(&t.factory).await?;
    }
    Ok(DashboardHome { dashboard_id: preference, dashboard })
}

/// Sets or clears the user's home dashboard (a dashboard the user can read).
#[utoipa::path(put, path = "/api/v1/factories/{factory_id}/dashboards/home", tag = "dashboards",
    params(("factory_id" = String, Path)), security(("bearer" = [])), request_body = DashboardHomeChoice,
    responses((status = 200, body = DashboardHome), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn set_home(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    ApiJson(choice): ApiJson<DashboardHomeChoice>,
) -> ApiResult<Response> {
    let user = owner(&t.principal)?.to_string();
    if let Some(id) = &choice.dashboard_id
        && readable(&state, &t, id).await.is_err()
    {
        return Err(Problem::invalid_field("dashboard_id", "no such dashboard"));
    }
    state.dashboards.set_preference(&t.factory, &user, choice.dashboard_id.as_deref()).await?;
    Ok(Json(home(&state, &t).await?).into_response())
}

/// One dashboard (own or shared).
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/dashboards/{dashboard_id}", tag = "dashboards",
    params(("factory_id" = String, Path), ("dashboard_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Dashboard), (status = 404, body = Problem)))]
async fn get_dashboard(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Response> {
    Ok(Json(readable(&state, &t, &ids.1).await?).into_response())
}

/// Replaces a dashboard (owner or super admin). An absent `default` keeps it.
#[utoipa::path(put, path = "/api/v1/factories/{factory_id}/dashboards/{dashboard_id}", tag = "dashboards",
    params(("factory_id" = String, Path), ("dashboard_id" = String, Path)), security(("bearer" = [])),
    request_body = DashboardSpec,
    responses((status = 200, body = Dashboard), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
async fn replace_dashboard(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
    ApiJson(spec): ApiJson<DashboardSpec>,
) -> ApiResult<Response> {
    let current = readable(&state, &t, &ids.1).await?;
    if !viewer(&t.principal).can_write(&current) {
        return Err(Problem::forbidden("only the owner or a super admin changes a dashboard"));
    }
    check(&state, &t, &spec, current.default).await?;
    let dashboard = state.dashboards.replace(&t.factory, &ids.1, &spec, state.clock.now_ms()).await?;
    audit(&state, &t, "dashboard.updated", &ids.1, json!({ "name": dashboard.name, "shared": dashboard.shared })).await;
    Ok(Json(dashboard).into_response())
}

/// Deletes a dashboard (owner or super admin); users who had it as home fall back to
/// the factory default.
#[utoipa::path(delete, path = "/api/v1/factories/{factory_id}/dashboards/{dashboard_id}", tag = "dashboards",
    params(("factory_id" = String, Path), ("dashboard_id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn delete_dashboard(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let current = readable(&state, &t, &ids.1).await?;
    if !viewer(&t.principal).can_write(&current) {
        return Err(Problem::forbidden("only the owner or a super admin deletes a dashboard"));
    }
    state.dashboards.delete(&t.factory, &ids.1).await?;
    audit(&state, &t, "dashboard.deleted", &ids.1, json!({ "name": current.name })).await;
    Ok(StatusCode::NO_CONTENT)
}
