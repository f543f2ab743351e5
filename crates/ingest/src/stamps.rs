//! Server-given timestamps ("stamps") for messages without their own `ts` (ADR 0009).
//!
//! A point's identity is (series, timestamp): two messages of a device stamped with the
//! same millisecond would be one point per property (the newer value wins) and one
//! observation for the rules. So every stamp of a device is unique within this process,
//! whichever MQTT connection or HTTP request the message came through:
//! stamp = max(now, previous stamp + 1, floor).
//!
//! A device sending faster than one message per millisecond makes its stamps run ahead of
//! the clock. The lead is bounded by back-pressure, never by re-using a time: when the next
//! stamp would be more than [`MAX_STAMP_LEAD_MS`] ahead, the caller waits until the clock
//! catches up (an MQTT connection then stops reading its socket, an HTTP request answers
//! later). The previous process gave stamps up to its clock + the lead, so no stamp is
//! given before the floor (start time + the lead): in the first second after a start, a
//! message without `ts` waits for it (once). A restart then never re-issues a stamp, as
//! long as the wall clock did not go back across it, and a stamp is never ahead of the
//! clock except for a device faster than the clock.
//!
//! The state is one `i64` per device, in sharded maps (a message takes one short lock of
//! one of [`SHARDS`] shards); devices silent for [`IDLE_EVICT_MS`] are dropped, which is
//! safe because their next stamp is the clock's time, already past the dropped one.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::Duration;

use factoryops_types::{Clock, DeviceId, FactoryId};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;

/// How far a device's stamps may run ahead of the clock before its sender waits.
pub const MAX_STAMP_LEAD_MS: i64 = 1_000;

/// A device whose last stamp is this far in the past is forgotten.
pub const IDLE_EVICT_MS: i64 = 60_000;

/// Independent locks; a message takes one of them for a few instructions.
const SHARDS: usize = 64;

/// How often a shard drops its idle devices (on the next stamp it gives).
const SWEEP_EVERY_MS: i64 = 10_000;

struct Shard {
    last: HashMap<(FactoryId, DeviceId), i64>,
    next_sweep_ms: i64,
}

/// The stamp allocator of one process; see the module docs.
pub struct Stamps {
    shards: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    floor_ms: i64,
    /// Stamps that had to wait for the clock (a device faster than 1 message/ms).
    waits: Counter,
    /// Stamps given more than the lead ahead because the wall clock went back.
    clock_steps: Counter,
}

