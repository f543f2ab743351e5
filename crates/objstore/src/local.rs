//! The local-directory adapter: `{root}/{factory}/{area}/{name}`.
//!
//! A put writes a temp file under `{root}/.tmp`, fsyncs it, and then *hard-links* it to
//! its final name: the link either creates the name atomically or fails because it
//! exists, so a reader never sees a half-written object and a concurrent second writer
//! can never replace the first one's content (a rename would silently overwrite). The
//! directory is fsynced after the link so the new name survives a power loss.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::{
    ObjectKey, ObjectMeta, ObjectPrefix, ObjectReader, ObjectStore, PutOutcome, StoreError, io_error, sha256_bytes,
    sha256_file,
};

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

const TMP_DIR: &str = ".tmp";

impl LocalStore {
    /// A store rooted at `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &ObjectKey) -> PathBuf {
        // Keys are validated (no `..`, no absolute parts), so joining cannot escape the root.
        self.root.join(key.as_path())
    }

    async fn same_content(&self, key: &ObjectKey, new_digest: [u8; 32]) -> Result<PutOutcome, StoreError> {
        let existing = sha256_file(&self.path_of(key)).await?;
        if existing == new_digest { Ok(PutOutcome::AlreadyPresent) } else { Err(StoreError::Exists(key.to_string())) }
    }

    /// Links the fsynced temp file to the key's path; `false` when the name already exists.
    async fn publish(&self, key: &ObjectKey, tmp: PathBuf) -> Result<bool, StoreError> {
        let target = self.path_of(key);
        let shown = key.to_string();
        blocking(move || {
            let result = (|| -> std::io::Result<bool> {
                let parent = target.parent().unwrap_or(Path::new("."));
                std::fs::create_dir_all(parent)?;
                match std::fs::hard_link(&tmp, &target) {
                    Ok(()) => {
                        std::fs::File::open(parent)?.sync_all()?;
                        Ok(true)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(e),
                }
            })();
            let _ = std::fs::remove_file(&tmp);
            result.map_err(|e| io_error(&shown, &e))
        })
        .await
    }

    fn tmp_path(&self) -> PathBuf {
        self.root.join(TMP_DIR).join(factoryops_types::new_id())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Unavailable(format!("local store task: {e}")))?
}

/// Writes `fill`'s output to a new temp file and fsyncs it.
fn write_tmp(tmp: &Path, fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>) -> std::io::Result<()> {
    if let Some(dir) = tmp.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(tmp)?;
        fill(&mut file)?;
        file.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<PutOutcome, StoreError> {
        let digest = sha256_bytes(&body);
        if tokio::fs::try_exists(self.path_of(key)).await.unwrap_or(false) {
            return self.same_content(key, digest).await;
        }
        let tmp = self.tmp_path();
        let tmp_for_write = tmp.clone();
        blocking(move || {
            write_tmp(&tmp_for_write, |f| std::io::Write::write_all(f, &body)).map_err(|e| io_error("temp file", &e))
        })
        .await?;
        if self.publish(key, tmp).await? { Ok(PutOutcome::Created) } else { self.same_content(key, digest).await }
    }

    async fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<PutOutcome, StoreError> {
        let digest = sha256_file(path).await?;
        if tokio::fs::try_exists(self.path_of(key)).await.unwrap_or(false) {
            return self.same_content(key, digest).await;
        }
        let tmp = self.tmp_path();
        let (source, tmp_for_write) = (path.to_path_buf(), tmp.clone());
        blocking(move || {
            write_tmp(&tmp_for_write, |f| {
                let mut input = std::fs::File::open(&source)?;
                std::io::copy(&mut input, f).map(|_| ())
            })
            .map_err(|e| io_error(source.display(), &e))
        })
        .await?;
        if self.publish(key, tmp).await? { Ok(PutOutcome::Created) } else { self.same_content(key, digest).await }
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StoreError> {
        tokio::fs::read(self.path_of(key)).await.map(Bytes::from).map_err(|e| io_error(key, &e))
    }

    async fn open(&self, key: &ObjectKey) -> Result<ObjectReader, StoreError> {
        let file = tokio::fs::File::open(self.path_of(key)).await.map_err(|e| io_error(key, &e))?;
        let size = file.metadata().await.map_err(|e| io_error(key, &e))?.len();
        let shown = key.to_string();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, crate::CHUNK)
            .map(move |chunk| chunk.map_err(|e| io_error(&shown, &e)));
        Ok(ObjectReader { size, stream: Box::pin(stream) })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StoreError> {
        let meta = tokio::fs::metadata(self.path_of(key)).await.map_err(|e| io_error(key, &e))?;
        if !meta.is_file() {
            return Err(StoreError::NotFound(key.to_string()));
        }
        Ok(ObjectMeta { key: key.clone(), size: meta.len() })
    }

    async fn list(&self, prefix: &ObjectPrefix) -> Result<Vec<ObjectMeta>, StoreError> {
        let base = self.root.join(prefix.area_path());
        let area_path = prefix.area_path();
        let prefix = prefix.clone();
        blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![(base, String::new())];
            while let Some((dir, rel)) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error(dir.display(), &e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| io_error(dir.display(), &e))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let rel_name = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                    let kind = entry.file_type().map_err(|e| io_error(&rel_name, &e))?;
                    if kind.is_dir() {
                        stack.push((entry.path(), rel_name));
                    } else if kind.is_file() {
                        // Files that are not valid keys (stray files) are not objects.
                        let Ok(key) = ObjectKey::parse(&format!("{area_path}{rel_name}")) else { continue };
                        if prefix.matches(&key) {
                            let size = entry.metadata().map_err(|e| io_error(&key, &e))?.len();
                            out.push(ObjectMeta { key, size });
                        }
                    }
                }
            }
            out.sort_by_cached_key(|a| a.key.as_path());
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path_of(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(key, &e)),
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        // A write proves more than a stat: a read-only or full disk fails here.
        let probe = self.tmp_path();
        blocking(move || {
            write_tmp(&probe, |f| std::io::Write::write_all(f, b"probe")).map_err(|e| io_error("probe file", &e))?;
            std::fs::remove_file(&probe).map_err(|e| io_error("probe file", &e))
        })
        .await
    }
}
