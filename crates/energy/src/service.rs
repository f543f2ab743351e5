//! The energy service (I/O): reads raw points through the `TelemetryStore` port, the
//! settings and groups from the [`EnergyStore`], the property semantics and time zone
//! through the [`Directory`] port, and answers the API's questions with the pure modules
//! of this crate (ADR 0015).
//!
//! Every answer is a fold over per-device 15-minute slots of `[from, to)`. A device's
//! slots are computed local day by local day; the days that are closed (their end plus
//! the device's maximum gap lies in the past) are kept in the [`SlotCache`] and dropped
//! again when a late point of the device's energy property arrives
//! ([`EnergyService::observe`]), so a month of daily energy is served from memory after
//! the first read.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use chrono_tz::Tz;
use factoryops_platform::bus::TelemetryBatch;
use factoryops_tsdb::{SeriesQuery, TelemetryStore, TsdbError};
use factoryops_types::{Clock, Counting as UnitCounting, DeviceId, FactoryId, PropertyName, Quantity, Semantics};
use parking_lot::Mutex;

use crate::baseline::{BaselineError, Point, Row, daily_mean, degree_days, evaluate, fit, operating_hours};
use crate::cache::{CachedDay, Hit, SlotCache, SourceKey, Ticket};
use crate::calendar::{
    Bucket, DayPart, Span, Totals, add_parts, fold, fold_parts_kwh, local_date, local_instant, spans, sum_parts, totals,
};
use crate::emission::{EmissionFactor, EmissionHistory, co2_kg};
use crate::peak::{PeakItem, check_interval, demand};
use crate::persisted::PersistedDay;
use crate::shifts::{ShiftCalendar, ShiftPlan};
use crate::slots::{Counting, Idle, slots_from_counter, slots_from_power, units_per_slot};
use crate::specific::{RankItem, rank};
use crate::store::{
    Baseline, DeviceEnergyConfig, Driver, EnergyStore, NewSetting, SettingKind, SettingVersion, StoreError,
};
use crate::tariff::{Bill, Tariff, TariffHistory, bill, cost_of};
use crate::{Gap, InvalidSetting, LocalMinute, SLOT_MS, Slot};

/// The longest range a query may span.
pub const MAX_RANGE_DAYS: i64 = 400;
const DAY_MS: i64 = 86_400_000;
/// Counters are read this far before a day, so the difference into its first sample is
/// known even after a silence longer than the maximum gap (the meter measured it).
const COUNTER_LOOKBACK_MS: i64 = DAY_MS;
/// A state property is read this far before a day for the state in force at its start
/// (as time in state does, ADR 0014); an older state counts as unknown (not idle).
const STATE_LOOKBACK_MS: i64 = 7 * DAY_MS;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A 422 naming the query parameter.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A 404: an unknown (or another factory's) device, group or factory.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("telemetry store: {0}")]
    Tsdb(#[from] TsdbError),
    #[error("{0}")]
    Directory(String),
    /// A stored setting that no longer validates (it did when it was stored).
    #[error("stored {kind} setting is invalid: {error}")]
    Setting { kind: &'static str, error: InvalidSetting },
}

fn invalid(field: &str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid { field: field.into(), message: message.into() }
}

/// What the service needs from the other components: the factory's time zone, the
/// property semantics (ingest), which devices exist and their types.
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// The factory's IANA time zone; `None` when there is no such factory.
    async fn timezone(&self, factory: &FactoryId) -> Result<Option<Tz>, ServiceError>;
    /// Every annotated property of the factory's devices.
    async fn semantics(&self, factory: &FactoryId) -> Result<Vec<(DeviceId, PropertyName, Semantics)>, ServiceError>;
    async fn device_exists(&self, factory: &FactoryId, device: &DeviceId) -> Result<bool, ServiceError>;
    /// The stored codes of a state property whose labels count as idle (`idle`, `off`,
    /// `setup`, any case).
    async fn idle_state_codes(&self, factory: &FactoryId, property: &PropertyName) -> Result<Vec<f64>, ServiceError>;
    /// The factory's devices of a type, ordered by id.
    async fn devices_of_type(&self, factory: &FactoryId, device_type: &str) -> Result<Vec<DeviceId>, ServiceError>;
    /// Every factory (the background pass persists closed days of each).
    async fn factories(&self) -> Result<Vec<FactoryId>, ServiceError>;
}

/// Whose energy a query asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Device(DeviceId),
    /// A group and all groups below it.
    Group(String),
    /// Every device of the factory with an energy source (an annotated power or counter
    /// property).
    Factory,
}

/// One bucket of a consumption answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumptionItem {
    pub start_ms: i64,
    pub end_ms: i64,
    /// The shift's name for shift buckets.
    pub shift: Option<String>,
    pub kwh: f64,
    /// `None` without a tariff in force.
    pub cost: Option<f64>,
    /// `None` without an emission factor in force.
    pub co2_kg: Option<f64>,
    pub idle_kwh: f64,
    pub by_device: Vec<(DeviceId, f64)>,
}

/// A stretch of one device without data.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceGap {
    pub device_id: DeviceId,
    pub from_ms: i64,
    pub to_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Consumption {
    /// The range actually folded: `from` floored and `to` ceiled to the 15-minute grid.
    pub from_ms: i64,
    pub to_ms: i64,
    pub currency: Option<String>,
    pub items: Vec<ConsumptionItem>,
    pub gaps: Vec<DeviceGap>,
    /// The tariff's bill of the whole range (energy, demand charges, fixed fees).
    pub charges: Option<Bill>,
    /// Devices of the query without an energy source (no annotated power or counter
    /// property): they count 0 kWh and their whole range is a gap.
    pub without_source: Vec<DeviceId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeakPeriod {
    Day,
    Month,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PeakDemand {
    pub from_ms: i64,
    pub to_ms: i64,
    pub interval_minutes: u32,
    pub items: Vec<PeakItem<DeviceId>>,
    pub gaps: Vec<DeviceGap>,
}

/// One device of a ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub from_ms: i64,
    pub to_ms: i64,
    pub items: Vec<RankItem<DeviceId>>,
    /// Per device: the production property used, `None` when it has none.
    pub production_property: HashMap<DeviceId, Option<PropertyName>>,
}

/// Which closed periods [`EnergyService::closed_periods`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodKind {
    /// Local days.
    Day,
    /// The occurrences of the shift calendar's shifts.
    Shift,
}

/// One device's energy and production over a closed period, for rules on specific energy.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpecific {
    pub device_id: DeviceId,
    pub kwh: f64,
    /// Units of its production count property; `None` without one.
    pub units: Option<f64>,
    /// The baseline's expected kWh for the day, when a baseline was asked for and can tell.
    pub expected_kwh: Option<f64>,
}

/// Where one device's energy comes from.
#[derive(Debug, Clone, PartialEq)]
struct Source {
    property: PropertyName,
    semantics: Semantics,
    idle_below_kw: Option<f64>,
    /// The state property and its codes that mean idle; wins over `idle_below_kw`.
    state: Option<(PropertyName, Vec<f64>)>,
    max_gap_ms: i64,
}

impl Source {
    fn key(&self) -> SourceKey {
        let s = &self.semantics;
        SourceKey {
            text: format!(
                "{}|{}|{:?}|{:?}|{:?}|{}|{:?}|{:?}",
                self.property,
                s.quantity,
                s.unit,
                s.rollover,
                s.wh_per_pulse,
                self.max_gap_ms,
                self.idle_below_kw,
                self.state
            ),
            properties: std::iter::once(self.property.clone())
                .chain(self.state.as_ref().map(|(p, _)| p.clone()))
                .collect(),
        }
    }

    /// How far before a day the energy property's raw read starts.
    fn lookback_ms(&self) -> i64 {
        if self.semantics.quantity.is_counter() { self.max_gap_ms.max(COUNTER_LOOKBACK_MS) } else { self.max_gap_ms }
    }

    /// How far before a day a point can change the day's result: with a state property the
    /// state in force at the day's start counts, so a late state point up to
    /// `STATE_LOOKBACK_MS` earlier drops the cached day too.
    fn window_lookback_ms(&self) -> i64 {
        if self.state.is_some() { self.lookback_ms().max(STATE_LOOKBACK_MS) } else { self.lookback_ms() }
    }
}

impl Prefetched {
    /// The stored day when it may be served: computed from the same source and not dirty,
    /// or (whatever its state) when its raw points may be gone, since it is then the only
    /// record of the day's energy.
    fn take(&mut self, device: &DeviceId, day_start: i64, key: &SourceKey) -> Option<CachedDay> {
        let servable = self.servable(device, day_start, key);
        let day = self.days.remove(&(device.clone(), day_start))?;
        servable.then_some(day.day)
    }

