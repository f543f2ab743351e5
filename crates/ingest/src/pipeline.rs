//! The ingest pipeline shared by MQTT and HTTP: parse → register new properties →
//! durable write (group commit) → `telemetry` event → acknowledge.
//!
//! Group commit: every message's points go through one bounded channel to a single
//! writer task, which drains whatever is queued into one `TelemetryStore::write` per
//! factory, publishes the written messages as one typed `telemetry` batch, then tells
//! each caller, who acknowledges. A full channel makes callers wait (back-pressure, never
//! a drop); a slow durable bus subscriber (rules) slows the writer the same way.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use factoryops_platform::bus::{Event, EventBus, TelemetryBatch, TelemetryMessage, topics};
use factoryops_tsdb::{Point, TelemetryStore, TsdbError, Value};
use factoryops_types::{Clock, DeviceId, FactoryId, PropertyName, new_id};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::IngestError;
use crate::catalogue::{PropertyCatalogue, ValueType};
use crate::metrics::IngestMetrics;
use crate::payload::{MessageRejection, PayloadLimits, RejectReason, RejectedProperty, parse_payload};
use crate::stamps::Stamps;
use crate::states::Encoded;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestConfig {
    pub limits: PayloadLimits,
    /// Cardinality guard: distinct properties one device may ever register.
    pub max_properties_per_device: usize,
    /// Messages waiting for the writer; beyond it callers wait.
    pub queue_capacity: usize,
    /// Upper bound of points in one group-committed write.
    pub max_batch_points: usize,
    /// Length of each device's "last errors" list.
    pub last_errors_per_device: usize,
    /// How often buffered device `last_seen` times are written (each flush spread over
    /// half of it). With 10k devices, 10k rows every 5 s kept SQLite and the disk busy
    /// enough to put 2–3 % of PUBACKs over 20 ms; every 30 s they are ≤ 0.1 %.
    pub last_seen_flush_ms: u64,
    /// How often buffered property `last_seen` times are written (one statement per
    /// device and timestamp, spread over half the interval: with 10k devices, every 5 s
    /// was a quarter of the server's CPU, every 60 s still a PUBACK tail).
    pub property_last_seen_flush_ms: u64,
    /// Bound of the in-memory cache of each device's known properties (total properties
    /// over all cached devices); least recently used devices are reloaded from the DB.
    pub max_cached_properties: usize,
    /// Devices whose "last errors" list is kept in memory; the least recently updated
    /// lists are dropped beyond it.
    pub max_error_lists: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            limits: PayloadLimits::default(),
            max_properties_per_device: 1_000,
            queue_capacity: 4_096,
            max_batch_points: 50_000,
            last_errors_per_device: 20,
            last_seen_flush_ms: 30_000,
            property_last_seen_flush_ms: 600_000,
            max_cached_properties: crate::catalogue::DEFAULT_MAX_CACHED_PROPERTIES,
            max_error_lists: 10_000,
        }
    }
}

/// What happened to a message that did not fail internally. Both variants may be
/// acknowledged: the first is durable, the second can never succeed on redelivery.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestOutcome {
    Stored(StoredSummary),
    MessageRejected(MessageRejection),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredSummary {
    /// Points durably written (possibly 0 when every property was rejected).
    pub points: usize,
    pub ts_ms: i64,
    pub rejected: Vec<RejectedProperty>,
}

/// One entry of a device's "last errors" list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestErrorRecord {
    pub at_ms: i64,
    /// A stable label: a [`RejectReason`] or a [`MessageRejection`] label.
    pub reason: String,
    /// The property concerned, for property rejections.
    pub property: Option<String>,
    pub detail: String,
}

type Done = oneshot::Sender<Result<(), String>>;

/// One message, or one HTTP batch: its points are written in one store write, so a batch
/// is stored whole or not at all.
struct WriteRequest {
    factory: FactoryId,
    points: Vec<Point>,
    /// What the `telemetry` event says about these messages once they are durable.
    messages: Vec<TelemetryMessage>,
    done: Done,
}

type DeviceKey = (FactoryId, DeviceId);

