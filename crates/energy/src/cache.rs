//! A bounded in-memory LRU of computed slots of closed local days, per (factory, device).
//!
//! A closed day's slots only change when late points arrive (a backfill, a correction).
//! Those come through the bus's `telemetry` batches: [`SlotCache::observe`] drops every
//! cached day whose read window contains such a point of the device's energy or state
//! property. A computation that raced with such a point must not store its (stale)
//! result: each device carries an epoch that the invalidation bumps, and
//! [`SlotCache::insert`] stores only when the epoch is still the one taken before the
//! raw read ([`SlotCache::begin`]).

use std::collections::{BTreeMap, HashMap};

use factoryops_types::{DeviceId, FactoryId, PropertyName};

use crate::calendar::{Totals, totals};
use crate::{Gap, Slot};

/// What a day's slots were computed from: a hit with a different source (another
/// property, unit, threshold, gap) is a miss.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceKey {
    pub text: String,
    /// The properties whose points change the result (energy source, state).
    pub properties: Vec<PropertyName>,
}

/// One cached day of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedDay {
    pub slots: Vec<Slot>,
    pub gaps: Vec<Gap>,
}

/// A cached day handed out.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Shared: a hit hands out a reference count, not a copy of the slots.
    pub day: std::sync::Arc<CachedDay>,
    /// The day's sums (a day bucket reads these, not the slots).
    pub totals: Totals,
    /// Unique per stored entry: the same generation is the same slots (a recomputed or
    /// reloaded day gets a new one).
    pub generation: u64,
}

struct DayEntry {
    source: SourceKey,
    day: std::sync::Arc<CachedDay>,
    totals: Totals,
    generation: u64,
    /// The raw-read window `[from, to)` the day was computed from.
    window: (i64, i64),
    /// Last use.
    tick: u64,
    /// The entry's key in the LRU index: its tick when last indexed. A hit only bumps
    /// `tick` (moving 30,000 index entries per warm month would cost more than the fold);
    /// eviction re-indexes an entry whose tick moved on before dropping anything.
    lru_tick: u64,
    bytes: usize,
}

#[derive(Default)]
struct DeviceCache {
    /// Bumped (from the cache-wide counter) by every invalidating point.
    epoch: u64,
    /// Points before this may change a cached or in-flight day: the latest window end.
    horizon_ms: i64,
    properties: Vec<PropertyName>,
    days: BTreeMap<i64, DayEntry>,
}

type Key = (FactoryId, DeviceId);

/// A computation in flight, from [`SlotCache::begin`].
#[derive(Debug)]
pub struct Ticket {
    key: Key,
    day_start: i64,
    window: (i64, i64),
    epoch: u64,
}

/// The cache; the service keeps it behind a mutex (every operation is short).
pub struct SlotCache {
    capacity_bytes: usize,
    bytes: usize,
    next: u64,
    devices: HashMap<Key, DeviceCache>,
    /// Least recently used first: lru tick → (device, day start); one per cached day.
    lru: BTreeMap<u64, (Key, i64)>,
    hits: u64,
    misses: u64,
}

/// Bytes one cached day takes, roughly (slots, gaps, bookkeeping).
fn entry_bytes(day: &CachedDay, source: &SourceKey) -> usize {
    std::mem::size_of::<DayEntry>()
        + day.slots.len() * std::mem::size_of::<Slot>()
        + day.gaps.len() * std::mem::size_of::<Gap>()
        + source.text.len()
        + source.properties.iter().map(|p| p.as_str().len() + 16).sum::<usize>()
        + 64
}

impl SlotCache {
    pub fn new(capacity_bytes: usize) -> Self {
        Self { capacity_bytes, bytes: 0, next: 1, devices: HashMap::new(), lru: BTreeMap::new(), hits: 0, misses: 0 }
    }

