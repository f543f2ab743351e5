//! Datasets, analytics runs and the model registry (issue 19, ADR 0023). Datasets and runs
//! are jobs of the job runtime (ADR 0018): a POST answers `202` with the job shape of
//! API.md and the client polls the GET. The work itself (the export, the analysis) is
//! done by the job handlers in the binary; these routes validate, submit and show.
//!
//! - A dataset's id is its job's id; its record (`factoryops_datasets::store`) holds the
//!   query and, once the export succeeded, the manifest.
//! - A run's id is its job's id; its payload pins the dataset (id and sha256), so a retry
//!   runs on the same bytes. The result JSON lives in the object store, content-addressed,
//!   and is inlined by `GET /analytics/runs/{id}`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use factoryops_datasets::store::Status as DatasetStatus;
use factoryops_datasets::{DatasetQuery, DatasetRequest, Limits, Manifest};
use factoryops_jobs::{CancelOutcome, JobView, RetryOutcome, Submit};
use factoryops_objstore::{Area, ObjectKey, ObjectPrefix};
use factoryops_types::{FactoryId, format_rfc3339_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AnalyticsRun, CanRead, Tenant};
use crate::problem::{ApiJson, FieldError, Problem};
use crate::router::AppState;
use crate::routes::audit;

/// The job kind of a dataset export (also its `jobs.concurrency.<kind>` key).
pub const DATASET_EXPORT: &str = "dataset_export";
/// The job kind of an analytics run.
pub const ANALYTICS_RUN: &str = "analytics_run";
/// `dataset_references.ref_kind` of a run.
pub const RUN_REFERENCE: &str = "analytics_run";
/// The content type of a dataset file (registered with IANA in 2024).
pub const PARQUET_CONTENT_TYPE: &str = "application/vnd.apache.parquet";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_datasets, create_dataset))
        .routes(routes!(get_dataset))
        .routes(routes!(download_dataset))
        .routes(routes!(list_runs, create_run))
        .routes(routes!(get_run))
        .routes(routes!(cancel_run))
        .routes(routes!(retry_run))
        .routes(routes!(list_models))
        .routes(routes!(list_model_versions))
}

type ApiResult<T> = Result<T, Problem>;

fn db_error(e: factoryops_db::DbError) -> Problem {
    Problem::internal(&e)
}

/// Cancels one of the factory's jobs behind a route (`noun`: run, report): 404 when it is
/// unknown, 409 naming its status once it has ended.
pub(crate) async fn cancel_job(state: &AppState, factory: &FactoryId, id: &str, noun: &str) -> ApiResult<()> {
    match state.jobs.cancel(factory, id).await.map_err(db_error)? {
        None => Err(Problem::not_found(format!("no such {noun}"))),
        Some(CancelOutcome::AlreadyFinished(status)) => {
            Err(Problem::conflict(format!("the {noun} has already ended: {}", status.as_str()))
                .with(&format!("{noun}_status"), status.as_str()))
        }
        Some(CancelOutcome::Cancelled | CancelOutcome::Requested) => Ok(()),
    }
}

/// Queues a failed or cancelled job again with its payload unchanged (so a run keeps its
/// dataset): 503 while the object store is down, 409 for any other status.
pub(crate) async fn retry_job(state: &AppState, factory: &FactoryId, id: &str, noun: &str) -> ApiResult<JobView> {
    state.require_storage()?;
    match state.jobs.retry(factory, id).await.map_err(db_error)? {
        RetryOutcome::NotFound => Err(Problem::not_found(format!("no such {noun}"))),
        RetryOutcome::NotRetryable(status) => {
            Err(Problem::conflict(format!("only a failed or cancelled {noun} is retried; this one is {status}"))
                .with(&format!("{noun}_status"), status))
        }
        RetryOutcome::Queued(job) => Ok(job),
    }
}