struct Inner {
    config: IngestConfig,
    catalogue: Arc<PropertyCatalogue>,
    /// Asked how far back a factory's points may still be written (the backfill window).
    store: Arc<dyn TelemetryStore>,
    bus: Arc<dyn EventBus>,
    metrics: IngestMetrics,
    clock: Arc<dyn Clock>,
    /// `None` once shutdown began: new messages are refused, queued ones finish.
    tx: RwLock<Option<mpsc::Sender<WriteRequest>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    stop_flusher: CancellationToken,
    last_errors: Mutex<HashMap<DeviceKey, VecDeque<IngestErrorRecord>>>,
    last_health_ms: AtomicI64,
    /// Unique server-given timestamps per device, shared by MQTT and HTTP (ADR 0009).
    stamps: Stamps,
}

/// The ingest pipeline; cheap to clone.
#[derive(Clone)]
pub struct Ingestor {
    inner: Arc<Inner>,
}

/// A message past parsing and registration, its points queued for the durable write.
/// [`Submitted::wait`] resolves once they are durable. Submitting in order and waiting
/// in order keeps a connection's messages ordered while the writes of many messages
/// (and connections) are batched together.
pub struct Submitted {
    ingestor: Ingestor,
    factory: FactoryId,
    device: DeviceId,
    state: SubmitState,
}

enum SubmitState {
    Rejected(MessageRejection),
    Pending {
        done: Option<oneshot::Receiver<Result<(), String>>>,
        summary: StoredSummary,
        received_at_ms: i64,
    },
    /// The outcome was handed out.
    Finished,
}

/// A message past parsing, registration and stamping, not yet queued.
enum Prepared {
    Rejected(MessageRejection),
    Ready {
        points: Vec<Point>,
        /// `None` when no point is left to write.
        message: Option<TelemetryMessage>,
        summary: StoredSummary,
    },
}

const HEALTH_EVENT_INTERVAL_MS: i64 = 10_000;

impl Ingestor {
    /// Starts the writer and the `last_seen` flusher on the current tokio runtime.
    pub fn start(
        config: IngestConfig,
        catalogue: Arc<PropertyCatalogue>,
        store: Arc<dyn TelemetryStore>,
        bus: Arc<dyn EventBus>,
        metrics: IngestMetrics,
        clock: Arc<dyn Clock>,
    ) -> Self {
        catalogue.configure_cache(config.max_cached_properties, metrics.property_cache_evictions.clone());
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let writer = tokio::spawn(writer_loop(
            rx,
            Writer {
                store: store.clone(),
                bus: bus.clone(),
                catalogue: catalogue.clone(),
                clock: clock.clone(),
                max_batch_points: config.max_batch_points.max(1),
                metrics: metrics.clone(),
            },
        ));
        let started_ms = clock.now_ms();
        let stop_flusher = CancellationToken::new();
        let flusher = tokio::spawn(flusher_loop(
            catalogue.clone(),
            Duration::from_millis(config.last_seen_flush_ms.max(10)),
            Duration::from_millis(config.property_last_seen_flush_ms.max(10)),
            stop_flusher.clone(),
        ));
        let stamps = Stamps::new(started_ms, metrics.stamp_waits.clone(), metrics.stamp_clock_steps.clone());
        Self {
            inner: Arc::new(Inner {
                config,
                catalogue,
                store,
                bus,
                metrics,
                clock,
                tx: RwLock::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                flusher: Mutex::new(Some(flusher)),
                stop_flusher,
                last_errors: Mutex::new(HashMap::new()),
                last_health_ms: AtomicI64::new(i64::MIN),
                stamps,
            }),
        }
    }

    pub fn catalogue(&self) -> &Arc<PropertyCatalogue> {
        &self.inner.catalogue
    }

    pub fn config(&self) -> &IngestConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &IngestMetrics {
        &self.inner.metrics
    }

    /// Ingests one message of an authenticated device and returns once its points are
    /// durable. `Err` means nothing is acknowledged (the sender should retry).
    pub async fn ingest(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        payload: &[u8],
        received_at_ms: i64,
    ) -> Result<IngestOutcome, IngestError> {
        self.submit(factory, device, payload, received_at_ms).await?.wait().await
    }

