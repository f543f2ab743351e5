//! The S3-compatible adapter (AWS S3, MinIO, s3s), over the `object_store` crate.
//!
//! Create-only puts: the adapter looks first (HEAD) and then writes with
//! `PutMode::Create` (`If-None-Match: *`), so a key is never overwritten where the server
//! supports conditional writes; servers that do not (older S3-compatible ones) are still
//! protected by the HEAD check, which leaves only two writers racing on one key within
//! milliseconds — harmless for the content-addressed keys this store is used with.
//!
//! Every call is bounded: the HTTP client has connect and request timeouts, the client's
//! own retries are few and short, and the whole operation has a deadline, so a stopped
//! server answers [`StoreError::Unavailable`] within seconds instead of hanging a job.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpClient, HttpConnector};
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore as _, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, RetryConfig,
};
use tokio::io::AsyncReadExt;

use crate::{
    ObjectKey, ObjectMeta, ObjectPrefix, ObjectReader, ObjectStore, PutOutcome, StoreError, sha256_bytes, sha256_file,
    sha256_stream,
};

/// Where and how to reach the bucket.
#[derive(Clone)]
pub struct S3Options {
    pub bucket: String,
    /// `http(s)://host:port` for S3-compatible servers; `None` = AWS for `region`.
    pub endpoint: Option<String>,
    pub region: String,
    /// Path-style URLs (`endpoint/bucket/key`, MinIO and most self-hosted servers) rather
    /// than virtual-hosted ones (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Set when the endpoint is `http://`.
    pub allow_http: bool,
    /// Static keys; `None` = the instance's credentials (IMDS / web identity).
    pub credentials: Option<(String, String)>,
    /// Deadline of one operation (a whole small put or get; a large upload's each part).
    pub timeout: Duration,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("credentials", &self.credentials.as_ref().map(|(id, _)| (id, "********")))
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct S3Store {
    inner: Arc<AmazonS3>,
    bucket: String,
    timeout: Duration,
}

/// Files up to this size are uploaded in one request; larger ones in parts of this size.
const PART_SIZE: usize = 16 * 1024 * 1024;

/// Builds the HTTP client from `factoryops_platform::http` (rustls on ring, no
/// process-wide provider) with our timeouts.
#[derive(Debug)]
struct Connector {
    connect_timeout: Duration,
    timeout: Duration,
}

impl HttpConnector for Connector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = factoryops_platform::http::client_builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .build()
            .map_err(|e| object_store::Error::Generic { store: "S3", source: Box::new(e) })?;
        Ok(HttpClient::new(client))
    }
}

impl S3Store {
    pub fn new(options: S3Options) -> Result<Self, StoreError> {
        // One quick retry for a dropped connection; the job runtime does the patient retrying.
        let retry = RetryConfig {
            max_retries: 1,
            retry_timeout: options.timeout,
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(500),
                ..BackoffConfig::default()
            },
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&options.bucket)
            .with_region(&options.region)
            .with_allow_http(options.allow_http)
            .with_virtual_hosted_style_request(!options.path_style)
            .with_retry(retry)
            .with_http_connector(Connector {
                connect_timeout: Duration::from_secs(2).min(options.timeout),
                timeout: options.timeout,
            });
        if let Some(endpoint) = &options.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some((id, secret)) = &options.credentials {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
        }
        let inner = builder.build().map_err(|e| StoreError::Unavailable(format!("S3 configuration: {e}")))?;
        Ok(Self { inner: Arc::new(inner), bucket: options.bucket, timeout: options.timeout })
    }

    fn location(key: &ObjectKey) -> StorePath {
        // Keys are validated ASCII segments, so the path needs no escaping.
        StorePath::from(key.as_path())
    }

    async fn bounded<T>(
        &self,
        what: &str,
        op: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => result.map_err(|e| map_error(what, e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "S3 bucket {}: {what} timed out after {:?}",
                self.bucket, self.timeout
            ))),
        }
    }

    async fn existing_digest(&self, key: &ObjectKey) -> Result<Option<[u8; 32]>, StoreError> {
        match self.open(key).await {
            Ok(reader) => Ok(Some(sha256_stream(reader.stream).await?)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The outcome for a key that turned out to exist: same bytes or a conflict.
    async fn compare(&self, key: &ObjectKey, digest: [u8; 32]) -> Result<PutOutcome, StoreError> {
        match self.existing_digest(key).await? {
            Some(existing) if existing == digest => Ok(PutOutcome::AlreadyPresent),
            Some(_) => Err(StoreError::Exists(key.to_string())),
            None => Err(StoreError::Unavailable(format!("{key}: reported as existing but cannot be read"))),
        }
    }

    async fn put_create(&self, key: &ObjectKey, body: Bytes, digest: [u8; 32]) -> Result<PutOutcome, StoreError> {
        let location = Self::location(key);
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        let put = self.inner.put_opts(&location, PutPayload::from_bytes(body.clone()), options);
        match tokio::time::timeout(self.timeout, put).await {
            Ok(Ok(_)) => Ok(PutOutcome::Created),
            Ok(Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. })) => {
                self.compare(key, digest).await
            }
            // A server without conditional writes: the HEAD check before this put stands in.
            Ok(Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. })) => {
                self.bounded("put", self.inner.put(&location, PutPayload::from_bytes(body))).await?;
                Ok(PutOutcome::Created)
            }
            Ok(Err(e)) => Err(map_error("put", e)),
            Err(_) => Err(StoreError::Unavailable(format!("S3 bucket {}: put timed out", self.bucket))),
        }
    }
}

