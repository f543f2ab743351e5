//! Devices, credentials, the property catalogue, telemetry reads, HTTP ingestion and
//! the live stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use factoryops_ingest::{
    Device, DeviceFilter, DeviceStatus, DeviceUpdate, IngestError, IngestOutcome, NewDevice, Property, PropertyUpdate,
    RepoError, ValueType,
};
use factoryops_platform::bus::topics;
use factoryops_tsdb::{Agg, SeriesQuery, Value};
use factoryops_types::{DeviceId, PropertyName, format_rfc3339_ms, parse_rfc3339_ms};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{CanRead, DevicesWrite, TelemetryWrite, Tenant};
use crate::problem::{ApiJson, FieldError, Problem};
use crate::router::AppState;
use crate::routes::audit;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_devices, create_device))
        .routes(routes!(get_device, update_device))
        .routes(routes!(issue_credentials))
        .routes(routes!(device_properties))
        .routes(routes!(update_property))
        .routes(routes!(device_errors))
        .routes(routes!(factory_properties))
        .routes(routes!(latest))
        .routes(routes!(series))
        .routes(routes!(ingest_http))
        .routes(routes!(stream))
}

type ApiResult<T> = Result<T, Problem>;

impl From<RepoError> for Problem {
    fn from(error: RepoError) -> Self {
        match error {
            RepoError::Invalid { field, message } => Problem::invalid_field(field, message),
            RepoError::InvalidFields(errors) => Problem::validation(
                errors.into_iter().map(|e| FieldError { field: e.field.to_string(), message: e.message }).collect(),
            ),
            RepoError::Conflict(what) => Problem::conflict(format!("{what} already exists")),
            RepoError::Db(e) => Problem::internal(&e),
        }
    }
}

impl From<factoryops_tsdb::TsdbError> for Problem {
    fn from(error: factoryops_tsdb::TsdbError) -> Self {
        match error {
            factoryops_tsdb::TsdbError::InvalidQuery(m) => Problem::bad_request(m),
            factoryops_tsdb::TsdbError::Unavailable(m) => Problem::unavailable(format!("telemetry store: {m}")),
            other => Problem::internal(&other),
        }
    }
}

