//! The analytics component's job handlers (ADR 0023): the dataset export and the
//! analytics run, registered on the job runtime by `server.rs`. The routes that submit
//! them live in `factoryops_api::routes::analytics`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use factoryops_api::routes::analytics::{ModelVersion, RunOutput, RunPayload, model_object, parse_model_object};
use factoryops_datasets::store::{DatasetStore, Status as DatasetStatus};
use factoryops_datasets::{DEFAULT_BATCH_VALUES, ExportError, Limits};
use factoryops_identity::Identity;
use factoryops_jobs::{Job, JobContext, JobError, JobHandler, Output};
use factoryops_objstore::health::StorageStatus;
use factoryops_objstore::{Area, ObjectKey, ObjectPrefix, ObjectStore, StoreError};
use factoryops_tsdb::TelemetryStore;
use factoryops_types::{Clock, FactoryId, format_rfc3339_ms};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn store_error(e: StoreError) -> JobError {
    if e.is_retryable() { JobError::Retryable(e.to_string()) } else { JobError::Permanent(e.to_string()) }
}

fn key(factory: &FactoryId, area: Area, name: String) -> Result<ObjectKey, JobError> {
    ObjectKey::new(factory, area, name).map_err(JobError::permanent)
}

/// The job's factory; every analytics job has one.
fn factory_of(ctx: &JobContext) -> Result<FactoryId, JobError> {
    ctx.factory_id().cloned().ok_or_else(|| JobError::permanent("an analytics job needs a factory"))
}

/// The error a handler returns once it noticed it should stop (cancel or shutdown).
fn stopped(ctx: &JobContext) -> JobError {
    ctx.checkpoint().err().unwrap_or(JobError::Cancelled)
}

// ---------------------------------------------------------------------------------------
// Dataset export

/// `dataset_export`: streams the dataset's query from the telemetry store into a local
/// Parquet file, puts it create-only at `{factory}/datasets/{sha256}.parquet` and records
/// the manifest. The dataset record mirrors the job's state for retention.
pub struct DatasetExport {
    pub store: Arc<dyn TelemetryStore>,
    pub objects: Arc<dyn ObjectStore>,
    pub storage: StorageStatus,
    pub datasets: DatasetStore,
    pub clock: Arc<dyn Clock>,
    /// Where the file is written before it is stored (inside the data dir).
    pub tmp_dir: PathBuf,
    pub limits: Limits,
}

/// Deletes the local file however the export ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[async_trait]
impl JobHandler for DatasetExport {
    async fn run(&self, job: &Job, ctx: JobContext) -> Result<Output, JobError> {
        let factory = factory_of(&ctx)?;
        let result = self.export(job, &factory, &ctx).await;
        if let Err(error) = &result {
            // Mirror the outcome on the record (a retried attempt shows `queued` again).
            let retrying = match error {
                JobError::Retryable(_) => job.attempts < job.max_attempts,
                JobError::Interrupted => true,
                JobError::Permanent(_) | JobError::Cancelled => false,
            };
            let now = self.clock.now_ms();
            if let Err(e) = self.datasets.fail(&factory, &job.id, &error.to_string(), retrying, now).await {
                tracing::warn!(dataset_id = %job.id, error = %e, "cannot record the dataset's failure");
            }
        }
        result
    }
}

