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
use factoryops_energy::calendar::Bucket;
use factoryops_energy::emission::EmissionFactor;
use factoryops_energy::service::{Consumption, PeakDemand, PeakPeriod, Ranking, ServiceError, Target};
use factoryops_energy::shifts::ShiftPlan;
use factoryops_energy::store::{
    DeviceEnergyConfig, Group, GroupKind, GroupUpdate, NewGroup, NewSetting, SettingKind, SettingVersion, StoreError,
    in_force,
};
use factoryops_energy::tariff::Tariff;
use factoryops_types::{DeviceId, FactoryId, PropertyName, format_rfc3339_ms, parse_rfc3339_ms};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AnalyticsRun, CanRead, DevicesWrite, Tenant};
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
        .routes(routes!(consumption))
        .routes(routes!(peak_demand))
        .routes(routes!(ranking))
        .routes(routes!(list_baselines, create_baseline))
        .routes(routes!(get_baseline))
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

impl From<ServiceError> for Problem {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Invalid { field, message } => Problem::invalid_field(&field, message),
            ServiceError::NotFound(what) => Problem::not_found(what),
            ServiceError::Store(e) => e.into(),
            ServiceError::Tsdb(e) => e.into(),
            other => Problem::internal(&other),
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

// ---------------------------------------------------------------------------------------
// Computed answers: consumption, peak demand, ranking

#[derive(Deserialize, IntoParams)]
pub struct ConsumptionParams {
    /// One device (at most one of `device_id` and `group_id`; neither = every device of
    /// the factory with an energy source).
    pub device_id: Option<String>,
    /// A group and every group below it.
    pub group_id: Option<String>,
    /// RFC 3339, inclusive; floored to the 15-minute grid.
    pub from: Option<String>,
    /// RFC 3339, exclusive; ceiled to the 15-minute grid. At most 400 days after `from`.
    pub to: Option<String>,
    /// `hour`, `day`, `week`, `month` or `shift` (local time of the factory).
    pub bucket: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceKwh {
    pub device_id: String,
    pub kwh: f64,
}

#[derive(Serialize, ToSchema)]
pub struct ConsumptionBucket {
    #[schema(format = DateTime)]
    pub start: String,
    #[schema(format = DateTime)]
    pub end: String,
    /// The shift's name (shift buckets only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shift: Option<String>,
    pub kwh: f64,
    /// In `currency`; `null` without a tariff in force.
    #[schema(required = true)]
    pub cost: Option<f64>,
    /// `null` without an emission factor in force.
    #[schema(required = true)]
    pub co2_kg: Option<f64>,
    /// Energy while the device was idle (power below its `idle_below_kw`).
    pub idle_kwh: f64,
    pub by_device: Vec<DeviceKwh>,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceGapView {
    pub device_id: String,
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
}

#[derive(Serialize, ToSchema)]
pub struct DemandChargeView {
    #[schema(format = DateTime)]
    pub period_start: String,
    #[schema(format = DateTime)]
    pub period_end: String,
    /// The kW charged: the highest counted interval, or the mean of the N highest.
    pub basis_kw: f64,
    pub charge: f64,
}

/// The tariff's bill of the whole range.
#[derive(Serialize, ToSchema)]
pub struct Charges {
    pub energy_cost: f64,
    pub demand: Vec<DemandChargeView>,
    pub fixed: f64,
    pub total: f64,
}

/// Energy per bucket in the factory's time zone.
#[derive(Serialize, ToSchema)]
pub struct ConsumptionView {
    /// Always `kWh`.
    pub unit: String,
    /// `null` without a tariff.
    #[schema(required = true)]
    pub currency: Option<String>,
    pub items: Vec<ConsumptionBucket>,
    /// Stretches without data per device (no energy is invented for them).
    pub gaps: Vec<DeviceGapView>,
    /// Only with a tariff: energy cost, demand charges and fixed fees of the range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charges: Option<Charges>,
    /// Devices without an energy source (no property annotated as power or an energy or
    /// pulse counter): they count 0 kWh and their whole range is a gap.
    pub devices_without_source: Vec<String>,
}

fn gaps_view(gaps: Vec<factoryops_energy::service::DeviceGap>) -> Vec<DeviceGapView> {
    gaps.into_iter()
        .map(|g| DeviceGapView {
            device_id: g.device_id.into_string(),
            from: format_rfc3339_ms(g.from_ms),
            to: format_rfc3339_ms(g.to_ms),
        })
        .collect()
}

impl From<Consumption> for ConsumptionView {
    fn from(c: Consumption) -> Self {
        Self {
            unit: "kWh".into(),
            currency: c.currency,
            items: c
                .items
                .into_iter()
                .map(|i| ConsumptionBucket {
                    start: format_rfc3339_ms(i.start_ms),
                    end: format_rfc3339_ms(i.end_ms),
                    shift: i.shift,
                    kwh: i.kwh,
                    cost: i.cost,
                    co2_kg: i.co2_kg,
                    idle_kwh: i.idle_kwh,
                    by_device: i
                        .by_device
                        .into_iter()
                        .map(|(d, kwh)| DeviceKwh { device_id: d.into_string(), kwh })
                        .collect(),
                })
                .collect(),
            gaps: gaps_view(c.gaps),
            charges: c.charges.map(|b| Charges {
                energy_cost: b.energy_cost,
                demand: b
                    .demand
                    .into_iter()
                    .map(|d| DemandChargeView {
                        period_start: format_rfc3339_ms(d.period_start_ms),
                        period_end: format_rfc3339_ms(d.period_end_ms),
                        basis_kw: d.basis_kw,
                        charge: d.charge,
                    })
                    .collect(),
                fixed: b.fixed,
                total: b.total,
            }),
            devices_without_source: c.without_source.into_iter().map(DeviceId::into_string).collect(),
        }
    }
}

/// Collects the 422s of a query, then answers them all at once.
#[derive(Default)]
struct QueryErrors(Vec<crate::problem::FieldError>);

impl QueryErrors {
    fn bad(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(crate::problem::FieldError { field: field.into(), message: message.into() });
    }

