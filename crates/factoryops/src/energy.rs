//! Wires the energy service: its directory (time zones from identity, devices and
//! property semantics from ingest) and the consumer that keeps its slot cache true to
//! late telemetry.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono_tz::Tz;
use factoryops_energy::service::{Directory, EnergyService, PRIME_DAYS_BACK, RawRetention, ServiceError};
use factoryops_identity::Identity;
use factoryops_ingest::{DeviceFilter, DeviceRegistry, PropertyCatalogue};
use factoryops_platform::Config;
use factoryops_platform::bus::EventBus;
use factoryops_platform::shutdown::Shutdown;
use factoryops_types::{DeviceId, FactoryId, PropertyName, Semantics};
use tokio::task::JoinHandle;

pub struct EnergyDirectory {
    pub identity: Arc<Identity>,
    pub devices: DeviceRegistry,
    pub catalogue: Arc<PropertyCatalogue>,
}

fn directory_error(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Directory(e.to_string())
}

#[async_trait]
impl Directory for EnergyDirectory {
    async fn timezone(&self, factory: &FactoryId) -> Result<Option<Tz>, ServiceError> {
        let Some(found) = self.identity.factory(factory).await.map_err(directory_error)? else {
            return Ok(None);
        };
        found
            .timezone
            .parse::<Tz>()
            .map(Some)
            .map_err(|e| directory_error(format!("time zone {}: {e}", found.timezone)))
    }

    async fn semantics(&self, factory: &FactoryId) -> Result<Vec<(DeviceId, PropertyName, Semantics)>, ServiceError> {
        self.catalogue.semantics_for_factory(factory).await.map_err(directory_error)
    }

    async fn device_exists(&self, factory: &FactoryId, device: &DeviceId) -> Result<bool, ServiceError> {
        Ok(self.devices.get(factory, device).await.map_err(directory_error)?.is_some())
    }

    async fn idle_state_codes(&self, factory: &FactoryId, property: &PropertyName) -> Result<Vec<f64>, ServiceError> {
        let labels = self.catalogue.states().labels(factory, property).await.map_err(directory_error)?;
        Ok(labels
            .iter()
            .filter(|(_, label)| ["idle", "off", "setup"].iter().any(|idle| label.eq_ignore_ascii_case(idle)))
            .map(|(code, _)| f64::from(code))
            .collect())
    }

    async fn factories(&self) -> Result<Vec<FactoryId>, ServiceError> {
        let all = self.identity.list_factories().await.map_err(directory_error)?;
        all.iter().map(|f| FactoryId::parse(&f.id).map_err(directory_error)).collect()
    }

    async fn devices_of_type(&self, factory: &FactoryId, device_type: &str) -> Result<Vec<DeviceId>, ServiceError> {
        let mut out = Vec::new();
        let mut filter =
            DeviceFilter { device_type: Some(device_type.to_string()), limit: Some(500), ..DeviceFilter::default() };
        loop {
            let page = self.devices.list(factory, &filter).await.map_err(directory_error)?;
            out.extend(page.items.into_iter().map(|d| d.id));
            match page.next_cursor {
                Some(next) => filter.cursor = Some(next),
                None => return Ok(out),
            }
        }
    }
}

/// The embedded store's raw retention per factory; with InfluxDB (`tsdb_url`) its
/// retention policy is its own, so none is assumed.
pub fn raw_retention(config: &Config) -> RawRetention {
    if config.tsdb_url.is_some() {
        return RawRetention::default();
    }
    RawRetention {
        default_days: Some(config.tsdb.retention_raw_days),
        per_factory: config
            .tsdb
            .retention_factories
            .iter()
            .filter_map(|(f, days)| Some((FactoryId::parse(f).ok()?, days.raw_days)))
            .collect(),
    }
}

/// Feeds every durable telemetry batch to the service, which drops the cached days its
/// late points change and marks dirty the persisted days they change (ADR 0017). A
/// durable subscriber: the work per batch is a few map lookups, plus one statement per
/// device with late points below its persisted horizon.
pub fn spawn_cache_consumer(service: EnergyService, bus: &Arc<dyn EventBus>, shutdown: Shutdown) -> JoinHandle<()> {
    let mut batches = bus.subscribe_telemetry(1024);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                delivery = batches.next() => match delivery {
                    Some(delivery) => {
                        service.observe(&delivery.event);
                        if let Err(e) = service.observe_persisted(&delivery.event).await {
                            tracing::error!(error = %e, "marking persisted energy days dirty failed");
                        }
                        delivery.ack().await;
                    }
                    None => return,
                },
                _ = shutdown.triggered() => return,
            }
        }
    })
}

/// Stores the energy of closed local days in the background (ADR 0017): once at start,
/// then every `interval` (zero: never); after the first pass it primes the memory cache
/// from the stored days.
pub fn spawn_persister(service: EnergyService, interval: Duration, shutdown: Shutdown) -> JoinHandle<()> {
    tokio::spawn(async move {
        if interval.is_zero() {
            return;
        }
        let mut primed = false;
        loop {
            let started = std::time::Instant::now();
            // A pass stops at shutdown; the days it did not store are redone by the next run.
            tokio::select! {
                done = service.persist_closed_days() => match done {
                    Ok(0) => {}
                    Ok(days) => tracing::info!(days, secs = started.elapsed().as_secs_f64(), "energy days persisted"),
                    Err(e) => tracing::warn!(error = %e, "persisting energy days failed"),
                },
                _ = shutdown.triggered() => return,
            }
            // Once, after the first pass stored what it could: the first request after a
            // restart then reads memory, not ~30,000 stored device-days. A request racing
            // the priming is a cache miss as without it.
            if !primed {
                primed = true;
                let started = std::time::Instant::now();
                tokio::select! {
                    done = service.prime_cache(PRIME_DAYS_BACK) => match done {
                        Ok(days) => tracing::info!(days, secs = started.elapsed().as_secs_f64(), "energy cache primed"),
                        Err(e) => tracing::warn!(error = %e, "priming the energy cache failed"),
                    },
                    _ = shutdown.triggered() => return,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.triggered() => return,
            }
        }
    })
}
