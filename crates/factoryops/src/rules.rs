//! Feeds telemetry events from the bus into the rules engine, after re-evaluating the
//! latest stored values once at start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use factoryops_db::DbError;
use factoryops_ingest::{DeviceFilter, DeviceRegistry, Encoded, RepoError, StateDictionary};
use factoryops_platform::bus::EventBus;
use factoryops_platform::metrics::Metrics;
use factoryops_platform::shutdown::Shutdown;
use factoryops_rules::{ApplySummary, Observation, RulesEngine, StateLabels};
use factoryops_tsdb::TelemetryStore;
use factoryops_types::{Clock, DeviceId, FactoryId, PropertyName};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

/// The rules' view of ingest's state dictionary (ADR 0014): rules name labels, the
/// evaluator compares codes; the rules never read ingest's tables.
pub struct IngestStateLabels(pub Arc<StateDictionary>);

#[async_trait::async_trait]
impl StateLabels for IngestStateLabels {
    async fn code(&self, factory: &FactoryId, property: &PropertyName, label: &str) -> Result<Option<u32>, DbError> {
        match self.0.encode(factory, property, label).await {
            Ok(Encoded::Code(code)) => Ok(Some(code)),
            Ok(Encoded::Full) => Ok(None),
            Err(RepoError::Db(e)) => Err(e),
            Err(other) => Err(DbError::Malformed(other.to_string())),
        }
    }
}

/// How long a device's type is trusted before it is read again (scopes by device type).
const DEVICE_TYPE_TTL_MS: i64 = 30_000;

/// Devices seen within this window get their latest values re-evaluated after a restart.
const REPLAY_WINDOW_MS: i64 = 7 * 86_400_000;

/// What the consumer evaluates once before the live events: the latest stored values.
pub struct Replay {
    pub factories: Vec<FactoryId>,
    pub store: Arc<dyn TelemetryStore>,
}

/// The cached device types of one factory.
#[derive(Default)]
struct FactoryTypes {
    types: HashMap<DeviceId, Option<String>>,
    /// When the whole factory was last read; first sight counts (its devices are then read one by one).
    read_at: i64,
    refreshing: bool,
}

/// The device's type; `Err` when it could not be read (a cached value is then kept).
async fn device_type_of(
    devices: &DeviceRegistry,
    factory: &FactoryId,
    device: &DeviceId,
) -> Result<Option<String>, ()> {
    match devices.get(factory, device).await {
        Ok(Some(d)) if !d.device_type.is_empty() => Ok(Some(d.device_type)),
        Ok(_) => Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, factory_id = %factory, device_id = %device, "cannot read the device type");
            Err(())
        }
    }
}

/// Every device type of a factory, read page by page (500 devices per query).
async fn factory_types(devices: &DeviceRegistry, factory: &FactoryId) -> Result<HashMap<DeviceId, Option<String>>, ()> {
    let mut types = HashMap::new();
    let mut cursor = None;
    loop {
        let filter = DeviceFilter { limit: Some(500), cursor, ..DeviceFilter::default() };
        let page = devices.list(factory, &filter).await.map_err(|e| {
            tracing::warn!(error = %e, factory_id = %factory, "cannot read the device types");
        })?;
        for d in page.items {
            types.insert(d.id, (!d.device_type.is_empty()).then_some(d.device_type));
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(types),
        }
    }
}

/// Device types by device (rule scopes by type), refreshed in the background a whole
/// factory at a time when stale: a device first seen is read once inline; after
/// [`DEVICE_TYPE_TTL_MS`] the factory's devices are re-read by one paged listing (20
/// queries for 10k devices). Refreshing each device on its own made 10k queries every TTL
/// with 10k devices, queueing alert commits behind them in the connection pool.
#[derive(Clone)]
struct DeviceTypes {
    devices: DeviceRegistry,
    clock: Arc<dyn Clock>,
    cache: Arc<parking_lot::Mutex<HashMap<FactoryId, FactoryTypes>>>,
}

impl DeviceTypes {
    async fn get(&self, factory: &FactoryId, device: &DeviceId) -> Option<String> {
        let now = self.clock.now_ms();
        let cached = {
            let mut cache = self.cache.lock();
            let entry = match cache.get_mut(factory) {
                Some(entry) => entry,
                None => {
                    cache.entry(factory.clone()).or_insert_with(|| FactoryTypes { read_at: now, ..Default::default() })
                }
            };
            if now - entry.read_at >= DEVICE_TYPE_TTL_MS && !entry.refreshing {
                entry.refreshing = true;
                self.spawn_refresh(factory.clone());
            }
            entry.types.get(device).cloned()
        };
        if let Some(device_type) = cached {
            return device_type;
        }
        let device_type = device_type_of(&self.devices, factory, device).await.unwrap_or(None);
        if let Some(entry) = self.cache.lock().get_mut(factory) {
            if entry.types.len() >= MAX_CACHED_DEVICE_TYPES {
                entry.types.clear();
            }
            entry.types.insert(device.clone(), device_type.clone());
        }
        device_type
    }