    fn time(&mut self, field: &str, raw: &Option<String>) -> Option<i64> {
        match raw.as_deref() {
            None => {
                self.bad(field, "is required (RFC 3339)");
                None
            }
            Some(text) => {
                let parsed = parse_rfc3339_ms(text);
                if parsed.is_none() {
                    self.bad(field, "must be an RFC 3339 time");
                }
                parsed
            }
        }
    }

    /// Like `target`, but neither means the whole factory.
    fn target_or_factory(
        &mut self,
        device_id: &Option<String>,
        group_id: &Option<String>,
    ) -> Option<Result<Target, Problem>> {
        if device_id.is_none() && group_id.is_none() {
            return Some(Ok(Target::Factory));
        }
        self.target(device_id, group_id)
    }

    fn target(&mut self, device_id: &Option<String>, group_id: &Option<String>) -> Option<Result<Target, Problem>> {
        match (device_id, group_id) {
            (Some(d), None) => {
                Some(DeviceId::parse(d).map(Target::Device).map_err(|_| Problem::not_found("no such device")))
            }
            (None, Some(g)) => Some(Ok(Target::Group(g.clone()))),
            (Some(_), Some(_)) => {
                self.bad("group_id", "give exactly one of `device_id` and `group_id`");
                None
            }
            (None, None) => {
                self.bad("device_id", "give exactly one of `device_id` and `group_id`");
                None
            }
        }
    }

