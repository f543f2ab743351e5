//! The object store: where datasets, analytics results, models and reports live (ADR 0018).
//!
//! - [`ObjectStore`] is the port. Objects are **immutable**: [`ObjectStore::put`] creates a
//!   key once; a second put of the same key succeeds only with identical content
//!   ([`PutOutcome::AlreadyPresent`], so a retried job that re-uploads its content-addressed
//!   artifact is harmless) and fails with [`StoreError::Exists`] otherwise.
//! - Keys are typed: an [`ObjectKey`] is built from a [`FactoryId`] and an [`Area`], so every
//!   object sits under `{factory_id}/{datasets|analytics|models|reports}/…` (HLD §4) and
//!   no code path can write outside a factory's scope.
//! - Adapters: [`local::LocalStore`] (a directory, default `data_dir/objects`) and
//!   [`s3::S3Store`] (S3-compatible over the `object_store` crate), chosen by
//!   [`open`] from `object_store_url`; [`metered::Metered`] wraps either with metrics.
//! - [`health::StorageMonitor`] probes [`ObjectStore::check`] and publishes typed state
//!   changes, so callers refuse new work while storage is down (HLD §10.5).

pub mod health;
pub mod local;
pub mod metered;
pub mod s3;
mod settings;

use std::fmt;
use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use factoryops_types::FactoryId;
use futures::Stream;

pub use settings::{ObjectStoreSettings, SettingsError, open};

/// The part of a factory's space an object belongs to (the HLD's path layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Area {
    Datasets,
    Analytics,
    Models,
    Reports,
}

impl Area {
    pub const ALL: [Area; 4] = [Area::Datasets, Area::Analytics, Area::Models, Area::Reports];

    pub fn as_str(self) -> &'static str {
        match self {
            Area::Datasets => "datasets",
            Area::Analytics => "analytics",
            Area::Models => "models",
            Area::Reports => "reports",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Area::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// Longest object name below the area (S3 allows 1024 bytes for the whole key).
pub const MAX_NAME_LEN: usize = 512;

/// A validated key `{factory_id}/{area}/{name}`. `name` is one or more `/`-separated
/// segments of `[A-Za-z0-9._-]`, none empty, `.` or `..`, and none starting with `.`
/// (the local adapter keeps its temp files there).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    factory: FactoryId,
    area: Area,
    name: String,
}

impl ObjectKey {
    pub fn new(factory: &FactoryId, area: Area, name: impl Into<String>) -> Result<Self, StoreError> {
        let name = name.into();
        check_name(&name)?;
        Ok(Self { factory: factory.clone(), area, name })
    }

    /// Parses a full key as stored (`plant-1/datasets/abc.parquet`).
    pub fn parse(full: &str) -> Result<Self, StoreError> {
        let mut parts = full.splitn(3, '/');
        let (Some(factory), Some(area), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(StoreError::InvalidKey(format!("{full:?}: expected factory/area/name")));
        };
        let factory = FactoryId::parse(factory).map_err(|e| StoreError::InvalidKey(format!("{full:?}: {e}")))?;
        let area = Area::parse(area).ok_or_else(|| StoreError::InvalidKey(format!("{full:?}: unknown area")))?;
        Self::new(&factory, area, name)
    }

    pub fn factory(&self) -> &FactoryId {
        &self.factory
    }

    pub fn area(&self) -> Area {
        self.area
    }

    /// The name below the area.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full key as stored.
    pub fn as_path(&self) -> String {
        format!("{}/{}/{}", self.factory.as_str(), self.area.as_str(), self.name)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.factory.as_str(), self.area.as_str(), self.name)
    }
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let bad = |why: &str| Err(StoreError::InvalidKey(format!("{name:?}: {why}")));
    if name.is_empty() {
        return bad("empty name");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("name too long");
    }
    for segment in name.split('/') {
        if segment.is_empty() || segment.starts_with('.') {
            return bad("empty segment or segment starting with '.'");
        }
        if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_') {
            return bad("only A-Z a-z 0-9 . - _ and '/' between segments");
        }
    }
    Ok(())
}

/// What to list: one factory's area, optionally below a name prefix (whole segments or
/// not: `runs/4` matches `runs/42/result.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPrefix {
    factory: FactoryId,
    area: Area,
    name_prefix: String,
}

impl ObjectPrefix {
    pub fn area(factory: &FactoryId, area: Area) -> Self {
        Self { factory: factory.clone(), area, name_prefix: String::new() }
    }

    pub fn with_name_prefix(factory: &FactoryId, area: Area, prefix: &str) -> Result<Self, StoreError> {
        if !prefix.is_empty() {
            // The prefix must itself be a valid name start (no `..`, no odd bytes).
            check_name(prefix.trim_end_matches('/'))?;
        }
        Ok(Self { factory: factory.clone(), area, name_prefix: prefix.to_string() })
    }

    /// The directory-like part (`{factory}/{area}/`) every match lies below.
    pub fn area_path(&self) -> String {
        format!("{}/{}/", self.factory.as_str(), self.area.as_str())
    }

    pub fn full(&self) -> String {
        format!("{}{}", self.area_path(), self.name_prefix)
    }