impl DatasetExport {
    async fn export(&self, job: &Job, factory: &FactoryId, ctx: &JobContext) -> Result<Output, JobError> {
        // The route writes the record right after submitting the job; this process may
        // claim the job first.
        let mut record = None;
        for _ in 0..100 {
            record = self.datasets.get(factory, &job.id).await.map_err(JobError::retryable)?;
            if record.is_some() {
                break;
            }
            ctx.checkpoint()?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let record = record.ok_or_else(|| JobError::permanent("the dataset's record was never written"))?;
        if let (DatasetStatus::Succeeded, Some(manifest)) = (record.status, &record.manifest) {
            // An earlier attempt finished but its job did not record it (crash): done.
            return Ok(Some(json!({ "sha256": manifest.sha256 })));
        }
        self.storage.ensure_available().map_err(store_error)?;
        self.datasets.start_attempt(factory, &job.id, self.clock.now_ms()).await.map_err(JobError::retryable)?;
        ctx.log(format!("exporting {}", record.query));

        std::fs::create_dir_all(&self.tmp_dir).map_err(JobError::retryable)?;
        let tmp = TempFile(self.tmp_dir.join(format!("export-{}-{}.parquet", job.id, job.attempts)));
        let file = std::fs::File::create(&tmp.0).map_err(JobError::retryable)?;
        let out = std::io::BufWriter::with_capacity(256 * 1024, file);
        let progress_ctx = ctx.clone();
        // Reading and encoding is 90 % of the work, storing the file the rest.
        let mut progress = move |p: f64| progress_ctx.progress(0.9 * p);
        let exported = tokio::select! {
            r = factoryops_datasets::export(
                self.store.as_ref(), factory, &record.query, self.limits.max_values, DEFAULT_BATCH_VALUES, out, &mut progress,
            ) => r,
            _ = ctx.stopped() => return Err(stopped(ctx)),
        };
        let (summary, out) = exported.map_err(|e| match e {
            ExportError::TooManyValues { .. }
            | ExportError::Parquet(_)
            | ExportError::Arrow(_)
            | ExportError::Task(_) => JobError::permanent(e),
            ExportError::Store(_) | ExportError::Io(_) => JobError::retryable(e),
        })?;
        let file = out.into_inner().map_err(|e| JobError::retryable(e.error()))?;
        file.sync_all().map_err(JobError::retryable)?;
        drop(file);
        ctx.checkpoint()?;

        let object = key(factory, Area::Datasets, format!("{}.parquet", summary.sha256))?;
        let outcome = self.objects.put_file(&object, &tmp.0).await.map_err(store_error)?;
        tracing::info!(dataset_id = %job.id, sha256 = %summary.sha256, bytes = summary.bytes, ?outcome, "dataset stored");
        self.datasets.succeed(factory, &job.id, &summary, self.clock.now_ms()).await.map_err(JobError::retryable)?;
        ctx.log(format!(
            "{} rows × {} columns, {} values, {} bytes, sha256 {}",
            summary.rows, summary.columns, summary.values, summary.bytes, summary.sha256
        ));
        ctx.progress(1.0);
        Ok(Some(json!({ "sha256": summary.sha256, "rows": summary.rows, "bytes": summary.bytes })))
    }
}

// ---------------------------------------------------------------------------------------
// Analytics run

/// `analytics_run`: reads the pinned dataset file (checking its sha256), runs the analysis
/// or the co-pilot on the jobs' CPU pool with progress and cancel, stores the result JSON
/// content-addressed under `{factory}/analytics/results/` and registers a trained model
/// as the next version of its name under `{factory}/models/`.
pub struct AnalyticsRun {
    pub objects: Arc<dyn ObjectStore>,
    pub storage: StorageStatus,
    pub identity: Arc<Identity>,
    pub datasets: DatasetStore,
    pub clock: Arc<dyn Clock>,
}

/// What the CPU part hands back.
struct Computed {
    json: Vec<u8>,
    metrics: Value,
    analysis: &'static str,
    model: Option<factoryops_analytics::ModelArtifact>,
}

#[async_trait]
impl JobHandler for AnalyticsRun {
    async fn run(&self, job: &Job, ctx: JobContext) -> Result<Output, JobError> {
        let factory = factory_of(&ctx)?;
        let payload: RunPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::permanent(format!("malformed run payload: {e}")))?;
        // Validated at submission; parsed again because the payload is the source of truth.
        let request = factoryops_analytics::parse_request(&payload.request).map_err(JobError::permanent)?;
        self.storage.ensure_available().map_err(store_error)?;
        let tz = match self.identity.factory(&factory).await.map_err(JobError::retryable)? {
            Some(f) => f.timezone.parse::<chrono_tz::Tz>().unwrap_or(chrono_tz::UTC),
            None => return Err(JobError::permanent("the factory no longer exists")),
        };
        let dataset = key(&factory, Area::Datasets, format!("{}.parquet", payload.dataset_sha256))?;
        let bytes = self.objects.get(&dataset).await.map_err(store_error)?;
        ctx.log(format!("read dataset {} ({} bytes)", payload.dataset_id, bytes.len()));
        ctx.progress(0.05);
        ctx.checkpoint()?;

