//! The property catalogue: every (device, property) ever seen, registered before the
//! first point of it is acknowledged, never deleted.
//!
//! The hot path is in memory: each device's known properties are cached after one DB
//! read, so a message with no new property costs a hash lookup. The cache is bounded
//! (`max_cached_properties`): past it, the least recently used devices are dropped and
//! reloaded from the database when they next send. `last_seen` is kept in a buffer and
//! written in short transactions spread over time (devices every 30 s, properties every
//! 10 min by default, and on shutdown); reads merge what is not written yet.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use factoryops_db::{Database, WriteTx};
use factoryops_tsdb::Value;
use factoryops_types::{Counting, DeviceId, FactoryId, PropertyName, Quantity, Semantics, SemanticsError};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Row};
use tokio_util::sync::CancellationToken;

use crate::payload::RejectReason;
use crate::states::{DEFAULT_MAX_STATE_LABELS, StateDictionary};
use crate::{Page, RepoError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    Number,
    Boolean,
    /// String values: state labels, stored as codes (ADR 0014).
    State,
}

impl ValueType {
    pub fn of(value: &Value) -> Self {
        match value {
            Value::Float(_) => ValueType::Number,
            Value::Bool(_) => ValueType::Boolean,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Number => "number",
            ValueType::Boolean => "boolean",
            ValueType::State => "state",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "boolean" => ValueType::Boolean,
            "state" => ValueType::State,
            _ => ValueType::Number,
        }
    }

    /// Whether a value of type `incoming` may be stored in a property registered as
    /// `self`; otherwise the rejection reason. Numbers and booleans mix as before; state
    /// labels and the others do not.
    pub fn accepts(self, incoming: ValueType) -> Result<(), RejectReason> {
        match (self, incoming) {
            (ValueType::State, ValueType::State) => Ok(()),
            (ValueType::State, _) => Err(RejectReason::NotAState),
            (_, ValueType::State) => Err(RejectReason::String),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Property {
    pub device_id: DeviceId,
    pub name: PropertyName,
    pub value_type: ValueType,
    pub unit: Option<String>,
    pub description: Option<String>,
    pub first_seen: i64,
    /// Lags by up to the flush interval.
    pub last_seen: i64,
    /// What the property measures; `None` until a person annotates it.
    pub quantity: Option<Quantity>,
    pub rollover: Option<f64>,
    pub wh_per_pulse: Option<f64>,
    pub counting: Option<Counting>,
}

impl Property {
    /// The property's semantics, when it is annotated with a quantity.
    pub fn semantics(&self) -> Option<Semantics> {
        Some(Semantics {
            quantity: self.quantity?,
            unit: self.unit.clone(),
            rollover: self.rollover,
            wh_per_pulse: self.wh_per_pulse,
            counting: self.counting,
        })
    }
}

/// A partial update: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyUpdate {
    #[serde(default, with = "double_option")]
    pub unit: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub description: Option<Option<String>>,
    /// Setting a quantity resets the parameters this update does not give (`rollover`,
    /// `wh_per_pulse`, `counting`); clearing it clears them.
    #[serde(default, with = "double_option")]
    pub quantity: Option<Option<Quantity>>,
    #[serde(default, with = "double_option")]
    pub rollover: Option<Option<f64>>,
    #[serde(default, with = "double_option")]
    pub wh_per_pulse: Option<Option<f64>>,
    #[serde(default, with = "double_option")]
    pub counting: Option<Option<Counting>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(de: D) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(de).map(Some)
    }
}

pub const MAX_UNIT_LEN: usize = 64;
pub const MAX_DESCRIPTION_LEN: usize = 1024;
const LOCK_STRIPES: usize = 64;
const NAMES_PER_STATEMENT: usize = 200;

type DeviceKey = (FactoryId, DeviceId);

/// `last_seen` times not yet written: devices (flushed often, batched many per statement)
/// and properties (flushed less often: one statement per device and timestamp).
/// Nested by factory and device: the per-message update clones no (factory, device) key
/// (ids are shared, a clone is a reference count) and reads look ids up by `&str`.
#[derive(Default)]
struct SeenBuffer {
    devices: DevicesSeen,
    properties: PropertiesSeen,
    /// The batches a flush took and is still writing (spread over up to half its
    /// interval): reads see them until they are in the database.
    flushing_devices: Option<Arc<DevicesSeen>>,
    flushing_properties: Option<Arc<PropertiesSeen>>,
}

type DevicesSeen = HashMap<FactoryId, HashMap<DeviceId, i64>>;
type PropertiesSeen = HashMap<FactoryId, HashMap<DeviceId, HashMap<PropertyName, i64>>>;

fn keep_latest(slot: &mut i64, ts: i64) {
    *slot = (*slot).max(ts);
}

/// Devices per batched `last_seen` UPDATE.
const DEVICES_PER_STATEMENT: usize = 100;

/// Statements per `last_seen` transaction (properties: one device each; devices: 100
/// devices each). SQLite has one writer: a flush of 10k devices in one transaction held
/// the write lock for most of a second, and every alert commit (rules) waited behind it.
/// Short transactions let those in between.
const STATEMENTS_PER_TRANSACTION: usize = 5;
const DEVICE_STATEMENTS_PER_TRANSACTION: usize = 1;

/// Properties cached in memory by default (≈ 100 bytes each): bounds the catalogue's
/// memory whatever the number of devices.
pub const DEFAULT_MAX_CACHED_PROPERTIES: usize = 1_000_000;

/// Each device's known properties, least recently used devices evicted past a bound.
#[derive(Default)]
struct KnownCache {
    devices: HashMap<DeviceKey, CachedDevice>,
    /// Properties over all cached devices.
    properties: usize,
    tick: u64,
}

struct CachedDevice {
    properties: HashMap<PropertyName, ValueType>,
    last_used: u64,
}

impl KnownCache {
    fn get(&mut self, key: &DeviceKey) -> Option<&HashMap<PropertyName, ValueType>> {
        self.tick += 1;
        let tick = self.tick;
        self.devices.get_mut(key).map(|d| {
            d.last_used = tick;
            &d.properties
        })
    }