    /// Parses, registers new properties and queues the points; see [`Submitted`].
    /// Waits while the write queue is full.
    pub async fn submit(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        payload: &[u8],
        received_at_ms: i64,
    ) -> Result<Submitted, IngestError> {
        self.submit_with(factory, device, payload, received_at_ms, &mut SchemaMemo::default()).await
    }

    /// [`Ingestor::submit`] for a caller that sees the same device's messages one after
    /// another (an MQTT connection): `memo` remembers which set of property names is
    /// already registered, so the usual message (same properties as the last) skips the
    /// catalogue.
    pub async fn submit_with(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        payload: &[u8],
        received_at_ms: i64,
        memo: &mut SchemaMemo,
    ) -> Result<Submitted, IngestError> {
        let submitted =
            |state| Submitted { ingestor: self.clone(), factory: factory.clone(), device: device.clone(), state };
        let (points, message, summary) = match self.prepare(factory, device, payload, received_at_ms, memo).await? {
            Prepared::Rejected(rejection) => return Ok(submitted(SubmitState::Rejected(rejection))),
            Prepared::Ready { points, message, summary } => (points, message, summary),
        };
        let done = match message {
            None => None,
            Some(message) => Some(self.queue(factory, points, vec![message]).await?),
        };
        Ok(submitted(SubmitState::Pending { done, summary, received_at_ms }))
    }

    /// HTTP ingestion of a batch as one unit: every message is parsed, its new properties
    /// registered and its points stamped first; then all points go to the store in one
    /// write, so the batch is stored whole or not at all (`Err`: nothing acknowledged).
    /// Returns once durable, one outcome per message in order; a message rejected whole
    /// (bad JSON, not an object) is only that message's outcome.
    pub async fn ingest_batch(
        &self,
        factory: &FactoryId,
        messages: &[(DeviceId, Vec<u8>)],
        received_at_ms: i64,
    ) -> Result<Vec<IngestOutcome>, IngestError> {
        let mut memos: HashMap<DeviceId, SchemaMemo> = HashMap::new();
        let mut prepared = Vec::with_capacity(messages.len());
        for (device, payload) in messages {
            let memo = memos.entry(device.clone()).or_default();
            prepared.push(self.prepare(factory, device, payload, received_at_ms, memo).await?);
        }
        let mut points = Vec::new();
        let mut events = Vec::new();
        for entry in &mut prepared {
            if let Prepared::Ready { points: own, message, .. } = entry {
                points.append(own);
                events.extend(message.take());
            }
        }
        if !events.is_empty() {
            let done = self.queue(factory, points, events).await?;
            let result = done.await.unwrap_or_else(|_| Err("writer stopped".into()));
            if let Err(e) = result {
                IngestMetrics::reason(&self.inner.metrics.failures, "store");
                tracing::error!(factory_id = %factory, messages = messages.len(), error = %e, "telemetry batch write failed; nothing acknowledged");
                return Err(IngestError::Store(e));
            }
        }
        Ok(prepared
            .into_iter()
            .zip(messages)
            .map(|(entry, (device, _))| match entry {
                Prepared::Rejected(rejection) => IngestOutcome::MessageRejected(rejection),
                Prepared::Ready { summary, .. } => self.stored(factory, device, summary, received_at_ms),
            })
            .collect())
    }

