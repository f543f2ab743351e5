use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use factoryops_api::{AppState, EdgeConfig, ReadinessCheck, build_router};
use factoryops_db::Database;
use factoryops_identity::{Identity, IdentityConfig, ROOT_USERNAME, jwt_secret_from_data_dir};
use factoryops_ingest::metrics::IngestMetrics;
use factoryops_ingest::mqtt::{MqttConfig, MqttError, MqttServer, MqttTlsConfig};
use factoryops_ingest::{DeviceRegistry, IngestConfig, Ingestor, PropertyCatalogue};
use factoryops_notify::NotificationStore;
use factoryops_notify::health::HealthNotifier;
use factoryops_notify::metrics::NotifyMetrics;
use factoryops_notify::worker::NotificationWorker;
use factoryops_platform::Config;
use factoryops_platform::bus::{EventBus, MemoryBus};
use factoryops_platform::fdlimit::{ConnectionBudget, nofile_limit};
use factoryops_platform::metrics::Metrics;
use factoryops_platform::shutdown::{Deadline, Shutdown};
use factoryops_rules::{EngineConfig, RulesEngine};
use factoryops_types::Clock;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::components::{Component, Components};

/// Why the server could not start; each names what to change.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{key} {addr} is already in use: set {env} to another address (port 0 picks a free one)")]
    AddressInUse { key: &'static str, env: &'static str, addr: String },
    #[error("cannot listen on {key} {addr}: {source}")]
    Bind { key: &'static str, addr: String, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Config(#[from] factoryops_platform::ConfigError),
    #[error("data_dir {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("database: {0}")]
    Database(#[from] factoryops_db::DbError),
    #[error("identity: {0}")]
    Identity(#[from] factoryops_identity::IdentityError),
    #[error("mqtt: {0}")]
    Mqtt(#[from] factoryops_ingest::mqtt::MqttError),
    #[error("rules: {0}")]
    Rules(#[from] factoryops_rules::RulesError),
    #[error("tsdb: {0}")]
    Tsdb(#[from] factoryops_tsdb::TsdbError),
    #[error("notifications: {0}")]
    Notify(#[from] crate::notify::NotifySetupError),
    #[error("object store: {0}")]
    ObjectStore(String),
    #[error("JWT secret in data_dir: {0}")]
    JwtSecret(std::io::Error),
    #[error("energy: {0}")]
    Energy(String),
}

/// A running server. Dropping it does not stop it: call [`Server::shutdown`] or
/// send SIGTERM and [`Server::wait`].
pub struct Server {
    http_addr: Option<SocketAddr>,
    mqtt_addr: Option<SocketAddr>,
    shutdown: Shutdown,
    task: JoinHandle<bool>,
}

impl Server {
    /// The bound HTTP address (the real port when configured with port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The bound MQTT address, when this process runs the ingest component.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }

    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Waits until the server has stopped; `true` when every phase finished within the deadline.
    pub async fn wait(self) -> bool {
        self.task.await.unwrap_or(false)
    }

    /// Triggers an ordered shutdown and waits for it.
    pub async fn shutdown(self) -> bool {
        self.shutdown.trigger();
        self.wait().await
    }
}

/// Opens the database (migrating it) as `migrate` and `serve` both need.
pub async fn open_database(config: &Config) -> Result<Database, StartError> {
    let db = Database::connect(&config.effective_database_url()).await?;
    db.migrate(&[
        &factoryops_db::MIGRATIONS,
        &factoryops_identity::MIGRATIONS,
        &factoryops_ingest::MIGRATIONS,
        &factoryops_rules::MIGRATIONS,
        &factoryops_notify::MIGRATIONS,
        &factoryops_energy::MIGRATIONS,
        &factoryops_dashboards::MIGRATIONS,
        &factoryops_datasets::store::MIGRATIONS,
    ])
    .await?;
    Ok(db)
}

/// Starts the chosen components and returns once every listener is bound.
pub async fn start(config: Config, components: Components, clock: Arc<dyn Clock>) -> Result<Server, StartError> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| StartError::DataDir { path: config.data_dir.display().to_string(), source })?;
    let shutdown = Shutdown::new();
    let metrics = Metrics::new();
    let budget = connection_budget(&config);
    let db = open_database(&config).await?;
    let turn_wait = Metrics::latency_histogram();
    metrics.register(
        "db_write_turn_wait_seconds",
        "How long SQLite writers waited for this process's write turn",
        turn_wait.clone(),
    );
    db.observe_write_turns(turn_wait);
    let checkpoints = tokio::spawn(db.clone().run_checkpoints(Duration::from_secs(1), shutdown.clone()));
    // Stored `Idempotency-Key` responses expire after 24 h (ADR 0012).
    let idempotency_purge = tokio::spawn(factoryops_db::idempotency::IdempotencyStore::new(db.clone()).run_cleanup(
        clock.clone(),
        Duration::from_secs(600),
        shutdown.clone(),
    ));
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let outbox_wake = Arc::new(tokio::sync::Notify::new());
    let identity = Arc::new(build_identity(&config, &db, clock.clone()).await?);
    let telemetry = crate::telemetry::open(&config, clock.clone()).await?;
    if let Some(embedded) = &telemetry.embedded {
        crate::telemetry::export_stats(&metrics, embedded.clone(), shutdown.clone());
    }
    let store = telemetry.store.clone();
    if let Some(health) = telemetry.health {
        crate::telemetry::announce_health(health, bus.clone(), clock.clone());
    }
    // The object store (ADR 0018): its health is probed in the background; while it is
    // down, work that needs it is refused and the operators are told, nothing else stops.
    let objects = crate::objects::open(&config, &metrics)?;
    let (storage, storage_monitor) = factoryops_objstore::health::StorageMonitor::start(
        objects.clone(),
        Duration::from_secs(config.object_store.check_interval_secs),
        clock.clone(),
        shutdown.token(),
    )
    .await;
    crate::objects::announce_health(storage.subscribe(), bus.clone(), clock.clone(), &metrics);
    // Long work runs as jobs (ADR 0018): every process can submit and follow them; the
    // ones with the analytics or reports component run them.
    let jobs_wake = factoryops_jobs::Wake::new();
    let job_queue = factoryops_db::jobs::JobQueue::new(db.clone());
    let jobs = factoryops_jobs::Jobs::new(job_queue.clone(), clock.clone(), jobs_wake.clone());
    let datasets = factoryops_datasets::store::DatasetStore::new(db.clone());
    // Started once the reports handler (which needs the energy service, below) is registered.
    let job_runtime =
        (components.contains(Component::Analytics) || components.contains(Component::Reports)).then(|| {
            // Components register their job kinds' handlers on this runtime before it starts.
            let mut runtime = factoryops_jobs::JobRuntime::new(
                job_queue.clone(),
                clock.clone(),
                crate::jobs::runtime_config(&config),
                jobs_wake.clone(),
            );
            if components.contains(Component::Analytics) {
                crate::analytics::register(
                    &mut runtime,
                    crate::analytics::Deps {
                        store: store.clone(),
                        objects: objects.clone(),
                        storage: storage.clone(),
                        datasets: datasets.clone(),
                        identity: identity.clone(),
                        clock: clock.clone(),
                        tmp_dir: config.data_dir.join("tmp"),
                    },
                );
            }
            runtime
        });
    let ingest_config = ingest_config(&config);
    let catalogue = Arc::new(
        PropertyCatalogue::new(db.clone(), ingest_config.max_properties_per_device)
            .with_max_state_labels(config.ingest.max_state_labels),
    );
    let ingestor = Ingestor::start(
        ingest_config,
        catalogue.clone(),
        store.clone(),
        bus.clone(),
        IngestMetrics::register(&metrics),
        clock.clone(),
    );
    let devices = DeviceRegistry::new(db.clone());
    let energy = factoryops_energy::service::EnergyService::new(
        factoryops_energy::store::EnergyStore::new(db.clone()),
        store.clone(),
        Arc::new(crate::energy::EnergyDirectory {
            identity: identity.clone(),
            devices: devices.clone(),
            catalogue: catalogue.clone(),
        }),
        clock.clone(),
        config.energy.cache_bytes,
        {
            let cache = factoryops_energy::service::CacheMetrics::default();
            metrics.register(
                "energy_cache_hits",
                "Closed device-days of energy slots answered from memory",
                cache.hits.clone(),
            );
            metrics.register(
                "energy_cache_misses",
                "Closed device-days of energy slots computed from raw points",
                cache.misses.clone(),
            );
            metrics.register("energy_cache_bytes", "Bytes held by the energy slot cache", cache.bytes.clone());
            metrics.register(
                "energy_days_read",
                "Closed device-days of energy read from the persisted energy_days",
                cache.stored.clone(),
            );
            metrics.register(
                "energy_days_persisted",
                "Closed device-days of energy computed and persisted by the background pass",
                cache.persisted.clone(),
            );
            cache
        },
        crate::energy::raw_retention(&config),
    );
    // Before the consumer: a late point must find every device that has persisted days.
    energy.load_persisted().await.map_err(|e| StartError::Energy(e.to_string()))?;
    // Subscribed before any ingestion starts, so no late point slips past the cache.
    let energy_cache = crate::energy::spawn_cache_consumer(energy.clone(), &bus, shutdown.clone());
    let energy_persist = crate::energy::spawn_persister(
        energy.clone(),
        Duration::from_secs(config.energy.persist_interval_secs),
        shutdown.clone(),
    );
    let job_runtime = job_runtime.map(|mut runtime| {
        if components.contains(Component::Reports) {
            crate::reports::register(
                &mut runtime,
                crate::reports::ReportRender {
                    energy: energy.clone(),
                    alerts: factoryops_rules::RulesStore::new(db.clone()),
                    notifications: NotificationStore::new(db.clone()),
                    devices: devices.clone(),
                    identity: identity.clone(),
                    objects: objects.clone(),
                    storage: storage.clone(),
                    clock: clock.clone(),
                },
            );
        }
        runtime.start()
    });
    let notification_store = NotificationStore::new(db.clone());
    let worker = NotificationWorker::new(
        notification_store.clone(),
        crate::notify::channels(&config)?,
        crate::notify::worker_config(&config),
        clock.clone(),
        NotifyMetrics::register(&metrics),
        bus.clone(),
    );
    let engine_config = EngineConfig {
        notifier: Some(crate::notify::notifier(&config, identity.clone())),
        bus: Some(bus.clone()),
        state_labels: Some(Arc::new(crate::rules::IngestStateLabels(ingestor.catalogue().states().clone()))),
        energy_config: Some(Arc::new(crate::rules::EnergyRulesConfig {
            catalogue: catalogue.clone(),
            energy: factoryops_energy::store::EnergyStore::new(db.clone()),
        })),
        specific_energy: Some(Arc::new(crate::rules::EnergySpecific(energy.clone()))),
        max_backtest_points: config.rules.max_backtest_points,
        ..EngineConfig::default()
    };
    let rules = RulesEngine::start(db.clone(), clock.clone(), engine_config).await?;
    rules.add_commit_wake(outbox_wake.clone());
    rules.add_commit_wake(worker.wake());
    let mut notify_tasks = Vec::new();
    if components.contains(Component::Notify) {
        notify_tasks.push(worker.spawn(shutdown.clone()));
        let health = HealthNotifier::new(
            notification_store.clone(),
            crate::notify::health_config(&config),
            clock.clone(),
            worker.wake(),
        );
        notify_tasks.push(health.spawn(&bus, shutdown.clone()));
    }
    let mut factories = Vec::new();
    for factory in identity.list_factories().await? {
        if let Ok(id) = factoryops_types::FactoryId::parse(factory.id) {
            rules.set_factory_timezone(&id, &factory.timezone).await?;
            factories.push(id);
        }
    }
    let mut rule_tasks = Vec::new();
    if components.contains(Component::Rules) {
        rule_tasks.push(rules.spawn_timer(shutdown.clone()));
        rule_tasks.push(crate::rules::spawn_consumer(
            rules.clone(),
            bus.clone(),
            devices.clone(),
            clock.clone(),
            shutdown.clone(),
            crate::rules::Replay { factories, store: store.clone() },
            crate::rules::ConsumerMetrics::register(&metrics),
        ));
    }
    let mqtt = if components.contains(Component::Ingest) {
        let mqtt_config = MqttConfig {
            addr: config.mqtt_addr.clone(),
            tls: match (&config.mqtt_tls_addr, &config.mqtt_tls_cert, &config.mqtt_tls_key) {
                (Some(addr), Some(cert), Some(key)) => {
                    Some(MqttTlsConfig { addr: addr.clone(), cert_path: cert.clone(), key_path: key.clone() })
                }
                _ => None,
            },
            max_connections: budget.mqtt_max,
            ..mqtt_config(&config)
        };
        let server = MqttServer::bind(mqtt_config, devices.clone(), ingestor.clone(), clock.clone()).await.map_err(
            |e| match e {
                MqttError::Bind { addr, source } if source.kind() == std::io::ErrorKind::AddrInUse => {
                    let (key, env) = if addr == config.mqtt_addr {
                        ("mqtt_addr", "FACTORYOPS_MQTT_ADDR")
                    } else {
                        ("mqtt_tls_addr", "FACTORYOPS_MQTT_TLS_ADDR")
                    };
                    StartError::AddressInUse { key, env, addr }
                }
                other => StartError::Mqtt(other),
            },
        )?;
        tracing::info!(addr = %server.local_addr(), tls = ?server.tls_local_addr(), "mqtt listening");
        Some(server)
    } else {
        None
    };
    let mqtt_addr = mqtt.as_ref().map(MqttServer::local_addr);
    let mqtt_port = mqtt_addr
        .map(|a| a.port())
        .or_else(|| config.mqtt_addr.parse::<SocketAddr>().ok().map(|a| a.port()))
        .unwrap_or(1883);

    let relay = tokio::spawn(factoryops_db::outbox::run_relay(
        db.clone(),
        bus.clone(),
        clock.clone(),
        outbox_wake.clone(),
        shutdown.clone(),
        {
            let delay = Metrics::latency_histogram();
            metrics.register(
                "outbox_relay_delay_seconds",
                "From an outbox event's commit to its publication on the bus",
                delay.clone(),
            );
            delay
        },
    ));

    for component in components.iter() {
        if !matches!(
            component,
            Component::Api
                | Component::Ingest
                | Component::Rules
                | Component::Notify
                | Component::Analytics
                | Component::Reports
        ) {
            tracing::info!(component = %component, "component selected; it has no work to run in this build yet");
        }
    }

    let mut http_addr = None;
    let mut http_task = None;
    if components.contains(Component::Api) {
        let mut readiness: Vec<Arc<dyn ReadinessCheck>> =
            vec![Arc::new(db.clone()), Arc::new(crate::telemetry::TelemetryReadiness(store.clone()))];
        if components.contains(Component::Notify) {
            readiness.push(Arc::new(crate::notify::NotifyReadiness(worker.clone())));
        }
        let state = AppState {
            db: db.clone(),
            identity: identity.clone(),
            devices: devices.clone(),
            rules: rules.clone(),
            notifications: notification_store.clone(),
            notify_wake: worker.wake(),
            ingestor: ingestor.clone(),
            energy: energy.clone(),
            dashboards: factoryops_dashboards::DashboardStore::new(db.clone()),
            store: store.clone(),
            bus: bus.clone(),
            mqtt: mqtt.as_ref().map(MqttServer::handle),
            mqtt_port,
            public_factory_list: config.auth.public_factory_list,
            metrics: metrics.clone(),
            clock: clock.clone(),
            shutdown: shutdown.clone(),
            readiness: Arc::new(readiness),
            body_limit_bytes: config.http.body_limit_bytes,
            request_timeout: Duration::from_secs(config.http.request_timeout_secs),
            objects: objects.clone(),
            storage: storage.clone(),
            jobs: jobs.clone(),
            datasets: datasets.clone(),
        };
        let listener = bind("http_addr", "FACTORYOPS_HTTP_ADDR", &config.http_addr).await?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            key: "http_addr",
            addr: config.http_addr.clone(),
            source,
        })?;
        tracing::info!(%addr, "http listening");
        http_addr = Some(addr);
        let router = build_router(state);
        let stop = shutdown.clone();
        let edge = EdgeConfig {
            header_read_timeout: Duration::from_secs(config.http.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(config.http.idle_timeout_secs),
            max_connections: budget.http_max,
            max_connections_per_ip: budget.http_max_per_ip,
        };
        let metrics = metrics.clone();
        http_task = Some(tokio::spawn(async move {
            factoryops_api::serve(listener, router, edge, &metrics, async move { stop.triggered().await }).await;
        }));
    }

    let deadline_total = Duration::from_secs(config.shutdown_timeout_secs);
    let task = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.triggered().await;
            let deadline = Deadline::after(deadline_total);
            let mut clean = true;
            // 1. Stop intake and drain: MQTT stops accepting and acks what is in flight; the
            //    HTTP server stops accepting and finishes in-flight requests.
            if let Some(mqtt) = mqtt {
                clean &= deadline.run("drain mqtt", mqtt.shutdown()).await;
            }
            if let Some(task) = http_task {
                let abort = task.abort_handle();
                if !deadline.run("drain http", task).await {
                    abort.abort();
                    clean = false;
                }
            }
            // 2. Drain the ingest queue into the store; stop rule evaluation.
            clean &= deadline.run("drain ingest", ingestor.shutdown()).await;
            clean &= deadline.run("stop rules", futures_join(rule_tasks)).await;
            clean &= deadline.run("stop energy cache consumer", energy_cache).await;
            clean &= deadline.run("stop energy persister", energy_persist).await;
            // Sends in flight finish (each bounded by its timeout); queued ones wait in the outbox.
            clean &= deadline.run("stop notifications", futures_join(notify_tasks)).await;
            // Jobs stop claiming; running ones stop at a checkpoint or are released.
            if let Some(runtime) = job_runtime {
                let stopped = tokio::time::timeout(deadline.remaining(), runtime.shutdown(deadline.remaining() / 2));
                let in_time = matches!(stopped.await, Ok(true));
                tracing::info!(in_time, "job runtime stopped");
                clean &= in_time;
            }
            // 2. Flush: points become durable in part files, events committed to the outbox reach the bus.
            clean &= deadline
                .run("flush tsdb", async {
                    if let Err(e) = store.flush().await {
                        tracing::error!(error = %e, "tsdb flush failed; the WAL still holds every acknowledged point");
                    }
                })
                .await;
            clean &= deadline.run("flush outbox", relay).await;
            clean &= deadline.run("stop checkpoints", checkpoints).await;
            clean &= deadline.run("stop idempotency purge", idempotency_purge).await;
            clean &= deadline.run("stop storage monitor", storage_monitor).await;
            // 3. Close storage.
            clean &= deadline.run("close database", db.close()).await;
            tracing::info!(clean, "shutdown complete");
            clean
        })
    };

    Ok(Server { http_addr, mqtt_addr, shutdown, task })
}