    /// Replaces a device's entry; returns how many devices were evicted to stay within `max`.
    fn put(&mut self, key: DeviceKey, properties: HashMap<PropertyName, ValueType>, max: usize) -> usize {
        self.tick += 1;
        self.properties += properties.len();
        if let Some(old) = self.devices.insert(key, CachedDevice { properties, last_used: self.tick }) {
            self.properties -= old.properties.len();
        }
        self.evict_over(max)
    }

    /// Over the bound: drops the least recently used devices down to 90 % of it (in one
    /// pass, so a cache at its bound does not scan on every miss). The newest entry stays.
    fn evict_over(&mut self, max: usize) -> usize {
        if self.properties <= max || self.devices.len() <= 1 {
            return 0;
        }
        let target = max - max / 10;
        let mut by_age: Vec<(u64, usize, DeviceKey)> =
            self.devices.iter().map(|(k, d)| (d.last_used, d.properties.len(), k.clone())).collect();
        by_age.sort_unstable_by_key(|(used, _, _)| *used);
        let newest = by_age.len() - 1;
        let mut evicted = 0;
        for (_, len, key) in by_age.into_iter().take(newest) {
            if self.properties <= target {
                break;
            }
            self.devices.remove(&key);
            self.properties -= len;
            evicted += 1;
        }
        evicted
    }
}

pub struct PropertyCatalogue {
    db: Database,
    max_per_device: usize,
    max_cached_properties: AtomicUsize,
    known: Mutex<KnownCache>,
    evictions: Mutex<Counter>,
    /// Serialises registration per device (striped), so the cardinality guard is exact
    /// without making unrelated devices wait for each other.
    stripes: Vec<tokio::sync::Mutex<()>>,
    seen: Mutex<SeenBuffer>,
    /// The state labels of the factory's state properties.
    states: Arc<StateDictionary>,
}

/// Write transactions of at most `per_transaction` statements, each inside this process's
/// SQLite write turn (see [`STATEMENTS_PER_TRANSACTION`]).
struct ShortTransactions<'a> {
    db: &'a Database,
    per_transaction: usize,
    statements: usize,
    /// Holds the write turn until it ends.
    tx: Option<WriteTx>,
    /// Pause after each commit (see [`ShortTransactions::spread`]); none once `hurry` fires.
    gap: Duration,
    hurry: Option<CancellationToken>,
}