    /// Parses, registers new properties and stamps one message; nothing is queued yet.
    async fn prepare(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        payload: &[u8],
        received_at_ms: i64,
        memo: &mut SchemaMemo,
    ) -> Result<Prepared, IngestError> {
        let mut parsed = match parse_payload(payload, received_at_ms, &self.limits_for(factory)) {
            Ok(parsed) => parsed,
            Err(rejection) => {
                IngestMetrics::reason(&self.inner.metrics.rejected_messages, rejection.as_str());
                self.record_errors(
                    factory,
                    device,
                    [IngestErrorRecord {
                        at_ms: received_at_ms,
                        reason: rejection.as_str().into(),
                        property: None,
                        detail: rejection.to_string(),
                    }],
                );
                return Ok(Prepared::Rejected(rejection));
            }
        };
        let schema = SchemaMemo::fingerprint(&parsed.values, &parsed.states);
        let refused = if memo.known == Some(schema) {
            Ok(Vec::new())
        } else {
            // Boxed: registration runs database queries, whose large future would otherwise
            // size every connection's task (10k of them) for the rare first message.
            Box::pin(
                self.inner.catalogue.register(
                    factory,
                    device,
                    parsed
                        .values
                        .iter()
                        .map(|(n, v)| (n, ValueType::of(v)))
                        .chain(parsed.states.iter().map(|(n, _)| (n, ValueType::State))),
                    received_at_ms,
                ),
            )
            .await
        };
        let refused = match refused {
            Ok(refused) => {
                // Properties are never deleted: once registered, this set stays known.
                memo.known = refused.is_empty().then_some(schema);
                refused
            }
            Err(e) => {
                IngestMetrics::reason(&self.inner.metrics.failures, "registration");
                tracing::error!(factory_id = %factory, device_id = %device, error = %e, "property registration failed; message not acknowledged");
                self.health_event(format!("property registration failed: {e}"));
                return Err(IngestError::Registration(e));
            }
        };
        if !refused.is_empty() {
            let is_refused = |name: &PropertyName| refused.iter().any(|(n, _)| n == name);
            parsed.values.retain(|(name, _)| !is_refused(name));
            parsed.states.retain(|(name, _)| !is_refused(name));
            parsed.rejected.extend(
                refused.into_iter().map(|(name, reason)| RejectedProperty { name: name.into_string(), reason }),
            );
        }
        // State labels become their codes (new labels registered before the ack).
        let mut labels = Vec::new();
        if !parsed.states.is_empty() {
            let (values, rejected) = (&mut parsed.values, &mut parsed.rejected);
            for (name, label) in std::mem::take(&mut parsed.states) {
                match Box::pin(self.inner.catalogue.states().encode(factory, &name, &label)).await {
                    Ok(Encoded::Code(code)) => {
                        values.push((name.clone(), Value::Float(f64::from(code))));
                        labels.push((name, label));
                    }
                    Ok(Encoded::Full) => rejected
                        .push(RejectedProperty { name: name.into_string(), reason: RejectReason::StateCardinality }),
                    Err(e) => {
                        IngestMetrics::reason(&self.inner.metrics.failures, "registration");
                        tracing::error!(factory_id = %factory, device_id = %device, error = %e, "state label registration failed; message not acknowledged");
                        self.health_event(format!("state label registration failed: {e}"));
                        return Err(IngestError::Registration(e));
                    }
                }
            }
        }
        if !parsed.device_ts && !parsed.values.is_empty() {
            // The receive time could collide with another message of the device (another
            // connection, the same millisecond): a unique stamp, waiting if the device is
            // faster than the clock (ADR 0009).
            parsed.ts_ms = self.inner.stamps.next(factory, device, &*self.inner.clock).await;
        }
        let points: Vec<Point> = parsed
            .values
            .iter()
            .map(|(property, value)| Point {
                device: device.clone(),
                property: property.clone(),
                ts_ms: parsed.ts_ms,
                value: *value,
            })
            .collect();
        let summary = StoredSummary { points: parsed.values.len(), ts_ms: parsed.ts_ms, rejected: parsed.rejected };
        let message = (!points.is_empty()).then(|| TelemetryMessage {
            device_id: device.clone(),
            ts_ms: parsed.ts_ms,
            key: event_key(factory, device, parsed.ts_ms, payload),
            values: parsed.values,
            labels,
        });
        Ok(Prepared::Ready { points, message, summary })
    }

    /// Hands points to the writer (waiting while its queue is full); the receiver says
    /// when they are durable.
    async fn queue(
        &self,
        factory: &FactoryId,
        points: Vec<Point>,
        messages: Vec<TelemetryMessage>,
    ) -> Result<oneshot::Receiver<Result<(), String>>, IngestError> {
        let tx = self.inner.tx.read().clone().ok_or(IngestError::ShuttingDown)?;
        let (done_tx, done_rx) = oneshot::channel();
        tx.send(WriteRequest { factory: factory.clone(), points, messages, done: done_tx })
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        Ok(done_rx)
    }