/// The connection caps from the descriptor limit in force (the binary raised it to the
/// hard limit before starting) and the configured keys.
fn connection_budget(config: &Config) -> ConnectionBudget {
    // Where the limit cannot be read, assume the common default rather than unlimited.
    let budget = ConnectionBudget::new(nofile_limit().unwrap_or(1024), config);
    tracing::info!(
        fd_limit = budget.fd_limit,
        fd_reserve = budget.reserve,
        http_max_connections = budget.http_max,
        http_max_connections_per_ip = budget.http_max_per_ip,
        mqtt_max_connections = budget.mqtt_max,
        "connection caps"
    );
    if !budget.leaves_reserve() {
        tracing::warn!(
            fd_limit = budget.fd_limit,
            "http.max_connections + mqtt.max_connections + fd_reserve exceed the descriptor limit: a flood of connections can starve the database and the TSDB of descriptors; lower the caps or raise the hard limit (ulimit -Hn, LimitNOFILE=)"
        );
    }
    budget
}

async fn build_identity(config: &Config, db: &Database, clock: Arc<dyn Clock>) -> Result<Identity, StartError> {
    let secret = match &config.auth.jwt_secret {
        Some(secret) => secret.expose().as_bytes().to_vec(),
        None => jwt_secret_from_data_dir(&config.data_dir).map_err(StartError::JwtSecret)?,
    };
    let mut identity_config = IdentityConfig::new(secret, config.auth.bcrypt_cost);
    identity_config.access_ttl_secs = i64::try_from(config.auth.access_token_ttl_secs).unwrap_or(900);
    identity_config.refresh_ttl_secs = i64::try_from(config.auth.refresh_token_ttl_secs).unwrap_or(30 * 24 * 3600);
    let identity = Identity::new(db.clone(), clock, identity_config).await?;
    let configured = config.root_password.as_ref().map(|s| s.expose());
    if let Some(generated) = identity.bootstrap_root(configured).await? {
        // The one time this password is shown: the spec asks for it in the log, once.
        tracing::warn!(
            username = ROOT_USERNAME,
            password = %generated,
            "platform root created; this password is shown only now: log in at POST /api/v1/platform/login and change it"
        );
    }
    Ok(identity)
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

async fn bind(key: &'static str, env: &'static str, addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            StartError::AddressInUse { key, env, addr: addr.to_string() }
        } else {
            StartError::Bind { key, addr: addr.to_string(), source }
        }
    })
}

