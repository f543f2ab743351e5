//! The state dictionary (ADR 0014): state labels (`running`, `idle`, …) of a property are
//! stored in the time series as small integer codes; the code ↔ label mapping is kept per
//! (factory, property name) in `ingest_state_labels`, with an in-memory cache, so the
//! ingest hot path pays one hash lookup per state value.
//!
//! Codes are dense from 0 in order of first sight and never change or get reused. A new
//! label is in the database before the point that carries it is acknowledged (like a new
//! property). Bounds: `max_labels` distinct labels per (factory, property); the length of
//! a label is bounded by the payload parser.

use std::collections::HashMap;
use std::sync::Arc;

use factoryops_db::Database;
use factoryops_types::{FactoryId, PropertyName};
use parking_lot::RwLock;
use sqlx::Row;

use crate::RepoError;

/// Default bound on distinct labels per (factory, property).
pub const DEFAULT_MAX_STATE_LABELS: usize = 64;

/// The labels of one (factory, property): code = index.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Labels {
    by_code: Vec<Arc<str>>,
    by_label: HashMap<Arc<str>, u32>,
}

impl Labels {
    pub fn code(&self, label: &str) -> Option<u32> {
        self.by_label.get(label).copied()
    }

    pub fn label(&self, code: u32) -> Option<&Arc<str>> {
        self.by_code.get(code as usize)
    }

    /// The label of a stored value (codes are stored as numbers).
    pub fn label_of(&self, value: f64) -> Option<&Arc<str>> {
        if value.fract() != 0.0 || value < 0.0 || value > f64::from(u32::MAX) {
            return None;
        }
        self.label(value as u32)
    }

    pub fn len(&self) -> usize {
        self.by_code.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_code.is_empty()
    }

    /// Every label, by code.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Arc<str>)> {
        self.by_code.iter().enumerate().map(|(i, l)| (i as u32, l))
    }
}

/// What [`StateDictionary::encode`] found for a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoded {
    Code(u32),
    /// The property already has the maximum number of labels; this one is new.
    Full,
}

type Cache = HashMap<FactoryId, HashMap<PropertyName, Arc<Labels>>>;

pub struct StateDictionary {
    db: Database,
    max_labels: usize,
    /// Grows with the (factory, state property) pairs, each at most `max_labels` labels:
    /// bounded by the property catalogue's own bounds.
    cache: RwLock<Cache>,
    /// Serialises registrations in this process (rare: a label's first sight).
    register: tokio::sync::Mutex<()>,
}

impl StateDictionary {
    pub fn new(db: Database, max_labels: usize) -> Self {
        Self {
            db,
            max_labels: max_labels.max(1),
            cache: RwLock::new(HashMap::new()),
            register: tokio::sync::Mutex::new(()),
        }
    }

    pub fn max_labels(&self) -> usize {
        self.max_labels
    }

    fn cached(&self, factory: &FactoryId, property: &PropertyName) -> Option<Arc<Labels>> {
        self.cache.read().get(factory.as_str()).and_then(|p| p.get(property.as_str())).cloned()
    }

    /// The code of a label, registering it when new (before the caller acknowledges the
    /// point that carries it).
    pub async fn encode(
        &self,
        factory: &FactoryId,
        property: &PropertyName,
        label: &str,
    ) -> Result<Encoded, RepoError> {
        if let Some(code) = self.cached(factory, property).and_then(|l| l.code(label)) {
            return Ok(Encoded::Code(code));
        }
        let _turn = self.register.lock().await;
        // Another process (or an earlier waiter) may have registered it: read the database.
        let mut labels = self.reload(factory, property).await?;
        // A concurrent registration in another process can take the same next code; the
        // unique keys refuse the loser's row, which then reads again and retries.
        for _ in 0..3 {
            if let Some(code) = labels.code(label) {
                return Ok(Encoded::Code(code));
            }
            if labels.len() >= self.max_labels {
                return Ok(Encoded::Full);
            }
            let code = u32::try_from(labels.len()).unwrap_or(u32::MAX);
            let sql = format!(
                "{} INTO ingest_state_labels (factory_id, property, code, label) VALUES (?, ?, ?, ?)",
                self.db.dialect().insert_ignore()
            );
            let mut tx = self.db.begin_write().await?;
            // Only the dialect's keyword is interpolated; values are bound.
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(factory.as_str())
                .bind(property.as_str())
                .bind(i64::from(code))
                .bind(label)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            labels = self.reload(factory, property).await?;
        }
        labels.code(label).map(Encoded::Code).ok_or_else(|| {
            RepoError::Db(factoryops_db::DbError::Malformed(format!("state label of `{property}` not registered")))
        })
    }

    /// The labels of a property (empty when it has none), from the cache or the database.
    pub async fn labels(&self, factory: &FactoryId, property: &PropertyName) -> Result<Arc<Labels>, RepoError> {
        match self.cached(factory, property) {
            Some(labels) => Ok(labels),
            None => self.reload(factory, property).await,
        }
    }

    /// [`Self::labels`], read again from the database when `code` is not known yet (a
    /// label another process registered).
    pub async fn labels_with(
        &self,
        factory: &FactoryId,
        property: &PropertyName,
        code: u32,
    ) -> Result<Arc<Labels>, RepoError> {
        let labels = self.labels(factory, property).await?;
        if labels.label(code).is_some() {
            return Ok(labels);
        }
        self.reload(factory, property).await
    }

    async fn reload(&self, factory: &FactoryId, property: &PropertyName) -> Result<Arc<Labels>, RepoError> {
        let rows = sqlx::query(
            "SELECT code, label FROM ingest_state_labels WHERE factory_id = ? AND property = ? ORDER BY code",
        )
        .bind(factory.as_str())
        .bind(property.as_str())
        .fetch_all(self.db.pool())
        .await?;
        let mut labels = Labels::default();
        for row in rows {
            let code: i64 = row.try_get("code")?;
            let label: String = row.try_get("label")?;
            // Codes are dense from 0; a gap would shift every later label.
            if code != labels.by_code.len() as i64 {
                return Err(RepoError::Db(factoryops_db::DbError::Malformed(format!(
                    "state labels of `{property}`: code {code} where {} was expected",
                    labels.by_code.len()
                ))));
            }
            let label: Arc<str> = label.into();
            labels.by_label.insert(label.clone(), code as u32);
            labels.by_code.push(label);
        }
        let labels = Arc::new(labels);
        self.cache.write().entry(factory.clone()).or_default().insert(property.clone(), labels.clone());
        Ok(labels)
    }
}