impl Stamps {
    /// An allocator for a process started at `start_ms`.
    pub fn new(start_ms: i64, waits: Counter, clock_steps: Counter) -> Self {
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(Shard { last: HashMap::new(), next_sweep_ms: i64::MIN }))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Self {
            shards,
            hasher: std::collections::hash_map::RandomState::new(),
            floor_ms: start_ms.saturating_add(MAX_STAMP_LEAD_MS),
            waits,
            clock_steps,
        }
    }

    /// The device's next stamp, waiting (async) while it would run more than
    /// [`MAX_STAMP_LEAD_MS`] ahead of `clock`.
    pub async fn next(&self, factory: &FactoryId, device: &DeviceId, clock: &dyn Clock) -> i64 {
        let mut waited = false;
        loop {
            match self.try_next(factory, device, clock.now_ms()) {
                Ok(stamp) => return stamp,
                Err(wait) => {
                    if !waited {
                        self.waits.inc();
                        waited = true;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The device's next stamp at clock time `now_ms`, or how long to wait for it.
    pub fn try_next(&self, factory: &FactoryId, device: &DeviceId, now_ms: i64) -> Result<i64, Duration> {
        let mut h = self.hasher.build_hasher();
        factory.as_str().hash(&mut h);
        device.as_str().hash(&mut h);
        let mut shard = self.shards[(h.finish() as usize) % SHARDS].lock();
        if now_ms >= shard.next_sweep_ms {
            let horizon = now_ms.saturating_sub(IDLE_EVICT_MS);
            shard.last.retain(|_, last| *last >= horizon);
            shard.next_sweep_ms = now_ms.saturating_add(SWEEP_EVERY_MS);
        }
        let key = (factory.clone(), device.clone());
        let previous = shard.last.get(&key).copied();
        let mut stamp = now_ms.max(previous.map_or(i64::MIN, |p| p.saturating_add(1)));
        if stamp < self.floor_ms {
            // Only a device's first stamp (later ones follow it): right after the start,
            // wait for the floor rather than stamp ahead of the clock; a clock far behind
            // the floor went back, and waiting would stall as long.
            let wait = self.floor_ms - now_ms;
            if wait <= MAX_STAMP_LEAD_MS {
                return Err(Duration::from_millis(wait.unsigned_abs()));
            }
            self.clock_steps.inc();
            stamp = self.floor_ms;
        }
        let bound = now_ms.saturating_add(MAX_STAMP_LEAD_MS);
        if stamp > bound {
            // A sender faster than the clock is at most a millisecond past the bound; a
            // stamp far beyond it means the wall clock went back. Waiting for it to catch up
            // would stall the device for as long, so uniqueness wins over the bound.
            if stamp <= bound.saturating_add(MAX_STAMP_LEAD_MS) {
                return Err(Duration::from_millis((stamp - bound).unsigned_abs()));
            }
            self.clock_steps.inc();
        }
        shard.last.insert(key, stamp);
        Ok(stamp)
    }

    /// Devices currently remembered (tests: eviction bounds memory).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().last.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> FactoryId {
        FactoryId::parse("plant-1").unwrap()
    }

    fn d(id: &str) -> DeviceId {
        DeviceId::parse(id).unwrap()
    }

    fn stamps(start: i64) -> Stamps {
        Stamps::new(start, Counter::default(), Counter::default())
    }

    #[test]
    fn stamps_are_unique_and_start_at_the_floor() {
        let s = stamps(10_000);
        // The floor: a restart never re-issues what the previous process gave (≤ its now +
        // lead); right after the start the first stamp waits for it.
        assert_eq!(s.try_next(&f(), &d("a"), 10_000), Err(Duration::from_millis(1_000)));
        assert_eq!(s.try_next(&f(), &d("a"), 10_999), Err(Duration::from_millis(1)));
        assert_eq!(s.try_next(&f(), &d("a"), 11_000), Ok(11_000));
        assert_eq!(s.try_next(&f(), &d("a"), 11_000), Ok(11_001));
        // Another device has its own sequence.
        assert_eq!(s.try_next(&f(), &d("b"), 11_000), Ok(11_000));
        // The clock's time once it is past the previous stamp.
        assert_eq!(s.try_next(&f(), &d("a"), 20_000), Ok(20_000));
        assert_eq!(s.try_next(&f(), &d("a"), 20_000), Ok(20_001));
        // A clock far behind the floor went back: no stall, still unique.
        let s = stamps(10_000);
        assert_eq!(s.try_next(&f(), &d("a"), 5_000), Ok(11_000));
    }

    #[test]
    fn a_fast_device_waits_instead_of_reusing_a_stamp() {
        let s = stamps(0);
        let now = 5_000;
        // (past the floor: start 0 + lead)
        let mut given = Vec::new();
        while let Ok(stamp) = s.try_next(&f(), &d("a"), now) {
            given.push(stamp);
        }
        // now .. now + lead: 1,001 stamps, then the sender must wait one millisecond.
        assert_eq!(given.len(), 1_001);
        assert_eq!(given.first(), Some(&5_000));
        assert_eq!(given.last(), Some(&6_000));
        assert_eq!(s.try_next(&f(), &d("a"), now), Err(Duration::from_millis(1)));
        assert_eq!(s.try_next(&f(), &d("a"), now + 1), Ok(6_001));
    }

    #[test]
    fn a_clock_that_went_back_keeps_stamps_unique_without_stalling() {
        let s = stamps(0);
        assert_eq!(s.try_next(&f(), &d("a"), 100_000), Ok(100_000));
        // The wall clock jumps back an hour: the device continues after its last stamp.
        assert_eq!(s.try_next(&f(), &d("a"), 100_000 - 3_600_000), Ok(100_001));
        // A small step back (within the lead) is waited out like a fast sender.
        let s = stamps(0);
        assert_eq!(s.try_next(&f(), &d("a"), 100_000), Ok(100_000));
        assert_eq!(s.try_next(&f(), &d("a"), 98_500), Err(Duration::from_millis(501)));
    }

    #[test]
    fn idle_devices_are_forgotten() {
        let s = stamps(0);
        for i in 0..1_000 {
            s.try_next(&f(), &d(&format!("d{i}")), 10_000).unwrap();
        }
        assert_eq!(s.len(), 1_000);
        // Every shard sweeps on its next stamp once the devices were idle long enough
        // (2,000 new devices reach each of the 64 shards).
        let later = 10_000 + IDLE_EVICT_MS + SWEEP_EVERY_MS + 1;
        for i in 0..2_000 {
            s.try_next(&f(), &d(&format!("x{i}")), later).unwrap();
        }
        let old_left = (0..1_000)
            .filter(|i| {
                let key = (f(), d(&format!("d{i}")));
                s.shards.iter().any(|sh| sh.lock().last.contains_key(&key))
            })
            .count();
        assert_eq!(old_left, 0);
        // A forgotten device's next stamp is still after its last one (the clock moved on).
        assert_eq!(s.try_next(&f(), &d("d0"), later), Ok(later));
    }
}