/// The job fields every dataset and run has (API.md: "Datasets, runs, reports are jobs").
#[derive(Debug, Serialize, ToSchema)]
pub struct JobShape {
    pub id: String,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// 0.0–1.0.
    pub progress: f64,
    pub attempts: i64,
    pub max_attempts: i64,
    /// Why the last attempt failed (kept while a retry is queued).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A cancel was asked for; the job ends `cancelled` at its next checkpoint.
    pub cancel_requested: bool,
    /// RFC 3339.
    pub created_at: String,
    #[schema(required = true)]
    pub started_at: Option<String>,
    #[schema(required = true)]
    pub finished_at: Option<String>,
    /// The handler's newest log lines.
    pub logs: Vec<String>,
}

impl From<&JobView> for JobShape {
    fn from(job: &JobView) -> Self {
        JobShape {
            id: job.id.clone(),
            status: job.status.to_string(),
            progress: job.progress,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            error: job.error.clone(),
            cancel_requested: job.cancel_requested,
            created_at: format_rfc3339_ms(job.created_at),
            started_at: job.started_at.map(format_rfc3339_ms),
            finished_at: job.finished_at.map(format_rfc3339_ms),
            logs: job.logs.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Datasets

/// `POST /datasets`: what to snapshot. Raw points, or buckets of `every` with `agg`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDataset {
    pub devices: Vec<String>,
    pub properties: Vec<String>,
    /// RFC 3339, inclusive.
    pub from: String,
    /// RFC 3339, exclusive.
    pub to: String,
    /// Bucket length (`30s`, `1m`, `15m`, `1h`, `1d`, `1w`), with `agg`.
    #[serde(default)]
    pub every: Option<String>,
    /// `avg`, `min`, `max`, `sum`, `count`, `first`, `last`, with `every`.
    #[serde(default)]
    pub agg: Option<String>,
}

/// A dataset: the job fields, the canonical query, and once `succeeded` the manifest
/// (with the `sha256` of the Parquet file, which is also the download's `ETag`).
#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetView {
    #[serde(flatten)]
    pub job: JobShape,
    /// The query in canonical form (UTC times with milliseconds).
    #[schema(value_type = Object)]
    pub query: Option<DatasetQuery>,
    /// Set when `status` is `succeeded`: factory, query, rows, columns, values, sha256,
    /// bytes, format, created_by, created_at.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub manifest: Option<Manifest>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetList {
    pub items: Vec<DatasetView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// At most this many, newest first (default 50, at most 200).
    pub limit: Option<i64>,
}

fn limit(params: &ListParams) -> i64 {
    params.limit.unwrap_or(50).clamp(1, 200)
}

/// The factory's job `id` when it is of `kind`; any other id is a 404 naming the `noun`.
pub(crate) async fn job_of_kind(
    state: &AppState,
    factory: &FactoryId,
    id: &str,
    kind: &str,
    noun: &str,
) -> ApiResult<JobView> {
    match state.jobs.get(factory, id).await.map_err(db_error)? {
        Some(job) if job.kind == kind => Ok(job),
        _ => Err(Problem::not_found(format!("no such {noun}"))),
    }
}

async fn dataset_job(state: &AppState, factory: &FactoryId, id: &str) -> ApiResult<JobView> {
    job_of_kind(state, factory, id, DATASET_EXPORT, "dataset").await
}

async fn dataset_view(state: &AppState, factory: &FactoryId, job: &JobView) -> ApiResult<DatasetView> {
    let record = state.datasets.get(factory, &job.id).await.map_err(db_error)?;
    Ok(DatasetView {
        job: job.into(),
        query: record.as_ref().map(|r| r.query.clone()),
        manifest: record.and_then(|r| r.manifest),
    })
}

/// The factory's datasets, newest first.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/datasets", tag = "analytics",
    params(("factory_id" = String, Path), ListParams), security(("bearer" = [])),
    responses((status = 200, body = DatasetList)))]
