//! Reports as jobs (issue 20, ADR 0024), on the pattern of analytics runs (ADR 0023):
//! `POST /reports` validates and answers `202` with the job; the `report_render` handler
//! (in the binary, with the `reports` component) gathers the data, renders it with
//! `factoryops-reports` and stores the file content-addressed at
//! `{factory}/reports/{sha256}.{ext}`; `GET /reports/{id}/download` serves it.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use factoryops_jobs::{JobView, Submit};
use factoryops_objstore::{Area, ObjectKey};
use factoryops_reports::Format;
use factoryops_types::{FactoryId, format_rfc3339_ms, parse_rfc3339_ms};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{CanRead, ReportsGenerate, Tenant};
use crate::problem::{ApiJson, FieldError, Problem};
use crate::router::AppState;
use crate::routes::analytics::{JobShape, ListParams, cancel_job, immutable_download, job_of_kind, retry_job};
use crate::routes::audit;

/// The job kind of a report (also its `jobs.concurrency.<kind>` key).
pub const REPORT_RENDER: &str = "report_render";
/// The report kinds the `report_render` handler gathers data for.
pub const KINDS: [&str; 2] = ["energy", "alerts"];
/// The longest period of a report, days (the energy computations' limit).
pub const MAX_PERIOD_DAYS: i64 = factoryops_energy::service::MAX_RANGE_DAYS;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_reports, create_report))
        .routes(routes!(get_report))
        .routes(routes!(download_report))
        .routes(routes!(cancel_report))
        .routes(routes!(retry_report))
}

type ApiResult<T> = Result<T, Problem>;

fn db_error(e: factoryops_db::DbError) -> Problem {
    Problem::internal(&e)
}

/// `POST /reports`: which report, in which format, over which period.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReport {
    /// `energy` or `alerts`.
    pub kind: String,
    /// `pdf`, `xlsx` or `json`.
    pub format: String,
    /// RFC 3339, inclusive.
    pub from: String,
    /// RFC 3339, exclusive; at most 400 days after `from`.
    pub to: String,
    /// Only these devices (of the caller's factory); when absent, every device with an
    /// energy source (energy) or every device (alerts).
    #[serde(default)]
    pub devices: Option<Vec<String>>,
}

/// What a report's job carries: set at submission, kept by a retry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportPayload {
    pub kind: String,
    pub format: Format,
    pub from_ms: i64,
    pub to_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<String>>,
    pub created_by: String,
}

/// What a succeeded report's handler returns (the job's output).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportOutput {
    /// Object name under `{factory}/reports/`: `{sha256}.{ext}`.
    pub object: String,
    pub sha256: String,
    pub size: u64,
    /// The download's file name (ASCII, from the factory's name and the local dates).
    pub filename: String,
}

/// A report: the job fields, what was asked for, and once `succeeded` the file's size,
/// sha256 (also the download's `ETag`) and file name.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportView {
    #[serde(flatten)]
    pub job: JobShape,
    pub kind: String,
    /// `pdf`, `xlsx` or `json`.
    pub format: String,
    /// RFC 3339.
    pub from: String,
    /// RFC 3339.
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<String>>,
    /// Bytes of the file (`succeeded`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReportList {
    pub items: Vec<ReportView>,
}

fn report_view(job: &JobView) -> ReportView {
    let payload: Option<ReportPayload> = serde_json::from_value(job.payload.clone()).ok();
    let output = output_of(job);
    ReportView {
        job: job.into(),
        kind: payload.as_ref().map(|p| p.kind.clone()).unwrap_or_default(),
        format: payload.as_ref().map(|p| p.format.extension().to_string()).unwrap_or_default(),
        from: payload.as_ref().map(|p| format_rfc3339_ms(p.from_ms)).unwrap_or_default(),
        to: payload.as_ref().map(|p| format_rfc3339_ms(p.to_ms)).unwrap_or_default(),
        devices: payload.and_then(|p| p.devices),
        size: output.as_ref().map(|o| o.size),
        sha256: output.as_ref().map(|o| o.sha256.clone()),
        filename: output.map(|o| o.filename),
    }
}