    /// Whether [`Prefetched::take`] would serve the stored day.
    fn servable(&self, device: &DeviceId, day_start: i64, key: &SourceKey) -> bool {
        self.days.get(&(device.clone(), day_start)).is_some_and(|day| {
            let current = !day.dirty && day.source == key.text;
            let raw_gone = self.raw_horizon_ms.is_some_and(|h| day.window.0 < h);
            current || raw_gone
        })
    }
}

/// The local days meeting `[from, to)` as (start, end).
fn local_days(tz: Tz, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, i64)>, ServiceError> {
    let mut out = Vec::new();
    let mut date = local_date(tz, from_ms).ok_or_else(|| invalid("from", "out of range"))?;
    loop {
        let start = local_instant(tz, date, LocalMinute::MIDNIGHT);
        let next = date.succ_opt().ok_or_else(|| invalid("to", "out of range"))?;
        let end = local_instant(tz, next, LocalMinute::MIDNIGHT);
        if start.max(from_ms) < end.min(to_ms) {
            out.push((start, end));
        }
        if end >= to_ms {
            return Ok(out);
        }
        date = next;
    }
}

/// The factory context one request computes in.
struct Context {
    tz: Tz,
    now_ms: i64,
    sources: HashMap<DeviceId, Option<Source>>,
}

/// The slot cache on `/metrics` (registered by the server; unregistered ones just count).
#[derive(Clone, Default)]
pub struct CacheMetrics {
    /// Closed device-days answered from memory.
    pub hits: prometheus_client::metrics::counter::Counter,
    /// Closed device-days computed from raw points.
    pub misses: prometheus_client::metrics::counter::Counter,
    /// Bytes the cache holds.
    pub bytes: prometheus_client::metrics::gauge::Gauge,
    /// Closed device-days read from the persisted `energy_days` (ADR 0017).
    pub stored: prometheus_client::metrics::counter::Counter,
    /// Closed device-days the background pass computed and persisted.
    pub persisted: prometheus_client::metrics::counter::Counter,
}

/// How long the time-series store keeps raw points (`None` = forever, or not known: an
/// InfluxDB's retention policy is its own). A persisted day whose raw read window starts
/// before the horizon is the only record of its energy: it is served as stored and never
/// recomputed (ADR 0017).
#[derive(Debug, Clone, Default)]
pub struct RawRetention {
    pub default_days: Option<u64>,
    pub per_factory: HashMap<FactoryId, Option<u64>>,
}

/// Days back the background pass looks when raw points are kept forever.
const PERSIST_DAYS_BACK: u64 = 35;
/// Days back the cache is primed at start (a month of daily energy and a few more).
pub const PRIME_DAYS_BACK: u64 = 35;

impl RawRetention {
    fn days(&self, factory: &FactoryId) -> Option<u64> {
        self.per_factory.get(factory).copied().flatten().or(self.default_days).filter(|d| *d > 0)
    }

    /// Raw points before this instant may be gone.
    fn horizon_ms(&self, factory: &FactoryId, now_ms: i64) -> Option<i64> {
        self.days(factory).map(|d| now_ms.saturating_sub(i64::try_from(d).unwrap_or(i64::MAX / DAY_MS) * DAY_MS))
    }
}

/// A device with persisted days, as the telemetry consumer sees it.
#[derive(Debug, Default)]
struct Watched {
    /// Points at or after this (the latest stored or in-flight window end) dirty nothing.
    horizon_ms: i64,
    properties: Vec<PropertyName>,
    /// Bumped by every point that dirties stored days; a pass that computed a day before
    /// the bump does not store it.
    epoch: u64,
}

#[derive(Debug, Default)]
struct PersistState {
    devices: HashMap<FactoryId, HashMap<DeviceId, Watched>>,
    next: u64,
}

/// One device's slots of one local day inside a query's range: `day.slots[range]`.
struct Part {
    day: Arc<CachedDay>,
    range: std::ops::Range<usize>,
    /// The day's totals when the part is the whole day.
    totals: Option<Totals>,
    /// The cache generation when the part is a whole cached day.
    generation: Option<u64>,
}

impl Part {
    fn slots(&self) -> &[Slot] {
        &self.day.slots[self.range.clone()]
    }

    fn view(&self) -> DayPart<'_> {
        DayPart { slots: self.slots(), totals: self.totals }
    }
}

/// Group-day sums of cached days (see [`EnergyService::group_total`]): per (factory, local
/// day start), a few variants keyed by the generations of the device-days summed. A
/// recomputed day has a new generation, so a stale sum is never matched again; it is
/// dropped with the variants beyond [`GROUP_DAY_VARIANTS`] or when the memo is full.
#[derive(Default)]
struct GroupDays {
    days: HashMap<(FactoryId, i64), Vec<GroupDay>>,
    bytes: usize,
}

/// The generations of the device-days summed, in the devices' order, and the sum.
type GroupDay = (Vec<u64>, Arc<Vec<Slot>>);

/// Sums kept per (factory, day): the groups asked for that day most recently.
const GROUP_DAY_VARIANTS: usize = 8;
/// The memo's bound (a 1,000-device group-day takes about 11 KB).
const GROUP_DAY_BYTES: usize = 16 << 20;

impl GroupDays {
    fn entry_bytes(generations: &[u64], slots: &[Slot]) -> usize {
        std::mem::size_of_val(generations) + std::mem::size_of_val(slots) + 64
    }

    fn get(&mut self, factory: &FactoryId, day_start: i64, generations: &[u64]) -> Option<Arc<Vec<Slot>>> {
        let variants = self.days.get_mut(&(factory.clone(), day_start))?;
        let i = variants.iter().position(|(g, _)| g.as_slice() == generations)?;
        // Most recently used first.
        variants[..=i].rotate_right(1);
        Some(variants[0].1.clone())
    }

    fn put(&mut self, factory: &FactoryId, day_start: i64, generations: Vec<u64>, slots: Arc<Vec<Slot>>) {
        let bytes = Self::entry_bytes(&generations, &slots);
        if self.bytes + bytes > GROUP_DAY_BYTES {
            self.days.clear();
            self.bytes = 0;
        }
        let variants = self.days.entry((factory.clone(), day_start)).or_default();
        variants.insert(0, (generations, slots));
        if variants.len() > GROUP_DAY_VARIANTS
            && let Some((g, s)) = variants.pop()
        {
            self.bytes -= Self::entry_bytes(&g, &s);
        }
        self.bytes += bytes;
    }
}

/// One device's day parts of a query's range (in time order) and its gaps.
struct DeviceDays {
    parts: Vec<Part>,
    gaps: Vec<Gap>,
}

/// Stored days read for one request, with cache tickets taken before the read.
#[derive(Default)]
struct Prefetched {
    days: HashMap<(DeviceId, i64), PersistedDay>,
    tickets: HashMap<(DeviceId, i64), Ticket>,
    /// Raw points before this may be gone (the factory's raw retention).
    raw_horizon_ms: Option<i64>,
}

/// Cheap to clone; one per process.
#[derive(Clone)]
pub struct EnergyService {
    inner: Arc<Inner>,
}

struct Inner {
    store: EnergyStore,
    telemetry: Arc<dyn TelemetryStore>,
    directory: Arc<dyn Directory>,
    clock: Arc<dyn Clock>,
    cache: Mutex<SlotCache>,
    group_days: Mutex<GroupDays>,
    metrics: CacheMetrics,
    retention: RawRetention,
    persisted: Mutex<PersistState>,
    /// Orders a pass's write of computed days against the consumer's dirty marks (ADR 0017).
    persist_lock: tokio::sync::Mutex<()>,
}