async fn list_datasets(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<DatasetList>> {
    let jobs = state.jobs.list(&t.factory, DATASET_EXPORT, limit(&params)).await.map_err(db_error)?;
    let mut items = Vec::with_capacity(jobs.len());
    for job in &jobs {
        items.push(dataset_view(&state, &t.factory, job).await?);
    }
    Ok(Json(DatasetList { items }))
}

/// Snapshots telemetry into an immutable Parquet file (`ts` + one Float64 column per
/// `device/property`). Answers `202` with the job; poll `GET /datasets/{id}` until
/// `succeeded`, then download. `503 storage-unavailable` while the object store is down.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/datasets", tag = "analytics",
    params(("factory_id" = String, Path)), security(("bearer" = [])), request_body = NewDataset,
    responses((status = 202, body = DatasetView), (status = 403, body = Problem), (status = 422, body = Problem),
        (status = 503, body = Problem)))]
async fn create_dataset(
    State(state): State<AppState>,
    t: Tenant<AnalyticsRun>,
    ApiJson(body): ApiJson<NewDataset>,
) -> ApiResult<Response> {
    let request = DatasetRequest {
        devices: body.devices,
        properties: body.properties,
        from: body.from,
        to: body.to,
        every: body.every,
        agg: body.agg,
    };
    let query = factoryops_datasets::validate(&request, &Limits::default()).map_err(|errors| {
        Problem::validation(errors.into_iter().map(|e| FieldError { field: e.field, message: e.message }).collect())
    })?;
    // Another factory's device looks exactly like a missing one.
    let mut missing = Vec::new();
    for (i, device) in query.devices.iter().enumerate() {
        if state.devices.get(&t.factory, device).await?.is_none() {
            missing.push(FieldError { field: format!("devices[{i}]"), message: format!("no such device {device:?}") });
        }
    }
    if !missing.is_empty() {
        return Err(Problem::validation(missing));
    }
    // Checked after validation: a bad request is a 422 whatever the storage does.
    state.require_storage()?;
    let actor = t.principal.actor();
    let job = state
        .jobs
        .submit(&t.factory, DATASET_EXPORT, json!({ "created_by": actor }), Submit::default())
        .await
        .map_err(db_error)?;
    // The record follows the job; the handler waits for it (ADR 0023).
    let now = state.clock.now_ms();
    if let Err(e) = state.datasets.create(&t.factory, &job.id, &query, &actor, now).await {
        let _ = state.jobs.cancel(&t.factory, &job.id).await;
        return Err(db_error(e));
    }
    audit(&state, &t, "dataset.created", &job.id, json!({ "query": query })).await;
    let view = dataset_view(&state, &t.factory, &job).await?;
    created(&t.factory, "datasets", &job.id, view)
}

