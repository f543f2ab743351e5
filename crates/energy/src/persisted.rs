//! Persisted energy of closed local days (ADR 0017): the `energy_days` table holds, per
//! (factory, device, local day), the day's slots and gaps in a compact blob, what they
//! were computed from (`source`) and the raw-read window a late point must fall in to make
//! the day `dirty`. The service reads it between its memory cache and the raw points; a
//! background pass ([`crate::service::EnergyService::persist_closed_days`]) writes it.

use std::collections::HashMap;

use factoryops_db::DbError;
use factoryops_types::{DeviceId, FactoryId, PropertyName};
use sqlx::{AssertSqlSafe, Row};

use crate::cache::CachedDay;
use crate::store::{EnergyStore, StoreError};
use crate::{Gap, SLOT_MS, Slot};

/// One device-day as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PersistedDay {
    pub device: DeviceId,
    pub day_start: i64,
    pub day_end: i64,
    /// The raw-read window `[from, to)` the day was computed from.
    pub window: (i64, i64),
    /// The service's source key text (property, semantics, gap, idle settings).
    pub source: String,
    /// Properties whose late points change the day.
    pub properties: Vec<PropertyName>,
    pub day: CachedDay,
    pub dirty: bool,
    pub computed_at: i64,
}

/// A stored day without its body: what the background pass needs to know what to redo.
#[derive(Debug, Clone, PartialEq)]
pub struct DayIndex {
    pub device: DeviceId,
    pub day_start: i64,
    pub source: String,
    pub dirty: bool,
}

/// Per factory and device: the latest window end of its stored days and the properties
/// they depend on (points at or after the end, or of other properties, dirty nothing).
pub type Horizons = HashMap<FactoryId, HashMap<DeviceId, (i64, Vec<PropertyName>)>>;

const FORMAT: u8 = 1;
/// Slots all zero (a day without data): no per-slot bytes follow.
const EMPTY: u8 = 0;
const DENSE: u8 = 1;

/// The blob: a format byte, the slot count, a flag, per slot kWh and idle kWh (f64, so a
/// stored day reads back bit for bit) and covered milliseconds (u32), then the gaps. Slot
/// starts are implied: the day's slots are contiguous from its start.
pub fn encode(day: &CachedDay) -> Vec<u8> {
    let empty = day.slots.iter().all(|s| s.kwh == 0.0 && s.idle_kwh == 0.0 && s.covered_ms == 0);
    let mut out = Vec::with_capacity(10 + if empty { 0 } else { day.slots.len() * 20 } + day.gaps.len() * 16);
    out.push(FORMAT);
    out.extend_from_slice(&u32::try_from(day.slots.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.push(if empty { EMPTY } else { DENSE });
    if !empty {
        for s in &day.slots {
            out.extend_from_slice(&s.kwh.to_le_bytes());
            out.extend_from_slice(&s.idle_kwh.to_le_bytes());
            // A slot covers at most SLOT_MS (15 minutes), which fits a u32.
            out.extend_from_slice(&u32::try_from(s.covered_ms.clamp(0, SLOT_MS)).unwrap_or(0).to_le_bytes());
        }
    }
    out.extend_from_slice(&u32::try_from(day.gaps.len()).unwrap_or(u32::MAX).to_le_bytes());
    for g in &day.gaps {
        out.extend_from_slice(&g.from_ms.to_le_bytes());
        out.extend_from_slice(&g.to_ms.to_le_bytes());
    }
    out
}

/// The inverse of [`encode`] for a day starting at `day_start`.
pub fn decode(bytes: &[u8], day_start: i64) -> Result<CachedDay, String> {
    struct Reader<'a>(&'a [u8]);
    impl Reader<'_> {
        fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
            let (head, rest) = self.0.split_at_checked(N).ok_or("truncated energy day")?;
            self.0 = rest;
            head.try_into().map_err(|_| "truncated energy day".to_string())
        }
    }
    let mut r = Reader(bytes);
    let [format] = r.take::<1>()?;
    if format != FORMAT {
        return Err(format!("unknown energy day format {format}"));
    }
    let n = u32::from_le_bytes(r.take()?);
    let [flag] = r.take::<1>()?;
    let mut slots = Vec::with_capacity(n as usize);
    for i in 0..i64::from(n) {
        let start_ms = day_start + i * SLOT_MS;
        slots.push(match flag {
            EMPTY => Slot { start_ms, ..Slot::default() },
            DENSE => Slot {
                start_ms,
                kwh: f64::from_le_bytes(r.take()?),
                idle_kwh: f64::from_le_bytes(r.take()?),
                covered_ms: i64::from(u32::from_le_bytes(r.take()?)),
            },
            other => return Err(format!("unknown slot encoding {other}")),
        });
    }
    let gaps = u32::from_le_bytes(r.take()?);
    let mut out = Vec::with_capacity(gaps as usize);
    for _ in 0..gaps {
        out.push(Gap { from_ms: i64::from_le_bytes(r.take()?), to_ms: i64::from_le_bytes(r.take()?) });
    }
    if !r.0.is_empty() {
        return Err("trailing bytes after an energy day".into());
    }
    Ok(CachedDay { slots, gaps: out })
}

