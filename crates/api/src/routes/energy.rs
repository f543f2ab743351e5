//! Energy: device groups, the versioned energy settings (tariff, shifts, emission factor),
//! per-device energy configuration, and the computed answers (consumption, peak demand,
//! ranking). The numbers come from `factoryops_energy`; this module parses, checks the
//! tenancy of every id it is given, and shapes the JSON.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use chrono_tz::Tz;
use factoryops_energy::InvalidSetting;
use factoryops_energy::emission::EmissionFactor;
use factoryops_energy::shifts::ShiftPlan;
use factoryops_energy::store::{
    DeviceEnergyConfig, Group, GroupKind, GroupUpdate, NewGroup, NewSetting, SettingKind, SettingVersion, StoreError,
    in_force,
};
use factoryops_energy::tariff::Tariff;
use factoryops_types::{DeviceId, FactoryId, PropertyName, format_rfc3339_ms};
use serde::de::DeserializeOwned;
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
        .routes(routes!(get_tariff, put_tariff))
        .routes(routes!(get_shifts, put_shifts))
        .routes(routes!(get_emission_factor, put_emission_factor))
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

// ---------------------------------------------------------------------------------------
// Versioned settings: tariff, shifts, emission factor

/// The factory's time zone (its local date decides which setting version is in force).
pub(crate) async fn factory_tz(state: &AppState, factory: &FactoryId) -> ApiResult<Tz> {
    let found = state.identity.factory(factory).await?.ok_or_else(|| Problem::not_found("no such factory"))?;
    found.timezone.parse::<Tz>().map_err(|e| Problem::internal(&format!("factory time zone {}: {e}", found.timezone)))
}

/// A setting body as PUT: the pure crate's type, which validates itself.
trait Setting: DeserializeOwned + Serialize {
    const KIND: SettingKind;
    fn valid_from_mut(&mut self) -> &mut Option<NaiveDate>;
    fn check(&self) -> Result<(), InvalidSetting>;
}

impl Setting for Tariff {
    const KIND: SettingKind = SettingKind::Tariff;
    fn valid_from_mut(&mut self) -> &mut Option<NaiveDate> {
        &mut self.valid_from
    }
    fn check(&self) -> Result<(), InvalidSetting> {
        self.validate()
    }
}

impl Setting for ShiftPlan {
    const KIND: SettingKind = SettingKind::Shifts;
    fn valid_from_mut(&mut self) -> &mut Option<NaiveDate> {
        &mut self.valid_from
    }
    fn check(&self) -> Result<(), InvalidSetting> {
        self.validate()
    }
}

impl Setting for EmissionFactor {
    const KIND: SettingKind = SettingKind::EmissionFactor;
    fn valid_from_mut(&mut self) -> &mut Option<NaiveDate> {
        &mut self.valid_from
    }
    fn check(&self) -> Result<(), InvalidSetting> {
        self.validate()
    }
}

impl From<InvalidSetting> for Problem {
    fn from(e: InvalidSetting) -> Self {
        let field = if e.field.is_empty() { "body".to_string() } else { e.field };
        Problem::invalid_field(&field, e.message)
    }
}

/// One stored version in the PUT shape plus `valid_from`, `created_at`, `created_by`.
fn version_json(v: &SettingVersion) -> serde_json::Value {
    let mut body = match &v.body {
        serde_json::Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    body.insert("valid_from".into(), json!(v.valid_from.map(|d| d.to_string())));
    body.insert("created_at".into(), json!(format_rfc3339_ms(v.created_at)));
    body.insert("created_by".into(), json!(v.created_by));
    serde_json::Value::Object(body)
}

/// The GET answer: the version in force today (its fields at the top level), and every
/// version oldest first. Not set yet: `versions` is empty and `created_at` is `null`; a
/// first version that starts later: `versions` lists it, the top level has only nulls.
fn setting_view(versions: &[SettingVersion], today: NaiveDate) -> serde_json::Value {
    let mut top = match in_force(versions, today) {
        Some(current) => match version_json(current) {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        },
        None => {
            let mut map = serde_json::Map::new();
            for key in ["valid_from", "created_at", "created_by"] {
                map.insert(key.into(), serde_json::Value::Null);
            }
            map
        }
    };
    top.insert("versions".into(), serde_json::Value::Array(versions.iter().map(version_json).collect()));
    serde_json::Value::Object(top)
}

async fn get_setting(state: &AppState, factory: &FactoryId, kind: SettingKind) -> ApiResult<Response> {
    let tz = factory_tz(state, factory).await?;
    let today = factoryops_energy::calendar::local_date(tz, state.clock.now_ms())
        .ok_or_else(|| Problem::internal(&"the clock is out of range"))?;
    let versions = state.energy.store().setting_versions(factory, kind).await?;
    Ok(Json(setting_view(&versions, today)).into_response())
}

async fn put_setting<T: Setting>(
    state: &AppState,
    t: &Tenant<DevicesWrite>,
    body: serde_json::Value,
) -> ApiResult<Response> {
    let mut setting: T = serde_path_to_error::deserialize(body).map_err(|e| crate::problem::from_path_error(&e))?;
    setting.check()?;
    let valid_from = setting.valid_from_mut().take();
    let stored = serde_json::to_value(&setting).map_err(|e| Problem::internal(&e))?;
    let tz = factory_tz(state, &t.factory).await?;
    let now = state.clock.now_ms();
    let today = factoryops_energy::calendar::local_date(tz, now)
        .ok_or_else(|| Problem::internal(&"the clock is out of range"))?;
    let actor = t.principal.actor();
    let new = NewSetting { kind: T::KIND, valid_from, body: &stored, created_by: &actor };
    let version = state.energy.append_setting(&t.factory, new, today, now).await?;
    audit(
        state,
        t,
        &format!("energy.{}.updated", T::KIND.as_str()),
        T::KIND.as_str(),
        json!({ "version": version.version, "valid_from": valid_from.map(|d| d.to_string()) }),
    )
    .await;
    get_setting(state, &t.factory, T::KIND).await
}

/// The tariff in force today and every version. `versions: []` means no tariff is set (costs are `null`).
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/energy/tariff", tag = "energy",
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Object, description = "the tariff in force (PUT shape) with `valid_from`, `created_at`, `created_by`, and `versions` (oldest first); nulls and `versions: []` when none is set")))]
async fn get_tariff(State(state): State<AppState>, t: Tenant<CanRead>) -> ApiResult<Response> {
    get_setting(&state, &t.factory, SettingKind::Tariff).await
}

