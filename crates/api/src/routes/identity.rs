//! Platform root, entry and sessions, users, API keys, audit log, `/me`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use factoryops_identity::{
    ApiKeyInfo, AuditEntry, AuditQuery, CreatedApiKey, Factory, FactoryUpdate, LoginResult, NewApiKey, NewFactory,
    NewUser, Page, Permission, Principal, PublicFactory, TokenPair, User, UserUpdate,
};
use factoryops_types::FactoryId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Authenticated, ClientContext, Root, SuperAdmin, Tenant, UsersRead};
use crate::problem::{ApiJson, Problem};
use crate::router::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(platform_login))
        .routes(routes!(platform_refresh))
        .routes(routes!(platform_password))
        .routes(routes!(list_all_factories, create_factory))
        .routes(routes!(update_factory))
        .routes(routes!(create_super_admin))
        .routes(routes!(public_factories))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(change_password))
        .routes(routes!(me))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, disable_user))
        .routes(routes!(reset_user_password))
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
        .routes(routes!(audit_log))
}

type ApiResult<T> = Result<T, Problem>;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlatformLogin {
    pub username: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub email: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordReset {
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSuperAdmin {
    pub email: String,
    pub name: String,
    pub password: String,
    #[serde(default)]
    pub phone: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct PageQuery {
    /// 1–500.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    /// `root`, `user` or `api_key`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factory: Option<Factory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
    pub role: String,
    pub permissions: Vec<Permission>,
}

#[derive(Serialize, ToSchema)]
pub struct FactoryList {
    pub items: Vec<Factory>,
}

#[derive(Serialize, ToSchema)]
pub struct PublicFactoryList {
    pub items: Vec<PublicFactory>,
}

fn factory_id(raw: &str) -> ApiResult<FactoryId> {
    FactoryId::parse(raw).map_err(|_| Problem::not_found("no such factory"))
}

/// The platform root logs in.
#[utoipa::path(post, path = "/api/v1/platform/login", tag = "platform", request_body = PlatformLogin,
    responses((status = 200, body = LoginResult), (status = 401, body = Problem), (status = 429, body = Problem)))]
async fn platform_login(
    State(state): State<AppState>,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<PlatformLogin>,
) -> ApiResult<Json<LoginResult>> {
    Ok(Json(state.identity.platform_login(&body.username, &body.password, &ctx).await?))
}

/// Rotates the platform root's refresh token.
#[utoipa::path(post, path = "/api/v1/platform/refresh", tag = "platform", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = Problem)))]
async fn platform_refresh(
    State(state): State<AppState>,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> ApiResult<Json<TokenPair>> {
    Ok(Json(state.identity.refresh(None, &body.refresh_token, &ctx).await?))
}

/// The platform root changes its password.
#[utoipa::path(post, path = "/api/v1/platform/password", tag = "platform", request_body = PasswordChange,
    security(("bearer" = [])), responses((status = 204), (status = 422, body = Problem)))]
async fn platform_password(
    State(state): State<AppState>,
    root: Root,
    ApiJson(body): ApiJson<PasswordChange>,
) -> ApiResult<StatusCode> {
    state.identity.change_root_password(&body.current_password, &body.new_password, &root.ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every factory (platform root).
#[utoipa::path(get, path = "/api/v1/platform/factories", tag = "platform", security(("bearer" = [])),
    responses((status = 200, body = FactoryList), (status = 403, body = Problem)))]
async fn list_all_factories(State(state): State<AppState>, _root: Root) -> ApiResult<Json<FactoryList>> {
    Ok(Json(FactoryList { items: state.identity.list_factories().await? }))
}

/// Creates a factory (platform root).
#[utoipa::path(post, path = "/api/v1/platform/factories", tag = "platform", request_body = NewFactory,
    security(("bearer" = [])),
    responses((status = 201, body = Factory), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_factory(
    State(state): State<AppState>,
    root: Root,
    ApiJson(body): ApiJson<NewFactory>,
) -> ApiResult<Response> {
    let factory = state.identity.create_factory(body, &root.ctx).await?;
    sync_timezone(&state, &factory).await?;
    Ok((StatusCode::CREATED, Json(factory)).into_response())
}

/// Renames, re-zones, disables or enables a factory (platform root). Disabling ends its sessions.
#[utoipa::path(patch, path = "/api/v1/platform/factories/{factory_id}", tag = "platform", request_body = FactoryUpdate,
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Factory), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_factory(
    State(state): State<AppState>,
    root: Root,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<FactoryUpdate>,
) -> ApiResult<Json<Factory>> {
    let factory = state.identity.update_factory(&factory_id(&raw)?, body, &root.ctx).await?;
    sync_timezone(&state, &factory).await?;
    Ok(Json(factory))
}

/// Rule schedules run in the factory's time zone.
async fn sync_timezone(state: &AppState, factory: &Factory) -> ApiResult<()> {
    let id = factory_id(&factory.id)?;
    state.rules.set_factory_timezone(&id, &factory.timezone).await.map_err(Problem::from)
}