impl<'a> ShortTransactions<'a> {
    async fn begin(db: &'a Database, per_transaction: usize) -> Result<Self, RepoError> {
        let tx = db.begin_write().await?;
        Ok(Self {
            db,
            per_transaction: per_transaction.max(1),
            statements: 0,
            tx: Some(tx),
            gap: Duration::ZERO,
            hurry: None,
        })
    }

    /// Spreads about `statements` statements' transactions evenly over `over`. A `last_seen`
    /// flush of 10k devices written as fast as possible (100 transactions every 5 s, and
    /// 10k+ statements every minute for their properties) made SQLite's WAL and its
    /// checkpoints write in bursts on the disk the TSDB's WAL `fdatasync`s on, and
    /// took CPU in bursts: group commits stalled for tens of ms every few seconds
    /// (PUBACK p99 47–86 ms with 10k devices; 6.8 ms with the flushes off).
    /// Once `hurry` is cancelled (shutdown) the rest goes without pauses.
    fn spread(mut self, statements: usize, over: Duration, hurry: &CancellationToken) -> Self {
        let transactions = statements.div_ceil(self.per_transaction).max(1);
        self.gap = over / u32::try_from(transactions).unwrap_or(u32::MAX);
        self.hurry = Some(hurry.clone());
        self
    }

    /// The transaction for the next statement: a full one is committed (its turn given
    /// back, so a waiting alert commit goes next) before the next one begins. Commit
    /// first, then take a pooled connection: a transaction holding SQLite's write lock
    /// while waiting for a connection deadlocked against writers holding all of them.
    async fn next(&mut self) -> Result<&mut WriteTx, RepoError> {
        let tx = match self.tx.take() {
            Some(tx) if self.statements < self.per_transaction => tx,
            full => {
                if let Some(tx) = full {
                    tx.commit().await?;
                }
                if let Some(hurry) = self.hurry.as_ref().filter(|_| !self.gap.is_zero()) {
                    tokio::select! {
                        _ = tokio::time::sleep(self.gap) => {}
                        _ = hurry.cancelled() => self.gap = Duration::ZERO,
                    }
                }
                self.statements = 0;
                self.db.begin_write().await?
            }
        };
        self.statements += 1;
        Ok(self.tx.insert(tx))
    }

    async fn commit(self) -> Result<(), RepoError> {
        if let Some(tx) = self.tx {
            tx.commit().await?;
        }
        Ok(())
    }
}