fn created(factory: &FactoryId, collection: &str, id: &str, view: impl Serialize) -> ApiResult<Response> {
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    let location = format!("/api/v1/factories/{factory}/{collection}/{id}");
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// One dataset: the job fields, and the manifest once it succeeded.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/datasets/{dataset_id}", tag = "analytics",
    params(("factory_id" = String, Path), ("dataset_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = DatasetView), (status = 404, body = Problem)))]
async fn get_dataset(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<DatasetView>> {
    let id = ids.1;
    let job = dataset_job(&state, &t.factory, &id).await?;
    Ok(Json(dataset_view(&state, &t.factory, &job).await?))
}

/// The dataset's Parquet file, byte for byte as exported (`ETag` = its sha256). `409`
/// while the dataset is not `succeeded` (queued, running, failed or cancelled): it exists
/// but has no file; `404` only when there is no such dataset.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/datasets/{dataset_id}/download", tag = "analytics",
    params(("factory_id" = String, Path), ("dataset_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, content_type = "application/vnd.apache.parquet", body = ParquetFile),
        (status = 304), (status = 404, body = Problem), (status = 409, body = Problem), (status = 503, body = Problem)))]
async fn download_dataset(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id = ids.1;
    let job = dataset_job(&state, &t.factory, &id).await?;
    let record = state.datasets.get(&t.factory, &id).await.map_err(db_error)?;
    let Some(manifest) = record.filter(|r| r.status == DatasetStatus::Succeeded).and_then(|r| r.manifest) else {
        return Err(Problem::conflict(format!(
            "the dataset is {}; its file can be downloaded once it has succeeded",
            job.status
        ))
        .with("dataset_status", job.status));
    };
    let key = dataset_key(&t.factory, &manifest.sha256)?;
    let name = factoryops_datasets::download_name(&id);
    immutable_download(&state, &headers, &key, &manifest.sha256, PARQUET_CONTENT_TYPE, &name).await
}

/// Serves an immutable, content-addressed object as an attachment: `304` when the client
/// already holds this sha256 (`If-None-Match`), else the object streamed with its type,
/// length, ETag and a year's private cache.
pub(crate) async fn immutable_download(
    state: &AppState,
    headers: &HeaderMap,
    key: &ObjectKey,
    sha256: &str,
    content_type: &'static str,
    filename: &str,
) -> ApiResult<Response> {
    let etag = format!("\"{sha256}\"");
    // The file never changes: a client holding this sha256 has it.
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').any(|tag| {
            let tag = tag.trim();
            tag == etag || tag == "*" || tag.strip_prefix("W/") == Some(etag.as_str())
        })
    }) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(value) = HeaderValue::from_str(&etag) {
            response.headers_mut().insert(header::ETAG, value);
        }
        return Ok(response);
    }
    let reader = state.objects.open(key).await?;
    let mut response = Body::from_stream(reader.stream).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(reader.size));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, value);
    }
    // Download names are ASCII built by us; quotes and backslashes cannot occur in them.
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// The bytes of a dataset's Parquet file (documents the download's body).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct ParquetFile(Vec<u8>);

/// `{factory}/datasets/{sha256}.parquet` (ADR 0019, content-addressed).
pub fn dataset_key(factory: &FactoryId, sha256: &str) -> Result<ObjectKey, Problem> {
    ObjectKey::new(factory, Area::Datasets, format!("{sha256}.parquet")).map_err(|e| Problem::internal(&e))
}

// ---------------------------------------------------------------------------------------
// Runs

/// `POST /analytics/runs`: `{mode: "standard", analysis, dataset_id, target?,
/// hyperparameters?}` or `{mode: "copilot", goal, dataset_id, target?, budget_seconds?}`.
/// Every invalid field is reported with its path (`hyperparameters.threshold`).
/// Documents the body; the route parses it with `factoryops_analytics::parse_request`,
/// which reports every invalid field and refuses unknown ones per mode and analysis.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct NewRun {
    /// `standard` or `copilot`.
    pub mode: String,
    /// Standard mode: `anomaly`, `forecast`, `baseline`, `clustering`, `changepoints`, `statistics`.
    pub analysis: Option<String>,
    /// Co-pilot mode: `forecast`, `anomaly` or `baseline`.
    pub goal: Option<String>,
    /// A `succeeded` dataset of this factory.
    pub dataset_id: String,
    /// The column (`device/property`) to analyse; required when the dataset has several.
    pub target: Option<String>,
    /// Standard mode: the analysis's parameters (see the analytics README).
    #[schema(value_type = Option<Object>)]
    pub hyperparameters: Option<Value>,
    /// Co-pilot mode: the work budget in seconds (deterministic: counted in work units).
    pub budget_seconds: Option<u32>,
}

/// A run: the job fields, what was asked, and once `succeeded` its metrics and (on the
/// single-run GET) the whole `result`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    #[serde(flatten)]
    pub job: JobShape,
    pub dataset_id: String,
    /// The sha256 of the dataset file the run reads (a retry reads the same).
    pub dataset_sha256: String,
    /// `standard` or `copilot`.
    pub mode: String,
    /// The request as accepted.
    #[schema(value_type = Object)]
    pub request: Value,
    /// Headline metrics of a succeeded run.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metrics: Option<Value>,
    /// The registered model version (co-pilot runs), `{name, version}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub model: Option<Value>,
    /// The full result (`GET /analytics/runs/{id}` of a succeeded run): mode, analysis,
    /// target, metrics, findings, output, model, notes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    pub items: Vec<RunView>,
}