    /// The payload limits for one factory's messages: the configured backfill window,
    /// lowered to what the store keeps as raw data for that factory (ADR 0010).
    fn limits_for(&self, factory: &FactoryId) -> PayloadLimits {
        let mut limits = self.inner.config.limits;
        if let Some(horizon) = self.inner.store.backfill_horizon(factory) {
            let horizon = i64::try_from(horizon.as_millis()).unwrap_or(i64::MAX);
            limits.max_backfill_ms = Some(limits.max_backfill_ms.map_or(horizon, |b| b.min(horizon)));
        }
        limits
    }

    /// The device's most recent ingestion problems, newest first.
    pub fn last_errors(&self, factory: &FactoryId, device: &DeviceId) -> Vec<IngestErrorRecord> {
        self.inner
            .last_errors
            .lock()
            .get(&(factory.clone(), device.clone()))
            .map(|list| list.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// Stops taking messages, lets queued writes finish, flushes `last_seen`.
    pub async fn shutdown(&self) {
        self.inner.tx.write().take();
        let writer = self.inner.writer.lock().take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        self.inner.stop_flusher.cancel();
        let flusher = self.inner.flusher.lock().take();
        if let Some(flusher) = flusher {
            let _ = flusher.await;
        }
    }

    fn record_errors(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        records: impl IntoIterator<Item = IngestErrorRecord>,
    ) {
        let cap = self.inner.config.last_errors_per_device.max(1);
        let mut all = self.inner.last_errors.lock();
        let key = (factory.clone(), device.clone());
        let max_lists = self.inner.config.max_error_lists.max(1);
        if all.len() >= max_lists && !all.contains_key(&key) {
            // Bounded memory: drop the lists updated longest ago, 10 % at a time.
            let mut by_age: Vec<(i64, DeviceKey)> =
                all.iter().map(|(k, list)| (list.back().map_or(i64::MIN, |r| r.at_ms), k.clone())).collect();
            let excess = all.len() + 1 - (max_lists - max_lists / 10).max(1);
            let nth = excess.min(by_age.len()) - 1;
            by_age.select_nth_unstable_by_key(nth, |(at, _)| *at);
            for (_, old) in by_age.into_iter().take(excess) {
                all.remove(&old);
            }
        }
        let list = all.entry(key).or_default();
        for record in records {
            if list.len() >= cap {
                list.pop_front();
            }
            list.push_back(record);
        }
    }

    /// Counts a durable message and records what was rejected inside it.
    fn stored(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        summary: StoredSummary,
        received_at_ms: i64,
    ) -> IngestOutcome {
        let inner = &self.inner;
        inner.metrics.messages.inc();
        inner.metrics.points.inc_by(summary.points as u64);
        for r in &summary.rejected {
            IngestMetrics::reason(&inner.metrics.rejected_properties, r.reason.as_str());
        }
        if !summary.rejected.is_empty() {
            let records: Vec<IngestErrorRecord> = summary
                .rejected
                .iter()
                .map(|r| IngestErrorRecord {
                    at_ms: received_at_ms,
                    reason: r.reason.as_str().into(),
                    property: Some(r.name.clone()),
                    detail: format!("property rejected: {}", r.reason.as_str()),
                })
                .collect();
            self.record_errors(factory, device, records);
        }
        IngestOutcome::Stored(summary)
    }

    /// Tells operators that ingestion is degraded, at most once per interval, without
    /// ever making the message path wait for the bus.
    fn health_event(&self, detail: String) {
        let now = self.inner.clock.now_ms();
        let last = self.inner.last_health_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < HEALTH_EVENT_INTERVAL_MS
            || self.inner.last_health_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        let bus = self.inner.bus.clone();
        let event = Event {
            topic: topics::PLATFORM_HEALTH.into(),
            factory_id: None,
            key: new_id(),
            at_ms: now,
            payload: serde_json::json!({ "component": "ingest", "status": "degraded", "detail": detail }),
        };
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(5), bus.publish(event)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot publish health event"),
                Err(_) => tracing::warn!("health event publish timed out"),
            }
        });
    }
}

