//! The energy service (I/O): reads raw points through the `TelemetryStore` port, the
//! settings and groups from the [`EnergyStore`], and answers the API's questions with the
//! pure modules of this crate.

use std::sync::Arc;

use factoryops_tsdb::TelemetryStore;
use factoryops_types::{DeviceId, FactoryId};

use chrono::NaiveDate;

use crate::store::{DeviceEnergyConfig, EnergyStore, NewSetting, SettingVersion, StoreError};

/// Cheap to clone; one per process.
#[derive(Clone)]
pub struct EnergyService {
    inner: Arc<Inner>,
}

struct Inner {
    store: EnergyStore,
    #[allow(dead_code)]
    telemetry: Arc<dyn TelemetryStore>,
}

impl EnergyService {
    pub fn new(store: EnergyStore, telemetry: Arc<dyn TelemetryStore>) -> Self {
        Self { inner: Arc::new(Inner { store, telemetry }) }
    }

    pub fn store(&self) -> &EnergyStore {
        &self.inner.store
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

    /// Replaces a device's energy configuration.
    pub async fn put_device_config(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        config: &DeviceEnergyConfig,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.inner.store.put_device_config(factory, device, config, now_ms).await
    }
}