    pub fn matches(&self, key: &ObjectKey) -> bool {
        key.factory == self.factory && key.area == self.area && key.name.starts_with(&self.name_prefix)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    pub size: u64,
}

/// How a put ended: written now, or the same bytes were already there (idempotent retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    AlreadyPresent,
}

/// A stream of an object's bytes, for files too large to hold in memory.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

/// An open object: its size (for `Content-Length`) and its bytes.
pub struct ObjectReader {
    pub size: u64,
    pub stream: ByteStream,
}

impl fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectReader").field("size", &self.size).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} not found")]
    NotFound(String),
    /// A put of an existing key with other content: stored objects are immutable.
    #[error("object {0} already exists with different content (stored objects are immutable)")]
    Exists(String),
    /// The store cannot be reached or refuses service (down, timed out, no space, denied).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("invalid object key {0}")]
    InvalidKey(String),
}

impl StoreError {
    /// Worth retrying later (the job runtime retries these with backoff).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// A short name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::NotFound(_) => "not_found",
            StoreError::Exists(_) => "exists",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::InvalidKey(_) => "invalid_key",
        }
    }
}

/// The port. Every method is bounded in time by the adapter (a store that hangs answers
/// [`StoreError::Unavailable`] after its timeout, never blocks a caller for good).
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// `local` or `s3`, for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Creates `key` with `body` (create-only; see the crate docs).
    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<PutOutcome, StoreError>;

    /// Creates `key` from a local file without reading it into memory (large datasets).
    async fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<PutOutcome, StoreError>;

    /// The whole object in memory (small objects: manifests, results, models).
    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StoreError>;

    /// The object as a stream (downloads of large files).
    async fn open(&self, key: &ObjectKey) -> Result<ObjectReader, StoreError>;

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StoreError>;

    /// Every object under `prefix`, sorted by key.
    async fn list(&self, prefix: &ObjectPrefix) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Removes `key`; removing a missing key is not an error (retention sweeps repeat).
    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError>;

    /// A cheap probe that the store answers (for the health monitor).
    async fn check(&self) -> Result<(), StoreError>;
}

/// Chunk size when comparing or hashing streamed content.
const CHUNK: usize = 64 * 1024;

/// SHA-256 of a stream, for comparing an existing object with new content.
pub(crate) async fn sha256_stream(mut stream: ByteStream) -> Result<[u8; 32], StoreError> {
    use futures::StreamExt;
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    while let Some(chunk) = stream.next().await {
        hasher.update(&chunk?);
    }
    Ok(hasher.finalize().into())
}

/// SHA-256 of a local file, read in chunks off the async threads' hot path.
pub(crate) async fn sha256_file(path: &Path) -> Result<[u8; 32], StoreError> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await.map_err(|e| io_error(path.display(), &e))?;
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).await.map_err(|e| io_error(path.display(), &e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

pub(crate) fn sha256_bytes(body: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(body).into()
}

/// A local I/O failure; missing files are [`StoreError::NotFound`], the rest make the
/// store unusable for now (disk full, permissions, I/O errors).
pub(crate) fn io_error(what: impl fmt::Display, e: &std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound(what.to_string()),
        _ => StoreError::Unavailable(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn plant() -> FactoryId {
        FactoryId::parse("plant-1").unwrap()
    }

    #[test]
    fn keys_are_scoped_by_factory_and_area() {
        let key = ObjectKey::new(&plant(), Area::Datasets, "ab12/data.parquet").unwrap();
        assert_eq!(key.as_path(), "plant-1/datasets/ab12/data.parquet");
        assert_eq!(ObjectKey::parse("plant-1/datasets/ab12/data.parquet").unwrap(), key);
        for bad in ["", "../x", "a//b", "a/../b", ".tmp", "a/.hidden", "sp ace", "a\\b", "ü"] {
            assert!(ObjectKey::new(&plant(), Area::Models, bad).is_err(), "{bad:?}");
        }
        assert!(ObjectKey::new(&plant(), Area::Models, "x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(ObjectKey::parse("plant-1/secrets/x").is_err());
        assert!(ObjectKey::parse("Plant/datasets/x").is_err());
        assert!(ObjectKey::parse("plant-1/datasets").is_err());
    }

    #[test]
    fn prefixes_match_within_one_factory_and_area() {
        let other = FactoryId::parse("plant-2").unwrap();
        let prefix = ObjectPrefix::with_name_prefix(&plant(), Area::Analytics, "runs/4").unwrap();
        assert_eq!(prefix.full(), "plant-1/analytics/runs/4");
        assert!(prefix.matches(&ObjectKey::new(&plant(), Area::Analytics, "runs/42/r.json").unwrap()));
        assert!(!prefix.matches(&ObjectKey::new(&other, Area::Analytics, "runs/42/r.json").unwrap()));
        assert!(!prefix.matches(&ObjectKey::new(&plant(), Area::Reports, "runs/42/r.json").unwrap()));
        assert!(ObjectPrefix::with_name_prefix(&plant(), Area::Analytics, "../x").is_err());
    }
}