/// Creates a factory's super admin (platform root).
#[utoipa::path(post, path = "/api/v1/platform/factories/{factory_id}/super-admins", tag = "platform",
    request_body = NewSuperAdmin, params(("factory_id" = String, Path)), security(("bearer" = [])),
    responses((status = 201, body = User), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn create_super_admin(
    State(state): State<AppState>,
    root: Root,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<NewSuperAdmin>,
) -> ApiResult<Response> {
    let new = NewUser {
        email: body.email,
        name: body.name,
        role: "super_admin".into(),
        permissions: Vec::new(),
        password: body.password,
        phone: body.phone,
    };
    let user = state.identity.create_user(&factory_id(&raw)?, &Principal::Root, new, &root.ctx).await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

/// Active factories for the login dropdown (id and name only); 404 when switched off.
#[utoipa::path(get, path = "/api/v1/factories", tag = "entry",
    responses((status = 200, body = PublicFactoryList), (status = 404, body = Problem)))]
async fn public_factories(State(state): State<AppState>) -> ApiResult<Json<PublicFactoryList>> {
    if !state.public_factory_list {
        return Err(Problem::not_found("the factory list is switched off; ask your administrator for the factory id"));
    }
    Ok(Json(PublicFactoryList { items: state.identity.public_factories().await? }))
}

/// Logs in to one factory.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/auth/login", tag = "entry", request_body = Login,
    params(("factory_id" = String, Path)),
    responses((status = 200, body = LoginResult), (status = 401, body = Problem), (status = 429, body = Problem)))]
async fn login(
    State(state): State<AppState>,
    ClientContext(ctx): ClientContext,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<Login>,
) -> ApiResult<Json<LoginResult>> {
    Ok(Json(state.identity.login(&raw, &body.email, &body.password, &ctx).await?))
}

/// Rotates the refresh token. Reusing an already rotated token revokes the whole session.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/auth/refresh", tag = "entry", request_body = RefreshRequest,
    params(("factory_id" = String, Path)), responses((status = 200, body = TokenPair), (status = 401, body = Problem)))]
async fn refresh(
    State(state): State<AppState>,
    ClientContext(ctx): ClientContext,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> ApiResult<Json<TokenPair>> {
    let factory =
        FactoryId::parse(raw).map_err(|_| Problem::unauthorized("invalid or expired refresh token; log in again"))?;
    Ok(Json(state.identity.refresh(Some(&factory), &body.refresh_token, &ctx).await?))
}

/// Ends the session of the refresh token.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/auth/logout", tag = "entry", request_body = RefreshRequest,
    params(("factory_id" = String, Path)), responses((status = 204)))]