/// The output of a succeeded report.
fn output_of(job: &JobView) -> Option<ReportOutput> {
    if job.status != "succeeded" {
        return None;
    }
    job.output.clone().and_then(|o| serde_json::from_value(o).ok())
}

async fn report_job(state: &AppState, factory: &FactoryId, id: &str) -> ApiResult<JobView> {
    job_of_kind(state, factory, id, REPORT_RENDER, "report").await
}

/// `{factory}/reports/{name}` (`{sha256}.{ext}`, content-addressed).
pub fn report_key(factory: &FactoryId, name: &str) -> Result<ObjectKey, Problem> {
    ObjectKey::new(factory, Area::Reports, name).map_err(|e| Problem::internal(&e))
}

fn parse_format(text: &str) -> Option<Format> {
    match text {
        "pdf" => Some(Format::Pdf),
        "xlsx" => Some(Format::Xlsx),
        "json" => Some(Format::Json),
        _ => None,
    }
}

/// The factory's reports, newest first.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/reports", tag = "reports",
    params(("factory_id" = String, Path), ListParams), security(("bearer" = [])),
    responses((status = 200, body = ReportList)))]
async fn list_reports(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<ReportList>> {
    let limit = params.limit.unwrap_or(50).clamp(1, 200);
    let jobs = state.jobs.list(&t.factory, REPORT_RENDER, limit).await.map_err(db_error)?;
    Ok(Json(ReportList { items: jobs.iter().map(report_view).collect() }))
}

/// Generates a report as a job. Answers `202` with the job; poll `GET /reports/{id}`,
/// then download. `422` names every invalid field (`kind`, `format`, `from`, `to`,
/// `devices[i]`); `503 storage-unavailable` while the object store is down.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/reports", tag = "reports",
    params(("factory_id" = String, Path)), security(("bearer" = [])), request_body = NewReport,
    responses((status = 202, body = ReportView), (status = 403, body = Problem), (status = 422, body = Problem),
        (status = 503, body = Problem)))]