impl PropertyCatalogue {
    pub fn new(db: Database, max_properties_per_device: usize) -> Self {
        Self {
            max_per_device: max_properties_per_device.max(1),
            max_cached_properties: AtomicUsize::new(DEFAULT_MAX_CACHED_PROPERTIES),
            known: Mutex::new(KnownCache::default()),
            evictions: Mutex::new(Counter::default()),
            stripes: (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            seen: Mutex::new(SeenBuffer::default()),
            states: Arc::new(StateDictionary::new(db.clone(), DEFAULT_MAX_STATE_LABELS)),
            db,
        }
    }

    /// [`PropertyCatalogue::new`] with a bound on the distinct state labels per (factory,
    /// property) other than the default.
    pub fn with_max_state_labels(mut self, max_state_labels: usize) -> Self {
        self.states = Arc::new(StateDictionary::new(self.db.clone(), max_state_labels));
        self
    }

    /// The state dictionary (code ↔ label of state properties).
    pub fn states(&self) -> &Arc<StateDictionary> {
        &self.states
    }

    /// Makes sure every property is registered. Returns the names refused, with the
    /// reason: new properties beyond the per-device maximum (`cardinality_limit`), values
    /// whose kind does not suit the registered property (a string for a number: `string`;
    /// a number for a state: `not_a_state`); those must not be stored. An error means
    /// nothing new was registered.
    pub async fn register<'a>(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        properties: impl Iterator<Item = (&'a PropertyName, ValueType)> + Clone,
        now_ms: i64,
    ) -> Result<Vec<(PropertyName, RejectReason)>, RepoError> {
        let key = (factory.clone(), device.clone());
        if let Some(refused) = self.check_known(&key, properties.clone()) {
            return Ok(refused);
        }
        let stripe = &self.stripes[stripe_of(&key)];
        let _guard = stripe.lock().await;
        // Under the device's stripe lock only eviction can change its cache entry, so
        // work on a copy (or a fresh load) and write the result back whole.
        let cached = self.known.lock().get(&key).cloned();
        let mut current = match cached {
            Some(current) => current,
            None => self.load(factory, device).await?,
        };
        let room = self.max_per_device.saturating_sub(current.len());
        let mut to_insert: Vec<(PropertyName, ValueType)> = Vec::new();
        let mut refused = Vec::new();
        for (name, value_type) in properties {
            if let Some(registered) = current.get(name) {
                if let Err(reason) = registered.accepts(value_type) {
                    refused.push((name.clone(), reason));
                }
                continue;
            }
            if to_insert.iter().any(|(n, _)| n == name) {
                continue;
            }
            if to_insert.len() < room {
                to_insert.push((name.clone(), value_type));
            } else {
                refused.push((name.clone(), RejectReason::CardinalityLimit));
            }
        }
        for chunk in to_insert.chunks(NAMES_PER_STATEMENT) {
            self.insert(factory, device, chunk, now_ms).await?;
        }
        current.extend(to_insert);
        let max = self.max_cached_properties.load(Ordering::Relaxed);
        let evicted = self.known.lock().put(key, current, max);
        if evicted > 0 {
            self.evictions.lock().inc_by(evicted as u64);
        }
        Ok(refused)
    }

    /// Bounds the in-memory cache of known properties (default
    /// [`DEFAULT_MAX_CACHED_PROPERTIES`]); `evictions` counts the devices dropped from it.
    pub fn configure_cache(&self, max_cached_properties: usize, evictions: Counter) {
        self.max_cached_properties.store(max_cached_properties.max(1), Ordering::Relaxed);
        *self.evictions.lock() = evictions;
    }

    /// Devices and properties currently cached.
    pub fn cached(&self) -> (usize, usize) {
        let known = self.known.lock();
        (known.devices.len(), known.properties)
    }

    /// When every property is known (cached), the ones whose value kind does not suit
    /// their registration; `None` when something must be registered or loaded.
    fn check_known<'a>(
        &self,
        key: &DeviceKey,
        properties: impl Iterator<Item = (&'a PropertyName, ValueType)>,
    ) -> Option<Vec<(PropertyName, RejectReason)>> {
        let mut known = self.known.lock();
        let names = known.get(key)?;
        let mut refused = Vec::new();
        for (name, value_type) in properties {
            if let Err(reason) = names.get(name)?.accepts(value_type) {
                refused.push((name.clone(), reason));
            }
        }
        Some(refused)
    }

    /// The value type of each of a device's properties, from the cache when the device
    /// is in it (reads use this to find state properties without a query).
    pub async fn value_types(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
    ) -> Result<HashMap<PropertyName, ValueType>, RepoError> {
        let key = (factory.clone(), device.clone());
        if let Some(known) = self.known.lock().get(&key) {
            return Ok(known.clone());
        }
        self.load(factory, device).await
    }

    async fn load(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
    ) -> Result<HashMap<PropertyName, ValueType>, RepoError> {
        let rows = sqlx::query("SELECT name, value_type FROM ingest_properties WHERE factory_id = ? AND device_id = ?")
            .bind(factory.as_str())
            .bind(device.as_str())
            .fetch_all(self.db.pool())
            .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get("name")?;
            let value_type: String = row.try_get("value_type")?;
            // Names were validated before insertion; a row that no longer parses is skipped.
            if let Ok(name) = PropertyName::parse(name) {
                out.insert(name, ValueType::parse(&value_type));
            }
        }
        Ok(out)
    }

    async fn insert(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        properties: &[(PropertyName, ValueType)],
        now_ms: i64,
    ) -> Result<(), RepoError> {
        let values = vec!["(?, ?, ?, ?, ?, ?)"; properties.len()].join(", ");
        let sql = format!(
            "{} INTO ingest_properties (factory_id, device_id, name, value_type, first_seen, last_seen) VALUES {values}",
            self.db.dialect().insert_ignore()
        );
        // Only placeholders are interpolated; values are bound.
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (name, value_type) in properties {
            query = query
                .bind(factory.as_str())
                .bind(device.as_str())
                .bind(name.as_str())
                .bind(value_type.as_str())
                .bind(now_ms)
                .bind(now_ms);
        }
        query.execute(self.db.pool()).await?;
        Ok(())
    }

    /// Notes that points of these properties were stored at `ts_ms` (buffered until the next flush).
    pub fn touch<'a>(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        names: impl Iterator<Item = &'a PropertyName>,
        ts_ms: i64,
    ) {
        let mut guard = self.seen.lock();
        let seen = &mut *guard;
        let properties = seen.properties.entry(factory.clone()).or_default().entry(device.clone()).or_default();
        for name in names {
            match properties.get_mut(name.as_str()) {
                Some(ts) => keep_latest(ts, ts_ms),
                None => {
                    properties.insert(name.clone(), ts_ms);
                }
            }
        }
        let devices = seen.devices.entry(factory.clone()).or_default();
        match devices.get_mut(device.as_str()) {
            Some(ts) => keep_latest(ts, ts_ms),
            None => {
                devices.insert(device.clone(), ts_ms);
            }
        }
    }

    /// Writes every buffered `last_seen` time (devices and properties).
    /// On failure the buffer is kept for the next attempt.
    pub async fn flush_last_seen(&self) -> Result<(), RepoError> {
        self.flush_devices_last_seen().await?;
        self.flush_properties_last_seen().await
    }

    /// Writes the devices' buffered `last_seen`, many devices per statement.
    pub async fn flush_devices_last_seen(&self) -> Result<(), RepoError> {
        self.flush_devices_last_seen_over(Duration::ZERO, &CancellationToken::new()).await
    }

    /// [`Self::flush_devices_last_seen`], its transactions spread evenly over `over` (no
    /// more pauses once `hurry` is cancelled).
    pub async fn flush_devices_last_seen_over(
        &self,
        over: Duration,
        hurry: &CancellationToken,
    ) -> Result<(), RepoError> {
        let batch = {
            let mut seen = self.seen.lock();
            if seen.devices.is_empty() {
                return Ok(());
            }
            let batch = Arc::new(std::mem::take(&mut seen.devices));
            seen.flushing_devices = Some(batch.clone());
            batch
        };
        let written = self.write_devices_seen(&batch, over, hurry).await;
        let mut seen = self.seen.lock();
        seen.flushing_devices = None;
        if let Err(e) = written {
            for (factory, devices) in batch.iter() {
                let buffered = seen.devices.entry(factory.clone()).or_default();
                for (device, ts) in devices {
                    keep_latest(buffered.entry(device.clone()).or_insert(*ts), *ts);
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// Writes the properties' buffered `last_seen`.
    pub async fn flush_properties_last_seen(&self) -> Result<(), RepoError> {
        self.flush_properties_last_seen_over(Duration::ZERO, &CancellationToken::new()).await
    }

    /// [`Self::flush_properties_last_seen`], its transactions spread evenly over `over`
    /// (no more pauses once `hurry` is cancelled).
    pub async fn flush_properties_last_seen_over(
        &self,
        over: Duration,
        hurry: &CancellationToken,
    ) -> Result<(), RepoError> {
        let batch = {
            let mut seen = self.seen.lock();
            if seen.properties.is_empty() {
                return Ok(());
            }
            let batch = Arc::new(std::mem::take(&mut seen.properties));
            seen.flushing_properties = Some(batch.clone());
            batch
        };
        let written = self.write_properties_seen(&batch, over, hurry).await;
        let mut seen = self.seen.lock();
        seen.flushing_properties = None;
        if let Err(e) = written {
            for (factory, devices) in batch.iter() {
                let buffered = seen.properties.entry(factory.clone()).or_default();
                for (device, old) in devices {
                    let entry = buffered.entry(device.clone()).or_default();
                    for (name, ts) in old {
                        keep_latest(entry.entry(name.clone()).or_insert(*ts), *ts);
                    }
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// The device's `last_seen` not yet in the database (buffered, or taken by a flush
    /// still being written): reads merge it, so a device that just sent is not shown as
    /// silent for up to a flush interval.
    pub fn pending_device_last_seen(&self, factory: &FactoryId, device: &DeviceId) -> Option<i64> {
        let seen = self.seen.lock();
        let of = |map: &DevicesSeen| map.get(factory.as_str()).and_then(|d| d.get(device.as_str())).copied();
        of(&seen.devices).max(seen.flushing_devices.as_deref().and_then(of))
    }

    /// [`Self::pending_device_last_seen`] for the device's properties.
    pub fn pending_properties_last_seen(&self, factory: &FactoryId, device: &DeviceId) -> HashMap<PropertyName, i64> {
        let seen = self.seen.lock();
        let mut out: HashMap<PropertyName, i64> = HashMap::new();
        for map in [Some(&seen.properties), seen.flushing_properties.as_deref()].into_iter().flatten() {
            if let Some(properties) = map.get(factory.as_str()).and_then(|d| d.get(device.as_str())) {
                for (name, ts) in properties {
                    keep_latest(out.entry(name.clone()).or_insert(*ts), *ts);
                }
            }
        }
        out
    }

    async fn write_devices_seen(
        &self,
        batch: &DevicesSeen,
        over: Duration,
        hurry: &CancellationToken,
    ) -> Result<(), RepoError> {
        // One statement per factory and chunk: `CASE device_id WHEN … THEN … END` is
        // portable (SQLite, MySQL) and turns 10k single-row UPDATEs into 100.
        let by_factory: Vec<(&FactoryId, Vec<(&DeviceId, i64)>)> = batch
            .iter()
            .map(|(factory, devices)| (factory, devices.iter().map(|(device, ts)| (device, *ts)).collect()))
            .collect();
        let statements = by_factory.iter().map(|(_, devices)| devices.len().div_ceil(DEVICES_PER_STATEMENT)).sum();
        let mut writes = ShortTransactions::begin(&self.db, DEVICE_STATEMENTS_PER_TRANSACTION)
            .await?
            .spread(statements, over, hurry);
        for (factory, devices) in by_factory {
            for chunk in devices.chunks(DEVICES_PER_STATEMENT) {
                let tx = writes.next().await?;
                let case = format!("CASE device_id {} END", vec!["WHEN ? THEN ?"; chunk.len()].join(" "));
                let sql = format!(
                    "UPDATE ingest_devices SET last_seen = {case} WHERE factory_id = ? AND device_id IN ({}) \
                     AND (last_seen IS NULL OR last_seen < {case})",
                    vec!["?"; chunk.len()].join(", ")
                );
                // Only placeholders are interpolated; values are bound.
                let mut query = sqlx::query(AssertSqlSafe(sql));
                for (device, ts) in chunk {
                    query = query.bind(device.as_str()).bind(*ts);
                }
                query = query.bind(factory.as_str());
                for (device, _) in chunk {
                    query = query.bind(device.as_str());
                }
                for (device, ts) in chunk {
                    query = query.bind(device.as_str()).bind(*ts);
                }
                query.execute(&mut **tx).await?;
            }
        }
        writes.commit().await
    }

    async fn write_properties_seen(
        &self,
        batch: &PropertiesSeen,
        over: Duration,
        hurry: &CancellationToken,
    ) -> Result<(), RepoError> {
        // At least one statement per device (one per timestamp and name chunk).
        let devices = batch.values().map(HashMap::len).sum();
        let mut writes =
            ShortTransactions::begin(&self.db, STATEMENTS_PER_TRANSACTION).await?.spread(devices, over, hurry);
        // A plain list: an iterator adaptor's closures held across the awaits below make
        // the future not `Send`.
        let mut each_device = Vec::with_capacity(devices);
        for (factory, devices) in batch {
            for (device, properties) in devices {
                each_device.push((factory, device, properties));
            }
        }
        for (factory, device, properties) in each_device {
            // Properties of one message share a timestamp: group by it for few statements.
            let mut by_ts: HashMap<i64, Vec<&PropertyName>> = HashMap::new();
            for (name, ts) in properties {
                by_ts.entry(*ts).or_default().push(name);
            }
            for (ts, names) in by_ts {
                for chunk in names.chunks(NAMES_PER_STATEMENT) {
                    let tx = writes.next().await?;
                    let sql = format!(
                        "UPDATE ingest_properties SET last_seen = ? WHERE factory_id = ? AND device_id = ? AND last_seen < ? AND name IN ({})",
                        vec!["?"; chunk.len()].join(", ")
                    );
                    // Only placeholders are interpolated; values are bound.
                    let mut query =
                        sqlx::query(AssertSqlSafe(sql)).bind(ts).bind(factory.as_str()).bind(device.as_str()).bind(ts);
                    for name in chunk {
                        query = query.bind(name.as_str());
                    }
                    query.execute(&mut **tx).await?;
                }
            }
        }
        writes.commit().await
    }

    /// Every property of one device, by name.
    pub async fn list_for_device(&self, factory: &FactoryId, device: &DeviceId) -> Result<Vec<Property>, RepoError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PROPERTY_COLUMNS} FROM ingest_properties WHERE factory_id = ? AND device_id = ? ORDER BY name"
        )))
        .bind(factory.as_str())
        .bind(device.as_str())
        .fetch_all(self.db.pool())
        .await?;
        let pending = self.pending_properties_last_seen(factory, device);
        rows.iter()
            .map(|row| {
                let mut property = property_from_row(row)?;
                if let Some(&ts) = pending.get(&property.name) {
                    keep_latest(&mut property.last_seen, ts);
                }
                Ok(property)
            })
            .collect()
    }

    /// The factory's catalogue across devices, ordered by (device, name), one page at a time.
    pub async fn list_for_factory(
        &self,
        factory: &FactoryId,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Property>, RepoError> {
        let limit = limit.clamp(1, 1000);
        let mut sql = format!("SELECT {PROPERTY_COLUMNS} FROM ingest_properties WHERE factory_id = ?");
        let after = match cursor {
            None => None,
            Some(c) => {
                Some(c.split_once('/').ok_or(RepoError::Invalid { field: "cursor", message: "malformed".into() })?)
            }
        };
        if after.is_some() {
            sql.push_str(" AND (device_id > ? OR (device_id = ? AND name > ?))");
        }
        sql.push_str(&format!(" ORDER BY device_id, name LIMIT {}", limit + 1));
        // Only fixed fragments and a number are interpolated; values are bound.
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(factory.as_str());
        if let Some((device, name)) = after {
            query = query.bind(device).bind(device).bind(name);
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        let mut items = rows.iter().map(property_from_row).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|p| format!("{}/{}", p.device_id, p.name))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    pub async fn get(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        name: &PropertyName,
    ) -> Result<Option<Property>, RepoError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PROPERTY_COLUMNS} FROM ingest_properties WHERE factory_id = ? AND device_id = ? AND name = ?"
        )))
        .bind(factory.as_str())
        .bind(device.as_str())
        .bind(name.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|r| property_from_row(&r)).transpose()
    }

    /// Edits unit, description and semantics; `None` when the property does not exist in
    /// this factory. A unit without a quantity is free text; with one it must be a unit of
    /// that quantity, and the quantity must suit the property's values (`state` only for
    /// state properties, the others only for numbers).
    pub async fn update(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        name: &PropertyName,
        update: PropertyUpdate,
    ) -> Result<Option<Property>, RepoError> {
        let Some(mut current) = self.get(factory, device, name).await? else {
            return Ok(None);
        };
        apply_update(&mut current, update)?;
        sqlx::query(
            "UPDATE ingest_properties SET unit = ?, description = ?, quantity = ?, rollover = ?, wh_per_pulse = ?, \
             counting = ? WHERE factory_id = ? AND device_id = ? AND name = ?",
        )
        .bind(current.unit.clone())
        .bind(current.description.clone())
        .bind(current.quantity.map(|q| q.as_str()))
        .bind(current.rollover)
        .bind(current.wh_per_pulse)
        .bind(current.counting.map(|c| c.as_str()))
        .bind(factory.as_str())
        .bind(device.as_str())
        .bind(name.as_str())
        .execute(self.db.pool())
        .await?;
        Ok(Some(current))
    }

    /// Every annotated property of a factory (those with a quantity), by device and name:
    /// what the energy computations read. One query.
    pub async fn semantics_for_factory(
        &self,
        factory: &FactoryId,
    ) -> Result<Vec<(DeviceId, PropertyName, Semantics)>, RepoError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PROPERTY_COLUMNS} FROM ingest_properties WHERE factory_id = ? AND quantity IS NOT NULL \
             ORDER BY device_id, name"
        )))
        .bind(factory.as_str())
        .fetch_all(self.db.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let property = property_from_row(row)?;
            if let Some(semantics) = property.semantics() {
                out.push((property.device_id, property.name, semantics));
            }
        }
        Ok(out)
    }
}