        // The analysis polls this flag at its checkpoints; a watcher sets it on cancel or shutdown.
        let cancel = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (ctx, cancel) = (ctx.clone(), cancel.clone());
            tokio::spawn(async move {
                ctx.stopped().await;
                cancel.store(true, Ordering::Relaxed);
            })
        };
        let cpu_ctx = ctx.clone();
        let sha = payload.dataset_sha256.clone();
        let computed = ctx.cpu(move || compute(&bytes, &sha, &request, tz, &cpu_ctx, &cancel)).await.and_then(|r| r);
        watcher.abort();
        let computed = match computed {
            Err(JobError::Cancelled) => return Err(stopped(&ctx)),
            other => other?,
        };
        ctx.progress(0.95);

        let result_sha = hex(&Sha256::digest(&computed.json));
        let result_object = format!("results/{result_sha}.json");
        self.objects
            .put(&key(&factory, Area::Analytics, result_object.clone())?, Bytes::from(computed.json))
            .await
            .map_err(store_error)?;
        let model = match &computed.model {
            Some(artifact) => Some(self.register(&factory, job, &payload, computed.analysis, artifact).await?),
            None => None,
        };
        ctx.log(format!("result stored ({result_sha})"));
        ctx.progress(1.0);
        let output = RunOutput { result_object, result_sha256: result_sha, metrics: computed.metrics, model };
        Ok(Some(serde_json::to_value(&output).map_err(JobError::permanent)?))
    }
}

/// The CPU-bound part: verify, decode, analyse, serialise.
fn compute(
    bytes: &Bytes,
    sha256: &str,
    request: &factoryops_analytics::RunRequest,
    tz: chrono_tz::Tz,
    ctx: &JobContext,
    cancel: &AtomicBool,
) -> Result<Computed, JobError> {
    let actual = hex(&Sha256::digest(bytes));
    if actual != sha256 {
        return Err(JobError::permanent(format!("the dataset file's sha256 is {actual}, expected {sha256}")));
    }
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .and_then(|b| b.build())
        .map_err(|e| JobError::permanent(format!("reading the dataset: {e}")))?;
    let batches =
        reader.collect::<Result<Vec<_>, _>>().map_err(|e| JobError::permanent(format!("reading the dataset: {e}")))?;
    let frame = factoryops_analytics::Frame::from_record_batches(&batches)
        .map_err(|e| JobError::permanent(format!("the dataset cannot be analysed: {e}")))?;
    drop(batches);
    let progress = |p: f64| ctx.progress(0.1 + 0.85 * p);
    let control = factoryops_analytics::Callbacks { progress: &progress, cancel };
    let result = factoryops_analytics::run(&frame, request, tz, &control).map_err(|e| match e {
        factoryops_analytics::AnalysisError::Cancelled => JobError::Cancelled,
        other => JobError::permanent(other),
    })?;
    let json = serde_json::to_vec(&result).map_err(JobError::permanent)?;
    Ok(Computed {
        json,
        metrics: serde_json::to_value(&result.metrics).map_err(JobError::permanent)?,
        analysis: result.analysis,
        model: result.model,
    })
}

/// A model's registry name: `{analysis}-{target with '/' as '.'}`, e.g.
/// `forecast-press-1.power_kw`.
pub fn model_name(analysis: &str, target: &str) -> String {
    format!("{analysis}-{}", target.replace('/', "."))
}