    fn spawn_refresh(&self, factory: FactoryId) {
        let this = self.clone();
        tokio::spawn(async move {
            let read = factory_types(&this.devices, &factory).await;
            let mut cache = this.cache.lock();
            if let Some(entry) = cache.get_mut(&factory) {
                // On a failed read keep the old types and retry after the TTL.
                if let Ok(types) = read {
                    entry.types = types;
                }
                entry.read_at = this.clock.now_ms();
                entry.refreshing = false;
            }
        });
    }
}

/// Most device types cached per factory before the cache starts over.
const MAX_CACHED_DEVICE_TYPES: usize = 100_000;

/// Where the time between a durable write and an alert goes, on `/metrics`.
#[derive(Clone)]
pub struct ConsumerMetrics {
    /// From the batch's durable write to the consumer picking it up (queueing).
    pub batch_delay: Histogram,
    /// Evaluating one batch, committing its alert changes included.
    pub batch_seconds: Histogram,
    /// The same, for the batches that changed alerts (the commit dominates).
    pub alert_batch_seconds: Histogram,
    /// Values older than the latest of their series: not evaluated live (ADR 0009).
    pub out_of_order_points: Counter,
}

impl ConsumerMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self {
            batch_delay: Metrics::latency_histogram(),
            batch_seconds: Metrics::latency_histogram(),
            alert_batch_seconds: Metrics::latency_histogram(),
            out_of_order_points: Counter::default(),
        };
        metrics.register(
            "rules_batch_delay_seconds",
            "From a telemetry batch's durable write to the rules consumer taking it",
            m.batch_delay.clone(),
        );
        metrics.register(
            "rules_batch_seconds",
            "Evaluating one telemetry batch, alert commit included",
            m.batch_seconds.clone(),
        );
        metrics.register(
            "rules_alert_batch_seconds",
            "Evaluating one telemetry batch that opened, updated or resolved alerts",
            m.alert_batch_seconds.clone(),
        );
        metrics.register(
            "rules_out_of_order_points",
            "Telemetry values older than the latest value of their device and property, ignored by live rule evaluation (backtests see them)",
            m.out_of_order_points.clone(),
        );
        m
    }
}

/// Telemetry batches waiting for the evaluator (each holds one group commit's messages).
const QUEUED_BATCHES: usize = 256;

/// A durable subscriber: a slow evaluator slows ingestion's publishing, it never loses events.
/// It subscribes first, then replays, so nothing published meanwhile is missed.
pub fn spawn_consumer(
    engine: Arc<RulesEngine>,
    bus: Arc<dyn EventBus>,
    devices: DeviceRegistry,
    clock: Arc<dyn Clock>,
    shutdown: Shutdown,
    replay: Replay,
    metrics: ConsumerMetrics,
) -> tokio::task::JoinHandle<()> {
    let mut subscription = bus.subscribe_telemetry(QUEUED_BATCHES);
    tokio::spawn(async move {
        let replayed = replay_latest(&engine, &devices, &replay, clock.now_ms()).await;
        tracing::info!(observations = replayed, "rules: latest values re-evaluated after start");
        let types = DeviceTypes { devices, clock, cache: Arc::default() };
        let mut observations = Vec::new();
        let mut out_of_order = engine.out_of_order_points();
        loop {
            let delivery = tokio::select! {
                d = subscription.next() => d,
                _ = shutdown.triggered() => return,
            };
            let Some(delivery) = delivery else { return };
            let batch = &delivery.event;
            let started = std::time::Instant::now();
            metrics.batch_delay.observe((types.clock.now_ms() - batch.at_ms).max(0) as f64 / 1000.0);
            for message in &batch.messages {
                let device_type = types.get(&batch.factory_id, &message.device_id).await;
                observations.push(Observation::from_message(&batch.factory_id, message, device_type));
            }
            match engine.feed_all(&observations).await {
                Ok(summary) => {
                    let took = started.elapsed().as_secs_f64();
                    metrics.batch_seconds.observe(took);
                    if summary != ApplySummary::default() {
                        metrics.alert_batch_seconds.observe(took);
                    }
                }
                Err(e) => tracing::error!(error = %e, factory_id = %batch.factory_id, "rule evaluation failed"),
            }
            observations.clear();
            let now_out_of_order = engine.out_of_order_points();
            metrics.out_of_order_points.inc_by(now_out_of_order.saturating_sub(out_of_order));
            out_of_order = now_out_of_order;
            delivery.ack().await;
        }
    })
}