/// What a run's job carries (its payload): set at submission, kept by a retry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunPayload {
    pub request: Value,
    pub dataset_id: String,
    pub dataset_sha256: String,
    pub created_by: String,
}

/// What a succeeded run's handler returns (the job's output).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOutput {
    /// Object name of the result JSON under `{factory}/analytics/`.
    pub result_object: String,
    pub result_sha256: String,
    pub metrics: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Value>,
}

fn run_view(job: &JobView, result: Option<Value>) -> RunView {
    let payload: Option<RunPayload> = serde_json::from_value(job.payload.clone()).ok();
    let output: Option<RunOutput> = job.output.clone().and_then(|o| serde_json::from_value(o).ok());
    let (dataset_id, dataset_sha256, request) = match payload {
        Some(p) => (p.dataset_id, p.dataset_sha256, p.request),
        None => (String::new(), String::new(), Value::Null),
    };
    RunView {
        job: job.into(),
        dataset_id,
        dataset_sha256,
        mode: request.get("mode").and_then(Value::as_str).unwrap_or_default().to_string(),
        request,
        metrics: output.as_ref().map(|o| o.metrics.clone()),
        model: output.and_then(|o| o.model),
        result,
    }
}

async fn run_job(state: &AppState, factory: &FactoryId, id: &str) -> ApiResult<JobView> {
    job_of_kind(state, factory, id, ANALYTICS_RUN, "run").await
}

/// The factory's runs, newest first (without the full `result`).
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/analytics/runs", tag = "analytics",
    params(("factory_id" = String, Path), ListParams), security(("bearer" = [])),
    responses((status = 200, body = RunList)))]
async fn list_runs(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<RunList>> {
    let jobs = state.jobs.list(&t.factory, ANALYTICS_RUN, limit(&params)).await.map_err(db_error)?;
    Ok(Json(RunList { items: jobs.iter().map(|j| run_view(j, None)).collect() }))
}

/// Starts a standard analysis or a co-pilot run on a `succeeded` dataset. Answers `202`
/// with the job; poll `GET /analytics/runs/{id}`. `422` names every invalid field
/// (`dataset_id` when the dataset is missing or not ready); `503 storage-unavailable`
/// while the object store is down.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/analytics/runs", tag = "analytics",
    params(("factory_id" = String, Path)), security(("bearer" = [])), request_body = NewRun,
    responses((status = 202, body = RunView), (status = 403, body = Problem), (status = 422, body = Problem),
        (status = 503, body = Problem)))]