/// Merges an update into a property and checks the result; on error nothing is applied
/// that matters (the caller does not write).
fn apply_update(current: &mut Property, update: PropertyUpdate) -> Result<(), RepoError> {
    if let Some(unit) = update.unit {
        check_len("unit", unit.as_deref(), MAX_UNIT_LEN)?;
        current.unit = unit;
    }
    if let Some(description) = update.description {
        check_len("description", description.as_deref(), MAX_DESCRIPTION_LEN)?;
        current.description = description;
    }
    let mut errors = Vec::new();
    let mut bad = |field: &'static str, message: String| errors.push(SemanticsError { field, message });
    if let Some(quantity) = update.quantity {
        // A new quantity starts from the parameters this update gives, not the old ones
        // (an energy counter's rollover must not stick to what becomes a power property).
        current.quantity = quantity;
        current.rollover = None;
        current.wh_per_pulse = None;
        current.counting = None;
    }
    let given = [
        ("rollover", update.rollover.is_some_and(|v| v.is_some())),
        ("wh_per_pulse", update.wh_per_pulse.is_some_and(|v| v.is_some())),
        ("counting", update.counting.is_some_and(|v| v.is_some())),
    ];
    current.rollover = update.rollover.unwrap_or(current.rollover);
    current.wh_per_pulse = update.wh_per_pulse.unwrap_or(current.wh_per_pulse);
    current.counting = update.counting.unwrap_or(current.counting);
    let Some(quantity) = current.quantity else {
        for (field, set) in given {
            if set {
                bad(field, "needs a `quantity` (none is set)".into());
            }
        }
        current.rollover = None;
        current.wh_per_pulse = None;
        current.counting = None;
        return if errors.is_empty() { Ok(()) } else { Err(RepoError::InvalidFields(errors)) };
    };
    match (quantity, current.value_type) {
        (Quantity::State, ValueType::State) => {}
        (Quantity::State, ValueType::Number | ValueType::Boolean) => bad(
            "quantity",
            format!(
                "`state` is only for properties whose values are state labels (strings); `{}` has {} values",
                current.name,
                current.value_type.as_str()
            ),
        ),
        (_, ValueType::Boolean) => {
            bad("quantity", format!("`{}` has boolean values, which measure no {quantity}", current.name))
        }
        (_, ValueType::State) => bad(
            "quantity",
            format!("`{}` has state labels as values: its only quantity is `state`, not {quantity}", current.name),
        ),
        _ => {}
    }
    if quantity == Quantity::ProductionCount && current.counting.is_none() {
        current.counting = Some(Counting::Cumulative);
    }
    if let Some(semantics) = current.semantics()
        && let Err(invalid) = semantics.validate()
    {
        errors.extend(invalid);
    }
    if errors.is_empty() { Ok(()) } else { Err(RepoError::InvalidFields(errors)) }
}