fn malformed(what: String) -> StoreError {
    StoreError::Db(DbError::Malformed(what))
}

fn properties_text(properties: &[PropertyName]) -> String {
    properties.iter().map(PropertyName::as_str).collect::<Vec<_>>().join(",")
}

fn parse_properties(text: &str) -> Result<Vec<PropertyName>, StoreError> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| PropertyName::parse(p).map_err(|e| malformed(format!("energy day property {p:?}: {e}"))))
        .collect()
}

fn device(text: &str) -> Result<DeviceId, StoreError> {
    DeviceId::parse(text).map_err(|e| malformed(format!("device id {text:?}: {e}")))
}

/// Devices per `IN (…)` list: keeps statements well under every backend's limits.
const CHUNK: usize = 200;

impl EnergyStore {
    /// The stored days of the devices starting in `[from, to)`.
    pub async fn energy_days(
        &self,
        factory: &FactoryId,
        devices: &[DeviceId],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<PersistedDay>, StoreError> {
        let mut out = Vec::new();
        for chunk in devices.chunks(CHUNK) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT device_id, day_start, day_end, window_from, window_to, source, properties, body, dirty, computed_at \
                 FROM energy_days WHERE factory_id = ? AND day_start >= ? AND day_start < ? AND device_id IN ({marks})"
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(factory.as_str()).bind(from_ms).bind(to_ms);
            for d in chunk {
                query = query.bind(d.as_str());
            }
            for row in query.fetch_all(self.db.pool()).await? {
                let day_start: i64 = row.try_get("day_start")?;
                let body: Vec<u8> = row.try_get("body")?;
                let dirty: i64 = row.try_get("dirty")?;
                let properties: String = row.try_get("properties")?;
                let device_id: String = row.try_get("device_id")?;
                out.push(PersistedDay {
                    device: device(&device_id)?,
                    day_start,
                    day_end: row.try_get("day_end")?,
                    window: (row.try_get("window_from")?, row.try_get("window_to")?),
                    source: row.try_get("source")?,
                    properties: parse_properties(&properties)?,
                    day: decode(&body, day_start)
                        .map_err(|e| malformed(format!("{device_id} day {day_start}: {e}")))?,
                    dirty: dirty != 0,
                    computed_at: row.try_get("computed_at")?,
                });
            }
        }
        Ok(out)
    }