    fn finish(self) -> ApiResult<()> {
        if self.0.is_empty() { Ok(()) } else { Err(Problem::validation(self.0)) }
    }
}

/// Energy per bucket (`hour`, `day`, `week`, `month`, `shift` in the factory's time zone)
/// with cost, CO2, idle energy and the split by device, and the gaps in the data. With a
/// tariff, `charges` is the bill of the range (energy, demand charges, fixed fees).
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/energy/consumption", tag = "energy",
    params(("factory_id" = String, Path), ConsumptionParams), security(("bearer" = [])),
    responses((status = 200, body = ConsumptionView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn consumption(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Query(q): Query<ConsumptionParams>,
) -> ApiResult<Json<ConsumptionView>> {
    let mut errors = QueryErrors::default();
    let target = errors.target_or_factory(&q.device_id, &q.group_id);
    let from = errors.time("from", &q.from);
    let to = errors.time("to", &q.to);
    let bucket = match q.bucket.as_deref() {
        Some("hour") => Some(Bucket::Hour),
        Some("day") => Some(Bucket::Day),
        Some("week") => Some(Bucket::Week),
        Some("month") => Some(Bucket::Month),
        Some("shift") => Some(Bucket::Shift),
        _ => {
            errors.bad("bucket", "must be hour, day, week, month or shift");
            None
        }
    };
    errors.finish()?;
    let (Some(target), Some(from), Some(to), Some(bucket)) = (target, from, to, bucket) else {
        return Err(Problem::internal(&"query parsing lost a value"));
    };
    let answer = state.energy.consumption(&t.factory, &target?, from, to, bucket).await?;
    Ok(Json(answer.into()))
}

#[derive(Deserialize, IntoParams)]
pub struct PeakParams {
    /// One device (at most one of `device_id` and `group_id`; neither = every device of
    /// the factory with an energy source).
    pub device_id: Option<String>,
    /// A group and every group below it.
    pub group_id: Option<String>,
    /// RFC 3339, inclusive; floored to the 15-minute grid.
    pub from: Option<String>,
    /// RFC 3339, exclusive; ceiled to the 15-minute grid.
    pub to: Option<String>,
    /// The demand interval: 15 (default), 30, 45 or 60, aligned to the local clock.
    pub interval_minutes: Option<u32>,
    /// `day` (default) or `month`: the periods a peak is taken over.
    pub period: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceKw {
    pub device_id: String,
    pub kw: f64,
}

#[derive(Serialize, ToSchema)]
pub struct PeakItemView {
    /// The local day or month the peak belongs to.
    #[schema(format = DateTime)]
    pub period_start: String,
    /// The highest average power over one interval.
    pub kw: f64,
    /// The start of that interval.
    #[schema(format = DateTime)]
    pub at: String,
    /// The devices with the highest average power in that interval (at most 5).
    pub top_devices: Vec<DeviceKw>,
}

#[derive(Serialize, ToSchema)]
pub struct PeakDemandView {
    pub interval_minutes: u32,
    /// One per period with data.
    pub items: Vec<PeakItemView>,
    pub gaps: Vec<DeviceGapView>,
}

impl From<PeakDemand> for PeakDemandView {
    fn from(p: PeakDemand) -> Self {
        Self {
            interval_minutes: p.interval_minutes,
            items: p
                .items
                .into_iter()
                .map(|i| PeakItemView {
                    period_start: format_rfc3339_ms(i.period_start_ms),
                    kw: i.kw,
                    at: format_rfc3339_ms(i.at_ms),
                    top_devices: i
                        .top_devices
                        .into_iter()
                        .map(|(d, kw)| DeviceKw { device_id: d.into_string(), kw })
                        .collect(),
                })
                .collect(),
            gaps: gaps_view(p.gaps),
        }
    }
}

/// The highest average power over the demand interval per local day or month, when it
/// happened and which devices contributed most.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/energy/peak-demand", tag = "energy",
    params(("factory_id" = String, Path), PeakParams), security(("bearer" = [])),
    responses((status = 200, body = PeakDemandView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn peak_demand(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Query(q): Query<PeakParams>,
) -> ApiResult<Json<PeakDemandView>> {
    let mut errors = QueryErrors::default();
    let target = errors.target_or_factory(&q.device_id, &q.group_id);
    let from = errors.time("from", &q.from);
    let to = errors.time("to", &q.to);
    let interval = q.interval_minutes.unwrap_or(15);
    if factoryops_energy::peak::check_interval(interval).is_err() {
        errors.bad("interval_minutes", "must be 15, 30, 45 or 60");
    }
    let period = match q.period.as_deref() {
        None | Some("day") => Some(PeakPeriod::Day),
        Some("month") => Some(PeakPeriod::Month),
        Some(_) => {
            errors.bad("period", "must be day or month");
            None
        }
    };
    errors.finish()?;
    let (Some(target), Some(from), Some(to), Some(period)) = (target, from, to, period) else {
        return Err(Problem::internal(&"query parsing lost a value"));
    };
    let answer = state.energy.peak_demand(&t.factory, &target?, from, to, interval, period).await?;
    Ok(Json(answer.into()))
}

#[derive(Deserialize, IntoParams)]
pub struct RankingParams {
    /// The device type to compare.
    pub device_type: Option<String>,
    /// RFC 3339, inclusive.
    pub from: Option<String>,
    /// RFC 3339, exclusive.
    pub to: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RankingItemView {
    pub device_id: String,
    /// 1 = least energy per unit; equal figures share a rank; `null` without production.
    #[schema(required = true)]
    pub rank: Option<u32>,
    pub kwh: f64,
    pub units: f64,
    #[schema(required = true)]
    pub kwh_per_unit: Option<f64>,
    /// The property counted as production (`quantity: production_count`), `null` when the
    /// device has none.
    #[schema(required = true)]
    pub production_property: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RankingView {
    pub device_type: String,
    /// Ascending by kWh per unit; devices without production come last.
    pub items: Vec<RankingItemView>,
}

/// Devices of one type ranked by specific energy (kWh per unit produced, from a property
/// annotated `production_count`); devices without one are listed last, unranked.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/energy/ranking", tag = "energy",
    params(("factory_id" = String, Path), RankingParams), security(("bearer" = [])),
    responses((status = 200, body = RankingView), (status = 422, body = Problem)))]
async fn ranking(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Query(q): Query<RankingParams>,
) -> ApiResult<Json<RankingView>> {
    let mut errors = QueryErrors::default();
    let from = errors.time("from", &q.from);
    let to = errors.time("to", &q.to);
    let device_type = q.device_type.filter(|d| !d.is_empty());
    if device_type.is_none() {
        errors.bad("device_type", "is required");
    }
    errors.finish()?;
    let (Some(device_type), Some(from), Some(to)) = (device_type, from, to) else {
        return Err(Problem::internal(&"query parsing lost a value"));
    };
    let Ranking { items, production_property, .. } = state.energy.ranking(&t.factory, &device_type, from, to).await?;
    let items = items
        .into_iter()
        .map(|i| RankingItemView {
            production_property: production_property.get(&i.key).cloned().flatten().map(PropertyName::into_string),
            device_id: i.key.into_string(),
            rank: i.rank,
            kwh: i.kwh,
            units: i.units,
            kwh_per_unit: i.kwh_per_unit,
        })
        .collect();
    Ok(Json(RankingView { device_type, items }))
}

// ---------------------------------------------------------------------------------------
// EnPI baselines

/// A driver of a baseline, per local day.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DriverBody {
    /// Units produced (a property annotated `production_count`).
    Production { device_id: String, property: String },
    /// Heating degree days `max(0, base_c − daily mean)` of a temperature property (°C).
    HeatingDegreeDays { device_id: String, property: String, base_c: f64 },
    /// Cooling degree days `max(0, daily mean − base_c)`.
    CoolingDegreeDays { device_id: String, property: String, base_c: f64 },
    /// Hours with non-idle energy of the baseline's devices.
    OperatingHours,
}

/// `POST /energy/baselines`: fit `daily kWh = intercept + Σ coefficient × driver` over the
/// local days `[baseline_from, baseline_to)`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BaselineBody {
    pub name: String,
    /// Exactly one of `device_id` and `group_id`.
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub group_id: Option<String>,
    pub drivers: Vec<DriverBody>,
    /// A local date `YYYY-MM-DD`, inclusive.
    #[schema(format = Date)]
    pub baseline_from: String,
    /// A local date, exclusive.
    #[schema(format = Date)]
    pub baseline_to: String,
}

#[derive(Serialize, ToSchema)]
pub struct CoefficientView {
    pub driver: String,
    pub coefficient: f64,
}

#[derive(Serialize, ToSchema)]
pub struct ModelView {
    pub intercept: f64,
    pub coefficients: Vec<CoefficientView>,
    pub r2: f64,
    /// CV(RMSE) = sqrt(SSE / (n − p − 1)) / mean (ASHRAE Guideline 14).
    pub cv_rmse: f64,
    /// Days in the fit.
    pub n: usize,
}

/// A stored baseline version.
#[derive(Serialize, ToSchema)]
pub struct BaselineView {
    pub id: String,
    pub name: String,
    /// 1 for the first fit of (name, target), then 2, 3 …
    pub version: i64,
    #[schema(required = true)]
    pub device_id: Option<String>,
    #[schema(required = true)]
    pub group_id: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub drivers: serde_json::Value,
    #[schema(format = Date)]
    pub baseline_from: String,
    #[schema(format = Date)]
    pub baseline_to: String,
    pub model: ModelView,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub created_by: String,
}

impl From<factoryops_energy::store::Baseline> for BaselineView {
    fn from(b: factoryops_energy::store::Baseline) -> Self {
        let group = b.target_kind == "group";
        Self {
            id: b.id,
            name: b.name,
            version: b.version,
            device_id: (!group).then(|| b.target_id.clone()),
            group_id: group.then_some(b.target_id),
            drivers: serde_json::to_value(&b.drivers).unwrap_or_default(),
            baseline_from: b.period_from.to_string(),
            baseline_to: b.period_to.to_string(),
            model: ModelView {
                intercept: b.model.intercept,
                coefficients: b
                    .model
                    .coefficients
                    .into_iter()
                    .map(|(driver, coefficient)| CoefficientView { driver, coefficient })
                    .collect(),
                r2: b.model.r2,
                cv_rmse: b.model.cv_rmse,
                n: b.model.n,
            },
            created_at: format_rfc3339_ms(b.created_at),
            created_by: b.created_by,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct BaselineList {
    pub items: Vec<BaselineView>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BaselinePoint {
    #[schema(format = Date)]
    pub date: String,
    pub expected: f64,
    pub actual: f64,
    /// `expected − actual`: positive = saved.
    pub savings: f64,
    /// Running Σ (actual − expected): falling = savings accumulating.
    pub cusum: f64,
}

/// A baseline with expected vs actual energy per local day of the reporting period.
#[derive(Serialize, ToSchema)]
pub struct BaselineReport {
    #[serde(flatten)]
    pub baseline: BaselineView,
    #[schema(format = Date)]
    pub from: String,
    #[schema(format = Date)]
    pub to: String,
    pub series: Vec<BaselinePoint>,
}

#[derive(Deserialize, IntoParams)]
pub struct BaselineReportParams {
    /// First local date of the report (default: the end of the baseline period).
    pub from: Option<String>,
    /// Local date after the last one (default: today).
    pub to: Option<String>,
}

fn date(field: &str, text: &str) -> ApiResult<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|_| text.len() == 10)
        .ok_or_else(|| Problem::invalid_field(field, "must be a date YYYY-MM-DD"))
}

fn driver(index: usize, body: DriverBody) -> ApiResult<factoryops_energy::store::Driver> {
    use factoryops_energy::store::Driver;
    let device = |raw: String| {
        DeviceId::parse(raw).map_err(|e| Problem::invalid_field(&format!("drivers[{index}].device_id"), e.to_string()))
    };
    let property = |raw: String| {
        PropertyName::parse(raw)
            .map_err(|e| Problem::invalid_field(&format!("drivers[{index}].property"), e.to_string()))
    };
    Ok(match body {
        DriverBody::Production { device_id, property: p } => {
            Driver::Production { device_id: device(device_id)?, property: property(p)? }
        }
        DriverBody::HeatingDegreeDays { device_id, property: p, base_c } => {
            Driver::HeatingDegreeDays { device_id: device(device_id)?, property: property(p)?, base_c }
        }
        DriverBody::CoolingDegreeDays { device_id, property: p, base_c } => {
            Driver::CoolingDegreeDays { device_id: device(device_id)?, property: property(p)?, base_c }
        }
        DriverBody::OperatingHours => Driver::OperatingHours,
    })
}

/// The factory's EnPI baselines, oldest first (one page: at most 1,000).
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/energy/baselines", tag = "energy",
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = BaselineList)))]
async fn list_baselines(State(state): State<AppState>, t: Tenant<CanRead>) -> ApiResult<Json<BaselineList>> {
    let items = state.energy.store().list_baselines(&t.factory).await?;
    Ok(Json(BaselineList { items: items.into_iter().map(Into::into).collect(), next_cursor: None }))
}

/// Fits an EnPI baseline (`analytics:run`): a linear regression of daily kWh on the
/// drivers over the baseline period, stored as the next version of (name, target) with
/// R² and CV(RMSE). Days without energy data (or without temperature for a degree-day
/// driver) are left out.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/energy/baselines", tag = "energy",
    params(("factory_id" = String, Path)), request_body = BaselineBody, security(("bearer" = [])),
    responses((status = 201, body = BaselineView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn create_baseline(
    State(state): State<AppState>,
    t: Tenant<AnalyticsRun>,
    ApiJson(body): ApiJson<BaselineBody>,
) -> ApiResult<Response> {
    let mut errors = QueryErrors::default();
    let target = errors.target(&body.device_id, &body.group_id);
    errors.finish()?;
    let Some(target) = target else {
        return Err(Problem::internal(&"body parsing lost a value"));
    };
    let target = target?;
    let period = (date("baseline_from", &body.baseline_from)?, date("baseline_to", &body.baseline_to)?);
    let drivers = body.drivers.into_iter().enumerate().map(|(i, d)| driver(i, d)).collect::<ApiResult<Vec<_>>>()?;
    for (i, d) in drivers.iter().enumerate() {
        use factoryops_energy::store::Driver;
        if let Driver::Production { device_id, .. }
        | Driver::HeatingDegreeDays { device_id, .. }
        | Driver::CoolingDegreeDays { device_id, .. } = d
            && state.devices.get(&t.factory, device_id).await?.is_none()
        {
            return Err(Problem::invalid_field(
                &format!("drivers[{i}].device_id"),
                format!("no such device `{device_id}`"),
            ));
        }
    }
    let actor = t.principal.actor();
    let baseline = state.energy.fit_baseline(&t.factory, &body.name, &target, drivers, period, &actor).await?;
    audit(
        &state,
        &t,
        "energy.baseline.created",
        &baseline.id,
        json!({ "name": baseline.name, "version": baseline.version }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(BaselineView::from(baseline))).into_response())
}

/// A baseline with expected, actual, savings and CUSUM per local day of the reporting
/// period (default: from the end of the baseline period to today).
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/energy/baselines/{baseline_id}", tag = "energy",
    params(("factory_id" = String, Path), ("baseline_id" = String, Path), BaselineReportParams), security(("bearer" = [])),
    responses((status = 200, body = BaselineReport), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn get_baseline(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
    Query(q): Query<BaselineReportParams>,
) -> ApiResult<Json<BaselineReport>> {
    let from = q.from.as_deref().map(|f| date("from", f)).transpose()?;
    let to = q.to.as_deref().map(|f| date("to", f)).transpose()?;
    let (baseline, from, to, points) = state.energy.baseline_report(&t.factory, &ids.1, from, to).await?;
    Ok(Json(BaselineReport {
        baseline: baseline.into(),
        from: from.to_string(),
        to: to.to_string(),
        series: points
            .into_iter()
            .map(|(date, p)| BaselinePoint {
                date: date.to_string(),
                expected: p.expected,
                actual: p.actual,
                savings: p.savings,
                cusum: p.cusum,
            })
            .collect(),
    }))
}
