//! Rules, backtests and the alert inbox.

use std::collections::HashSet;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use factoryops_rules::{
    Alert, AlertQuery, AlertStatus, BacktestDevice, BacktestResult, RuleSpec, RulesError, Severity, StoredRule,
};
use factoryops_types::{FactoryId, parse_rfc3339_ms};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AlertsWrite, CanRead, RulesWrite, Tenant};
use crate::problem::{ApiJson, FieldError, Problem};
use crate::router::AppState;
use crate::routes::audit;
use serde_json::json;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(get_rule, replace_rule, delete_rule))
        .routes(routes!(backtest_rule))
        .routes(routes!(backtest_draft))
        .routes(routes!(list_alerts))
        .routes(routes!(get_alert))
        .routes(routes!(acknowledge_alert))
        .routes(routes!(resolve_alert))
}

type ApiResult<T> = Result<T, Problem>;

impl From<RulesError> for Problem {
    fn from(error: RulesError) -> Self {
        match error {
            RulesError::Invalid(errors) => Problem::validation(
                errors.into_iter().map(|e| FieldError { field: e.field, message: e.message }).collect(),
            ),
            RulesError::NotFound => Problem::not_found("no such rule or alert"),
            RulesError::Conflict(message) => Problem::conflict(message),
            RulesError::BadRequest { field, message } => Problem::invalid_field(&field, message),
            RulesError::Tsdb(e) => Problem::from(e),
            other => Problem::internal(&other),
        }
    }
}

#[derive(Deserialize, IntoParams)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The time range of a backtest: at most 366 days and `rules.max_backtest_points` raw
/// points (5,000,000 by default); beyond either, a 422 on `to`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestRange {
    /// RFC 3339, inclusive.
    #[schema(format = DateTime)]
    pub from: String,
    /// RFC 3339, exclusive.
    #[schema(format = DateTime)]
    pub to: String,
}

/// A draft rule and the time range to backtest it over.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftBacktest {
    /// A rule body as for `POST /rules`, not saved. Kept as JSON here so that the rule
    /// parser reports bad fields by path (`rule.condition.all[1].op`).
    #[schema(value_type = RuleSpec)]
    pub rule: serde_json::Value,
    /// RFC 3339, inclusive.
    #[schema(format = DateTime)]
    pub from: String,
    /// RFC 3339, exclusive.
    #[schema(format = DateTime)]
    pub to: String,
}

/// A page of rules: `next_cursor` is set when more follow.
#[derive(Serialize, ToSchema)]
pub struct RulePage {
    pub items: Vec<StoredRule>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A page of the alert inbox (without `history`): `next_cursor` is set when more follow.
#[derive(Serialize, ToSchema)]
pub struct AlertPage {
    pub items: Vec<Alert>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Something worth telling the author that does not make the rule invalid (e.g. a property
/// the factory has never seen). Documents `factoryops_rules::Warning`.
#[derive(Serialize, ToSchema)]
#[schema(as = RuleWarning)]
#[allow(dead_code)] // schema only: the response serialises `factoryops_rules::Warning`
struct RuleWarningDoc {
    /// The path of the field, as in validation errors (`condition.all[0].property`).
    field: String,
    message: String,
}

/// A rule as created or replaced: the stored rule plus the validation warnings.
/// Documents `factoryops_rules::RuleWithWarnings`.
#[derive(Serialize, ToSchema)]
#[schema(as = RuleWithWarnings)]
#[allow(dead_code)] // schema only: the response serialises `factoryops_rules::RuleWithWarnings`
struct RuleWithWarningsDoc {
    #[serde(flatten)]
    rule: StoredRule,
    warnings: Vec<RuleWarningDoc>,
}

#[derive(Deserialize, IntoParams)]
pub struct AlertParams {
    /// `open`, `acknowledged` or `resolved`.
    pub status: Option<String>,
    /// `info`, `warning` or `critical`.
    pub severity: Option<String>,
    pub device_id: Option<String>,
    pub rule_id: Option<String>,
    /// RFC 3339: opened at or after.
    pub from: Option<String>,
    /// RFC 3339: opened before.
    pub to: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// An optional note, kept in the alert's history.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct AlertNote {
    #[serde(default)]
    pub note: Option<String>,
}

/// Property names the factory has seen, so rules naming others get a warning.
async fn known_properties(state: &AppState, factory: &FactoryId) -> ApiResult<HashSet<String>> {
    let mut known = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = state.ingestor.catalogue().list_for_factory(factory, 1000, cursor.as_deref()).await?;
        known.extend(page.items.into_iter().map(|p| p.name.into_string()));
        match page.next_cursor {
            Some(next) if known.len() < 100_000 => cursor = Some(next),
            _ => return Ok(known),
        }
    }
}

fn time(field: &str, text: &str) -> ApiResult<i64> {
    parse_rfc3339_ms(text).ok_or_else(|| Problem::invalid_field(field, "must be an RFC 3339 time"))
}

/// The rules of this factory.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/rules", tag = "rules",
    params(("factory_id" = String, Path), PageQuery), security(("bearer" = [])),
    responses((status = 200, body = RulePage)))]