/// The columns [`property_from_row`] reads.
const PROPERTY_COLUMNS: &str =
    "device_id, name, value_type, unit, description, first_seen, last_seen, quantity, rollover, wh_per_pulse, counting";

fn stripe_of(key: &DeviceKey) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % LOCK_STRIPES as u64) as usize
}

fn check_len(field: &'static str, text: Option<&str>, max: usize) -> Result<(), RepoError> {
    match text {
        Some(t) if t.chars().count() > max => {
            Err(RepoError::Invalid { field, message: format!("at most {max} characters") })
        }
        _ => Ok(()),
    }
}

fn property_from_row(row: &sqlx::any::AnyRow) -> Result<Property, RepoError> {
    let malformed = |what: String| RepoError::Db(factoryops_db::DbError::Malformed(what));
    let device: String = row.try_get("device_id")?;
    let name: String = row.try_get("name")?;
    let value_type: String = row.try_get("value_type")?;
    Ok(Property {
        device_id: DeviceId::parse(device).map_err(|e| malformed(format!("device id: {e}")))?,
        name: PropertyName::parse(name).map_err(|e| malformed(format!("property name: {e}")))?,
        value_type: ValueType::parse(&value_type),
        unit: row.try_get("unit")?,
        description: row.try_get("description")?,
        first_seen: row.try_get("first_seen")?,
        last_seen: row.try_get("last_seen")?,
        // Written only from the enums; an unknown text (a newer version's) reads as unset.
        quantity: row.try_get::<Option<String>, _>("quantity")?.as_deref().and_then(Quantity::parse),
        rollover: row.try_get("rollover")?,
        wh_per_pulse: row.try_get("wh_per_pulse")?,
        counting: row.try_get::<Option<String>, _>("counting")?.as_deref().and_then(Counting::parse),
    })
}