    fn tick(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// The cached day, when computed from the same source.
    pub fn get(
        &mut self,
        factory: &FactoryId,
        device: &DeviceId,
        day_start: i64,
        source: &SourceKey,
    ) -> Option<std::sync::Arc<CachedDay>> {
        self.lookup(factory, device, &[day_start], source).pop().flatten().map(|hit| hit.day)
    }

    /// The cached days of one device (one answer per day start, in order), when computed
    /// from the same source; each found day counts as used.
    pub fn lookup(
        &mut self,
        factory: &FactoryId,
        device: &DeviceId,
        day_starts: &[i64],
        source: &SourceKey,
    ) -> Vec<Option<Hit>> {
        let key = (factory.clone(), device.clone());
        let mut out = Vec::with_capacity(day_starts.len());
        let mut next = self.next;
        if let Some(cache) = self.devices.get_mut(&key) {
            for day_start in day_starts {
                out.push(cache.days.get_mut(day_start).filter(|e| e.source == *source).map(|entry| {
                    next += 1;
                    entry.tick = next;
                    Hit { day: entry.day.clone(), totals: entry.totals, generation: entry.generation }
                }));
            }
        } else {
            out.resize(day_starts.len(), None);
        }
        self.next = next;
        let hits = out.iter().filter(|h| h.is_some()).count() as u64;
        self.hits += hits;
        self.misses += day_starts.len() as u64 - hits;
        out
    }

    /// The days of `day_starts` not cached from `source` (counts neither hits nor misses).
    pub fn missing(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        day_starts: impl Iterator<Item = i64>,
        source: &SourceKey,
    ) -> Vec<i64> {
        let days = self.devices.get(&(factory.clone(), device.clone())).map(|d| &d.days);
        day_starts.filter(|s| !days.and_then(|d| d.get(s)).is_some_and(|e| e.source == *source)).collect()
    }

    /// Announces a computation of the closed day starting at `day_start` whose raw read
    /// covers `window`; hand the ticket to [`SlotCache::insert`] with the result.
    pub fn begin(
        &mut self,
        factory: &FactoryId,
        device: &DeviceId,
        day_start: i64,
        window: (i64, i64),
        source: &SourceKey,
    ) -> Ticket {
        let next = self.next;
        let key = (factory.clone(), device.clone());
        let cache =
            self.devices.entry(key.clone()).or_insert_with(|| DeviceCache { epoch: next, ..Default::default() });
        cache.horizon_ms = cache.horizon_ms.max(window.1);
        for p in &source.properties {
            if !cache.properties.contains(p) {
                cache.properties.push(p.clone());
            }
        }
        Ticket { key, day_start, window, epoch: cache.epoch }
    }

    /// Stores a computed closed day unless a point invalidated the device since the
    /// ticket; the stored entry as a hit (`None` when not stored).
    pub fn insert(&mut self, ticket: Ticket, source: SourceKey, day: std::sync::Arc<CachedDay>) -> Option<Hit> {
        let bytes = entry_bytes(&day, &source);
        if bytes > self.capacity_bytes {
            return None;
        }
        let tick = self.tick();
        let Ticket { key, day_start, window, epoch } = ticket;
        let cache = self.devices.get_mut(&key)?;
        if cache.epoch != epoch {
            return None;
        }
        let hit = Hit { totals: totals(&day.slots), day, generation: tick };
        let entry = DayEntry {
            source,
            day: hit.day.clone(),
            totals: hit.totals,
            generation: tick,
            window,
            tick,
            lru_tick: tick,
            bytes,
        };
        if let Some(old) = cache.days.insert(day_start, entry) {
            self.bytes -= old.bytes;
            self.lru.remove(&old.lru_tick);
        }
        self.bytes += bytes;
        self.lru.insert(tick, (key, day_start));
        // The new day has the latest tick and fits alone: what goes is older.
        self.evict();
        Some(hit)
    }

    /// Drops least recently used days until the cache fits. An index entry whose day was
    /// used since it was indexed moves to the day's last use instead (hits do not touch
    /// the index), so the day dropped is always the least recently used one.
    fn evict(&mut self) {
        while self.bytes > self.capacity_bytes {
            let Some((lru_tick, (key, day_start))) = self.lru.pop_first() else {
                return;
            };
            let Some(cache) = self.devices.get_mut(&key) else { continue };
            let Some(entry) = cache.days.get_mut(&day_start) else { continue };
            if entry.lru_tick != lru_tick {
                continue;
            }
            if entry.tick != lru_tick {
                entry.lru_tick = entry.tick;
                self.lru.insert(entry.tick, (key, day_start));
                continue;
            }
            if let Some(entry) = cache.days.remove(&day_start) {
                self.bytes -= entry.bytes;
            }
            if cache.days.is_empty() {
                self.devices.remove(&key);
            }
        }
    }

    /// A durable point of `device` at `ts_ms` for `property`: drops the cached days whose
    /// raw-read window contains it and voids computations in flight for the device.
    pub fn observe(&mut self, factory: &FactoryId, device: &DeviceId, property: &PropertyName, ts_ms: i64) {
        let key = (factory.clone(), device.clone());
        let Some(cache) = self.devices.get_mut(&key) else {
            return;
        };
        if ts_ms >= cache.horizon_ms || !cache.properties.contains(property) {
            return;
        }
        self.next += 1;
        cache.epoch = self.next;
        let hit: Vec<i64> =
            cache.days.iter().filter(|(_, e)| e.window.0 <= ts_ms && ts_ms < e.window.1).map(|(d, _)| *d).collect();
        for day in hit {
            if let Some(entry) = cache.days.remove(&day) {
                self.bytes -= entry.bytes;
                self.lru.remove(&entry.lru_tick);
            }
        }
    }

    /// Forgets everything of a device (its configuration changed).
    pub fn forget(&mut self, factory: &FactoryId, device: &DeviceId) {
        if let Some(cache) = self.devices.remove(&(factory.clone(), device.clone())) {
            for entry in cache.days.values() {
                self.bytes -= entry.bytes;
                self.lru.remove(&entry.lru_tick);
            }
        }
    }

    /// The bound on the bytes held.
    pub fn capacity(&self) -> usize {
        self.capacity_bytes
    }

    /// (bytes held, cached days, hits, misses).
    pub fn stats(&self) -> (usize, usize, u64, u64) {
        (self.bytes, self.lru.len(), self.hits, self.misses)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn f() -> FactoryId {
        FactoryId::parse("plant-a").unwrap()
    }

    fn d(id: &str) -> DeviceId {
        DeviceId::parse(id).unwrap()
    }

    fn p(name: &str) -> PropertyName {
        PropertyName::parse(name).unwrap()
    }

    fn source() -> SourceKey {
        SourceKey { text: "power_kw kW".into(), properties: vec![p("power_kw")] }
    }

    fn day(kwh: f64) -> CachedDay {
        CachedDay { slots: vec![Slot { start_ms: 0, kwh, idle_kwh: 0.0, covered_ms: 900_000 }; 96], gaps: vec![] }
    }

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_late_point_drops_its_day_and_voids_computations_in_flight() {
        let mut cache = SlotCache::new(1 << 20);
        let window = |start: i64| (start - 900_000, start + DAY + 900_000);
        for n in 0..3 {
            let ticket = cache.begin(&f(), &d("a"), n * DAY, window(n * DAY), &source());
            cache.insert(ticket, source(), day(n as f64).into());
        }
        assert_eq!(cache.get(&f(), &d("a"), DAY, &source()).unwrap().slots[0].kwh, 1.0);
        // Another source: a miss.
        let other = SourceKey { text: "energy kWh".into(), ..source() };
        assert!(cache.get(&f(), &d("a"), DAY, &other).is_none());
        // Another property of the device, or a live point after the horizon: nothing changes.
        cache.observe(&f(), &d("a"), &p("temp_c"), DAY + 5);
        cache.observe(&f(), &d("a"), &p("power_kw"), 10 * DAY);
        assert_eq!(cache.stats().1, 3);
        // A backfilled point 1 h into day 1 (outside day 0's window, which ends 15 min in).
        let ticket = cache.begin(&f(), &d("a"), 5 * DAY, window(5 * DAY), &source());
        cache.observe(&f(), &d("a"), &p("power_kw"), DAY + 3_600_000);
        assert!(cache.get(&f(), &d("a"), DAY, &source()).is_none());
        assert!(cache.get(&f(), &d("a"), 0, &source()).is_some());
        // The computation that started before the point does not store its result.
        cache.insert(ticket, source(), day(5.0).into());
        assert!(cache.get(&f(), &d("a"), 5 * DAY, &source()).is_none());
        // A point in the overlap of two days' windows drops both.
        cache.observe(&f(), &d("a"), &p("power_kw"), 3 * DAY - 60_000);
        assert!(cache.get(&f(), &d("a"), 2 * DAY, &source()).is_none());
        cache.forget(&f(), &d("a"));
        assert_eq!(cache.stats().0, 0);
    }

    #[test]
    fn the_least_recently_used_days_go_first() {
        let one = entry_bytes(&day(0.0), &source());
        let mut cache = SlotCache::new(one * 3);
        let window = |start: i64| (start, start + DAY);
        for n in 0..3 {
            let ticket = cache.begin(&f(), &d("a"), n * DAY, window(n * DAY), &source());
            cache.insert(ticket, source(), day(0.0).into());
        }
        assert!(cache.get(&f(), &d("a"), 0, &source()).is_some());
        let ticket = cache.begin(&f(), &d("b"), 0, window(0), &source());
        cache.insert(ticket, source(), day(0.0).into());
        assert!(cache.get(&f(), &d("a"), DAY, &source()).is_none(), "day 1 was the least recently used");
        assert!(cache.get(&f(), &d("a"), 0, &source()).is_some());
        assert!(cache.get(&f(), &d("b"), 0, &source()).is_some());
        assert!(cache.stats().0 <= one * 3);
    }
}