    /// Every stored day of the factory starting at or after `from` (no bodies).
    pub async fn energy_day_index(&self, factory: &FactoryId, from_ms: i64) -> Result<Vec<DayIndex>, StoreError> {
        let rows = sqlx::query(
            "SELECT device_id, day_start, source, dirty FROM energy_days WHERE factory_id = ? AND day_start >= ?",
        )
        .bind(factory.as_str())
        .bind(from_ms)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let device_id: String = row.try_get("device_id")?;
                let dirty: i64 = row.try_get("dirty")?;
                Ok(DayIndex {
                    device: device(&device_id)?,
                    day_start: row.try_get("day_start")?,
                    source: row.try_get("source")?,
                    dirty: dirty != 0,
                })
            })
            .collect()
    }

    /// Stores (replaces) computed days, clean, in one transaction.
    pub async fn put_energy_days(&self, factory: &FactoryId, days: &[PersistedDay]) -> Result<(), StoreError> {
        if days.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write().await?;
        for d in days {
            sqlx::query("DELETE FROM energy_days WHERE factory_id = ? AND device_id = ? AND day_start = ?")
                .bind(factory.as_str())
                .bind(d.device.as_str())
                .bind(d.day_start)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO energy_days (factory_id, device_id, day_start, day_end, window_from, window_to, source, properties, body, dirty, computed_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(factory.as_str())
            .bind(d.device.as_str())
            .bind(d.day_start)
            .bind(d.day_end)
            .bind(d.window.0)
            .bind(d.window.1)
            .bind(d.source.as_str())
            .bind(properties_text(&d.properties))
            .bind(encode(&d.day))
            .bind(i64::from(d.dirty))
            .bind(d.computed_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks dirty the device's stored days whose window meets `[min_ts, max_ts]` (a late
    /// point landed there); returns how many.
    pub async fn mark_energy_days_dirty(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        min_ts: i64,
        max_ts: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let done = sqlx::query(
            "UPDATE energy_days SET dirty = 1 WHERE factory_id = ? AND device_id = ? AND window_from <= ? AND window_to > ? AND dirty = 0",
        )
        .bind(factory.as_str())
        .bind(device.as_str())
        .bind(max_ts)
        .bind(min_ts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Per device with stored days: the latest window end and the properties they depend on.
    pub async fn energy_day_horizons(&self) -> Result<Horizons, StoreError> {
        let rows = sqlx::query(
            "SELECT factory_id, device_id, properties, MAX(window_to) AS horizon FROM energy_days \
             GROUP BY factory_id, device_id, properties",
        )
        .fetch_all(self.db.pool())
        .await?;
        let mut out: Horizons = HashMap::new();
        for row in rows {
            let factory: String = row.try_get("factory_id")?;
            let factory = FactoryId::parse(&factory).map_err(|e| malformed(format!("factory id {factory:?}: {e}")))?;
            let device_id: String = row.try_get("device_id")?;
            let properties: String = row.try_get("properties")?;
            let horizon: i64 = row.try_get("horizon")?;
            let entry = out.entry(factory).or_default().entry(device(&device_id)?).or_insert((i64::MIN, Vec::new()));
            entry.0 = entry.0.max(horizon);
            for p in parse_properties(&properties)? {
                if !entry.1.contains(&p) {
                    entry.1.push(p);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_day_reads_back_bit_for_bit() {
        let start = 1_764_543_600_000;
        let slots: Vec<Slot> = (0..100)
            .map(|i| Slot {
                start_ms: start + i * SLOT_MS,
                kwh: 0.1 * i as f64 + 1.0 / 3.0,
                idle_kwh: if i % 3 == 0 { 0.05 } else { 0.0 },
                covered_ms: if i == 7 { 300_000 } else { SLOT_MS },
            })
            .collect();
        let day =
            CachedDay { slots, gaps: vec![Gap { from_ms: start + 7 * SLOT_MS, to_ms: start + 7 * SLOT_MS + 600_000 }] };
        let bytes = encode(&day);
        assert_eq!(bytes.len(), 1 + 4 + 1 + 100 * 20 + 4 + 16);
        assert_eq!(decode(&bytes, start).unwrap(), day);
        assert!(decode(&bytes[..bytes.len() - 1], start).is_err());

        // A day without data: no slot bytes, the slots come back zero.
        let empty = CachedDay {
            slots: (0..96).map(|i| Slot { start_ms: start + i * SLOT_MS, ..Slot::default() }).collect(),
            gaps: vec![Gap { from_ms: start, to_ms: start + 96 * SLOT_MS }],
        };
        let bytes = encode(&empty);
        assert_eq!(bytes.len(), 1 + 4 + 1 + 4 + 16);
        assert_eq!(decode(&bytes, start).unwrap(), empty);
    }
}
