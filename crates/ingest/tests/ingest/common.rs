use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use factoryops_db::Database;
use factoryops_ingest::metrics::IngestMetrics;
use factoryops_ingest::mqtt::{MqttConfig, MqttServer};
use factoryops_ingest::{DeviceRegistry, IngestConfig, Ingestor, NewDevice, PropertyCatalogue};
use factoryops_platform::bus::MemoryBus;
use factoryops_testkit::TestDatabase;
use factoryops_tsdb::{
    EmbeddedConfig, EmbeddedStore, Point, Sample, SeriesQuery, StoreHealth, TelemetryStore, TsdbError,
};
use factoryops_types::{Clock, DeviceId, FactoryId, PropertyName, SystemClock};
use parking_lot::Mutex;

pub fn factory(id: &str) -> FactoryId {
    FactoryId::parse(id).unwrap()
}

pub fn device(id: &str) -> DeviceId {
    DeviceId::parse(id).unwrap()
}

pub fn prop(name: &str) -> PropertyName {
    PropertyName::parse(name).unwrap()
}

pub fn new_device(id: &str) -> NewDevice {
    NewDevice {
        id: device(id),
        name: format!("Device {id}"),
        device_type: "press".into(),
        location: "hall 1".into(),
        metadata: serde_json::json!({ "vendor": "acme" }),
        status: factoryops_ingest::DeviceStatus::Active,
    }
}

pub async fn open_db(db: &TestDatabase) -> Database {
    let database = Database::connect(&db.url).await.unwrap();
    database.migrate(&[&factoryops_db::MIGRATIONS, &factoryops_ingest::MIGRATIONS]).await.unwrap();
    database
}

/// An in-memory store that can be told to fail and counts its writes.
#[derive(Default)]
pub struct TestStore {
    pub points: Mutex<HashMap<(FactoryId, DeviceId, PropertyName), Vec<Sample>>>,
    pub writes: AtomicUsize,
    pub fail: AtomicBool,
    /// Makes each write take this long, so concurrent messages pile up behind it.
    pub delay_ms: AtomicUsize,
}

#[async_trait]
impl TelemetryStore for TestStore {
    async fn write(&self, factory: &FactoryId, points: &[Point]) -> Result<(), TsdbError> {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(TsdbError::Unavailable("test store is down".into()));
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        let mut all = self.points.lock();
        for p in points {
            all.entry((factory.clone(), p.device.clone(), p.property.clone()))
                .or_default()
                .push(Sample { ts_ms: p.ts_ms, value: p.value });
        }
        Ok(())
    }

    async fn query(&self, _: &FactoryId, _: &SeriesQuery) -> Result<Vec<Sample>, TsdbError> {
        Ok(Vec::new())
    }

    async fn latest(&self, factory: &FactoryId, device: &DeviceId) -> Result<Vec<(PropertyName, Sample)>, TsdbError> {
        let all = self.points.lock();
        let mut out: Vec<(PropertyName, Sample)> = all
            .iter()
            .filter(|((f, d, _), _)| f == factory && d == device)
            .filter_map(|((_, _, p), samples)| samples.last().map(|s| (p.clone(), *s)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn health(&self) -> StoreHealth {
        StoreHealth { ready: true, detail: "ok".into() }
    }

    async fn flush(&self) -> Result<(), TsdbError> {
        Ok(())
    }
}

pub struct Env {
    pub db: Database,
    pub registry: DeviceRegistry,
    pub ingestor: Ingestor,
    pub store: Arc<dyn TelemetryStore>,
    pub bus: Arc<MemoryBus>,
    pub clock: Arc<dyn Clock>,
    pub metrics: factoryops_platform::metrics::Metrics,
    pub _dir: tempfile::TempDir,
}

pub enum StoreKind {
    Embedded,
    /// A test double: a `TestStore`, or any store a test builds (slow, failing…).
    Test(Arc<dyn TelemetryStore>),
}

pub async fn env(db: &TestDatabase, store: StoreKind, config: IngestConfig) -> Env {
    let database = open_db(db).await;
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn TelemetryStore> = match store {
        StoreKind::Embedded => Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path()), clock.clone()).unwrap()),
        StoreKind::Test(s) => s,
    };
    let bus = Arc::new(MemoryBus::new());
    let catalogue = Arc::new(PropertyCatalogue::new(database.clone(), config.max_properties_per_device));
    let metrics = factoryops_platform::metrics::Metrics::new();
    let ingestor = Ingestor::start(
        config,
        catalogue,
        store.clone(),
        bus.clone(),
        IngestMetrics::register(&metrics),
        clock.clone(),
    );
    Env {
        registry: DeviceRegistry::new(database.clone()),
        db: database,
        ingestor,
        store,
        bus,
        clock,
        metrics,
        _dir: dir,
    }
}

/// Registers an active device and returns its secret.
pub async fn provision(env: &Env, f: &FactoryId, id: &str) -> String {
    env.registry.create(f, new_device(id), env.clock.now_ms()).await.unwrap();
    env.registry.issue_secret(f, &device(id), env.clock.now_ms()).await.unwrap().unwrap().secret
}

/// The MQTT endpoint over `env` on a free port.
pub async fn server(env: &Env, config: MqttConfig) -> MqttServer {
    MqttServer::bind(
        MqttConfig { addr: "127.0.0.1:0".into(), ..config },
        env.registry.clone(),
        env.ingestor.clone(),
        env.clock.clone(),
    )
    .await
    .unwrap()
}