async fn create_report(
    State(state): State<AppState>,
    t: Tenant<ReportsGenerate>,
    ApiJson(body): ApiJson<NewReport>,
) -> ApiResult<Response> {
    let mut errors = Vec::new();
    let mut error = |field: &str, message: String| errors.push(FieldError { field: field.into(), message });
    if !KINDS.contains(&body.kind.as_str()) {
        error("kind", format!("must be one of {}", KINDS.join(", ")));
    }
    let format = parse_format(&body.format);
    if format.is_none() {
        error("format", "must be one of pdf, xlsx, json".into());
    }
    let from = parse_rfc3339_ms(&body.from);
    if from.is_none() {
        error("from", "must be an RFC 3339 instant".into());
    }
    let to = parse_rfc3339_ms(&body.to);
    if to.is_none() {
        error("to", "must be an RFC 3339 instant".into());
    }
    if let (Some(f), Some(t)) = (from, to) {
        if t <= f {
            error("to", "must be after `from`".into());
        } else if t - f > MAX_PERIOD_DAYS * 86_400_000 {
            error("to", format!("the period may span at most {MAX_PERIOD_DAYS} days"));
        }
    }
    if let Some(devices) = &body.devices {
        if devices.is_empty() {
            error("devices", "must name at least one device (or be left out for all)".into());
        }
        for (i, device) in devices.iter().enumerate() {
            // Another factory's device looks exactly like a missing one.
            let known = match factoryops_types::DeviceId::parse(device) {
                Ok(id) => state.devices.get(&t.factory, &id).await?.is_some(),
                Err(_) => false,
            };
            if !known {
                error(&format!("devices[{i}]"), format!("no such device {device:?}"));
            }
            if devices[..i].contains(device) {
                error(&format!("devices[{i}]"), "is listed twice".into());
            }
        }
    }
    let (Some(format), Some(from_ms), Some(to_ms), true) = (format, from, to, errors.is_empty()) else {
        return Err(Problem::validation(errors));
    };
    // Checked after validation: a bad request is a 422 whatever the storage does.
    state.require_storage()?;
    let payload = ReportPayload {
        kind: body.kind,
        format,
        from_ms,
        to_ms,
        devices: body.devices,
        created_by: t.principal.actor(),
    };
    let payload = serde_json::to_value(&payload).map_err(|e| Problem::internal(&e))?;
    let job = state.jobs.submit(&t.factory, REPORT_RENDER, payload, Submit::default()).await.map_err(db_error)?;
    let view = report_view(&job);
    audit(&state, &t, "report.created", &job.id, json!({ "kind": view.kind, "format": view.format })).await;
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("/api/v1/factories/{}/reports/{}", t.factory, job.id)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// One report: the job fields, and once `succeeded` its size, sha256 and file name.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/reports/{report_id}", tag = "reports",
    params(("factory_id" = String, Path), ("report_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ReportView), (status = 404, body = Problem)))]
async fn get_report(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<ReportView>> {
    let job = report_job(&state, &t.factory, &ids.1).await?;
    Ok(Json(report_view(&job)))
}

/// The report's file (`Content-Type` of its format, `ETag` = its sha256, an attachment
/// file name). `409` while the report is not `succeeded`: it exists but has no file.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/reports/{report_id}/download", tag = "reports",
    params(("factory_id" = String, Path), ("report_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "The file, in the report's format", content(
            (ReportFile = "application/pdf"),
            (ReportFile = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            (factoryops_reports::Report = "application/json"))),
        (status = 304), (status = 404, body = Problem), (status = 409, body = Problem), (status = 503, body = Problem)))]
async fn download_report(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let job = report_job(&state, &t.factory, &ids.1).await?;
    let payload: Option<ReportPayload> = serde_json::from_value(job.payload.clone()).ok();
    let (Some(output), Some(payload)) = (output_of(&job), payload) else {
        return Err(Problem::conflict(format!(
            "the report is {}; its file can be downloaded once it has succeeded",
            job.status
        ))
        .with("report_status", job.status));
    };
    let key = report_key(&t.factory, &output.object)?;
    immutable_download(&state, &headers, &key, &output.sha256, payload.format.content_type(), &output.filename).await
}

/// The bytes of a report file (documents the download's body).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct ReportFile(Vec<u8>);

/// Cancels a queued report at once, or asks a running one to stop. `409` when it has
/// already ended.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/reports/{report_id}/cancel", tag = "reports",
    params(("factory_id" = String, Path), ("report_id" = String, Path)), security(("bearer" = [])),
    responses((status = 202, body = ReportView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem)))]
async fn cancel_report(
    State(state): State<AppState>,
    t: Tenant<ReportsGenerate>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = ids.1;
    report_job(&state, &t.factory, &id).await?;
    cancel_job(&state, &t.factory, &id, "report").await?;
    audit(&state, &t, "report.cancelled", &id, json!({})).await;
    let job = report_job(&state, &t.factory, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(report_view(&job))).into_response())
}

/// Renders a `failed` or `cancelled` report again, same request, fresh attempt budget.
/// `409` for any other status; `503` while the object store is down.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/reports/{report_id}/retry", tag = "reports",
    params(("factory_id" = String, Path), ("report_id" = String, Path)), security(("bearer" = [])),
    responses((status = 202, body = ReportView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 503, body = Problem)))]
async fn retry_report(
    State(state): State<AppState>,
    t: Tenant<ReportsGenerate>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = ids.1;
    report_job(&state, &t.factory, &id).await?;
    let job = retry_job(&state, &t.factory, &id, "report").await?;
    audit(&state, &t, "report.retried", &id, json!({ "attempt_budget": job.max_attempts })).await;
    Ok((StatusCode::ACCEPTED, Json(report_view(&job))).into_response())
}
