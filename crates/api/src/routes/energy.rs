//! Energy: device groups, the versioned energy settings (tariff, shifts, emission factor),
//! per-device energy configuration, and the computed answers (consumption, peak demand,
//! ranking). The numbers come from `factoryops_energy`; this module parses, checks the
//! tenancy of every id it is given, and shapes the JSON.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use factoryops_energy::store::{DeviceEnergyConfig, Group, GroupKind, GroupUpdate, NewGroup, StoreError};
use factoryops_types::{DeviceId, FactoryId, PropertyName, format_rfc3339_ms};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{CanRead, DevicesWrite, Tenant};
use crate::problem::{ApiJson, Problem};
use crate::router::AppState;
use crate::routes::audit;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_groups, create_group))
        .routes(routes!(get_group, update_group, delete_group))
        .routes(routes!(get_device_config, put_device_config))
}

type ApiResult<T> = Result<T, Problem>;

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Invalid { field, message } => Problem::invalid_field(&field, message),
            StoreError::NotFound => Problem::not_found("no such group"),
            StoreError::DeviceTaken { ref device_id, ref group_id, .. } => {
                let (device_id, group_id) = (device_id.clone(), group_id.clone());
                Problem::conflict(error.to_string()).with("device_id", device_id).with("group_id", group_id)
            }
            StoreError::Conflict(message) => Problem::conflict(message),
            StoreError::Db(e) => Problem::internal(&e),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Groups

/// A device group: part of the factory's hierarchy (site → area → line → machine, any
/// depth; a device sits in at most one hierarchy group) or a free tag (a device may carry
/// many).
#[derive(Serialize, ToSchema)]
pub struct GroupView {
    pub id: String,
    pub name: String,
    /// `hierarchy` or `tag`.
    pub kind: String,
    #[schema(required = true)]
    pub parent_id: Option<String>,
    /// `site`, `area`, `line`, `machine` or free text.
    #[schema(required = true)]
    pub level: Option<String>,
    /// The devices listed on this group itself; energy queries with `group_id` add the
    /// devices of every group below it.
    pub devices: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<Group> for GroupView {
    fn from(g: Group) -> Self {
        Self {
            id: g.id,
            name: g.name,
            kind: g.kind.as_str().into(),
            parent_id: g.parent_id,
            level: g.level,
            devices: g.devices.into_iter().map(DeviceId::into_string).collect(),
            created_at: format_rfc3339_ms(g.created_at),
            updated_at: format_rfc3339_ms(g.updated_at),
        }
    }
}

/// All groups of the factory. A factory has few groups (at most 1,000): the list is one
/// page, `next_cursor` is always `null`.
#[derive(Serialize, ToSchema)]
pub struct GroupList {
    pub items: Vec<GroupView>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// `POST /groups`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupCreate {
    /// `hierarchy` (default) or `tag`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub kind: Option<String>,
    pub name: String,
    /// A hierarchy group to sit under (hierarchy groups only).
    #[serde(default)]
    pub parent_id: Option<String>,
    /// `site`, `area`, `line`, `machine` or free text (hierarchy groups only).
    #[serde(default)]
    pub level: Option<String>,
    /// Device ids of this factory.
    #[serde(default)]
    pub devices: Vec<String>,
}

/// `PATCH /groups/{id}`: absent fields stay; `parent_id: null` moves the group to the top,
/// `level: null` clears it; `devices` replaces the list (moving a device between
/// hierarchy groups = removing it from one, then adding it to the other).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct GroupPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub parent_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub level: Option<Option<String>>,
    #[serde(default)]
    pub devices: Option<Vec<String>>,
}

fn nullable<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(de).map(Some)
}

#[derive(Deserialize, IntoParams)]
pub struct DeleteGroupQuery {
    /// Also delete every group below this one (their devices are released).
    pub cascade: Option<bool>,
}

/// Checks that every listed device exists in the factory; a bad one is a 422 naming
/// `devices[i]`.
async fn factory_devices(state: &AppState, factory: &FactoryId, raw: &[String]) -> ApiResult<Vec<DeviceId>> {
    let mut devices = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        let field = format!("devices[{i}]");
        let id = DeviceId::parse(text).map_err(|e| Problem::invalid_field(&field, e.to_string()))?;
        if state.devices.get(factory, &id).await?.is_none() {
            return Err(Problem::invalid_field(&field, format!("no such device `{text}`")));
        }
        devices.push(id);
    }
    Ok(devices)
}