impl Submitted {
    /// Waits until the points are durable and their `telemetry` event is published.
    pub async fn wait(mut self) -> Result<IngestOutcome, IngestError> {
        std::future::poll_fn(|cx| self.poll_outcome(cx)).await
    }

    /// [`Submitted::wait`] without consuming the submission, so one task can keep a queue
    /// of them (the MQTT connection polls the oldest). Ready once; polling again after
    /// `Ready` is a caller bug and answers `ShuttingDown`.
    pub fn poll_outcome(&mut self, cx: &mut Context<'_>) -> Poll<Result<IngestOutcome, IngestError>> {
        if let SubmitState::Pending { done: Some(done), .. } = &mut self.state {
            let result = std::task::ready!(Pin::new(done).poll(cx)).unwrap_or_else(|_| Err("writer stopped".into()));
            if let Err(e) = result {
                self.state = SubmitState::Finished;
                IngestMetrics::reason(&self.ingestor.inner.metrics.failures, "store");
                tracing::error!(factory_id = %self.factory, device_id = %self.device, error = %e, "telemetry write failed; message not acknowledged");
                return Poll::Ready(Err(IngestError::Store(e)));
            }
        }
        Poll::Ready(match std::mem::replace(&mut self.state, SubmitState::Finished) {
            SubmitState::Rejected(rejection) => Ok(IngestOutcome::MessageRejected(rejection)),
            SubmitState::Pending { summary, received_at_ms, .. } => {
                Ok(self.ingestor.stored(&self.factory, &self.device, summary, received_at_ms))
            }
            SubmitState::Finished => Err(IngestError::ShuttingDown),
        })
    }
}

/// The property names of a device's messages already known to be registered.
#[derive(Debug, Default)]
pub struct SchemaMemo {
    known: Option<u64>,
}

impl SchemaMemo {
    /// The names of a message; state (string) values add a marker, so a message without
    /// strings hashes exactly as before and a name that changes kind misses the memo (the
    /// catalogue then checks the kind).
    fn fingerprint(values: &[(PropertyName, Value)], states: &[(PropertyName, String)]) -> u64 {
        use std::hash::{Hash, Hasher};
        // Fixed keys: a fingerprint only ever meets fingerprints of the same connection.
        let mut h = std::hash::DefaultHasher::new();
        for (name, _) in values {
            name.as_str().hash(&mut h);
        }
        for (name, _) in states {
            0xff_u8.hash(&mut h);
            name.as_str().hash(&mut h);
        }
        h.finish()
    }
}

/// A stable identity for the event of one message, so a redelivery with the same device
/// timestamp produces the same key and consumers can de-duplicate it.
fn event_key(factory: &FactoryId, device: &DeviceId, ts_ms: i64, payload: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(factory.as_str().as_bytes());
    h.update([0]);
    h.update(device.as_str().as_bytes());
    h.update([0]);
    h.update(ts_ms.to_be_bytes());
    h.update(payload);
    let digest: [u8; 32] = h.finalize().into();
    crate::devices::hex(&digest[..16])
}

/// What the writer task needs besides its queue.
struct Writer {
    store: Arc<dyn TelemetryStore>,
    bus: Arc<dyn EventBus>,
    catalogue: Arc<PropertyCatalogue>,
    clock: Arc<dyn Clock>,
    max_batch_points: usize,
    metrics: IngestMetrics,
}