/// A device as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct DeviceView {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub device_type: String,
    pub location: String,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// `active` or `disabled`.
    pub status: String,
    pub has_secret: bool,
    pub last_seen: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Device> for DeviceView {
    fn from(d: Device) -> Self {
        Self {
            id: d.id.into_string(),
            name: d.name,
            device_type: d.device_type,
            location: d.location,
            metadata: d.metadata,
            status: d.status.as_str().into(),
            has_secret: d.has_secret,
            last_seen: d.last_seen.map(format_rfc3339_ms),
            created_at: format_rfc3339_ms(d.created_at),
            updated_at: format_rfc3339_ms(d.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DevicePage {
    pub items: Vec<DeviceView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PropertyView {
    pub device_id: String,
    pub name: String,
    /// `number`, `boolean` or `state` (string values: state labels).
    pub value_type: String,
    pub unit: Option<String>,
    pub description: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    /// What the property measures: `power`, `energy_counter`, `pulse_counter`, `voltage`,
    /// `current`, `power_factor`, `flow`, `temperature`, `production_count`, `state`;
    /// `null` until annotated.
    pub quantity: Option<String>,
    /// Energy and pulse counters: the value at which the meter wraps to 0.
    pub rollover: Option<f64>,
    /// Pulse counters: Wh per pulse.
    pub wh_per_pulse: Option<f64>,
    /// Production counts: `cumulative` or `per_message`.
    pub counting: Option<String>,
    /// A quantity (and unit) suggested by the name, only while no quantity is set.
    /// Offered, never applied: PATCH the property to accept it.
    pub suggestion: Option<SemanticsSuggestion>,
}

#[derive(Serialize, ToSchema)]
pub struct SemanticsSuggestion {
    pub quantity: String,
    pub unit: Option<String>,
}

impl From<Property> for PropertyView {
    fn from(p: Property) -> Self {
        Self {
            device_id: p.device_id.into_string(),
            name: p.name.as_str().to_string(),
            value_type: p.value_type.as_str().into(),
            unit: p.unit,
            description: p.description,
            first_seen: format_rfc3339_ms(p.first_seen),
            last_seen: format_rfc3339_ms(p.last_seen),
            quantity: p.quantity.map(|q| q.as_str().to_string()),
            rollover: p.rollover,
            wh_per_pulse: p.wh_per_pulse,
            counting: p.counting.map(|c| c.as_str().to_string()),
            suggestion: match p.quantity {
                Some(_) => None,
                None => factoryops_types::suggest(p.name.as_str())
                    .map(|(q, unit)| SemanticsSuggestion { quantity: q.as_str().into(), unit: unit.map(Into::into) }),
            },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PropertyList {
    pub items: Vec<PropertyView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MqttEndpoint {
    pub port: u16,
    pub topic: String,
}

/// Shown once.
#[derive(Serialize, ToSchema)]
pub struct DeviceCredentials {
    pub device_id: String,
    /// `{factory_id}/{device_id}`.
    pub username: String,
    pub secret: String,
    pub mqtt: MqttEndpoint,
}

#[derive(Serialize, ToSchema)]
pub struct PayloadError {
    pub at: String,
    pub reason: String,
    pub property: Option<String>,
    pub detail: String,
}

#[derive(Serialize, ToSchema)]
pub struct PayloadErrorList {
    pub items: Vec<PayloadError>,
}

#[derive(Deserialize, IntoParams)]
pub struct DeviceQuery {
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub device_type: Option<String>,
    /// `active` or `disabled`.
    pub status: Option<String>,
    /// Substring of the id or name.
    pub text: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct LatestQuery {
    pub device_id: String,
}

#[derive(Deserialize, IntoParams)]
pub struct SeriesParams {
    pub device_id: String,
    pub property: String,
    /// RFC 3339, inclusive; default `to` − 1 h.
    pub from: Option<String>,
    /// RFC 3339, exclusive; default now.
    pub to: Option<String>,
    /// Bucket: `30s`, `1m`, `5m`, `15m`, `1h`, `1d`, … (with `agg`).
    pub every: Option<String>,
    /// `avg`, `min`, `max`, `sum`, `count`, `first`, `last` (with `every`).
    pub agg: Option<String>,
    /// Raw reads: at most this many points (default 10000, max 100000).
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct TelemetryPoint {
    pub ts: String,
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct LatestProperty {
    pub name: String,
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    pub ts: String,
}

#[derive(Serialize, ToSchema)]
pub struct Latest {
    pub device_id: String,
    pub properties: Vec<LatestProperty>,
}

#[derive(Serialize, ToSchema)]
pub struct Series {
    pub device_id: String,
    pub property: String,
    pub every: Option<String>,
    pub agg: Option<String>,
    pub points: Vec<TelemetryPoint>,
}

/// One message: `device_id` plus the same JSON object a device publishes over MQTT.
/// A batch is `{"messages": [{"device_id": …, …}, …]}`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TelemetryBody {
    Batch {
        #[schema(value_type = Vec<Object>)]
        messages: Vec<serde_json::Map<String, serde_json::Value>>,
    },
    #[schema(value_type = Object)]
    One(serde_json::Map<String, serde_json::Value>),
}

#[derive(Serialize, ToSchema)]
pub struct IngestResult {
    pub device_id: String,
    /// `stored` or `rejected`.
    pub status: String,
    pub points: usize,
    /// Rejected properties (the rest of the message was stored), or the message's rejection.
    #[schema(value_type = Vec<Object>)]
    pub rejected: Vec<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct IngestResults {
    pub results: Vec<IngestResult>,
}

fn device_id(raw: &str) -> ApiResult<DeviceId> {
    DeviceId::parse(raw).map_err(|_| Problem::not_found("no such device"))
}

fn value_json(value: Value) -> serde_json::Value {
    match value {
        Value::Float(v) => serde_json::json!(v),
        Value::Bool(b) => serde_json::json!(b),
    }
}

fn now(state: &AppState) -> i64 {
    state.clock.now_ms()
}

async fn existing_device(
    state: &AppState,
    tenant_factory: &factoryops_types::FactoryId,
    raw: &str,
) -> ApiResult<Device> {
    let id = device_id(raw)?;
    state.devices.get(tenant_factory, &id).await?.ok_or_else(|| Problem::not_found("no such device"))
}

/// The factory's devices, filtered and paginated.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/devices", tag = "devices",
    params(("factory_id" = String, Path), DeviceQuery), security(("bearer" = [])),
    responses((status = 200, body = DevicePage), (status = 404, body = Problem)))]
async fn list_devices(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Query(q): Query<DeviceQuery>,
) -> ApiResult<Json<DevicePage>> {
    let status = match q.status.as_deref() {
        None => None,
        Some("active") => Some(DeviceStatus::Active),
        Some("disabled") => Some(DeviceStatus::Disabled),
        Some(_) => return Err(Problem::invalid_field("status", "must be active or disabled")),
    };
    let filter = DeviceFilter { device_type: q.device_type, status, text: q.text, limit: q.limit, cursor: q.cursor };
    let page = state.devices.list(&t.factory, &filter).await?;
    let items = page.items.into_iter().map(|d| with_pending_last_seen(&state, &t.factory, d).into()).collect();
    Ok(Json(DevicePage { items, next_cursor: page.next_cursor }))
}

/// The device with the `last_seen` that ingestion has not written to the database yet
/// (it is written in batches every `ingest.last_seen_flush_ms`), so a device that just
/// sent is not shown as silent.
fn with_pending_last_seen(state: &AppState, factory: &factoryops_types::FactoryId, mut device: Device) -> Device {
    if let Some(ts) = state.ingestor.catalogue().pending_device_last_seen(factory, &device.id) {
        device.last_seen = Some(device.last_seen.map_or(ts, |stored| stored.max(ts)));
    }
    device
}

/// Registers a device (`devices:write`).
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/devices", tag = "devices",
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    request_body(content = Object, description = "`{id, name, type?, location?, metadata?, status?}`; `id` is a slug `[a-z0-9][a-z0-9_-]{0,62}`"),
    responses((status = 201, body = DeviceView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_device(
    State(state): State<AppState>,
    t: Tenant<DevicesWrite>,
    ApiJson(body): ApiJson<NewDevice>,
) -> ApiResult<Response> {
    let device = state.devices.create(&t.factory, body, now(&state)).await?;
    audit(&state, &t, "device.created", device.id.as_str(), serde_json::json!({ "name": device.name })).await;
    Ok((StatusCode::CREATED, Json(DeviceView::from(device))).into_response())
}

/// One device.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/devices/{device_id}", tag = "devices",
    params(("factory_id" = String, Path), ("device_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = DeviceView), (status = 404, body = Problem)))]
async fn get_device(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<DeviceView>> {
    let device = existing_device(&state, &t.factory, &ids.1).await?;
    Ok(Json(with_pending_last_seen(&state, &t.factory, device).into()))
}

/// Changes a device's name, type, location, metadata or status (`devices:write`).
/// Disabling closes its live MQTT connections.
#[utoipa::path(patch, path = "/api/v1/factories/{factory_id}/devices/{device_id}", tag = "devices",
    params(("factory_id" = String, Path), ("device_id" = String, Path)), security(("bearer" = [])),
    request_body(content = Object, description = "any of `{name, type, location, metadata, status}`"),
    responses((status = 200, body = DeviceView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_device(
    State(state): State<AppState>,
    t: Tenant<DevicesWrite>,
    Path(ids): Path<(String, String)>,
    ApiJson(body): ApiJson<DeviceUpdate>,
) -> ApiResult<Json<DeviceView>> {
    let id = device_id(&ids.1)?;
    let disabling = body.status == Some(DeviceStatus::Disabled);
    let device = state
        .devices
        .update(&t.factory, &id, body, now(&state))
        .await?
        .ok_or_else(|| Problem::not_found("no such device"))?;
    if disabling && let Some(mqtt) = &state.mqtt {
        mqtt.disconnect_device(&t.factory, &id);
    }
    audit(&state, &t, "device.updated", id.as_str(), serde_json::json!({ "name": device.name, "disabled": disabling }))
        .await;
    Ok(Json(with_pending_last_seen(&state, &t.factory, device).into()))
}

/// Issues or rotates the device's MQTT secret (`devices:write`). The secret is shown
/// only in this response; the previous one stops working at once.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/devices/{device_id}/credentials", tag = "devices",
    params(("factory_id" = String, Path), ("device_id" = String, Path)), security(("bearer" = [])),
    responses((status = 201, body = DeviceCredentials), (status = 404, body = Problem)))]
async fn issue_credentials(
    State(state): State<AppState>,
    t: Tenant<DevicesWrite>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = device_id(&ids.1)?;
    let issued = state
        .devices
        .issue_secret(&t.factory, &id, now(&state))
        .await?
        .ok_or_else(|| Problem::not_found("no such device"))?;
    if let Some(mqtt) = &state.mqtt {
        mqtt.disconnect_device(&t.factory, &id);
    }
    audit(&state, &t, "device.credentials_rotated", id.as_str(), serde_json::json!({})).await;
    let body = DeviceCredentials {
        device_id: issued.device_id.to_string(),
        username: issued.username,
        secret: issued.secret,
        mqtt: MqttEndpoint { port: state.mqtt_port, topic: factoryops_ingest::mqtt::telemetry_topic(&t.factory, &id) },
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The device's auto-discovered properties.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/devices/{device_id}/properties", tag = "devices",
    params(("factory_id" = String, Path), ("device_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = PropertyList), (status = 404, body = Problem)))]
async fn device_properties(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<PropertyList>> {
    let device = existing_device(&state, &t.factory, &ids.1).await?;
    let items = state.ingestor.catalogue().list_for_device(&t.factory, &device.id).await?;
    Ok(Json(PropertyList { items: items.into_iter().map(Into::into).collect(), next_cursor: None }))
}

/// Sets a property's unit, description or semantics (`devices:write`); `null` clears.
/// Properties are never deleted.
///
/// Semantics: `quantity` (`power` W/kW/MW, `energy_counter` Wh/kWh/MWh, `pulse_counter`
/// with `wh_per_pulse`, `voltage` V/kV, `current` A/kA, `power_factor` no unit, `flow`
/// m3/h, l/min, l/s, `temperature` °C/°F/K, `production_count` any unit with `counting`
/// `cumulative` (default) or `per_message`, `state` no unit and only for state
/// properties); `rollover` only for counters. Setting a quantity resets the parameters
/// the body does not give. A `unit` without a quantity stays free text.
#[utoipa::path(patch, path = "/api/v1/factories/{factory_id}/devices/{device_id}/properties/{name}", tag = "devices",
    params(("factory_id" = String, Path), ("device_id" = String, Path), ("name" = String, Path)), security(("bearer" = [])),
    request_body(content = Object, description = "`{unit?, description?, quantity?, rollover?, wh_per_pulse?, counting?}`; unknown fields are a 422"),
    responses((status = 200, body = PropertyView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_property(
    State(state): State<AppState>,
    t: Tenant<DevicesWrite>,
    Path(ids): Path<(String, String, String)>,
    ApiJson(body): ApiJson<PropertyUpdate>,
) -> ApiResult<Json<PropertyView>> {
    let device = existing_device(&state, &t.factory, &ids.1).await?;
    let name = PropertyName::parse(ids.2).map_err(|_| Problem::not_found("no such property"))?;
    let property = state
        .ingestor
        .catalogue()
        .update(&t.factory, &device.id, &name, body)
        .await?
        .ok_or_else(|| Problem::not_found("no such property"))?;
    audit(&state, &t, "property.updated", &format!("{}/{}", device.id, name), serde_json::json!({})).await;
    Ok(Json(property.into()))
}

/// The device's most recent payload errors (rejected messages and properties), newest first.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/devices/{device_id}/errors", tag = "devices",
    params(("factory_id" = String, Path), ("device_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = PayloadErrorList), (status = 404, body = Problem)))]
async fn device_errors(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<PayloadErrorList>> {
    let device = existing_device(&state, &t.factory, &ids.1).await?;
    let items = state
        .ingestor
        .last_errors(&t.factory, &device.id)
        .into_iter()
        .map(|e| PayloadError {
            at: format_rfc3339_ms(e.at_ms),
            reason: e.reason,
            property: e.property,
            detail: e.detail,
        })
        .collect();
    Ok(Json(PayloadErrorList { items }))
}

/// The factory's property catalogue across devices.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/properties", tag = "devices",
    params(("factory_id" = String, Path), PageQuery), security(("bearer" = [])),
    responses((status = 200, body = PropertyList)))]
async fn factory_properties(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<PropertyList>> {
    let limit = q.limit.unwrap_or(500).clamp(1, 1000) as usize;
    let page = state.ingestor.catalogue().list_for_factory(&t.factory, limit, q.cursor.as_deref()).await?;
    Ok(Json(PropertyList { items: page.items.into_iter().map(Into::into).collect(), next_cursor: page.next_cursor }))
}

/// The latest value of each property of a device.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/telemetry/latest", tag = "telemetry",
    params(("factory_id" = String, Path), LatestQuery), security(("bearer" = [])),
    responses((status = 200, body = Latest), (status = 404, body = Problem)))]
async fn latest(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Query(q): Query<LatestQuery>,
) -> ApiResult<Json<Latest>> {
    let device = existing_device(&state, &t.factory, &q.device_id).await?;
    let values = state.store.latest(&t.factory, &device.id).await?;
    let types = state.ingestor.catalogue().value_types(&t.factory, &device.id).await?;
    let mut properties = Vec::with_capacity(values.len());
    for (name, s) in values {
        let value = if types.get(&name) == Some(&ValueType::State) {
            state_label(&state, &t.factory, &name, s.value).await?
        } else {
            value_json(s.value)
        };
        properties.push(LatestProperty { name: name.into_string(), value, ts: format_rfc3339_ms(s.ts_ms) });
    }
    Ok(Json(Latest { device_id: device.id.into_string(), properties }))
}

/// A state property's stored code as its label (ADR 0014); a code without a label (never
/// expected: labels are registered before their points) stays a number.
async fn state_label(
    state: &AppState,
    factory: &factoryops_types::FactoryId,
    property: &PropertyName,
    value: Value,
) -> ApiResult<serde_json::Value> {
    let code = value.as_f64();
    let labels = state.ingestor.catalogue().states().labels_with(factory, property, code.max(0.0) as u32).await?;
    Ok(labels.label_of(code).map_or_else(|| value_json(value), |l| serde_json::Value::String(l.to_string())))
}

/// How far before `from` the state in force at `from` is looked for (one `last` aggregate).
const STATE_LOOKBACK_MS: i64 = 7 * 86_400_000;
/// Most raw points of a state property read for time in state.
const MAX_STATE_POINTS: usize = 1_000_000;

/// Time in each state per bucket (ADR 0014): `{"running": 1800.0, "idle": 1800.0}`
/// seconds; a state holds until the next point, never beyond `to` or now.
async fn time_in_state_points(
    state: &AppState,
    factory: &factoryops_types::FactoryId,
    device: &DeviceId,
    property: &PropertyName,
    (from, to, every): (i64, i64, i64),
) -> ApiResult<Vec<TelemetryPoint>> {
    let raw = SeriesQuery {
        device: device.clone(),
        property: property.clone(),
        from_ms: from,
        to_ms: to,
        aggregation: None,
        limit: Some(MAX_STATE_POINTS + 1),
    };
    let samples = state.store.query(factory, &raw).await?;
    if samples.len() > MAX_STATE_POINTS {
        return Err(Problem::invalid_field(
            "from",
            format!("the range holds more than {MAX_STATE_POINTS} state points; choose a shorter range"),
        ));
    }
    let before = SeriesQuery {
        from_ms: from.saturating_sub(STATE_LOOKBACK_MS),
        to_ms: from,
        aggregation: Some((STATE_LOOKBACK_MS, Agg::Last)),
        limit: None,
        ..raw
    };
    let code = |v: Value| {
        let c = v.as_f64();
        (c >= 0.0 && c.fract() == 0.0 && c <= f64::from(u32::MAX)).then_some(c as u32)
    };
    let initial = state.store.query(factory, &before).await?.last().and_then(|s| code(s.value));
    let points: Vec<(i64, u32)> = samples.iter().filter_map(|s| Some((s.ts_ms, code(s.value)?))).collect();
    let buckets = factoryops_types::states::time_in_state(initial, &points, from, to, every, now(state));
    let highest = points.iter().map(|(_, c)| *c).chain(initial).max().unwrap_or(0);
    let labels = state.ingestor.catalogue().states().labels_with(factory, property, highest).await?;
    Ok(buckets
        .into_iter()
        .map(|(ts, states)| {
            let value: serde_json::Map<String, serde_json::Value> = states
                .into_iter()
                .map(|(c, secs)| (labels.label(c).map_or_else(|| c.to_string(), |l| l.to_string()), secs.into()))
                .collect();
            TelemetryPoint { ts: format_rfc3339_ms(ts), value: serde_json::Value::Object(value) }
        })
        .collect())
}

/// Parses `30s`, `1m`, `15m`, `1h`, `1d`, `1w` into milliseconds.
fn parse_every(text: &str) -> Option<i64> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = digits.parse().ok().filter(|n| *n > 0)?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

fn parse_agg(text: &str) -> Option<Agg> {
    Some(match text {
        "avg" | "mean" => Agg::Avg,
        "min" => Agg::Min,
        "max" => Agg::Max,
        "sum" => Agg::Sum,
        "count" => Agg::Count,
        "first" => Agg::First,
        "last" => Agg::Last,
        _ => return None,
    })
}

/// Raw or aggregated points of one property over `[from, to)`.
///
/// State properties (string values, ADR 0014): raw points and `latest` carry the label
/// string as `value`. With `every` and any `agg`, each point is a bucket whose `value` is
/// the time in each state in seconds, e.g. `{"running": 1800.0, "idle": 1800.0}`: a state
/// holds from its point until the next one, never beyond `to` or now; the state at `from`
/// is the last point of the 7 days before it. Buckets without a known state are left out.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/telemetry/series", tag = "telemetry",
    params(("factory_id" = String, Path), SeriesParams), security(("bearer" = [])),
    responses((status = 200, body = Series), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn series(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Query(q): Query<SeriesParams>,
) -> ApiResult<Json<Series>> {
    let device = existing_device(&state, &t.factory, &q.device_id).await?;
    let mut errors = Vec::new();
    let mut bad = |field: &str, message: &str| errors.push(FieldError { field: field.into(), message: message.into() });
    let property = PropertyName::parse(q.property.clone()).map_err(|e| bad("property", &e.to_string())).ok();
    let to = match &q.to {
        Some(t) => parse_rfc3339_ms(t).ok_or(()).map_err(|_| bad("to", "must be an RFC 3339 time")).ok(),
        None => Some(now(&state)),
    };
    let from = match (&q.from, to) {
        (Some(f), _) => parse_rfc3339_ms(f).ok_or(()).map_err(|_| bad("from", "must be an RFC 3339 time")).ok(),
        (None, Some(to)) => Some(to - 3_600_000),
        (None, None) => None,
    };
    let every = match &q.every {
        Some(e) => parse_every(e)
            .ok_or(())
            .map_err(|_| bad("every", "must look like 30s, 1m, 5m, 15m, 1h or 1d"))
            .ok()
            .map(Some),
        None => Some(None),
    };
    let agg = match &q.agg {
        Some(a) => parse_agg(a)
            .ok_or(())
            .map_err(|_| bad("agg", "must be avg, min, max, sum, count, first or last"))
            .ok()
            .map(Some),
        None => Some(None),
    };
    let limit = q.limit.unwrap_or(10_000);
    if !(1..=100_000).contains(&limit) {
        bad("limit", "must be between 1 and 100000");
    }
    let (Some(property), Some(from), Some(to), Some(every), Some(agg)) = (property, from, to, every, agg) else {
        return Err(Problem::validation(errors));
    };
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    if from >= to {
        return Err(Problem::invalid_field("from", "must be before `to`"));
    }
    let aggregation = match (every, agg) {
        (Some(every), Some(agg)) => Some((every, agg)),
        (None, None) => None,
        (Some(_), None) => return Err(Problem::invalid_field("agg", "is required with `every`")),
        (None, Some(_)) => return Err(Problem::invalid_field("every", "is required with `agg`")),
    };
    if let Some((every, _)) = aggregation
        && (to - from) / every > 100_000
    {
        return Err(Problem::invalid_field(
            "every",
            "gives more than 100000 buckets for this range; choose a larger one",
        ));
    }
    let types = state.ingestor.catalogue().value_types(&t.factory, &device.id).await?;
    let is_state = types.get(&property) == Some(&ValueType::State);
    let points = match aggregation {
        Some((every, _)) if is_state => {
            time_in_state_points(&state, &t.factory, &device.id, &property, (from, to, every)).await?
        }
        _ => {
            let query = SeriesQuery {
                device: device.id.clone(),
                property: property.clone(),
                from_ms: from,
                to_ms: to,
                aggregation,
                limit: Some(limit),
            };
            let samples = state.store.query(&t.factory, &query).await?;
            let labels = match (is_state, samples.iter().map(|s| s.value.as_f64()).reduce(f64::max)) {
                (true, Some(highest)) => Some(
                    state
                        .ingestor
                        .catalogue()
                        .states()
                        .labels_with(&t.factory, &property, highest.max(0.0) as u32)
                        .await?,
                ),
                _ => None,
            };
            samples
                .into_iter()
                .map(|s| {
                    let value = match labels.as_ref().and_then(|l| l.label_of(s.value.as_f64())) {
                        Some(label) => serde_json::Value::String(label.to_string()),
                        None => value_json(s.value),
                    };
                    TelemetryPoint { ts: format_rfc3339_ms(s.ts_ms), value }
                })
                .collect()
        }
    };
    Ok(Json(Series {
        device_id: device.id.into_string(),
        property: property.into_string(),
        every: q.every,
        agg: q.agg,
        points,
    }))
}

/// HTTP ingestion (`telemetry:write`, e.g. an API key): the MQTT payload plus `device_id`,
/// or a batch `{"messages": [...]}`. Answers once the points are durable.
///
/// A batch is one unit (ADR 0009): every `device_id` is checked first (present, an
/// existing and active device of this factory); any failure answers a problem naming the
/// message (`messages[3].device_id`) and nothing is stored. Then all points go to the store
/// in one write: the answer is either every message's result or an error with nothing
/// stored. A message that is not a JSON object of values is that message's `rejected`
/// result; the others are stored. Messages without `ts` get distinct server timestamps.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/telemetry", tag = "telemetry",
    params(("factory_id" = String, Path)), request_body = TelemetryBody, security(("bearer" = [])),
    responses((status = 200, body = IngestResults), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)))]
async fn ingest_http(
    State(state): State<AppState>,
    t: Tenant<TelemetryWrite>,
    ApiJson(body): ApiJson<TelemetryBody>,
) -> ApiResult<Json<IngestResults>> {
    let (messages, single) = match body {
        TelemetryBody::Batch { messages } => (messages, false),
        TelemetryBody::One(message) => (vec![message], true),
    };
    if messages.is_empty() || messages.len() > 1000 {
        return Err(Problem::invalid_field("messages", "send between 1 and 1000 messages"));
    }
    // Validate the whole batch before anything is written; a batch usually names few
    // devices, each looked up once.
    let mut devices: std::collections::HashMap<String, DeviceId> = std::collections::HashMap::new();
    let mut batch = Vec::with_capacity(messages.len());
    for (index, mut message) in messages.into_iter().enumerate() {
        let field = if single { "device_id".to_string() } else { format!("messages[{index}].device_id") };
        let raw = match message.remove("device_id") {
            Some(serde_json::Value::String(id)) => id,
            _ => return Err(Problem::invalid_field(&field, "is required: the device the values come from")),
        };
        let device = match devices.get(&raw) {
            Some(device) => device.clone(),
            None => {
                let device = batch_device(&state, &t.factory, &raw, &field).await?;
                devices.insert(raw, device.clone());
                device
            }
        };
        let payload = serde_json::to_vec(&message).map_err(|e| Problem::internal(&e))?;
        batch.push((device, payload));
    }
    let outcomes = state.ingestor.ingest_batch(&t.factory, &batch, now(&state)).await.map_err(|e| match e {
        IngestError::ShuttingDown => {
            Problem::unavailable("shutting down; nothing was stored, retry against another instance")
        }
        other => Problem::unavailable(format!("nothing was stored, retry: {other}")),
    })?;
    let results = batch
        .iter()
        .zip(outcomes)
        .map(|((device, _), outcome)| match outcome {
            IngestOutcome::Stored(summary) => IngestResult {
                device_id: device.to_string(),
                status: "stored".into(),
                points: summary.points,
                rejected: summary.rejected.iter().map(|r| serde_json::to_value(r).unwrap_or_default()).collect(),
            },
            IngestOutcome::MessageRejected(reason) => IngestResult {
                device_id: device.to_string(),
                status: "rejected".into(),
                points: 0,
                rejected: vec![serde_json::to_value(&reason).unwrap_or_default()],
            },
        })
        .collect();
    Ok(Json(IngestResults { results }))
}

/// The device a batch message names, if it exists and is active; otherwise the problem
/// (naming the message's field) that refuses the whole batch.
async fn batch_device(
    state: &AppState,
    factory: &factoryops_types::FactoryId,
    raw: &str,
    field: &str,
) -> ApiResult<DeviceId> {
    let refused = |mut problem: Problem, message: &str| {
        problem.errors = vec![FieldError { field: field.to_string(), message: message.to_string() }];
        problem
    };
    let Some(device) = (match DeviceId::parse(raw) {
        Ok(id) => state.devices.get(factory, &id).await?,
        Err(_) => None,
    }) else {
        let message = format!("no such device `{raw}`");
        return Err(refused(Problem::not_found(format!("{field}: {message}; nothing was stored")), &message));
    };
    if device.status != DeviceStatus::Active {
        let message = format!("device `{raw}` is disabled");
        return Err(refused(Problem::conflict(format!("{field}: {message}; nothing was stored")), &message));
    }
    Ok(device.id)
}

#[derive(Deserialize, IntoParams)]
pub struct StreamQuery {
    /// Only this device's telemetry.
    pub device_id: Option<String>,
}

/// Live telemetry and alert events of this factory (Server-Sent Events: `telemetry`,
/// `alert`). A client that cannot keep up is disconnected with an `error` event; it
/// should reconnect. It never slows ingestion.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/stream", tag = "telemetry",
    params(("factory_id" = String, Path), StreamQuery), security(("bearer" = [])),
    responses((status = 200, description = "text/event-stream", content_type = "text/event-stream")))]
async fn stream(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Query(q): Query<StreamQuery>,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    // Lossy: a stream that cannot keep up is closed, it never slows ingestion. Telemetry
    // arrives in batches (one per group commit), alerts one by one.
    let mut telemetry = state.bus.subscribe_telemetry_lossy(256);
    let mut alerts = state.bus.subscribe_lossy(topics::ALERTS, 256);
    let factory = t.factory;
    let device = q.device_id;
    let shutdown = state.shutdown.clone();
    let events = async_stream_events(move |tx| async move {
        loop {
            let (events, reason) = tokio::select! {
                d = telemetry.next() => {
                    let events: Option<Vec<SseEvent>> = d.map(|d| {
                        let batch = &d.event;
                        if batch.factory_id != factory {
                            return Vec::new();
                        }
                        batch
                            .messages
                            .iter()
                            .filter(|m| device.as_deref().is_none_or(|d| m.device_id.as_str() == d))
                            .map(|m| SseEvent::default().event("telemetry").data(m.to_json(&factory).to_string()))
                            .collect()
                    });
                    (events, telemetry.closed_reason())
                }
                d = alerts.next() => {
                    let events = d.map(|d| {
                        let event = &d.event;
                        if event.factory_id.as_ref() == Some(&factory) {
                            vec![SseEvent::default().event("alert").data(event.payload.to_string())]
                        } else {
                            Vec::new()
                        }
                    });
                    (events, alerts.closed_reason())
                }
                _ = shutdown.triggered() => return,
            };
            let Some(events) = events else {
                let why = reason.unwrap_or_else(|| "stream closed".into());
                let _ = tx.send(SseEvent::default().event("error").data(why)).await;
                return;
            };
            for event in events {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// A stream fed by a producer task through a small bounded channel.
fn async_stream_events<F, Fut>(producer: F) -> impl futures::Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(producer(tx));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) })
}