/// The factory's groups, hierarchy and tags (one page: a factory has at most 1,000).
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/groups", tag = "energy",
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = GroupList)))]
async fn list_groups(State(state): State<AppState>, t: Tenant<CanRead>) -> ApiResult<Json<GroupList>> {
    let groups = state.energy.store().list_groups(&t.factory).await?;
    Ok(Json(GroupList { items: groups.into_iter().map(Into::into).collect(), next_cursor: None }))
}

/// Creates a group (`devices:write`). A device already in another hierarchy group is a
/// 409 naming the device and that group.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/groups", tag = "energy",
    params(("factory_id" = String, Path)), request_body = GroupCreate, security(("bearer" = [])),
    responses((status = 201, body = GroupView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_group(
    State(state): State<AppState>,
    t: Tenant<DevicesWrite>,
    ApiJson(body): ApiJson<GroupCreate>,
) -> ApiResult<Response> {
    let kind = match body.kind.as_deref() {
        None | Some("hierarchy") => GroupKind::Hierarchy,
        Some("tag") => GroupKind::Tag,
        Some(_) => return Err(Problem::invalid_field("kind", "must be hierarchy or tag")),
    };
    let devices = factory_devices(&state, &t.factory, &body.devices).await?;
    let new = NewGroup { kind, name: body.name, parent_id: body.parent_id, level: body.level, devices };
    let group = state.energy.store().create_group(&t.factory, new, state.clock.now_ms()).await?;
    audit(&state, &t, "group.created", &group.id, json!({ "name": group.name, "kind": group.kind.as_str() })).await;
    Ok((StatusCode::CREATED, Json(GroupView::from(group))).into_response())
}

/// One group.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/groups/{group_id}", tag = "energy",
    params(("factory_id" = String, Path), ("group_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = GroupView), (status = 404, body = Problem)))]
async fn get_group(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<GroupView>> {
    let group = state.energy.store().get_group(&t.factory, &ids.1).await?.ok_or(StoreError::NotFound)?;
    Ok(Json(group.into()))
}

/// Renames, moves (`parent_id`), relabels (`level`) or sets the devices of a group
/// (`devices:write`).
#[utoipa::path(patch, path = "/api/v1/factories/{factory_id}/groups/{group_id}", tag = "energy",
    params(("factory_id" = String, Path), ("group_id" = String, Path)), request_body = GroupPatch,
    security(("bearer" = [])),
    responses((status = 200, body = GroupView), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn update_group(
    State(state): State<AppState>,
    t: Tenant<DevicesWrite>,
    Path(ids): Path<(String, String)>,
    ApiJson(body): ApiJson<GroupPatch>,
) -> ApiResult<Json<GroupView>> {
    // The group first: another factory's group is a 404 whatever the body says.
    state.energy.store().get_group(&t.factory, &ids.1).await?.ok_or(StoreError::NotFound)?;
    let devices = match &body.devices {
        Some(raw) => Some(factory_devices(&state, &t.factory, raw).await?),
        None => None,
    };
    let update = GroupUpdate { name: body.name, parent_id: body.parent_id, level: body.level, devices };
    let group = state.energy.store().update_group(&t.factory, &ids.1, update, state.clock.now_ms()).await?;
    audit(&state, &t, "group.updated", &group.id, json!({ "name": group.name })).await;
    Ok(Json(group.into()))
}

/// Deletes a group (`devices:write`); a group with groups below it only with
/// `?cascade=true`, which deletes the whole subtree. Devices are never deleted.
#[utoipa::path(delete, path = "/api/v1/factories/{factory_id}/groups/{group_id}", tag = "energy",
    params(("factory_id" = String, Path), ("group_id" = String, Path), DeleteGroupQuery), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_group(
    State(state): State<AppState>,
    t: Tenant<DevicesWrite>,
    Path(ids): Path<(String, String)>,
    Query(q): Query<DeleteGroupQuery>,
) -> ApiResult<StatusCode> {
    let deleted = state.energy.store().delete_group(&t.factory, &ids.1, q.cascade.unwrap_or(false)).await?;
    audit(&state, &t, "group.deleted", &ids.1, json!({ "deleted": deleted })).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------
// Per-device energy configuration

/// `PUT /energy/devices/{device_id}`: replaces the device's energy configuration.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfigBody {
    /// The property to compute energy from when several are annotated; default: an
    /// energy counter, else a pulse counter, else a power property (by name).
    #[serde(default)]
    pub source_property: Option<String>,
    /// The state property whose `idle`, `off` and `setup` states count as idle energy.
    #[serde(default)]
    pub state_property: Option<String>,
    /// Without a state property: power below this many kW counts as idle.
    #[serde(default)]
    pub idle_below_kw: Option<f64>,
    /// The longest stretch between samples that is bridged (1–1440, default 15).
    #[serde(default)]
    pub max_gap_minutes: Option<u32>,
}

/// A device's energy configuration; `null` fields take the defaults, `updated_at: null`
/// means it was never set.
#[derive(Serialize, ToSchema)]
pub struct DeviceConfigView {
    pub device_id: String,
    #[schema(required = true)]
    pub source_property: Option<String>,
    #[schema(required = true)]
    pub state_property: Option<String>,
    #[schema(required = true)]
    pub idle_below_kw: Option<f64>,
    #[schema(required = true)]
    pub max_gap_minutes: Option<u32>,
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
}

fn config_view(device: &DeviceId, config: Option<(DeviceEnergyConfig, i64)>) -> DeviceConfigView {
    let (config, updated_at) = match config {
        Some((c, at)) => (c, Some(format_rfc3339_ms(at))),
        None => (DeviceEnergyConfig::default(), None),
    };
    DeviceConfigView {
        device_id: device.to_string(),
        source_property: config.source_property.map(PropertyName::into_string),
        state_property: config.state_property.map(PropertyName::into_string),
        idle_below_kw: config.idle_below_kw,
        max_gap_minutes: config.max_gap_minutes,
        updated_at,
    }
}

async fn factory_device(state: &AppState, factory: &FactoryId, raw: &str) -> ApiResult<DeviceId> {
    let id = DeviceId::parse(raw).map_err(|_| Problem::not_found("no such device"))?;
    state.devices.get(factory, &id).await?.ok_or_else(|| Problem::not_found("no such device"))?;
    Ok(id)
}

/// A device's energy configuration.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/energy/devices/{device_id}", tag = "energy",
    params(("factory_id" = String, Path), ("device_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = DeviceConfigView), (status = 404, body = Problem)))]
async fn get_device_config(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<DeviceConfigView>> {
    let device = factory_device(&state, &t.factory, &ids.1).await?;
    let config = state.energy.store().device_config(&t.factory, &device).await?;
    Ok(Json(config_view(&device, config)))
}

/// Sets a device's energy configuration (`devices:write`).
#[utoipa::path(put, path = "/api/v1/factories/{factory_id}/energy/devices/{device_id}", tag = "energy",
    params(("factory_id" = String, Path), ("device_id" = String, Path)), request_body = DeviceConfigBody,
    security(("bearer" = [])),
    responses((status = 200, body = DeviceConfigView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn put_device_config(
    State(state): State<AppState>,
    t: Tenant<DevicesWrite>,
    Path(ids): Path<(String, String)>,
    ApiJson(body): ApiJson<DeviceConfigBody>,
) -> ApiResult<Json<DeviceConfigView>> {
    let device = factory_device(&state, &t.factory, &ids.1).await?;
    let property = |field: &str, raw: Option<String>| -> ApiResult<Option<PropertyName>> {
        raw.map(|p| PropertyName::parse(p).map_err(|e| Problem::invalid_field(field, e.to_string()))).transpose()
    };
    let config = DeviceEnergyConfig {
        source_property: property("source_property", body.source_property)?,
        state_property: property("state_property", body.state_property)?,
        idle_below_kw: body.idle_below_kw,
        max_gap_minutes: body.max_gap_minutes,
    };
    let now = state.clock.now_ms();
    state.energy.put_device_config(&t.factory, &device, &config, now).await?;
    audit(
        &state,
        &t,
        "energy.device_config.updated",
        device.as_str(),
        serde_json::to_value(&config).unwrap_or_default(),
    )
    .await;
    Ok(Json(config_view(&device, Some((config, now)))))
}