/// The `ingest.*` keys over the pipeline's defaults.
fn ingest_config(config: &Config) -> IngestConfig {
    let limits = &config.ingest;
    let mut ingest = IngestConfig {
        max_properties_per_device: limits.max_properties_per_device,
        queue_capacity: limits.queue_capacity,
        last_errors_per_device: limits.last_errors_per_device,
        ..IngestConfig::default()
    };
    ingest.limits.max_payload_bytes = limits.max_payload_bytes;
    ingest.limits.max_properties = limits.max_properties_per_message;
    ingest.limits.max_depth = limits.max_depth;
    ingest.limits.max_state_label_chars = limits.max_state_label_chars;
    ingest.limits.max_clock_skew_ms =
        i64::try_from(limits.max_clock_skew_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    // The pipeline caps it by the store's raw retention per factory.
    ingest.limits.max_backfill_ms =
        limits.max_backfill_secs.map(|secs| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX));
    ingest
}

/// The `mqtt.*` keys over the endpoint's defaults (addresses and TLS are set by the caller).
fn mqtt_config(config: &Config) -> MqttConfig {
    let limits = &config.mqtt;
    let mut mqtt = MqttConfig {
        max_packet_bytes: limits.max_packet_bytes,
        receive_maximum: limits.receive_maximum,
        max_inflight_total: limits.max_inflight_total,
        max_keep_alive_secs: limits.max_keep_alive_secs,
        max_session_expiry_secs: limits.max_session_expiry_secs,
        v311_session_expiry_secs: limits.v311_session_expiry_secs,
        max_offline_sessions: limits.max_offline_sessions,
        ..MqttConfig::default()
    };
    mqtt.connect_limits.per_ip_per_sec = limits.connects_per_ip_per_sec;
    mqtt.connect_limits.per_ip_burst = limits.connects_per_ip_burst;
    mqtt.connect_limits.global_per_sec = limits.connects_per_sec;
    mqtt.connect_limits.global_burst = limits.connects_burst;
    mqtt
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn configured_limits_reach_the_pipeline_and_the_endpoint() {
        let mut config = Config::default();
        config.ingest.max_payload_bytes = 4096;
        config.ingest.max_properties_per_message = 7;
        config.ingest.max_clock_skew_secs = 60;
        config.ingest.max_backfill_secs = Some(7 * 86_400);
        config.ingest.max_properties_per_device = 9;
        config.mqtt.receive_maximum = 8;
        config.mqtt.connects_burst = 3;
        let ingest = ingest_config(&config);
        assert_eq!((ingest.limits.max_payload_bytes, ingest.limits.max_properties), (4096, 7));
        assert_eq!((ingest.limits.max_clock_skew_ms, ingest.max_properties_per_device), (60_000, 9));
        assert_eq!(ingest.limits.max_backfill_ms, Some(7 * 86_400_000));
        let mqtt = mqtt_config(&config);
        assert_eq!((mqtt.receive_maximum, mqtt.connect_limits.global_burst), (8, 3));
        // Untouched keys keep the components' own defaults.
        let defaults = (IngestConfig::default(), MqttConfig::default());
        let (ingest, mqtt) = (ingest_config(&Config::default()), mqtt_config(&Config::default()));
        assert_eq!(ingest, defaults.0);
        assert_eq!(
            (mqtt.max_packet_bytes, mqtt.max_inflight_total),
            (defaults.1.max_packet_bytes, defaults.1.max_inflight_total)
        );
        assert_eq!(mqtt.connect_limits, defaults.1.connect_limits);
    }
}