async fn writer_loop(mut rx: mpsc::Receiver<WriteRequest>, writer: Writer) {
    while let Some(first) = rx.recv().await {
        let mut total = first.points.len();
        let mut batch = vec![first];
        while total < writer.max_batch_points {
            match rx.try_recv() {
                Ok(request) => {
                    total += request.points.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        writer.metrics.batch_points.observe(total as f64);
        // One write per factory, in first-seen order, so the port's scoping holds.
        let mut groups: Vec<Group> = Vec::new();
        for request in batch {
            let index = match groups.iter().position(|g| g.factory == request.factory) {
                Some(i) => i,
                None => {
                    groups.push(Group { factory: request.factory.clone(), points: Vec::new(), waiters: Vec::new() });
                    groups.len() - 1
                }
            };
            let group = &mut groups[index];
            let start = group.points.len();
            group.points.extend(request.points);
            group.waiters.push(Waiter {
                range: start..group.points.len(),
                messages: request.messages,
                done: request.done,
            });
        }
        for group in groups {
            writer.write_group(group).await;
        }
    }
}

impl Writer {
    /// Writes one factory's messages, publishes those that are durable, then answers
    /// every waiter (so the `telemetry` event always precedes the acknowledgement).
    async fn write_group(&self, group: Group) {
        let Group { factory, points, waiters } = group;
        let started = std::time::Instant::now();
        let written = self.store.write(&factory, &points).await;
        self.metrics.write_seconds.observe(started.elapsed().as_secs_f64());
        let mut results: Vec<(Waiter, Result<(), String>)> = match written {
            Err(TsdbError::InvalidPoint { .. }) if waiters.len() > 1 => {
                // One message's bad point must not fail its neighbours: retry each alone.
                let mut results = Vec::with_capacity(waiters.len());
                for waiter in waiters {
                    let result = self.store.write(&factory, &points[waiter.range.clone()]).await;
                    results.push((waiter, result.map_err(|e| e.to_string())));
                }
                results
            }
            result => {
                let result = result.map_err(|e| e.to_string());
                waiters.into_iter().map(|waiter| (waiter, result.clone())).collect()
            }
        };
        let mut messages = Vec::with_capacity(results.len());
        for (waiter, result) in &mut results {
            if result.is_err() {
                continue;
            }
            for message in std::mem::take(&mut waiter.messages) {
                self.catalogue.touch(
                    &factory,
                    &message.device_id,
                    message.values.iter().map(|(n, _)| n),
                    message.ts_ms,
                );
                messages.push(message);
            }
        }
        if !messages.is_empty() {
            let batch = TelemetryBatch { factory_id: factory.clone(), at_ms: self.clock.now_ms(), messages };
            // The points are durable; a bus failure must not make the devices resend them.
            if let Err(e) = self.bus.publish_telemetry(batch).await {
                tracing::warn!(factory_id = %factory, error = %e, "telemetry event not published");
            }
        }
        for (waiter, result) in results {
            // A caller that went away (connection closed) simply never acks.
            let _ = waiter.done.send(result);
        }
    }
}

struct Waiter {
    /// This message's slice of the group's points.
    range: std::ops::Range<usize>,
    /// Taken for the `telemetry` batch once durable.
    messages: Vec<TelemetryMessage>,
    done: Done,
}

struct Group {
    factory: FactoryId,
    points: Vec<Point>,
    waiters: Vec<Waiter>,
}

async fn flusher_loop(
    catalogue: Arc<PropertyCatalogue>,
    every: Duration,
    properties_every: Duration,
    stop: CancellationToken,
) {
    // Each flush is spread over half its interval (a burst of writes stalls the group
    // commits); devices and properties run side by side so a property flush spread over
    // minutes does not hold the devices' `last_seen` back.
    let devices = flush_every(every, &stop, "device", || catalogue.flush_devices_last_seen_over(every / 2, &stop));
    let properties = flush_every(properties_every, &stop, "property", || {
        catalogue.flush_properties_last_seen_over(properties_every / 2, &stop)
    });
    tokio::join!(devices, properties);
    if let Err(e) = catalogue.flush_last_seen().await {
        tracing::warn!(error = %e, "final last_seen flush failed");
    }
}

/// Runs `flush` once per `period` (the first one period after the start) until `stop`.
async fn flush_every<F, E>(period: Duration, stop: &CancellationToken, what: &str, mut flush: impl FnMut() -> F)
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = flush().await {
            tracing::warn!(error = %e, what, "last_seen flush failed; will retry");
        }
    }
}