/// The in-process bus is not durable: an event between a point's durable write and its
/// evaluation is lost when the process dies, and a restarted engine has no timers for
/// silent devices. So on start every device seen within [`REPLAY_WINDOW_MS`] has its latest
/// stored values evaluated once, oldest timestamp first. Alert keys derive from
/// (rule, device, timestamp), so re-evaluating a point that was already evaluated opens
/// nothing new; a missed "back to normal" resolves the alert; silent devices get their
/// staleness timers back.
async fn replay_latest(engine: &RulesEngine, devices: &DeviceRegistry, replay: &Replay, now_ms: i64) -> usize {
    let mut fed = 0;
    for factory in &replay.factories {
        let mut cursor: Option<String> = None;
        loop {
            let filter = DeviceFilter { limit: Some(500), cursor: cursor.clone(), ..DeviceFilter::default() };
            let page = match devices.list(factory, &filter).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(factory_id = %factory, error = %e, "rules replay: cannot list devices");
                    break;
                }
            };
            for device in &page.items {
                // `last_seen` lags by a few seconds (and is lost on a crash), so only a
                // known-old device is skipped.
                if device.last_seen.is_some_and(|seen| now_ms - seen > REPLAY_WINDOW_MS) {
                    continue;
                }
                let latest = match replay.store.latest(factory, &device.id).await {
                    Ok(latest) => latest,
                    Err(e) => {
                        tracing::warn!(factory_id = %factory, device_id = %device.id, error = %e, "rules replay: no latest values");
                        continue;
                    }
                };
                let mut by_ts: BTreeMap<i64, Vec<(PropertyName, factoryops_tsdb::Value)>> = BTreeMap::new();
                for (name, sample) in latest {
                    by_ts.entry(sample.ts_ms).or_default().push((name, sample.value));
                }
                let device_type = (!device.device_type.is_empty()).then(|| device.device_type.clone());
                for (ts_ms, values) in by_ts {
                    let observation = Observation {
                        factory_id: factory.clone(),
                        device_id: device.id.clone(),
                        device_type: device_type.clone(),
                        ts_ms,
                        values,
                        event_key: format!("replay:{}:{ts_ms}", device.id),
                    };
                    match engine.feed(&observation).await {
                        Ok(_) => fed += 1,
                        Err(e) => tracing::error!(factory_id = %factory, error = %e, "rules replay: evaluation failed"),
                    }
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    fed
}

/// The rules' view of the devices' energy configuration (ADR 0016): power properties from
/// ingest's property semantics, the longest bridged gap and the idle definition from the
/// energy component's device config. The rules never read those tables themselves.
pub struct EnergyRulesConfig {
    pub catalogue: Arc<factoryops_ingest::PropertyCatalogue>,
    pub energy: factoryops_energy::store::EnergyStore,
}

/// State labels that count as idle, as the energy computations count them.
const IDLE_LABELS: [&str; 3] = ["idle", "off", "setup"];

#[async_trait::async_trait]
impl factoryops_rules::EnergyConfig for EnergyRulesConfig {
    async fn facts(&self, factory: &FactoryId) -> Result<factoryops_rules::EnergyFacts, DbError> {
        use factoryops_rules::{IdleDefinition, PowerSource};
        use factoryops_types::Quantity;
        let semantics = self.catalogue.semantics_for_factory(factory).await.map_err(repo_error)?;
        let configs = self.energy.device_configs(factory).await.map_err(|e| match e {
            factoryops_energy::store::StoreError::Db(db) => db,
            other => DbError::Malformed(other.to_string()),
        })?;
        let mut facts = factoryops_rules::EnergyFacts::default();
        // Power properties by device, in name order (the catalogue's order).
        let mut power: HashMap<&DeviceId, Vec<(&PropertyName, f64)>> = HashMap::new();
        for (device, property, s) in &semantics {
            if s.quantity != Quantity::Power {
                continue;
            }
            let Some(kw_per_unit) = s.kw(1.0) else { continue };
            let config = configs.get(device).cloned().unwrap_or_default();
            facts.power.push(PowerSource {
                device_id: device.clone(),
                property: property.clone(),
                kw_per_unit,
                max_gap_ms: config.max_gap_ms(),
            });
            power.entry(device).or_default().push((property, kw_per_unit));
        }
        let mut idle_codes: HashMap<PropertyName, Vec<u32>> = HashMap::new();
        for (device, config) in &configs {
            if let Some(state) = &config.state_property {
                let codes = match idle_codes.get(state) {
                    Some(codes) => codes.clone(),
                    None => {
                        // The lower-case labels are registered (as a rule naming a label
                        // registers it), so a device idle for the first time after the rule
                        // was saved counts at once, not only after the next refresh.
                        let dictionary = self.catalogue.states();
                        let mut codes = Vec::new();
                        for label in IDLE_LABELS {
                            if let Encoded::Code(code) =
                                dictionary.encode(factory, state, label).await.map_err(repo_error)?
                            {
                                codes.push(code);
                            }
                        }
                        let labels = dictionary.labels(factory, state).await.map_err(repo_error)?;
                        for (code, label) in labels.iter() {
                            if IDLE_LABELS.iter().any(|idle| label.eq_ignore_ascii_case(idle)) && !codes.contains(&code)
                            {
                                codes.push(code);
                            }
                        }
                        idle_codes.insert(state.clone(), codes.clone());
                        codes
                    }
                };
                facts.idle.push(IdleDefinition::State { device_id: device.clone(), property: state.clone(), codes });
            } else if let Some(below_kw) = config.idle_below_kw {
                // The configured energy source when it is a power property, else the
                // device's first power property by name.
                let Some(candidates) = power.get(device) else { continue };
                let chosen = config
                    .source_property
                    .as_ref()
                    .and_then(|wanted| candidates.iter().find(|(p, _)| *p == wanted))
                    .or_else(|| candidates.first());
                if let Some((property, kw_per_unit)) = chosen {
                    facts.idle.push(IdleDefinition::BelowKw {
                        device_id: device.clone(),
                        property: (*property).clone(),
                        kw_per_unit: *kw_per_unit,
                        below_kw,
                    });
                }
            }
        }
        Ok(facts)
    }
}

fn repo_error(e: RepoError) -> DbError {
    match e {
        RepoError::Db(db) => db,
        other => DbError::Malformed(other.to_string()),
    }
}

/// The rules' view of the energy service for `specific_energy` leaves (ADR 0016): closed
/// days and shifts, kWh and units produced per device, and baselines' expected energy.
pub struct EnergySpecific(pub factoryops_energy::service::EnergyService);

fn energy_error(e: factoryops_energy::service::ServiceError) -> DbError {
    use factoryops_energy::service::ServiceError;
    match e {
        ServiceError::Store(factoryops_energy::store::StoreError::Db(db)) => db,
        other => DbError::Malformed(other.to_string()),
    }
}

#[async_trait::async_trait]
impl factoryops_rules::SpecificEnergy for EnergySpecific {
    async fn periods(
        &self,
        factory: &FactoryId,
        period: factoryops_rules::SpecificPeriod,
        after_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<factoryops_rules::Period>, DbError> {
        use factoryops_energy::service::PeriodKind;
        let kind = match period {
            factoryops_rules::SpecificPeriod::Day => PeriodKind::Day,
            factoryops_rules::SpecificPeriod::Shift => PeriodKind::Shift,
        };
        let spans = self.0.closed_periods(factory, kind, after_ms, until_ms).await.map_err(energy_error)?;
        Ok(spans
            .into_iter()
            .map(|s| factoryops_rules::Period { start_ms: s.start_ms, end_ms: s.end_ms, label: s.label })
            .collect())
    }

    async fn figures(
        &self,
        factory: &FactoryId,
        period: &factoryops_rules::Period,
        devices: Option<&[DeviceId]>,
        baseline_id: Option<&str>,
    ) -> Result<Vec<factoryops_rules::SpecificFigures>, DbError> {
        let figures = self
            .0
            .specific_figures(factory, devices, period.start_ms, period.end_ms, baseline_id)
            .await
            .map_err(energy_error)?;
        Ok(figures
            .into_iter()
            .map(|f| factoryops_rules::SpecificFigures {
                device_id: f.device_id,
                kwh: f.kwh,
                units: f.units,
                expected_kwh: f.expected_kwh,
            })
            .collect())
    }

    async fn baseline_target(
        &self,
        factory: &FactoryId,
        baseline_id: &str,
    ) -> Result<Option<factoryops_rules::BaselineTarget>, DbError> {
        let baseline = self.0.store().get_baseline(factory, baseline_id).await.map_err(|e| match e {
            factoryops_energy::store::StoreError::Db(db) => db,
            other => DbError::Malformed(other.to_string()),
        })?;
        Ok(baseline.map(|b| match (b.target_kind.as_str(), DeviceId::parse(&b.target_id)) {
            ("device", Ok(device)) => factoryops_rules::BaselineTarget::Device(device),
            (kind, _) => factoryops_rules::BaselineTarget::Other(kind.to_string()),
        }))
    }
}