async fn logout(
    State(state): State<AppState>,
    ClientContext(ctx): ClientContext,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> ApiResult<StatusCode> {
    if let Ok(factory) = FactoryId::parse(raw) {
        state.identity.logout(Some(&factory), &body.refresh_token, &ctx).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user changes their own password; every session of theirs ends.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/auth/password", tag = "entry", request_body = PasswordChange,
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 422, body = Problem)))]
async fn change_password(
    State(state): State<AppState>,
    tenant: Tenant<crate::auth::CanRead>,
    ApiJson(body): ApiJson<PasswordChange>,
) -> ApiResult<StatusCode> {
    let Principal::User { user_id, .. } = &tenant.principal else {
        return Err(Problem::forbidden("only users have passwords"));
    };
    state
        .identity
        .change_password(&tenant.factory, user_id, &body.current_password, &body.new_password, &tenant.ctx)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the caller is: user, factory, role and effective permissions.
#[utoipa::path(get, path = "/api/v1/me", tag = "entry", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = Problem)))]
async fn me(State(state): State<AppState>, auth: Authenticated) -> ApiResult<Json<Me>> {
    let me = match auth.principal {
        Principal::Root => Me {
            kind: "root".into(),
            user: None,
            factory: None,
            api_key_id: None,
            role: "root".into(),
            permissions: Vec::new(),
        },
        Principal::User { user_id, factory_id, role, permissions } => Me {
            kind: "user".into(),
            user: state.identity.user(&factory_id, &user_id).await?,
            factory: state.identity.factory(&factory_id).await?,
            api_key_id: None,
            role: role.as_str().into(),
            permissions: permissions.into_iter().collect(),
        },
        Principal::ApiKey { key_id, factory_id, permissions } => Me {
            kind: "api_key".into(),
            user: None,
            factory: state.identity.factory(&factory_id).await?,
            api_key_id: Some(key_id),
            role: "api_key".into(),
            permissions: permissions.into_iter().collect(),
        },
    };
    Ok(Json(me))
}

/// The factory's users (super admins, or admins with `users:read`).
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/users", tag = "users",
    params(("factory_id" = String, Path), PageQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<User>), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn list_users(
    State(state): State<AppState>,
    tenant: Tenant<UsersRead>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<Page<User>>> {
    Ok(Json(state.identity.list_users(&tenant.factory, page.limit, page.cursor.as_deref()).await?))
}

/// Creates a user (super admin).
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/users", tag = "users", request_body = NewUser,
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    responses((status = 201, body = User), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn create_user(
    State(state): State<AppState>,
    tenant: Tenant<SuperAdmin>,
    ApiJson(body): ApiJson<NewUser>,
) -> ApiResult<Response> {
    let user = state.identity.create_user(&tenant.factory, &tenant.principal, body, &tenant.ctx).await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

/// One user (super admins, or admins with `users:read`).
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/users/{user_id}", tag = "users",
    params(("factory_id" = String, Path), ("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = User), (status = 404, body = Problem)))]
async fn get_user(
    State(state): State<AppState>,
    tenant: Tenant<UsersRead>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<User>> {
    let (_, user_id) = ids;
    let user = state.identity.user(&tenant.factory, &user_id).await?;
    user.map(Json).ok_or_else(|| Problem::not_found("no such user"))
}

/// Changes a user's name, role, permissions, phone or status (super admin).
#[utoipa::path(patch, path = "/api/v1/factories/{factory_id}/users/{user_id}", tag = "users", request_body = UserUpdate,
    params(("factory_id" = String, Path), ("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = User), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn update_user(
    State(state): State<AppState>,
    tenant: Tenant<SuperAdmin>,
    Path(ids): Path<(String, String)>,
    ApiJson(body): ApiJson<UserUpdate>,
) -> ApiResult<Json<User>> {
    let (_, user_id) = ids;
    Ok(Json(state.identity.update_user(&tenant.factory, &tenant.principal, &user_id, body, &tenant.ctx).await?))
}

/// Disables a user (super admin); their sessions end at the next request. Users are never deleted.
#[utoipa::path(delete, path = "/api/v1/factories/{factory_id}/users/{user_id}", tag = "users",
    params(("factory_id" = String, Path), ("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn disable_user(
    State(state): State<AppState>,
    tenant: Tenant<SuperAdmin>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (_, user_id) = ids;
    let update = UserUpdate { status: Some(factoryops_identity::UserStatus::Disabled), ..UserUpdate::default() };
    state.identity.update_user(&tenant.factory, &tenant.principal, &user_id, update, &tenant.ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a new password for a user (super admin); their sessions end.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/users/{user_id}/password", tag = "users",
    request_body = PasswordReset, params(("factory_id" = String, Path), ("user_id" = String, Path)),
    security(("bearer" = [])), responses((status = 204), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn reset_user_password(
    State(state): State<AppState>,
    tenant: Tenant<SuperAdmin>,
    Path(ids): Path<(String, String)>,
    ApiJson(body): ApiJson<PasswordReset>,
) -> ApiResult<StatusCode> {
    let (_, user_id) = ids;
    state.identity.reset_password(&tenant.factory, &tenant.principal, &user_id, &body.password, &tenant.ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The factory's API keys (super admin). Keys themselves are never shown again.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/api-keys", tag = "api-keys",
    params(("factory_id" = String, Path), PageQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<ApiKeyInfo>), (status = 403, body = Problem)))]
async fn list_api_keys(
    State(state): State<AppState>,
    tenant: Tenant<SuperAdmin>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<Page<ApiKeyInfo>>> {
    Ok(Json(state.identity.list_api_keys(&tenant.factory, page.limit, page.cursor.as_deref()).await?))
}

/// Creates an API key (super admin); the key is in this response only.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/api-keys", tag = "api-keys", request_body = NewApiKey,
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    responses((status = 201, body = CreatedApiKey), (status = 422, body = Problem)))]
async fn create_api_key(
    State(state): State<AppState>,
    tenant: Tenant<SuperAdmin>,
    ApiJson(body): ApiJson<NewApiKey>,
) -> ApiResult<Response> {
    let created = state.identity.create_api_key(&tenant.factory, &tenant.principal, body, &tenant.ctx).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Revokes an API key (super admin).
#[utoipa::path(delete, path = "/api/v1/factories/{factory_id}/api-keys/{key_id}", tag = "api-keys",
    params(("factory_id" = String, Path), ("key_id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = Problem)))]
async fn revoke_api_key(
    State(state): State<AppState>,
    tenant: Tenant<SuperAdmin>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (_, key_id) = ids;
    state.identity.revoke_api_key(&tenant.factory, &tenant.principal, &key_id, &tenant.ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The factory's audit log, newest first (super admin).
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/audit", tag = "audit",
    params(("factory_id" = String, Path), AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<AuditEntry>), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn audit_log(
    State(state): State<AppState>,
    tenant: Tenant<SuperAdmin>,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    Ok(Json(state.identity.audit_log(&tenant.factory, &query).await?))
}