async fn list_rules(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Response> {
    let page = state.rules.store().list_rules(&t.factory, q.limit, q.cursor.as_deref()).await?;
    Ok(Json(RulePage { items: page.items, next_cursor: page.next_cursor }).into_response())
}

/// Creates a rule (`rules:write`). Unknown properties are allowed and reported in `warnings`.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/rules", tag = "rules",
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    request_body(content = RuleSpec, description = "a rule, see crates/rules/README.md"),
    responses((status = 201, body = RuleWithWarningsDoc, description = "the rule with `id`, `created_at`, `updated_at`, `warnings`"),
        (status = 422, body = Problem)))]
async fn create_rule(
    State(state): State<AppState>,
    t: Tenant<RulesWrite>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> ApiResult<Response> {
    let known = known_properties(&state, &t.factory).await?;
    let rule = state.rules.create_rule(&t.factory, &body, &known).await?;
    audit(&state, &t, "rule.created", &rule.rule.id, json!({ "name": rule.rule.spec.name })).await;
    Ok((StatusCode::CREATED, Json(rule)).into_response())
}

/// One rule.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/rules/{rule_id}", tag = "rules",
    params(("factory_id" = String, Path), ("rule_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = StoredRule), (status = 404, body = Problem)))]
async fn get_rule(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Response> {
    Ok(Json(state.rules.store().get_rule(&t.factory, &ids.1).await?).into_response())
}

/// Replaces a rule (`rules:write`); its evaluation state restarts.
#[utoipa::path(put, path = "/api/v1/factories/{factory_id}/rules/{rule_id}", tag = "rules",
    params(("factory_id" = String, Path), ("rule_id" = String, Path)), security(("bearer" = [])),
    request_body(content = RuleSpec, description = "a rule"),
    responses((status = 200, body = RuleWithWarningsDoc, description = "the rule with `warnings`"), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
async fn replace_rule(
    State(state): State<AppState>,
    t: Tenant<RulesWrite>,
    Path(ids): Path<(String, String)>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> ApiResult<Response> {
    let known = known_properties(&state, &t.factory).await?;
    let rule = state.rules.update_rule(&t.factory, &ids.1, &body, &known).await?;
    audit(
        &state,
        &t,
        "rule.updated",
        &ids.1,
        json!({ "name": rule.rule.spec.name, "enabled": rule.rule.spec.enabled }),
    )
    .await;
    Ok(Json(rule).into_response())
}

/// Deletes a rule (`rules:write`); its alerts are kept.
#[utoipa::path(delete, path = "/api/v1/factories/{factory_id}/rules/{rule_id}", tag = "rules",
    params(("factory_id" = String, Path), ("rule_id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_rule(
    State(state): State<AppState>,
    t: Tenant<RulesWrite>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state.rules.delete_rule(&t.factory, &ids.1).await?;
    audit(&state, &t, "rule.deleted", &ids.1, json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The factory's devices with their types, for backtests.
async fn backtest_devices(state: &AppState, factory: &FactoryId) -> ApiResult<Vec<BacktestDevice>> {
    let mut devices = Vec::new();
    let mut filter = factoryops_ingest::DeviceFilter { limit: Some(500), ..Default::default() };
    loop {
        let page = state.devices.list(factory, &filter).await?;
        devices.extend(page.items.into_iter().map(|d| BacktestDevice {
            device_type: (!d.device_type.is_empty()).then_some(d.device_type),
            device_id: d.id,
        }));
        match page.next_cursor {
            Some(next) if devices.len() < 20_000 => filter.cursor = Some(next),
            _ => return Ok(devices),
        }
    }
}

/// Runs the saved rule over stored history: the alerts it would have opened and
/// resolved. No side effects; same input, same output.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/rules/{rule_id}/backtest", tag = "rules",
    params(("factory_id" = String, Path), ("rule_id" = String, Path)), request_body = BacktestRange, security(("bearer" = [])),
    responses((status = 200, body = BacktestResult, description = "the would-be alerts"), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
async fn backtest_rule(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
    ApiJson(range): ApiJson<BacktestRange>,
) -> ApiResult<Response> {
    let (from, to) = (time("from", &range.from)?, time("to", &range.to)?);
    let devices = backtest_devices(&state, &t.factory).await?;
    let result = state.rules.backtest(&t.factory, Some(&ids.1), None, from, to, state.store.as_ref(), devices).await?;
    Ok(Json(result).into_response())
}

/// Backtests a draft rule before saving it.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/rules/backtest", tag = "rules",
    params(("factory_id" = String, Path)), request_body = DraftBacktest, security(("bearer" = [])),
    responses((status = 200, body = BacktestResult, description = "the would-be alerts"), (status = 422, body = Problem)))]
async fn backtest_draft(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    ApiJson(body): ApiJson<DraftBacktest>,
) -> ApiResult<Response> {
    let (from, to) = (time("from", &body.from)?, time("to", &body.to)?);
    let devices = backtest_devices(&state, &t.factory).await?;
    let result =
        state.rules.backtest(&t.factory, None, Some(&body.rule), from, to, state.store.as_ref(), devices).await?;
    Ok(Json(result).into_response())
}

/// The alert inbox, newest first.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/alerts", tag = "alerts",
    params(("factory_id" = String, Path), AlertParams), security(("bearer" = [])),
    responses((status = 200, body = AlertPage), (status = 422, body = Problem)))]
async fn list_alerts(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Query(q): Query<AlertParams>,
) -> ApiResult<Response> {
    let status = match q.status.as_deref() {
        Some(s) => Some(
            AlertStatus::parse(s)
                .ok_or_else(|| Problem::invalid_field("status", "must be open, acknowledged or resolved"))?,
        ),
        None => None,
    };
    let severity = match q.severity.as_deref() {
        Some(s) => Some(
            Severity::parse(s)
                .ok_or_else(|| Problem::invalid_field("severity", "must be info, warning or critical"))?,
        ),
        None => None,
    };
    let query = AlertQuery {
        status,
        severity,
        device_id: q.device_id,
        rule_id: q.rule_id,
        from: q.from.as_deref().map(|f| time("from", f)).transpose()?,
        to: q.to.as_deref().map(|f| time("to", f)).transpose()?,
        cursor: q.cursor,
        limit: q.limit,
    };
    let page = state.rules.store().list_alerts(&t.factory, &query).await?;
    Ok(Json(AlertPage { items: page.items, next_cursor: page.next_cursor }).into_response())
}

/// One alert with its history.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/alerts/{alert_id}", tag = "alerts",
    params(("factory_id" = String, Path), ("alert_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Alert, description = "the alert with `history`"), (status = 404, body = Problem)))]
async fn get_alert(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Response> {
    Ok(Json(state.rules.store().get_alert(&t.factory, &ids.1).await?).into_response())
}

/// open → acknowledged (`alerts:write`).
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/alerts/{alert_id}/acknowledge", tag = "alerts",
    params(("factory_id" = String, Path), ("alert_id" = String, Path)), request_body = AlertNote, security(("bearer" = [])),
    responses((status = 200, body = Alert, description = "the alert"), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn acknowledge_alert(
    State(state): State<AppState>,
    t: Tenant<AlertsWrite>,
    Path(ids): Path<(String, String)>,
    ApiJson(body): ApiJson<AlertNote>,
) -> ApiResult<Response> {
    let note = body.note;
    let alert = state.rules.acknowledge(&t.factory, &ids.1, &t.principal.actor(), note.as_deref()).await?;
    audit(&state, &t, "alert.acknowledged", &ids.1, json!({ "note": note })).await;
    Ok(Json(alert).into_response())
}

/// → resolved (`alerts:write`).
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/alerts/{alert_id}/resolve", tag = "alerts",
    params(("factory_id" = String, Path), ("alert_id" = String, Path)), request_body = AlertNote, security(("bearer" = [])),
    responses((status = 200, body = Alert, description = "the alert"), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn resolve_alert(
    State(state): State<AppState>,
    t: Tenant<AlertsWrite>,
    Path(ids): Path<(String, String)>,
    ApiJson(body): ApiJson<AlertNote>,
) -> ApiResult<Response> {
    let note = body.note;
    let alert = state.rules.resolve(&t.factory, &ids.1, &t.principal.actor(), note.as_deref()).await?;
    audit(&state, &t, "alert.resolved", &ids.1, json!({ "note": note })).await;
    Ok(Json(alert).into_response())
}