/// Adds a tariff version (`devices:write`). The first version may omit `valid_from`
/// (in force since always: the only way to price history); later ones must start today or
/// later, after the last one, so past cost never changes.
#[utoipa::path(put, path = "/api/v1/factories/{factory_id}/energy/tariff", tag = "energy",
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    request_body(content = Object, description = "`{currency, valid_from?, periods: [{days, from, to, price_per_kwh, season?: {from: \"MM-DD\", to}}], holidays?, holiday_as?, demand_charge_per_kw? | demand_charge?: {per_kw, basis: month|day, method: highest|mean_of_highest, count?, windows?: [{days, from, to, months?}]}, demand_interval_minutes?, fixed_per_month?}`; every day type × date × quarter hour must be covered by exactly one period"),
    responses((status = 200, body = Object, description = "as GET"), (status = 422, body = Problem)))]
async fn put_tariff(
    State(state): State<AppState>,
    t: Tenant<DevicesWrite>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> ApiResult<Response> {
    put_setting::<Tariff>(&state, &t, body).await
}

/// The shift calendar in force today and every version.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/energy/shifts", tag = "energy",
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Object, description = "the shift plan in force (PUT shape) with `valid_from`, `created_at`, `created_by`, and `versions`; nulls and `versions: []` when none is set")))]
async fn get_shifts(State(state): State<AppState>, t: Tenant<CanRead>) -> ApiResult<Response> {
    get_setting(&state, &t.factory, SettingKind::Shifts).await
}

/// Adds a shift plan version (`devices:write`); same `valid_from` rules as the tariff.
#[utoipa::path(put, path = "/api/v1/factories/{factory_id}/energy/shifts", tag = "energy",
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    request_body(content = Object, description = "`{valid_from?, shifts: [{name, from: \"22:00\", to: \"06:00\", days?: [\"mon\", …]}]}`; a shift whose `to` is not after `from` ends the next day; shifts must not overlap"),
    responses((status = 200, body = Object, description = "as GET"), (status = 422, body = Problem)))]
async fn put_shifts(
    State(state): State<AppState>,
    t: Tenant<DevicesWrite>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> ApiResult<Response> {
    put_setting::<ShiftPlan>(&state, &t, body).await
}

/// The grid emission factor in force today and every version.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/energy/emission-factor", tag = "energy",
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Object, description = "the factor in force (PUT shape) with `valid_from`, `created_at`, `created_by`, and `versions`; nulls and `versions: []` when none is set (CO2 is `null`)")))]
async fn get_emission_factor(State(state): State<AppState>, t: Tenant<CanRead>) -> ApiResult<Response> {
    get_setting(&state, &t.factory, SettingKind::EmissionFactor).await
}

/// Adds an emission factor version (`devices:write`); same `valid_from` rules as the tariff.
#[utoipa::path(put, path = "/api/v1/factories/{factory_id}/energy/emission-factor", tag = "energy",
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    request_body(content = Object, description = "`{valid_from?, kg_per_kwh}` or `{valid_from?, hourly: [24 values by local hour]}` or `{valid_from?, monthly: [12 values]}` (kg CO2e per kWh)"),
    responses((status = 200, body = Object, description = "as GET"), (status = 422, body = Problem)))]
async fn put_emission_factor(
    State(state): State<AppState>,
    t: Tenant<DevicesWrite>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> ApiResult<Response> {
    put_setting::<EmissionFactor>(&state, &t, body).await
}