async fn create_run(
    State(state): State<AppState>,
    t: Tenant<AnalyticsRun>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let parsed = factoryops_analytics::parse_request(&body);
    let mut errors: Vec<FieldError> = match &parsed {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.iter().map(|f| FieldError { field: f.path.clone(), message: f.message.clone() }).collect(),
    };
    // Without a valid `mode` the parser cannot tell which keys belong; a key no mode
    // knows is unknown whatever the mode.
    if let Some(map) = body.as_object() {
        const ANY_MODE: [&str; 7] =
            ["mode", "analysis", "goal", "dataset_id", "target", "hyperparameters", "budget_seconds"];
        for key in map.keys() {
            if !ANY_MODE.contains(&key.as_str()) && !errors.iter().any(|e| &e.field == key) {
                errors.push(FieldError { field: key.clone(), message: "unknown field".into() });
            }
        }
    }
    let dataset_id = body.get("dataset_id").and_then(Value::as_str);
    let mut manifest = None;
    match dataset_id {
        None if !errors.iter().any(|e| e.field == "dataset_id") => {
            errors.push(FieldError { field: "dataset_id".into(), message: "is required".into() })
        }
        None => {}
        Some(id) => match state.datasets.get(&t.factory, id).await.map_err(db_error)? {
            None => errors.push(FieldError { field: "dataset_id".into(), message: "no such dataset".into() }),
            Some(d) => match (d.status, d.manifest) {
                (DatasetStatus::Succeeded, Some(m)) => manifest = Some(m),
                (status, _) => errors.push(FieldError {
                    field: "dataset_id".into(),
                    message: format!("the dataset is {}; a run needs a succeeded dataset", status.as_str()),
                }),
            },
        },
    }
    if let (Ok(request), Some(m)) = (&parsed, &manifest)
        && let Some(target) = &request.target
        && !m.query.column_names().contains(target)
    {
        errors.push(FieldError {
            field: "target".into(),
            message: format!(
                "the dataset has no column {target:?}; its columns are {}",
                m.query.column_names().join(", ")
            ),
        });
    }
    let (Ok(_), Some(manifest), true) = (parsed, manifest, errors.is_empty()) else {
        return Err(Problem::validation(errors));
    };
    state.require_storage()?;
    let dataset_id = dataset_id.unwrap_or_default().to_string();
    let payload = RunPayload {
        request: body,
        dataset_id: dataset_id.clone(),
        dataset_sha256: manifest.sha256.clone(),
        created_by: t.principal.actor(),
    };
    let payload = serde_json::to_value(&payload).map_err(|e| Problem::internal(&e))?;
    let job = state.jobs.submit(&t.factory, ANALYTICS_RUN, payload, Submit::default()).await.map_err(db_error)?;
    // Before the run starts: retention never removes a dataset a run (even a failed one,
    // which may be retried) reads.
    state
        .datasets
        .add_reference(&t.factory, &dataset_id, RUN_REFERENCE, &job.id, state.clock.now_ms())
        .await
        .map_err(db_error)?;
    audit(&state, &t, "analytics_run.created", &job.id, json!({ "dataset_id": dataset_id })).await;
    created(&t.factory, "analytics/runs", &job.id, run_view(&job, None))
}

/// One run; a `succeeded` run carries its whole `result`.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/analytics/runs/{run_id}", tag = "analytics",
    params(("factory_id" = String, Path), ("run_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = RunView), (status = 404, body = Problem), (status = 503, body = Problem)))]
async fn get_run(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<RunView>> {
    let id = ids.1;
    let job = run_job(&state, &t.factory, &id).await?;
    let mut result = None;
    if job.status == "succeeded"
        && let Some(output) = job.output.clone().and_then(|o| serde_json::from_value::<RunOutput>(o).ok())
    {
        let key = ObjectKey::new(&t.factory, Area::Analytics, output.result_object.as_str())
            .map_err(|e| Problem::internal(&e))?;
        let bytes = state.objects.get(&key).await?;
        result = Some(serde_json::from_slice(&bytes).map_err(|e| Problem::internal(&e))?);
    }
    Ok(Json(run_view(&job, result)))
}

/// Cancels a queued run at once, or asks a running one to stop (it ends `cancelled` at
/// its next checkpoint). `409` when the run has already ended.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/analytics/runs/{run_id}/cancel", tag = "analytics",
    params(("factory_id" = String, Path), ("run_id" = String, Path)), security(("bearer" = [])),
    responses((status = 202, body = RunView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem)))]
async fn cancel_run(
    State(state): State<AppState>,
    t: Tenant<AnalyticsRun>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = ids.1;
    run_job(&state, &t.factory, &id).await?;
    cancel_job(&state, &t.factory, &id, "run").await?;
    audit(&state, &t, "analytics_run.cancelled", &id, json!({})).await;
    let job = run_job(&state, &t.factory, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(run_view(&job, None))).into_response())
}

/// Runs a `failed` or `cancelled` run again on the **same** dataset (same sha256), with
/// a fresh attempt budget. `409` for a run in any other status; `503` while the object
/// store is down.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/analytics/runs/{run_id}/retry", tag = "analytics",
    params(("factory_id" = String, Path), ("run_id" = String, Path)), security(("bearer" = [])),
    responses((status = 202, body = RunView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 503, body = Problem)))]