/// Maps the client's errors: missing objects and existing keys keep their meaning; all
/// else (connection refused, timeouts, 5xx, denied credentials) means the store cannot
/// serve us now.
fn map_error(what: &str, error: object_store::Error) -> StoreError {
    match error {
        object_store::Error::NotFound { path, .. } => StoreError::NotFound(path),
        object_store::Error::AlreadyExists { path, .. } => StoreError::Exists(path),
        other => StoreError::Unavailable(format!("S3 {what}: {other}")),
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn backend(&self) -> &'static str {
        "s3"
    }

    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<PutOutcome, StoreError> {
        let digest = sha256_bytes(&body);
        if self.existing_digest(key).await?.is_some() {
            return self.compare(key, digest).await;
        }
        self.put_create(key, body, digest).await
    }

    async fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<PutOutcome, StoreError> {
        let digest = sha256_file(path).await?;
        if self.existing_digest(key).await?.is_some() {
            return self.compare(key, digest).await;
        }
        let local_error = |e: std::io::Error| crate::io_error(path.display(), &e);
        let size = tokio::fs::metadata(path).await.map_err(local_error)?.len();
        let mut file = tokio::fs::File::open(path).await.map_err(local_error)?;
        if size <= PART_SIZE as u64 {
            let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            file.read_to_end(&mut body).await.map_err(local_error)?;
            return self.put_create(key, Bytes::from(body), digest).await;
        }
        // Multipart uploads have no create-only mode; the HEAD check above stands in.
        let location = Self::location(key);
        let mut upload = self.bounded("start upload", self.inner.put_multipart(&location)).await?;
        let result: Result<(), StoreError> = async {
            loop {
                let mut part = Vec::with_capacity(PART_SIZE);
                (&mut file).take(PART_SIZE as u64).read_to_end(&mut part).await.map_err(local_error)?;
                if part.is_empty() {
                    break;
                }
                self.bounded("upload part", upload.put_part(PutPayload::from(part))).await?;
            }
            self.bounded("complete upload", upload.complete()).await.map(|_| ())
        }
        .await;
        match result {
            Ok(()) => Ok(PutOutcome::Created),
            Err(e) => {
                let _ = tokio::time::timeout(self.timeout, upload.abort()).await;
                Err(e)
            }
        }
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StoreError> {
        let location = Self::location(key);
        self.bounded("get", async { self.inner.get(&location).await?.bytes().await }).await
    }

    async fn open(&self, key: &ObjectKey) -> Result<ObjectReader, StoreError> {
        let location = Self::location(key);
        let result = self.bounded("get", self.inner.get(&location)).await?;
        let size = result.meta.size;
        let stream = result.into_stream().map_err(|e| map_error("read", e));
        Ok(ObjectReader { size, stream: Box::pin(stream) })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StoreError> {
        let meta = self.bounded("head", self.inner.head(&Self::location(key))).await?;
        Ok(ObjectMeta { key: key.clone(), size: meta.size })
    }

    async fn list(&self, prefix: &ObjectPrefix) -> Result<Vec<ObjectMeta>, StoreError> {
        // The client lists by whole path segments; the name prefix is applied here.
        let base = StorePath::from(prefix.area_path());
        let listed: Vec<object_store::ObjectMeta> =
            self.bounded("list", self.inner.list(Some(&base)).try_collect()).await?;
        let mut out: Vec<ObjectMeta> = listed
            .into_iter()
            .filter_map(|meta| {
                let key = ObjectKey::parse(meta.location.as_ref()).ok()?;
                prefix.matches(&key).then_some(ObjectMeta { key, size: meta.size })
            })
            .collect();
        out.sort_by_cached_key(|a| a.key.as_path());
        Ok(out)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        match self.bounded("delete", self.inner.delete(&Self::location(key))).await {
            Ok(()) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        // Listing a prefix that holds nothing is one cheap request that also proves the
        // bucket exists and the credentials are accepted.
        let probe = StorePath::from("_health");
        let mut listing = self.inner.list(Some(&probe));
        let first = tokio::time::timeout(self.timeout, listing.next()).await.map_err(|_| {
            StoreError::Unavailable(format!("S3 bucket {}: check timed out after {:?}", self.bucket, self.timeout))
        })?;
        match first {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(object_store::Error::NotFound { .. })) => {
                Err(StoreError::Unavailable(format!("S3 bucket {} not found", self.bucket)))
            }
            Some(Err(e)) => Err(StoreError::Unavailable(format!("S3 bucket {}: {e}", self.bucket))),
        }
    }
}
