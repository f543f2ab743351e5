//! Metrics around any [`ObjectStore`]: `factoryops_objstore_operation_duration_seconds`,
//! `factoryops_objstore_errors_total` and `factoryops_objstore_bytes_total`, labelled by
//! operation (and error kind / direction). Wrapping the port once keeps the adapters free
//! of metrics code and both adapters measured the same way.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use factoryops_platform::metrics::Metrics;
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::{ObjectKey, ObjectMeta, ObjectPrefix, ObjectReader, ObjectStore, PutOutcome, StoreError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub backend: String,
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub backend: String,
    pub op: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub backend: String,
    /// `read` or `written`.
    pub direction: String,
}

#[derive(Clone, Debug)]
pub struct ObjStoreMetrics {
    pub duration: Family<OpLabels, Histogram>,
    pub errors: Family<ErrorLabels, Counter>,
    pub bytes: Family<BytesLabels, Counter>,
}

impl ObjStoreMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let duration = Family::<OpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
        });
        metrics.register(
            "objstore_operation_duration_seconds",
            "Object store operations by backend and operation (failures included)",
            duration.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        metrics.register("objstore_errors", "Failed object store operations by kind", errors.clone());
        let bytes = Family::<BytesLabels, Counter>::default();
        metrics.register("objstore_bytes", "Bytes read from and written to the object store", bytes.clone());
        Self { duration, errors, bytes }
    }
}

/// Not-found answers and idempotent re-puts are normal outcomes, not errors.
fn counts_as_error(e: &StoreError) -> bool {
    !matches!(e, StoreError::NotFound(_))
}

#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn ObjectStore>,
    metrics: ObjStoreMetrics,
}

impl Metered {
    pub fn new(inner: Arc<dyn ObjectStore>, metrics: ObjStoreMetrics) -> Self {
        Self { inner, metrics }
    }

    fn observe<T>(&self, op: &str, started: Instant, result: &Result<T, StoreError>) {
        let backend = self.inner.backend().to_string();
        self.metrics
            .duration
            .get_or_create(&OpLabels { backend: backend.clone(), op: op.into() })
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = result
            && counts_as_error(e)
        {
            self.metrics.errors.get_or_create(&ErrorLabels { backend, op: op.into(), kind: e.kind().into() }).inc();
        }
    }

    fn count_bytes(&self, direction: &str, n: u64) {
        self.metrics
            .bytes
            .get_or_create(&BytesLabels { backend: self.inner.backend().into(), direction: direction.into() })
            .inc_by(n);
    }
}

#[async_trait]
impl ObjectStore for Metered {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<PutOutcome, StoreError> {
        let (started, len) = (Instant::now(), body.len() as u64);
        let result = self.inner.put(key, body).await;
        self.observe("put", started, &result);
        if let Ok(PutOutcome::Created) = result {
            self.count_bytes("written", len);
        }
        result
    }

    async fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<PutOutcome, StoreError> {
        let started = Instant::now();
        let result = self.inner.put_file(key, path).await;
        self.observe("put_file", started, &result);
        if let Ok(PutOutcome::Created) = result
            && let Ok(meta) = tokio::fs::metadata(path).await
        {
            self.count_bytes("written", meta.len());
        }
        result
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StoreError> {
        let started = Instant::now();
        let result = self.inner.get(key).await;
        self.observe("get", started, &result);
        if let Ok(body) = &result {
            self.count_bytes("read", body.len() as u64);
        }
        result
    }

    async fn open(&self, key: &ObjectKey) -> Result<ObjectReader, StoreError> {
        let started = Instant::now();
        let result = self.inner.open(key).await;
        self.observe("open", started, &result);
        let reader = result?;
        // Bytes are counted as they stream, so an aborted download counts what it read.
        let counter = self
            .metrics
            .bytes
            .get_or_create(&BytesLabels { backend: self.inner.backend().into(), direction: "read".into() })
            .clone();
        let stream = reader.stream.inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counter.inc_by(chunk.len() as u64);
            }
        });
        Ok(ObjectReader { size: reader.size, stream: Box::pin(stream) })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StoreError> {
        let started = Instant::now();
        let result = self.inner.head(key).await;
        self.observe("head", started, &result);
        result
    }

    async fn list(&self, prefix: &ObjectPrefix) -> Result<Vec<ObjectMeta>, StoreError> {
        let started = Instant::now();
        let result = self.inner.list(prefix).await;
        self.observe("list", started, &result);
        result
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.inner.delete(key).await;
        self.observe("delete", started, &result);
        result
    }

    async fn check(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.inner.check().await;
        self.observe("check", started, &result);
        result
    }
}
