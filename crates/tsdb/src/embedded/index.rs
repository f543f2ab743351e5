//! The series index: (factory, device, property) → series id, persisted as an
//! append-only log of definitions (same framing as the WAL), id = position.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use factoryops_types::{DeviceId, FactoryId, PropertyName};
use parking_lot::RwLock;

use super::log::{self, Cursor, put_str};
use crate::{Point, TsdbError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesKey {
    pub factory: FactoryId,
    pub device: DeviceId,
    pub property: PropertyName,
}

type Props = HashMap<String, u32>;

pub struct SeriesIndex {
    file: File,
    /// Per series id, its factory's position in `factories`. The names live once, in `map`:
    /// with 200k series a copy of every (factory, device, property) key was ~25 MB.
    factory_of: Vec<u32>,
    factories: Vec<FactoryId>,
    map: HashMap<String, HashMap<String, Props>>,
    dirty: Arc<AtomicBool>,
}

/// Lets the WAL thread make new definitions durable before the WAL records that use them.
pub struct IndexSyncer {
    file: File,
    dirty: Arc<AtomicBool>,
}

impl IndexSyncer {
    pub fn sync(&self) -> std::io::Result<()> {
        if self.dirty.swap(false, Ordering::SeqCst) {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

fn decode(payload: &[u8]) -> Result<(u32, SeriesKey), String> {
    let mut c = Cursor::new(payload);
    let id = c.u32()?;
    let factory = FactoryId::parse(c.str()?).map_err(|e| e.to_string())?;
    let device = DeviceId::parse(c.str()?).map_err(|e| e.to_string())?;
    let property = PropertyName::parse(c.str()?).map_err(|e| e.to_string())?;
    if !c.done() {
        return Err("trailing bytes".into());
    }
    Ok((id, SeriesKey { factory, device, property }))
}

impl SeriesIndex {
    pub fn open(path: &Path) -> Result<Self, TsdbError> {
        if !path.exists() {
            File::create(path)?.sync_all()?;
        }
        let mut keys: Vec<SeriesKey> = Vec::new();
        let outcome = log::scan(path, |payload| {
            let (id, key) = decode(payload)?;
            if id as usize != keys.len() {
                return Err(format!("series id {id} out of sequence"));
            }
            keys.push(key);
            Ok(())
        })?;
        if let Some(d) = outcome.damage {
            tracing::warn!(damage = %d, "cutting damaged series index tail");
            log::truncate(path, outcome.valid_len)?;
        }
        let file = OpenOptions::new().append(true).open(path)?;
        let mut idx = Self {
            file,
            factory_of: Vec::new(),
            factories: Vec::new(),
            map: HashMap::new(),
            dirty: Arc::new(AtomicBool::new(false)),
        };
        for k in keys {
            idx.insert_mem(k);
        }
        Ok(idx)
    }

    fn insert_mem(&mut self, key: SeriesKey) -> u32 {
        let id = self.factory_of.len() as u32;
        self.map
            .entry(key.factory.as_str().to_string())
            .or_default()
            .entry(key.device.as_str().to_string())
            .or_default()
            .insert(key.property.as_str().to_string(), id);
        let slot = match self.factories.iter().position(|f| *f == key.factory) {
            Some(slot) => slot,
            None => {
                self.factories.push(key.factory);
                self.factories.len() - 1
            }
        };
        self.factory_of.push(slot as u32);
        id
    }

    pub fn syncer(&self) -> Result<IndexSyncer, TsdbError> {
        Ok(IndexSyncer { file: self.file.try_clone()?, dirty: Arc::clone(&self.dirty) })
    }

    pub fn sync(&mut self) -> Result<(), TsdbError> {
        self.file.sync_data()?;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.factory_of.len()
    }

    pub fn contains(&self, id: u32) -> bool {
        (id as usize) < self.factory_of.len()
    }

    /// The factory a series belongs to.
    pub fn factory(&self, id: u32) -> Option<&FactoryId> {
        self.factory_of.get(id as usize).and_then(|&slot| self.factories.get(slot as usize))
    }

    pub fn lookup(&self, factory: &FactoryId, device: &DeviceId, property: &PropertyName) -> Option<u32> {
        self.map.get(factory.as_str())?.get(device.as_str())?.get(property.as_str()).copied()
    }

    pub fn properties(&self, factory: &FactoryId, device: &DeviceId) -> Vec<(PropertyName, u32)> {
        let Some(props) = self.map.get(factory.as_str()).and_then(|d| d.get(device.as_str())) else {
            return Vec::new();
        };
        // Names were validated when the series was created.
        props.iter().filter_map(|(name, &id)| PropertyName::parse(name.as_str()).ok().map(|n| (n, id))).collect()
    }

    fn create(&mut self, key: SeriesKey) -> Result<u32, TsdbError> {
        let id = self.factory_of.len() as u32;
        let mut payload = Vec::with_capacity(128);
        payload.extend_from_slice(&id.to_le_bytes());
        put_str(&mut payload, key.factory.as_str());
        put_str(&mut payload, key.device.as_str());
        put_str(&mut payload, key.property.as_str());
        let mut rec = Vec::with_capacity(payload.len() + 8);
        log::frame(&payload, &mut rec);
        self.file.write_all(&rec)?;
        self.dirty.store(true, Ordering::SeqCst);
        Ok(self.insert_mem(key))
    }
}

/// Series ids for every point, creating missing series.
pub fn resolve(index: &RwLock<SeriesIndex>, factory: &FactoryId, points: &[Point]) -> Result<Vec<u32>, TsdbError> {
    let mut ids = Vec::with_capacity(points.len());
    let mut missing = false;
    {
        let idx = index.read();
        let devices = idx.map.get(factory.as_str());
        // A message's points are consecutive and share their device: look it up once per run.
        let mut run: Option<(&DeviceId, Option<&Props>)> = None;
        for p in points {
            let props = match run {
                Some((device, props)) if *device == p.device => props,
                _ => {
                    let props = devices.and_then(|d| d.get(p.device.as_str()));
                    run = Some((&p.device, props));
                    props
                }
            };
            let id = props.and_then(|props| props.get(p.property.as_str())).copied();
            missing |= id.is_none();
            ids.push(id.unwrap_or(u32::MAX));
        }
    }
    if missing {
        let mut idx = index.write();
        for (p, id) in points.iter().zip(ids.iter_mut()) {
            if *id == u32::MAX {
                *id = match idx.lookup(factory, &p.device, &p.property) {
                    Some(existing) => existing,
                    None => idx.create(SeriesKey {
                        factory: factory.clone(),
                        device: p.device.clone(),
                        property: p.property.clone(),
                    })?,
                };
            }
        }
    }
    Ok(ids)
}