impl EnergyService {
    pub fn new(
        store: EnergyStore,
        telemetry: Arc<dyn TelemetryStore>,
        directory: Arc<dyn Directory>,
        clock: Arc<dyn Clock>,
        cache_bytes: usize,
        metrics: CacheMetrics,
        retention: RawRetention,
    ) -> Self {
        let cache = Mutex::new(SlotCache::new(cache_bytes));
        Self {
            inner: Arc::new(Inner {
                store,
                telemetry,
                directory,
                clock,
                cache,
                group_days: Mutex::new(GroupDays::default()),
                metrics,
                retention,
                persisted: Mutex::new(PersistState::default()),
                persist_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn store(&self) -> &EnergyStore {
        &self.inner.store
    }

    /// (bytes held, cached device-days, hits, misses) of the slot cache.
    pub fn cache_stats(&self) -> (usize, usize, u64, u64) {
        self.inner.cache.lock().stats()
    }

    /// A durable telemetry batch: drops cached days that its late points change.
    pub fn observe(&self, batch: &TelemetryBatch) {
        let mut cache = self.inner.cache.lock();
        for message in &batch.messages {
            for (property, _) in &message.values {
                cache.observe(&batch.factory_id, &message.device_id, property, message.ts_ms);
            }
        }
    }

    /// Appends a setting version (tariff, shifts, emission factor).
    pub async fn append_setting(
        &self,
        factory: &FactoryId,
        new: NewSetting<'_>,
        today: NaiveDate,
        now_ms: i64,
    ) -> Result<SettingVersion, StoreError> {
        self.inner.store.append_setting(factory, new, today, now_ms).await
    }

    /// Replaces a device's energy configuration (its cached days are dropped).
    pub async fn put_device_config(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        config: &DeviceEnergyConfig,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.inner.store.put_device_config(factory, device, config, now_ms).await?;
        self.inner.cache.lock().forget(factory, device);
        Ok(())
    }

    /// The devices of a target (404 for an unknown or foreign device or group).
    pub async fn devices_of(&self, factory: &FactoryId, target: &Target) -> Result<Vec<DeviceId>, ServiceError> {
        match target {
            Target::Device(device) => {
                if self.inner.directory.device_exists(factory, device).await? {
                    Ok(vec![device.clone()])
                } else {
                    Err(ServiceError::NotFound("no such device".into()))
                }
            }
            Target::Group(id) => self
                .inner
                .store
                .group_rollup(factory, id)
                .await?
                .ok_or_else(|| ServiceError::NotFound("no such group".into())),
            Target::Factory => {
                if self.inner.directory.timezone(factory).await?.is_none() {
                    return Err(ServiceError::NotFound("no such factory".into()));
                }
                Ok(self.source_devices(factory).await?)
            }
        }
    }

    /// The factory's devices with an energy source (by the same rule as [`choose_source`]),
    /// ordered by id.
    async fn source_devices(&self, factory: &FactoryId) -> Result<Vec<DeviceId>, ServiceError> {
        let semantics = self.inner.directory.semantics(factory).await?;
        let configs = self.inner.store.device_configs(factory).await?;
        let mut annotated: HashMap<&DeviceId, Vec<(&PropertyName, &Semantics)>> = HashMap::new();
        for (device, property, s) in &semantics {
            annotated.entry(device).or_default().push((property, s));
        }
        let mut devices: Vec<DeviceId> = annotated
            .iter()
            .filter(|(d, found)| choose_source(found, &configs.get(**d).cloned().unwrap_or_default()).is_some())
            .map(|(d, _)| (*d).clone())
            .collect();
        devices.sort();
        Ok(devices)
    }

    async fn context(&self, factory: &FactoryId, devices: &[DeviceId]) -> Result<Context, ServiceError> {
        let tz = self
            .inner
            .directory
            .timezone(factory)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such factory".into()))?;
        let semantics = self.inner.directory.semantics(factory).await?;
        let configs = self.inner.store.device_configs(factory).await?;
        let mut annotated: HashMap<&DeviceId, Vec<(&PropertyName, &Semantics)>> = HashMap::new();
        for (device, property, s) in &semantics {
            annotated.entry(device).or_default().push((property, s));
        }
        let mut idle_codes: HashMap<PropertyName, Vec<f64>> = HashMap::new();
        let mut sources = HashMap::with_capacity(devices.len());
        for d in devices {
            let config = configs.get(d).cloned().unwrap_or_default();
            let found = annotated.get(d).map(Vec::as_slice).unwrap_or_default();
            let mut source = choose_source(found, &config);
            if let (Some(source), Some(state)) = (source.as_mut(), &config.state_property) {
                let codes = match idle_codes.get(state) {
                    Some(codes) => codes.clone(),
                    None => {
                        let codes = self.inner.directory.idle_state_codes(factory, state).await?;
                        idle_codes.insert(state.clone(), codes.clone());
                        codes
                    }
                };
                source.state = Some((state.clone(), codes));
            }
            sources.insert(d.clone(), source);
        }
        Ok(Context { tz, now_ms: self.inner.clock.now_ms(), sources })
    }

    /// One device's day parts of `[from, to)` (on the grid; `days` are the local days
    /// meeting it) with its gaps. Closed local days come from the cache, else from the
    /// persisted days, else are computed whole, and are cached; the parts share the
    /// cached slots (nothing is copied).
    #[allow(clippy::too_many_arguments)]
    async fn device_days(
        &self,
        factory: &FactoryId,
        ctx: &Context,
        device: &DeviceId,
        days: &[(i64, i64)],
        from_ms: i64,
        to_ms: i64,
        stored: &mut Prefetched,
    ) -> Result<DeviceDays, ServiceError> {
        let Some(source) = ctx.sources.get(device).cloned().flatten() else {
            return Ok(DeviceDays { parts: Vec::new(), gaps: vec![Gap { from_ms, to_ms }] });
        };
        let key = source.key();
        let closed = |day_start: i64, day_end: i64| {
            day_end + source.max_gap_ms <= ctx.now_ms && day_start % SLOT_MS == 0 && day_end % SLOT_MS == 0
        };
        // One lock and one lookup of the device for all its closed days.
        let closed_starts: Vec<i64> = days.iter().filter(|(s, e)| closed(*s, *e)).map(|(s, _)| *s).collect();
        let found = self.inner.cache.lock().lookup(factory, device, &closed_starts, &key);
        self.inner.metrics.hits.inc_by(found.iter().filter(|h| h.is_some()).count() as u64);
        let mut found = found.into_iter();
        let mut parts = Vec::with_capacity(days.len());
        let mut gaps: Vec<Gap> = Vec::new();
        for &(day_start, day_end) in days {
            let (a, b) = (from_ms.max(day_start), to_ms.min(day_end));
            if a >= b {
                continue;
            }
            let part = if closed(day_start, day_end) {
                let hit = match found.next().flatten() {
                    Some(hit) => hit,
                    None => {
                        let window = (day_start - source.window_lookback_ms(), day_end + source.max_gap_ms);
                        let ticket = match stored.tickets.remove(&(device.clone(), day_start)) {
                            Some(ticket) => ticket,
                            None => self.inner.cache.lock().begin(factory, device, day_start, window, &key),
                        };
                        let day = match stored.take(device, day_start, &key) {
                            Some(day) => {
                                self.inner.metrics.stored.inc();
                                Arc::new(day)
                            }
                            None => {
                                self.inner.metrics.misses.inc();
                                Arc::new(self.compute(factory, device, &source, day_start, day_end).await?)
                            }
                        };
                        let mut cache = self.inner.cache.lock();
                        let hit = cache.insert(ticket, key.clone(), day.clone());
                        self.inner.metrics.bytes.set(i64::try_from(cache.stats().0).unwrap_or(i64::MAX));
                        // Not cached (a late point raced with it): no generation to share.
                        hit.unwrap_or_else(|| Hit { totals: totals(&day.slots), day, generation: 0 })
                    }
                };
                let first = hit.day.slots.partition_point(|s| s.start_ms < a);
                let n = hit.day.slots[first..].partition_point(|s| s.start_ms < b);
                let whole = first == 0 && n == hit.day.slots.len();
                Part {
                    totals: whole.then_some(hit.totals),
                    generation: (whole && hit.generation != 0).then_some(hit.generation),
                    day: hit.day,
                    range: first..first + n,
                }
            } else {
                let day = Arc::new(self.compute(factory, device, &source, a, b).await?);
                let n = day.slots.len();
                Part { day, range: 0..n, totals: None, generation: None }
            };
            for gap in &part.day.gaps {
                let (g0, g1) = (gap.from_ms.max(a), gap.to_ms.min(b));
                if g0 >= g1 {
                    continue;
                }
                match gaps.last_mut() {
                    Some(last) if last.to_ms == g0 => last.to_ms = g1,
                    _ => gaps.push(Gap { from_ms: g0, to_ms: g1 }),
                }
            }
            parts.push(part);
        }
        Ok(DeviceDays { parts, gaps })
    }

    /// Slots of `[from, to)` from the raw points around it.
    async fn compute(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        source: &Source,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<CachedDay, ServiceError> {
        let raw = self
            .raw(factory, device, &source.property, from_ms - source.lookback_ms(), to_ms + source.max_gap_ms)
            .await?;
        let s = &source.semantics;
        let states: Vec<(i64, bool)> = match &source.state {
            Some((property, codes)) => {
                let raw = self.raw(factory, device, property, from_ms - STATE_LOOKBACK_MS, to_ms).await?;
                // The state in force at `from` is the last one before it; older ones change nothing.
                let first = raw.iter().rposition(|&(t, _)| t <= from_ms).unwrap_or(0);
                raw[first..].iter().map(|&(t, code)| (t, codes.contains(&code))).collect()
            }
            None => Vec::new(),
        };
        let idle = match (&source.state, source.idle_below_kw) {
            (Some(_), _) => Idle::States(&states),
            (None, Some(kw)) => Idle::BelowKw(kw),
            (None, None) => Idle::None,
        };
        let run = if s.quantity == Quantity::Power {
            let samples: Vec<(i64, f64)> = raw.iter().filter_map(|&(t, v)| s.kw(v).map(|kw| (t, kw))).collect();
            slots_from_power(&samples, &idle, from_ms, to_ms, source.max_gap_ms)
        } else {
            let samples: Vec<(i64, f64)> = raw.iter().filter_map(|&(t, v)| s.kwh(v).map(|kwh| (t, kwh))).collect();
            let rollover = s.rollover.and_then(|r| s.kwh(r));
            slots_from_counter(&samples, rollover, &idle, from_ms, to_ms, source.max_gap_ms)
        }
        .map_err(|e| ServiceError::Invalid { field: e.field, message: e.message })?;
        Ok(CachedDay { slots: run.slots, gaps: run.gaps })
    }

    /// Reads the stored days of the devices that have closed days of `[from, to)` the
    /// memory cache lacks, in one query per 200 devices (a warm request reads nothing).
    /// Cache tickets are taken before the read, so a late point that dirties a day while
    /// it is read keeps it out of the cache.
    async fn prefetch(
        &self,
        factory: &FactoryId,
        ctx: &Context,
        devices: &[DeviceId],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Prefetched, ServiceError> {
        let mut out =
            Prefetched { raw_horizon_ms: self.inner.retention.horizon_ms(factory, ctx.now_ms), ..Default::default() };
        let days = local_days(ctx.tz, from_ms, to_ms)?;
        let mut wanted = Vec::new();
        // The missing days' span: a partly primed cache reads only the days it lacks.
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        {
            let mut cache = self.inner.cache.lock();
            for device in devices {
                let Some(source) = ctx.sources.get(device).and_then(Option::as_ref) else { continue };
                let key = source.key();
                let closed: HashMap<i64, i64> = days
                    .iter()
                    .filter(|(s, e)| e + source.max_gap_ms <= ctx.now_ms && s % SLOT_MS == 0 && e % SLOT_MS == 0)
                    .copied()
                    .collect();
                let missing = cache.missing(factory, device, closed.keys().copied(), &key);
                if missing.is_empty() {
                    continue;
                }
                for day_start in missing {
                    let day_end = closed[&day_start];
                    (lo, hi) = (lo.min(day_start), hi.max(day_start));
                    let window = (day_start - source.window_lookback_ms(), day_end + source.max_gap_ms);
                    out.tickets
                        .insert((device.clone(), day_start), cache.begin(factory, device, day_start, window, &key));
                }
                wanted.push(device.clone());
            }
        }
        if wanted.is_empty() {
            return Ok(out);
        }
        for day in self.inner.store.energy_days(factory, &wanted, lo, hi + 1).await? {
            out.days.insert((day.device.clone(), day.day_start), day);
        }
        Ok(out)
    }

    /// Fills the memory cache at start from the persisted days (ADR 0017), so the first
    /// request after a restart is served from memory: the closed local days of the last
    /// `days_back` days (at most the raw retention), newest first, of every device with an
    /// energy source, through the same path as a request. Only days stored and servable
    /// are loaded (nothing is computed from raw points), and loading stops at 3/4 of the
    /// cache's capacity, so priming evicts nothing. Returns the device-days loaded.
    pub async fn prime_cache(&self, days_back: u64) -> Result<usize, ServiceError> {
        let limit = self.inner.cache.lock().capacity() / 4 * 3;
        let mut primed = 0;
        for factory in self.inner.directory.factories().await? {
            let devices = self.source_devices(&factory).await?;
            if devices.is_empty() {
                continue;
            }
            let ctx = self.context(&factory, &devices).await?;
            let back = self.inner.retention.days(&factory).map_or(days_back, |d| d.min(days_back));
            let today = local_date(ctx.tz, ctx.now_ms).ok_or_else(|| invalid("now", "out of range"))?;
            let first = today.checked_sub_days(chrono::Days::new(back)).unwrap_or(today);
            let days = local_days(
                ctx.tz,
                local_instant(ctx.tz, first, LocalMinute::MIDNIGHT),
                local_instant(ctx.tz, today, LocalMinute::MIDNIGHT),
            )?;
            // Day by day, newest first: when the cache fills up, the recent days are in.
            for &(day_start, day_end) in days.iter().rev() {
                let mut stored = self.prefetch(&factory, &ctx, &devices, day_start, day_end).await?;
                for device in &devices {
                    let Some(source) = ctx.sources.get(device).and_then(Option::as_ref) else { continue };
                    let closed = day_end + source.max_gap_ms <= ctx.now_ms;
                    if !closed || !stored.servable(device, day_start, &source.key()) {
                        continue;
                    }
                    if self.inner.cache.lock().stats().0 >= limit {
                        return Ok(primed);
                    }
                    let day = [(day_start, day_end)];
                    self.device_days(&factory, &ctx, device, &day, day_start, day_end, &mut stored).await?;
                    primed += 1;
                }
            }
        }
        Ok(primed)
    }

    /// Loads which devices have persisted days (at start, before the telemetry consumer
    /// runs), so that a late point dirties them.
    pub async fn load_persisted(&self) -> Result<(), ServiceError> {
        let horizons = self.inner.store.energy_day_horizons().await?;
        let mut state = self.inner.persisted.lock();
        for (factory, devices) in horizons {
            let known = state.devices.entry(factory).or_default();
            for (device, (horizon_ms, properties)) in devices {
                let watched = known.entry(device).or_default();
                watched.horizon_ms = watched.horizon_ms.max(horizon_ms);
                for p in properties {
                    if !watched.properties.contains(&p) {
                        watched.properties.push(p);
                    }
                }
            }
        }
        Ok(())
    }

    /// A durable telemetry batch: marks dirty the persisted days its late points change
    /// (one statement per touched device; points of the live edge touch nothing). Returns
    /// the days marked.
    pub async fn observe_persisted(&self, batch: &TelemetryBatch) -> Result<u64, ServiceError> {
        let mut touched: HashMap<&DeviceId, (i64, i64)> = HashMap::new();
        {
            let mut guard = self.inner.persisted.lock();
            let state = &mut *guard;
            let Some(devices) = state.devices.get_mut(&batch.factory_id) else { return Ok(0) };
            for message in &batch.messages {
                let Some(watched) = devices.get_mut(&message.device_id) else { continue };
                if message.ts_ms >= watched.horizon_ms
                    || !message.values.iter().any(|(p, _)| watched.properties.contains(p))
                {
                    continue;
                }
                state.next += 1;
                watched.epoch = state.next;
                let range = touched.entry(&message.device_id).or_insert((message.ts_ms, message.ts_ms));
                range.0 = range.0.min(message.ts_ms);
                range.1 = range.1.max(message.ts_ms);
            }
        }
        if touched.is_empty() {
            return Ok(0);
        }
        let _order = self.inner.persist_lock.lock().await;
        let mut marked = 0;
        for (device, (lo, hi)) in touched {
            marked += self.inner.store.mark_energy_days_dirty(&batch.factory_id, device, lo, hi).await?;
        }
        Ok(marked)
    }

    /// Registers a day about to be computed for storing: points before `window_to` of its
    /// properties now dirty the device. Returns the device's epoch.
    fn watch(&self, factory: &FactoryId, device: &DeviceId, window_to: i64, properties: &[PropertyName]) -> u64 {
        let mut state = self.inner.persisted.lock();
        let watched = state.devices.entry(factory.clone()).or_default().entry(device.clone()).or_default();
        watched.horizon_ms = watched.horizon_ms.max(window_to);
        for p in properties {
            if !watched.properties.contains(p) {
                watched.properties.push(p.clone());
            }
        }
        watched.epoch
    }

    fn epoch(&self, factory: &FactoryId, device: &DeviceId) -> u64 {
        self.inner.persisted.lock().devices.get(factory).and_then(|d| d.get(device)).map_or(0, |w| w.epoch)
    }

    /// The background pass (ADR 0017): computes and stores every closed local day of every
    /// device with an energy source that is not stored yet, is dirty, or was computed from
    /// another source, back as far as the raw retention reaches. A day whose raw points may
    /// be gone is left as stored. Returns the days written.
    pub async fn persist_closed_days(&self) -> Result<usize, ServiceError> {
        let mut written = 0;
        for factory in self.inner.directory.factories().await? {
            written += self.persist_factory(&factory).await?;
        }
        Ok(written)
    }

    async fn persist_factory(&self, factory: &FactoryId) -> Result<usize, ServiceError> {
        let devices = self.source_devices(factory).await?;
        if devices.is_empty() {
            return Ok(0);
        }
        let ctx = self.context(factory, &devices).await?;
        let raw_horizon = self.inner.retention.horizon_ms(factory, ctx.now_ms);
        let back = self.inner.retention.days(factory).unwrap_or(PERSIST_DAYS_BACK).min(MAX_RANGE_DAYS.unsigned_abs());
        let today = local_date(ctx.tz, ctx.now_ms).ok_or_else(|| invalid("now", "out of range"))?;
        let first = today.checked_sub_days(chrono::Days::new(back)).unwrap_or(today);
        let days = local_days(
            ctx.tz,
            local_instant(ctx.tz, first, LocalMinute::MIDNIGHT),
            local_instant(ctx.tz, today, LocalMinute::MIDNIGHT),
        )?;
        let Some(&(from_ms, _)) = days.first() else { return Ok(0) };
        let stored: HashMap<(DeviceId, i64), (String, bool)> = self
            .inner
            .store
            .energy_day_index(factory, from_ms)
            .await?
            .into_iter()
            .map(|d| ((d.device, d.day_start), (d.source, d.dirty)))
            .collect();
        let mut written = 0;
        for device in &devices {
            let Some(source) = ctx.sources.get(device).cloned().flatten() else { continue };
            let key = source.key();
            let mut batch = Vec::new();
            for &(day_start, day_end) in &days {
                let window = (day_start - source.window_lookback_ms(), day_end + source.max_gap_ms);
                let closed = window.1 <= ctx.now_ms && day_start % SLOT_MS == 0 && day_end % SLOT_MS == 0;
                // Recomputing a day whose raw points may be gone would lose its energy.
                if !closed || raw_horizon.is_some_and(|h| window.0 < h) {
                    continue;
                }
                if stored.get(&(device.clone(), day_start)).is_some_and(|(s, dirty)| !dirty && *s == key.text) {
                    continue;
                }
                let epoch = self.watch(factory, device, window.1, &key.properties);
                let day = self.compute(factory, device, &source, day_start, day_end).await?;
                batch.push((
                    epoch,
                    PersistedDay {
                        device: device.clone(),
                        day_start,
                        day_end,
                        window,
                        source: key.text.clone(),
                        properties: key.properties.clone(),
                        day,
                        dirty: false,
                        computed_at: ctx.now_ms,
                    },
                ));
            }
            if batch.is_empty() {
                continue;
            }
            // A point that dirtied the device while its days were computed voids them (the
            // next pass redoes them); after this write, the consumer's marks find the rows.
            let _order = self.inner.persist_lock.lock().await;
            let epoch = self.epoch(factory, device);
            let keep: Vec<PersistedDay> = batch.into_iter().filter(|(e, _)| *e == epoch).map(|(_, d)| d).collect();
            self.inner.store.put_energy_days(factory, &keep).await?;
            written += keep.len();
            self.inner.metrics.persisted.inc_by(u64::try_from(keep.len()).unwrap_or(0));
        }
        Ok(written)
    }

    /// The devices' slots summed slot by slot over `[from, to)`: bit for bit
    /// [`sum_parts`]. A local day on which every device with an energy source has its
    /// whole day cached is taken from the group-day memo when it holds the sum of exactly
    /// those cached days (their generations, in order), else summed and memoised; so a
    /// warm month of a 1,000-device group adds no slots at all.
    fn group_total(
        &self,
        factory: &FactoryId,
        ctx: &Context,
        per_device: &[DeviceDays],
        views: &[Vec<DayPart<'_>>],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Slot>, ServiceError> {
        let days = local_days(ctx.tz, from_ms, to_ms)?;
        let sourced: Vec<(&DeviceDays, &Vec<DayPart<'_>>)> =
            per_device.iter().zip(views).filter(|(d, _)| !d.parts.is_empty()).collect();
        // A device with a source has one part per local day of the range; anything else
        // (never expected) takes the plain sum.
        if sourced.len() < 2 || sourced.iter().any(|(d, _)| d.parts.len() != days.len()) {
            return Ok(sum_parts(views, from_ms, to_ms));
        }
        let mut total = empty_slots(from_ms, to_ms);
        for (k, &(day_start, _)) in days.iter().enumerate() {
            let generations: Option<Vec<u64>> = sourced.iter().map(|(d, _)| d.parts[k].generation).collect();
            let day_parts = sourced.iter().map(|(_, v)| std::slice::from_ref(&v[k]));
            let Some(generations) = generations else {
                for parts in day_parts {
                    add_parts(&mut total, parts, from_ms);
                }
                continue;
            };
            // Whole days: the part starts at the day's start, which is on the grid.
            let offset = usize::try_from((day_start - from_ms) / SLOT_MS).unwrap_or(usize::MAX);
            let memo = self.inner.group_days.lock().get(factory, day_start, &generations);
            let day = match memo {
                Some(day) => day,
                None => {
                    let n = sourced[0].1[k].slots.len();
                    let mut day = empty_slots(day_start, day_start + i64::try_from(n).unwrap_or(0) * SLOT_MS);
                    for parts in day_parts {
                        add_parts(&mut day, parts, day_start);
                    }
                    let day = Arc::new(day);
                    self.inner.group_days.lock().put(factory, day_start, generations, day.clone());
                    day
                }
            };
            if let Some(target) = total.get_mut(offset..offset + day.len()) {
                target.copy_from_slice(&day);
            }
        }
        Ok(total)
    }

    /// Day parts of every device of the query, in the devices' order, with their gaps.
    async fn all_days(
        &self,
        factory: &FactoryId,
        ctx: &Context,
        devices: &[DeviceId],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(Vec<DeviceDays>, Vec<DeviceGap>), ServiceError> {
        let mut stored = self.prefetch(factory, ctx, devices, from_ms, to_ms).await?;
        // The local days once per request, not per device (each is two zone conversions).
        let days = local_days(ctx.tz, from_ms, to_ms)?;
        let mut per_device = Vec::with_capacity(devices.len());
        let mut gaps = Vec::new();
        for device in devices {
            let found = self.device_days(factory, ctx, device, &days, from_ms, to_ms, &mut stored).await?;
            gaps.extend(found.gaps.iter().map(|g| DeviceGap {
                device_id: device.clone(),
                from_ms: g.from_ms,
                to_ms: g.to_ms,
            }));
            per_device.push(found);
        }
        Ok((per_device, gaps))
    }

    /// Slots of every device of the query, in the devices' order (a device without an
    /// energy source has every slot, empty).
    async fn all_slots(
        &self,
        factory: &FactoryId,
        ctx: &Context,
        devices: &[DeviceId],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(Vec<Vec<Slot>>, Vec<DeviceGap>), ServiceError> {
        let (per_device, gaps) = self.all_days(factory, ctx, devices, from_ms, to_ms).await?;
        let slots = devices
            .iter()
            .zip(&per_device)
            .map(|(device, found)| {
                if ctx.sources.get(device).is_none_or(Option::is_none) {
                    return empty_slots(from_ms, to_ms);
                }
                found.parts.iter().flat_map(|p| p.slots().iter().copied()).collect()
            })
            .collect();
        Ok((slots, gaps))
    }

    /// Energy per bucket with cost, CO2 and idle energy, per device and in total.
    pub async fn consumption(
        &self,
        factory: &FactoryId,
        target: &Target,
        from_ms: i64,
        to_ms: i64,
        bucket: Bucket,
    ) -> Result<Consumption, ServiceError> {
        let (from_ms, to_ms) = check_range(from_ms, to_ms)?;
        let devices = self.devices_of(factory, target).await?;
        let ctx = self.context(factory, &devices).await?;
        let shifts = match bucket {
            Bucket::Shift => {
                let calendar = self.shift_calendar(factory).await?;
                Some(
                    calendar
                        .ok_or_else(|| invalid("bucket", "the factory has no shift calendar (PUT /energy/shifts)"))?,
                )
            }
            _ => None,
        };
        let tariff = self.tariff(factory).await?;
        let emission = self.emission(factory).await?;
        let buckets = spans(ctx.tz, from_ms, to_ms, bucket, shifts.as_ref())
            .map_err(|e| ServiceError::Invalid { field: e.field, message: e.message })?;
        let (per_device, gaps) = self.all_days(factory, &ctx, &devices, from_ms, to_ms).await?;
        // Folded in place over the (cached) days: bit for bit the sums of the devices'
        // copied slots, without the copies (ADR 0015).
        let views: Vec<Vec<DayPart<'_>>> =
            per_device.iter().map(|d| d.parts.iter().map(Part::view).collect()).collect();
        let total = self.group_total(factory, &ctx, &per_device, &views, from_ms, to_ms)?;
        let by_device: Vec<Vec<f64>> = views.iter().map(|parts| fold_parts_kwh(parts, &buckets)).collect();
        let priced = tariff.as_ref().map(|(history, first)| (history, only_from(&total, ctx.tz, *first)));
        let weighed = emission.as_ref().map(|(history, first)| (history, only_from(&total, ctx.tz, *first)));
        let items = buckets
            .iter()
            .enumerate()
            .map(|(i, span)| {
                let totals = fold(&total, span);
                let by_device = devices.iter().zip(&by_device).map(|(d, kwh)| (d.clone(), kwh[i])).collect();
                ConsumptionItem {
                    start_ms: span.start_ms,
                    end_ms: span.end_ms,
                    shift: span.label.clone(),
                    kwh: totals.kwh,
                    cost: priced.as_ref().and_then(|(history, slots)| {
                        priced_in(slots, span).then(|| cost_of(history, ctx.tz, within(slots, span)))
                    }),
                    co2_kg: weighed.as_ref().and_then(|(history, slots)| {
                        priced_in(slots, span).then(|| co2_kg(history, ctx.tz, within(slots, span)))
                    }),
                    idle_kwh: totals.idle_kwh,
                    by_device,
                }
            })
            .collect();
        let charges =
            priced.as_ref().map(|(history, slots)| bill(history, ctx.tz, &zeroed(slots, &total), from_ms, to_ms));
        let currency = charges.as_ref().map(|b| b.currency.clone());
        let without_source =
            devices.iter().filter(|d| ctx.sources.get(*d).is_none_or(Option::is_none)).cloned().collect();
        Ok(Consumption { from_ms, to_ms, currency, items, gaps, charges, without_source })
    }

    /// The peak demand per local day or month, with the devices contributing most.
    pub async fn peak_demand(
        &self,
        factory: &FactoryId,
        target: &Target,
        from_ms: i64,
        to_ms: i64,
        interval_minutes: u32,
        period: PeakPeriod,
    ) -> Result<PeakDemand, ServiceError> {
        check_interval(interval_minutes).map_err(|e| ServiceError::Invalid { field: e.field, message: e.message })?;
        let (from_ms, to_ms) = check_range(from_ms, to_ms)?;
        let devices = self.devices_of(factory, target).await?;
        let ctx = self.context(factory, &devices).await?;
        let bucket = match period {
            PeakPeriod::Day => Bucket::Day,
            PeakPeriod::Month => Bucket::Month,
        };
        let periods = spans(ctx.tz, from_ms, to_ms, bucket, None)
            .map_err(|e| ServiceError::Invalid { field: e.field, message: e.message })?;
        let (per_device, gaps) = self.all_slots(factory, &ctx, &devices, from_ms, to_ms).await?;
        let keyed: Vec<(DeviceId, &[Slot])> =
            devices.iter().cloned().zip(per_device.iter().map(Vec::as_slice)).collect();
        let items = demand(&keyed, ctx.tz, interval_minutes, &periods)
            .map_err(|e| ServiceError::Invalid { field: e.field, message: e.message })?;
        Ok(PeakDemand { from_ms, to_ms, interval_minutes, items, gaps })
    }

    /// Devices of a type ranked by specific energy (kWh per unit produced); devices
    /// without a production count property come last, unranked.
    pub async fn ranking(
        &self,
        factory: &FactoryId,
        device_type: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Ranking, ServiceError> {
        let (from_ms, to_ms) = check_range(from_ms, to_ms)?;
        let devices = self.inner.directory.devices_of_type(factory, device_type).await?;
        let ctx = self.context(factory, &devices).await?;
        let production = self.production_properties(factory).await?;
        let (per_device, _) = self.all_slots(factory, &ctx, &devices, from_ms, to_ms).await?;
        let mut rows = Vec::with_capacity(devices.len());
        let mut used = HashMap::new();
        for (device, slots) in devices.iter().zip(&per_device) {
            let kwh: f64 = slots.iter().map(|s| s.kwh).sum();
            let units = match production.get(device) {
                Some((property, s)) => {
                    used.insert(device.clone(), Some(property.clone()));
                    self.units(factory, device, property, s, from_ms, to_ms).await?
                }
                None => {
                    used.insert(device.clone(), None);
                    0.0
                }
            };
            rows.push((device.clone(), kwh, units));
        }
        Ok(Ranking { from_ms, to_ms, items: rank(rows), production_property: used })
    }

    /// Every device's production count property (the first by name when it has several).
    async fn production_properties(
        &self,
        factory: &FactoryId,
    ) -> Result<HashMap<DeviceId, (PropertyName, Semantics)>, ServiceError> {
        let mut semantics = self.inner.directory.semantics(factory).await?;
        semantics.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut production: HashMap<DeviceId, (PropertyName, Semantics)> = HashMap::new();
        for (device, property, s) in semantics {
            if s.quantity == Quantity::ProductionCount && !production.contains_key(&device) {
                production.insert(device, (property, s));
            }
        }
        Ok(production)
    }

    /// The units a production count property counted in `[from, to)` (slot-grid range).
    async fn units(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        property: &PropertyName,
        semantics: &Semantics,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<f64, ServiceError> {
        let counting = match semantics.counting() {
            Some(UnitCounting::PerMessage) => Counting::PerMessage,
            _ => Counting::Cumulative,
        };
        // A cumulative count needs the reading before the range: look back a day.
        let lookback = if counting == Counting::Cumulative { DAY_MS } else { 0 };
        let mut samples = self.raw(factory, device, property, from_ms - lookback, to_ms).await?;
        if counting == Counting::Cumulative
            && let Some(first_inside) = samples.iter().position(|(t, _)| *t >= from_ms)
        {
            // Only the last reading before the range matters.
            samples.drain(..first_inside.saturating_sub(1));
        }
        let units = units_per_slot(&samples, counting, from_ms, to_ms)
            .map_err(|e| ServiceError::Invalid { field: e.field, message: e.message })?;
        Ok(units.iter().sum())
    }

    /// The complete local days or shift occurrences that end in `(after, until]`, in
    /// order (no shifts without a shift calendar).
    pub async fn closed_periods(
        &self,
        factory: &FactoryId,
        kind: PeriodKind,
        after_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<Span>, ServiceError> {
        if until_ms <= after_ms {
            return Ok(Vec::new());
        }
        let tz = self
            .inner
            .directory
            .timezone(factory)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such factory".into()))?;
        // Start two days early on the grid: a period ending just after `after` began
        // before it (days and shifts last at most 25 hours), and the spans are clipped.
        let from = after_ms - 2 * DAY_MS;
        let from = from - from.rem_euclid(SLOT_MS);
        let to = until_ms + (SLOT_MS - until_ms.rem_euclid(SLOT_MS)) % SLOT_MS;
        let (bucket, calendar) = match kind {
            PeriodKind::Day => (Bucket::Day, None),
            PeriodKind::Shift => match self.shift_calendar(factory).await? {
                Some(calendar) => (Bucket::Shift, Some(calendar)),
                None => return Ok(Vec::new()),
            },
        };
        let all = spans(tz, from, to, bucket, calendar.as_ref())
            .map_err(|e| ServiceError::Invalid { field: e.field, message: e.message })?;
        // The first span may be clipped at `from`; it ends long before `after` anyway.
        Ok(all.into_iter().filter(|s| s.start_ms > from && s.end_ms > after_ms && s.end_ms <= until_ms).collect())
    }

    /// kWh and units produced of devices over a closed period `[from, to)` (`devices:
    /// None` = every device with a production count property, by id). With a baseline,
    /// only its device (when it is a device baseline and among `devices`), with the
    /// baseline's expected kWh for the local day starting at `from`.
    pub async fn specific_figures(
        &self,
        factory: &FactoryId,
        devices: Option<&[DeviceId]>,
        from_ms: i64,
        to_ms: i64,
        baseline_id: Option<&str>,
    ) -> Result<Vec<DeviceSpecific>, ServiceError> {
        let (from_ms, to_ms) = check_range(from_ms, to_ms)?;
        let production = self.production_properties(factory).await?;
        let mut expected_kwh = None;
        let devices: Vec<DeviceId> = match baseline_id {
            Some(id) => {
                let Some(baseline) = self.inner.store.get_baseline(factory, id).await? else { return Ok(Vec::new()) };
                let Ok(device) = DeviceId::parse(&baseline.target_id) else { return Ok(Vec::new()) };
                if baseline.target_kind != "device" || devices.is_some_and(|d| !d.contains(&device)) {
                    return Ok(Vec::new());
                }
                let tz = self
                    .inner
                    .directory
                    .timezone(factory)
                    .await?
                    .ok_or_else(|| ServiceError::NotFound("no such factory".into()))?;
                let day = local_date(tz, from_ms).ok_or_else(|| invalid("from", "out of range"))?;
                let next = day.succ_opt().ok_or_else(|| invalid("to", "out of range"))?;
                let rows = self
                    .daily_rows(factory, std::slice::from_ref(&device), &baseline.drivers, day, next, "from")
                    .await?;
                // No row: no energy data that day, or a driver without data: it cannot tell.
                if let Some((_, row)) = rows.into_iter().find(|(d, _)| *d == day) {
                    let points = evaluate(&baseline.model, &[row]).map_err(|e| baseline_error(&e))?;
                    expected_kwh = points.first().map(|p| p.expected);
                }
                vec![device]
            }
            None => match devices {
                Some(list) => list.to_vec(),
                None => {
                    let mut all: Vec<DeviceId> = production.keys().cloned().collect();
                    all.sort();
                    all
                }
            },
        };
        let ctx = self.context(factory, &devices).await?;
        let (per_device, _) = self.all_slots(factory, &ctx, &devices, from_ms, to_ms).await?;
        let mut out = Vec::with_capacity(devices.len());
        for (device, slots) in devices.iter().zip(&per_device) {
            let units = match production.get(device) {
                Some((property, s)) => Some(self.units(factory, device, property, s, from_ms, to_ms).await?),
                None => None,
            };
            out.push(DeviceSpecific {
                device_id: device.clone(),
                kwh: slots.iter().map(|s| s.kwh).sum(),
                units,
                expected_kwh,
            });
        }
        Ok(out)
    }

    /// Fits an EnPI baseline over the local days `[from, to)` and stores it as the next
    /// version of its (name, target). Days without any energy data, and days without
    /// temperature data when a degree-day driver needs it, are left out.
    pub async fn fit_baseline(
        &self,
        factory: &FactoryId,
        name: &str,
        target: &Target,
        drivers: Vec<Driver>,
        period: (NaiveDate, NaiveDate),
        created_by: &str,
    ) -> Result<Baseline, ServiceError> {
        let devices = self.devices_of(factory, target).await?;
        let rows = self.daily_rows(factory, &devices, &drivers, period.0, period.1, "baseline_from").await?;
        let names: Vec<String> = drivers.iter().map(Driver::name).collect();
        let plain: Vec<Row> = rows.into_iter().map(|(_, row)| row).collect();
        let model = fit(&plain, &names).map_err(|e| baseline_error(&e))?;
        let (target_kind, target_id) = match target {
            Target::Device(d) => ("device", d.to_string()),
            Target::Group(g) => ("group", g.clone()),
            Target::Factory => ("factory", String::new()),
        };
        let baseline = Baseline {
            id: String::new(),
            name: name.to_string(),
            version: 0,
            target_kind: target_kind.into(),
            target_id,
            drivers,
            period_from: period.0,
            period_to: period.1,
            model,
            created_at: self.inner.clock.now_ms(),
            created_by: created_by.to_string(),
        };
        Ok(self.inner.store.create_baseline(factory, baseline).await?)
    }

    /// Expected vs actual, savings and CUSUM of a baseline per local day of `[from, to)`
    /// (default: from the end of the baseline period to today).
    pub async fn baseline_report(
        &self,
        factory: &FactoryId,
        id: &str,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Result<(Baseline, NaiveDate, NaiveDate, Vec<(NaiveDate, Point)>), ServiceError> {
        let baseline = self
            .inner
            .store
            .get_baseline(factory, id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such baseline".into()))?;
        let target = match baseline.target_kind.as_str() {
            "group" => Target::Group(baseline.target_id.clone()),
            "factory" => Target::Factory,
            _ => Target::Device(
                DeviceId::parse(&baseline.target_id).map_err(|e| ServiceError::Directory(e.to_string()))?,
            ),
        };
        let tz = self
            .inner
            .directory
            .timezone(factory)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such factory".into()))?;
        let today = local_date(tz, self.inner.clock.now_ms()).ok_or_else(|| invalid("to", "out of range"))?;
        let from = from.unwrap_or(baseline.period_to);
        let to = to.unwrap_or(today);
        if from >= to {
            return Ok((baseline, from, to, Vec::new()));
        }
        let devices = self.devices_of(factory, &target).await?;
        let rows = self.daily_rows(factory, &devices, &baseline.drivers, from, to, "from").await?;
        let (dates, plain): (Vec<NaiveDate>, Vec<Row>) = rows.into_iter().unzip();
        let points = evaluate(&baseline.model, &plain).map_err(|e| baseline_error(&e))?;
        Ok((baseline, from, to, dates.into_iter().zip(points).collect()))
    }

    /// One row per local day of `[from, to)`: the devices' kWh and the drivers' values.
    async fn daily_rows(
        &self,
        factory: &FactoryId,
        devices: &[DeviceId],
        drivers: &[Driver],
        from: NaiveDate,
        to: NaiveDate,
        from_field: &str,
    ) -> Result<Vec<(NaiveDate, Row)>, ServiceError> {
        if from >= to {
            return Err(invalid(from_field, "must be before the end date"));
        }
        let ctx = self.context(factory, devices).await?;
        let (from_ms, to_ms) =
            (local_instant(ctx.tz, from, LocalMinute::MIDNIGHT), local_instant(ctx.tz, to, LocalMinute::MIDNIGHT));
        check_range(from_ms, to_ms)?;
        let days = spans(ctx.tz, from_ms, to_ms, Bucket::Day, None)
            .map_err(|e| ServiceError::Invalid { field: e.field, message: e.message })?;
        let (per_device, _) = self.all_slots(factory, &ctx, devices, from_ms, to_ms).await?;
        let total = sum_slots(&per_device, from_ms, to_ms);
        let semantics = self.inner.directory.semantics(factory).await?;
        // Per driver, a value per day (None: no data that day).
        let mut columns: Vec<Vec<Option<f64>>> = Vec::with_capacity(drivers.len());
        for driver in drivers {
            let column = match driver {
                Driver::OperatingHours => days.iter().map(|d| Some(operating_hours(within(&total, d)))).collect(),
                Driver::Production { device_id, property } => {
                    let counting = semantics
                        .iter()
                        .find(|(d, p, _)| d == device_id && p == property)
                        .and_then(|(_, _, s)| s.counting());
                    let counting = match counting {
                        Some(UnitCounting::PerMessage) => Counting::PerMessage,
                        _ => Counting::Cumulative,
                    };
                    let raw = self.raw(factory, device_id, property, from_ms - DAY_MS, to_ms).await?;
                    let mut samples: Vec<(i64, f64)> = raw;
                    if counting == Counting::Cumulative
                        && let Some(first_inside) = samples.iter().position(|(t, _)| *t >= from_ms)
                    {
                        samples.drain(..first_inside.saturating_sub(1));
                    }
                    let units = units_per_slot(&samples, counting, from_ms, to_ms)
                        .map_err(|e| ServiceError::Invalid { field: e.field, message: e.message })?;
                    days.iter()
                        .map(|d| {
                            let a = usize::try_from((d.start_ms - from_ms) / SLOT_MS).unwrap_or(0);
                            let b = usize::try_from((d.end_ms - from_ms) / SLOT_MS).unwrap_or(0);
                            Some(units.get(a..b).map_or(0.0, |u| u.iter().sum()))
                        })
                        .collect()
                }
                Driver::HeatingDegreeDays { device_id, property, base_c }
                | Driver::CoolingDegreeDays { device_id, property, base_c } => {
                    let raw = self.raw(factory, device_id, property, from_ms, to_ms).await?;
                    let means: HashMap<NaiveDate, f64> = daily_mean(&raw, ctx.tz).into_iter().collect();
                    let heating = matches!(driver, Driver::HeatingDegreeDays { .. });
                    days.iter()
                        .map(|d| {
                            let date = local_date(ctx.tz, d.start_ms)?;
                            let (hdd, cdd) = degree_days(&[*means.get(&date)?], *base_c)[0];
                            Some(if heating { hdd } else { cdd })
                        })
                        .collect()
                }
            };
            columns.push(column);
        }
        let mut rows = Vec::new();
        for (i, day) in days.iter().enumerate() {
            let totals = fold(&total, day);
            if totals.covered_ms == 0 && totals.kwh == 0.0 {
                continue;
            }
            let Some(x) = columns.iter().map(|c| c[i]).collect::<Option<Vec<f64>>>() else { continue };
            let Some(date) = local_date(ctx.tz, day.start_ms) else { continue };
            rows.push((date, Row { y: totals.kwh, x }));
        }
        Ok(rows)
    }

    async fn raw(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        property: &PropertyName,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, f64)>, ServiceError> {
        let query = SeriesQuery {
            device: device.clone(),
            property: property.clone(),
            from_ms,
            to_ms,
            aggregation: None,
            limit: None,
        };
        Ok(self.inner.telemetry.query(factory, &query).await?.iter().map(|p| (p.ts_ms, p.value.as_f64())).collect())
    }

    async fn tariff(&self, factory: &FactoryId) -> Result<Option<(TariffHistory, Option<NaiveDate>)>, ServiceError> {
        let versions: Vec<Tariff> = self.versions(factory, SettingKind::Tariff).await?;
        if versions.is_empty() {
            return Ok(None);
        }
        let first = versions[0].valid_from;
        TariffHistory::new(versions)
            .map(|h| Some((h, first)))
            .map_err(|error| ServiceError::Setting { kind: "tariff", error })
    }

    async fn emission(
        &self,
        factory: &FactoryId,
    ) -> Result<Option<(EmissionHistory, Option<NaiveDate>)>, ServiceError> {
        let versions: Vec<EmissionFactor> = self.versions(factory, SettingKind::EmissionFactor).await?;
        if versions.is_empty() {
            return Ok(None);
        }
        let first = versions[0].valid_from;
        EmissionHistory::new(versions)
            .map(|h| Some((h, first)))
            .map_err(|error| ServiceError::Setting { kind: "emission factor", error })
    }

    async fn shift_calendar(&self, factory: &FactoryId) -> Result<Option<ShiftCalendar>, ServiceError> {
        let versions: Vec<ShiftPlan> = self.versions(factory, SettingKind::Shifts).await?;
        if versions.is_empty() {
            return Ok(None);
        }
        ShiftCalendar::new(versions).map(Some).map_err(|error| ServiceError::Setting { kind: "shifts", error })
    }

    /// The stored versions of a setting as the pure crate's type, `valid_from` restored.
    async fn versions<T: serde::de::DeserializeOwned + HasValidFrom>(
        &self,
        factory: &FactoryId,
        kind: SettingKind,
    ) -> Result<Vec<T>, ServiceError> {
        let stored = self.inner.store.setting_versions(factory, kind).await?;
        stored
            .into_iter()
            .map(|v| {
                let mut value: T = serde_json::from_value(v.body).map_err(|e| {
                    ServiceError::Store(StoreError::Db(factoryops_db::DbError::Malformed(format!(
                        "{} version {}: {e}",
                        kind.as_str(),
                        v.version
                    ))))
                })?;
                *value.valid_from_mut() = v.valid_from;
                Ok(value)
            })
            .collect()
    }
}

/// A fit or evaluation that the data does not allow: a 422 naming what to change.
fn baseline_error(e: &BaselineError) -> ServiceError {
    let field = match e {
        BaselineError::TooFewRows { .. } => "baseline_to",
        BaselineError::Singular { .. } | BaselineError::DriverCount { .. } | BaselineError::NoDrivers => "drivers",
        _ => "baseline_from",
    };
    invalid(field, e.to_string())
}

/// The settings' shared field.
pub trait HasValidFrom {
    fn valid_from_mut(&mut self) -> &mut Option<NaiveDate>;
}

impl HasValidFrom for Tariff {
    fn valid_from_mut(&mut self) -> &mut Option<NaiveDate> {
        &mut self.valid_from
    }
}

impl HasValidFrom for EmissionFactor {
    fn valid_from_mut(&mut self) -> &mut Option<NaiveDate> {
        &mut self.valid_from
    }
}

impl HasValidFrom for ShiftPlan {
    fn valid_from_mut(&mut self) -> &mut Option<NaiveDate> {
        &mut self.valid_from
    }
}

/// `from` floored and `to` ceiled to the slot grid; `from < to`, at most [`MAX_RANGE_DAYS`].
fn check_range(from_ms: i64, to_ms: i64) -> Result<(i64, i64), ServiceError> {
    if from_ms >= to_ms {
        return Err(invalid("from", "must be before `to`"));
    }
    if to_ms - from_ms > MAX_RANGE_DAYS * DAY_MS {
        return Err(invalid("to", format!("the range may span at most {MAX_RANGE_DAYS} days")));
    }
    let from = from_ms - from_ms.rem_euclid(SLOT_MS);
    let to = to_ms + (SLOT_MS - to_ms.rem_euclid(SLOT_MS)) % SLOT_MS;
    Ok((from, to))
}

/// The device's energy source: the configured property when it is annotated as power or a
/// counter, else an energy counter, else a pulse counter, else a power property (by name).
fn choose_source(annotated: &[(&PropertyName, &Semantics)], config: &DeviceEnergyConfig) -> Option<Source> {
    let usable = |s: &Semantics| match s.quantity {
        Quantity::Power => s.kw(1.0).is_some(),
        Quantity::EnergyCounter | Quantity::PulseCounter => s.kwh(1.0).is_some(),
        _ => false,
    };
    let chosen = match &config.source_property {
        Some(wanted) => annotated.iter().find(|(p, s)| *p == wanted && usable(s)),
        None => [Quantity::EnergyCounter, Quantity::PulseCounter, Quantity::Power].iter().find_map(|q| {
            let mut candidates: Vec<_> = annotated.iter().filter(|(_, s)| s.quantity == *q && usable(s)).collect();
            candidates.sort_by(|a, b| a.0.cmp(b.0));
            candidates.first().copied()
        }),
    }?;
    Some(Source {
        property: chosen.0.clone(),
        semantics: chosen.1.clone(),
        idle_below_kw: config.idle_below_kw,
        state: None,
        max_gap_ms: config.max_gap_ms(),
    })
}

fn empty_slots(from_ms: i64, to_ms: i64) -> Vec<Slot> {
    (0..(to_ms - from_ms) / SLOT_MS).map(|i| Slot { start_ms: from_ms + i * SLOT_MS, ..Slot::default() }).collect()
}

/// The slots of all devices summed slot by slot over `[from, to)`.
fn sum_slots(per_device: &[Vec<Slot>], from_ms: i64, to_ms: i64) -> Vec<Slot> {
    let mut total = empty_slots(from_ms, to_ms);
    for slots in per_device {
        for slot in slots {
            let Ok(i) = usize::try_from((slot.start_ms - from_ms) / SLOT_MS) else { continue };
            if let Some(t) = total.get_mut(i) {
                t.kwh += slot.kwh;
                t.idle_kwh += slot.idle_kwh;
                t.covered_ms += slot.covered_ms;
            }
        }
    }
    total
}

/// The slots on or after the first version's `valid_from` (a setting whose first version
/// starts later prices nothing before it: only a first version without a date prices
/// history).
fn only_from(total: &[Slot], tz: Tz, first: Option<NaiveDate>) -> Vec<Slot> {
    match first {
        None => total.to_vec(),
        Some(from) => total.iter().filter(|s| local_date(tz, s.start_ms).is_some_and(|d| d >= from)).copied().collect(),
    }
}

/// `total` with the energy of slots missing from `kept` set to zero (for the bill).
fn zeroed(kept: &[Slot], total: &[Slot]) -> Vec<Slot> {
    let first = kept.first().map_or(i64::MAX, |s| s.start_ms);
    total.iter().map(|s| if s.start_ms < first { Slot { kwh: 0.0, idle_kwh: 0.0, ..*s } } else { *s }).collect()
}

/// The slots (sorted) starting inside a span.
fn within<'a>(slots: &'a [Slot], span: &Span) -> &'a [Slot] {
    let first = slots.partition_point(|s| s.start_ms < span.start_ms);
    let count = slots[first..].partition_point(|s| s.start_ms < span.end_ms);
    &slots[first..first + count]
}

/// Whether a setting prices (some of) the span: it has slots there.
fn priced_in(slots: &[Slot], span: &Span) -> bool {
    !within(slots, span).is_empty()
}