async fn retry_run(
    State(state): State<AppState>,
    t: Tenant<AnalyticsRun>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = ids.1;
    run_job(&state, &t.factory, &id).await?;
    let job = retry_job(&state, &t.factory, &id, "run").await?;
    audit(&state, &t, "analytics_run.retried", &id, json!({ "attempt_budget": job.max_attempts })).await;
    Ok((StatusCode::ACCEPTED, Json(run_view(&job, None))).into_response())
}

// ---------------------------------------------------------------------------------------
// Models

/// One registered model version, as stored under `{factory}/models/{name}/v{version}.json`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelVersion {
    pub name: String,
    /// 1, 2, … per name, never reused.
    pub version: u32,
    /// The sha256 of the dataset file it was trained on.
    pub dataset_ref: String,
    pub dataset_id: String,
    /// The run that trained it.
    pub run_id: String,
    #[schema(value_type = Object)]
    pub hyperparameters: Value,
    #[schema(value_type = Object)]
    pub features: Value,
    #[schema(value_type = Object)]
    pub metrics: Value,
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// The model artifact (format, target, step, trained-until, fitted parameters): what
    /// the live scorer loads.
    #[schema(value_type = Object)]
    pub artifact: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelSummary {
    pub name: String,
    pub latest_version: u32,
    pub versions: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub items: Vec<ModelSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelVersionList {
    pub items: Vec<ModelVersion>,
}

/// `name/v000001.json` → `(name, 1)`.
pub fn parse_model_object(name: &str) -> Option<(&str, u32)> {
    let (model, file) = name.rsplit_once('/')?;
    let version = file.strip_prefix('v')?.strip_suffix(".json")?.parse().ok()?;
    Some((model, version))
}

/// The object name of a model version.
pub fn model_object(name: &str, version: u32) -> String {
    format!("{name}/v{version:06}.json")
}

/// The registered models of the factory (co-pilot runs register theirs), by name.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/models", tag = "analytics",
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ModelList), (status = 503, body = Problem)))]
async fn list_models(State(state): State<AppState>, t: Tenant<CanRead>) -> ApiResult<Json<ModelList>> {
    let objects = state.objects.list(&ObjectPrefix::area(&t.factory, Area::Models)).await?;
    let mut items: Vec<ModelSummary> = Vec::new();
    for meta in &objects {
        let Some((name, version)) = parse_model_object(meta.key.name()) else { continue };
        match items.last_mut() {
            Some(last) if last.name == name => {
                last.latest_version = last.latest_version.max(version);
                last.versions += 1;
            }
            _ => items.push(ModelSummary { name: name.to_string(), latest_version: version, versions: 1 }),
        }
    }
    Ok(Json(ModelList { items }))
}

/// Every version of one model, oldest first.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/models/{name}/versions", tag = "analytics",
    params(("factory_id" = String, Path), ("name" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ModelVersionList), (status = 404, body = Problem), (status = 503, body = Problem)))]
async fn list_model_versions(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<ModelVersionList>> {
    let name = ids.1;
    let not_found = || Problem::not_found("no such model");
    if name.contains('/') {
        return Err(not_found());
    }
    let prefix =
        ObjectPrefix::with_name_prefix(&t.factory, Area::Models, &format!("{name}/")).map_err(|_| not_found())?;
    let mut items = Vec::new();
    for meta in state.objects.list(&prefix).await? {
        if parse_model_object(meta.key.name()).is_none_or(|(n, _)| n != name) {
            continue;
        }
        let bytes = state.objects.get(&meta.key).await?;
        items.push(serde_json::from_slice::<ModelVersion>(&bytes).map_err(|e| Problem::internal(&e))?);
    }
    if items.is_empty() {
        return Err(not_found());
    }
    items.sort_by_key(|v| v.version);
    Ok(Json(ModelVersionList { items }))
}