impl AnalyticsRun {
    /// Stores the model as the next version of its name (create-only: two runs racing for
    /// one number cannot both get it; the loser takes the next). A retried run that
    /// already registered its model gets that version back.
    async fn register(
        &self,
        factory: &FactoryId,
        job: &Job,
        payload: &RunPayload,
        analysis: &str,
        artifact: &factoryops_analytics::ModelArtifact,
    ) -> Result<Value, JobError> {
        let name = model_name(analysis, &artifact.target);
        let prefix =
            ObjectPrefix::with_name_prefix(factory, Area::Models, &format!("{name}/")).map_err(JobError::permanent)?;
        let existing = self.objects.list(&prefix).await.map_err(store_error)?;
        let mut latest = 0;
        for meta in &existing {
            let Some((n, version)) = parse_model_object(meta.key.name()) else { continue };
            if n != name {
                continue;
            }
            latest = latest.max(version);
            let stored = self.objects.get(&meta.key).await.map_err(store_error)?;
            if serde_json::from_slice::<ModelVersion>(&stored).is_ok_and(|v| v.run_id == job.id) {
                return Ok(json!({ "name": name, "version": version }));
            }
        }
        let artifact_json = serde_json::to_value(artifact).map_err(JobError::permanent)?;
        for version in latest + 1..latest + 6 {
            let record = ModelVersion {
                name: name.clone(),
                version,
                dataset_ref: payload.dataset_sha256.clone(),
                dataset_id: payload.dataset_id.clone(),
                run_id: job.id.clone(),
                hyperparameters: serde_json::to_value(&artifact.hyperparameters).map_err(JobError::permanent)?,
                features: serde_json::to_value(&artifact.features).map_err(JobError::permanent)?,
                metrics: serde_json::to_value(&artifact.metrics).map_err(JobError::permanent)?,
                created_by: payload.created_by.clone(),
                created_at: format_rfc3339_ms(self.clock.now_ms()),
                artifact: artifact_json.clone(),
            };
            let body = serde_json::to_vec(&record).map_err(JobError::permanent)?;
            match self.objects.put(&key(factory, Area::Models, model_object(&name, version))?, Bytes::from(body)).await
            {
                Ok(_) => {
                    // A model version keeps its training data from retention, like a run.
                    let reference = format!("{name}/v{version}");
                    self.datasets
                        .add_reference(factory, &payload.dataset_id, "model_version", &reference, self.clock.now_ms())
                        .await
                        .map_err(JobError::retryable)?;
                    return Ok(json!({ "name": name, "version": version }));
                }
                Err(StoreError::Exists(_)) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(JobError::retryable(format!("could not allocate a version of model {name}")))
    }
}

/// What the analytics handlers need from the server.
pub struct Deps {
    pub store: Arc<dyn TelemetryStore>,
    pub objects: Arc<dyn ObjectStore>,
    pub storage: StorageStatus,
    pub datasets: DatasetStore,
    pub identity: Arc<Identity>,
    pub clock: Arc<dyn Clock>,
    pub tmp_dir: PathBuf,
}

/// Registers `dataset_export` and `analytics_run` on the runtime.
pub fn register(runtime: &mut factoryops_jobs::JobRuntime, deps: Deps) {
    use factoryops_api::routes::analytics::{ANALYTICS_RUN, DATASET_EXPORT};
    runtime.register(
        DATASET_EXPORT,
        Arc::new(DatasetExport {
            store: deps.store,
            objects: deps.objects.clone(),
            storage: deps.storage.clone(),
            datasets: deps.datasets.clone(),
            clock: deps.clock.clone(),
            tmp_dir: deps.tmp_dir,
            limits: Limits::default(),
        }),
    );
    runtime.register(
        ANALYTICS_RUN,
        Arc::new(AnalyticsRun {
            objects: deps.objects,
            storage: deps.storage,
            identity: deps.identity,
            datasets: deps.datasets,
            clock: deps.clock,
        }),
    );
}
