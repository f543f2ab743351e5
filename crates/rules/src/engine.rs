//! The engine: the evaluator plus the store. It consumes observations, applies the
//! effects (with their `alerts` events) in order, runs the timers from a task, and keeps the
//! evaluator in sync with rule changes and manual acknowledge/resolve.
//!
//! Evaluation and the application of its effects happen under one async lock, so effects
//! reach the database in the order they were decided. If the database fails, the effects
//! stay queued (in order) and are retried before the next ones; nothing is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono_tz::Tz;
use factoryops_db::Database;
use factoryops_platform::bus::EventBus;
use factoryops_platform::shutdown::Shutdown;
use factoryops_tsdb::TelemetryStore;
use factoryops_types::{Clock, FactoryId};
use serde::Serialize;

use crate::backtest::{BacktestDevice, BacktestRequest, BacktestResult};
use crate::effects::Effect;
use crate::energy::{EnergyConfig, EnergyFacts};
use crate::eval::{Evaluator, EvaluatorStats, Observation};
use crate::schedule::parse_tz;
use crate::states::{StateCode, StateLabels, resolve};
use crate::store::{Alert, ApplySummary, RulesStore, StoredRule};
use crate::validate::{Warning, validate_rule};
use crate::{RulesError, backtest};

#[derive(Clone)]
pub struct EngineConfig {
    /// How often the timer task runs `tick`.
    pub tick_interval: Duration,
    /// Timers run this long after their due time, so that events delayed in the pipeline
    /// (stamped before the deadline, arriving after it) are evaluated first, as a backtest would.
    pub timer_grace_ms: i64,
    /// Writes notification rows with each alert change; `None` writes none (the
    /// `alerts` events still carry every `notification`).
    pub notifier: Option<factoryops_notify::Notifier>,
    /// The bus alert events go to: published right after each commit when it is
    /// in-process, else through the outbox (whose relay the server runs). `None`: outbox.
    pub bus: Option<Arc<dyn EventBus>>,
    /// The codes of state labels (ingest's dictionary, wired by the server); `None`: a
    /// state leaf's label has no code, so `==` matches nothing.
    pub state_labels: Option<Arc<dyn StateLabels>>,
    /// Most raw points one backtest reads (they are held in memory); more is a 422.
    pub max_backtest_points: usize,
    /// The devices' energy configuration for `demand` and `idle` leaves (ingest's
    /// semantics and the energy component's device config, wired by the server); `None`:
    /// those leaves stay unknown.
    pub energy_config: Option<Arc<dyn EnergyConfig>>,
    /// How often the energy configuration of factories with such rules is read again (a
    /// property's unit or a device's idle threshold may change at any time).
    pub energy_refresh: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            tick_interval: Duration::from_millis(500),
            timer_grace_ms: 1_000,
            notifier: None,
            bus: None,
            state_labels: None,
            max_backtest_points: crate::backtest::DEFAULT_MAX_BACKTEST_POINTS,
            energy_config: None,
            energy_refresh: Duration::from_secs(60),
        }
    }
}

/// A rule as returned by create/update, with the validation warnings.
#[derive(Debug, Clone, Serialize)]
pub struct RuleWithWarnings {
    #[serde(flatten)]
    pub rule: StoredRule,
    pub warnings: Vec<Warning>,
}

struct Inner {
    eval: Evaluator,
    /// Effects decided but not yet committed (the database was unavailable).
    pending: Vec<Effect>,
    timezones: HashMap<FactoryId, Tz>,
    /// Factories with rules on energy quantities (their energy configuration is refreshed).
    energy_factories: HashSet<FactoryId>,
}

/// Most effects kept while the database is down before the oldest are dropped (with an error log).
pub const MAX_PENDING_EFFECTS: usize = 1_000_000;

pub struct RulesEngine {
    store: RulesStore,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    inner: tokio::sync::Mutex<Inner>,
    commit_wakes: parking_lot::Mutex<Vec<Arc<tokio::sync::Notify>>>,
    /// The evaluator's count of values older than their series' latest, readable without
    /// the lock (for metrics).
    out_of_order: AtomicU64,
}

impl RulesEngine {
    /// Loads every factory's rules and open alerts (the database must be migrated with
    /// [`crate::MIGRATIONS`]). Call [`RulesEngine::set_factory_timezone`] for each factory.
    pub async fn start(db: Database, clock: Arc<dyn Clock>, config: EngineConfig) -> Result<Arc<Self>, RulesError> {
        let store = RulesStore::new(db).with_notifier(config.notifier.clone()).with_bus(config.bus.clone());
        let mut eval = Evaluator::new();
        let now = clock.now_ms();
        let mut energy_factories = HashSet::new();
        for rule in store.all_rules().await? {
            if rule.spec.condition.uses_energy() && energy_factories.insert(rule.factory_id.clone()) {
                let facts = load_facts(config.energy_config.as_deref(), &rule.factory_id).await?;
                eval.set_energy_facts(&rule.factory_id, &facts);
            }
            let codes = resolve(config.state_labels.as_deref(), &rule.factory_id, &rule.spec).await?;
            eval.set_state_codes(&rule.factory_id, &codes);
            if let Err(e) = eval.upsert_rule(&rule.factory_id, &rule.id, &rule.spec, now) {
                tracing::warn!(factory_id = %rule.factory_id, rule_id = %rule.id, error = %e, "stored rule does not compile; skipped");
            }
        }
        let mut restored = 0usize;
        for (factory, alert) in store.open_alerts().await? {
            if eval.restore_alert(&factory, &alert) {
                restored += 1;
            }
        }
        // Cooldowns are at most days long; older notifications cannot matter.
        for (factory, rule_id, device, at) in store.last_notifications(now - 30 * 86_400_000).await? {
            eval.restore_last_notified(&factory, &rule_id, &device, at);
        }
        tracing::info!(rules = eval.stats().rules, open_alerts = restored, "rules engine loaded");
        Ok(Arc::new(Self {
            store,
            clock,
            config,
            inner: tokio::sync::Mutex::new(Inner {
                eval,
                pending: Vec::new(),
                timezones: HashMap::new(),
                energy_factories,
            }),
            commit_wakes: parking_lot::Mutex::new(Vec::new()),
            out_of_order: AtomicU64::new(0),
        }))
    }

    /// Reads (list/get rules and alerts) go straight to the store.
    pub fn store(&self) -> &RulesStore {
        &self.store
    }

    /// Nudged after every commit that wrote outbox events or notifications (the outbox
    /// relay's and the notification worker's wake-ups).
    pub fn add_commit_wake(&self, wake: Arc<tokio::sync::Notify>) {
        self.commit_wakes.lock().push(wake);
    }

    /// The factory's IANA time zone (default UTC) for `"timezone": "factory"` schedules.
    pub async fn set_factory_timezone(&self, factory: &FactoryId, timezone: &str) -> Result<(), RulesError> {
        let tz = parse_tz(timezone).ok_or_else(|| RulesError::bad_request("timezone", "unknown IANA time zone"))?;
        let mut inner = self.inner.lock().await;
        inner.eval.set_timezone(factory, tz);
        inner.timezones.insert(factory.clone(), tz);
        Ok(())
    }

    /// Values the live evaluation ignored because they were older than the latest value of
    /// their (device, property) (README "Evaluation semantics"), since start.
    pub fn out_of_order_points(&self) -> u64 {
        self.out_of_order.load(Ordering::Relaxed)
    }

    pub async fn stats(&self) -> EvaluatorStats {
        self.inner.lock().await.eval.stats()
    }

    /// Evaluates one telemetry message and commits what it decided.
    pub async fn feed(&self, obs: &Observation) -> Result<ApplySummary, RulesError> {
        let mut inner = self.inner.lock().await;
        let mut effects = Vec::new();
        inner.eval.on_observation(obs, &mut effects);
        self.out_of_order.store(inner.eval.out_of_order_points(), Ordering::Relaxed);
        self.commit(&mut inner, effects).await
    }

    /// Evaluates several observations in order and commits what they decided together
    /// (one transaction for a whole bus batch).
    pub async fn feed_all(&self, observations: &[Observation]) -> Result<ApplySummary, RulesError> {
        let mut inner = self.inner.lock().await;
        let mut effects = Vec::new();
        for obs in observations {
            inner.eval.on_observation(obs, &mut effects);
        }
        self.out_of_order.store(inner.eval.out_of_order_points(), Ordering::Relaxed);
        self.commit(&mut inner, effects).await
    }

    /// Runs due timers (up to now − grace) and commits what they decided.
    pub async fn tick(&self) -> Result<ApplySummary, RulesError> {
        self.tick_at(self.clock.now_ms().saturating_sub(self.config.timer_grace_ms)).await
    }

    /// Runs timers due at or before `now_ms` (tests and backfills).
    pub async fn tick_at(&self, now_ms: i64) -> Result<ApplySummary, RulesError> {
        let mut inner = self.inner.lock().await;
        let mut effects = Vec::new();
        inner.eval.tick(now_ms, &mut effects);
        self.commit(&mut inner, effects).await
    }

    async fn commit(&self, inner: &mut Inner, effects: Vec<Effect>) -> Result<ApplySummary, RulesError> {
        if effects.is_empty() && inner.pending.is_empty() {
            return Ok(ApplySummary::default());
        }
        let mut batch = std::mem::take(&mut inner.pending);
        batch.extend(effects);
        match self.store.apply(&batch, self.clock.now_ms()).await {
            Ok(summary) => {
                self.wake();
                Ok(summary)
            }
            Err(e) => {
                if batch.len() > MAX_PENDING_EFFECTS {
                    let drop = batch.len() - MAX_PENDING_EFFECTS;
                    tracing::error!(
                        dropped = drop,
                        "rules: database unavailable too long; dropping the oldest alert effects"
                    );
                    batch.drain(..drop);
                }
                inner.pending = batch;
                Err(e)
            }
        }
    }

    /// Runs `tick` every `tick_interval` until shutdown; a last commit attempt on the way out.
    pub fn spawn_timer(self: &Arc<Self>, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            let mut refreshed = std::time::Instant::now();
            loop {
                tokio::select! {
                    _ = shutdown.triggered() => break,
                    _ = tokio::time::sleep(engine.config.tick_interval) => {}
                }
                if refreshed.elapsed() >= engine.config.energy_refresh {
                    refreshed = std::time::Instant::now();
                    if let Err(e) = engine.refresh_energy().await {
                        tracing::warn!(error = %e, "rules: cannot read the energy configuration; keeping the last one");
                    }
                }
                if let Err(e) = engine.tick().await {
                    tracing::warn!(error = %e, "rules timer: could not commit alert changes; will retry");
                }
            }
            let mut inner = engine.inner.lock().await;
            if let Err(e) = engine.commit(&mut inner, Vec::new()).await {
                tracing::error!(error = %e, "rules: pending alert changes not committed at shutdown");
            }
        })
    }

    /// Reads the energy configuration of every factory with rules on energy quantities again.
    pub async fn refresh_energy(&self) -> Result<(), RulesError> {
        let factories: Vec<FactoryId> = self.inner.lock().await.energy_factories.iter().cloned().collect();
        for factory in factories {
            let facts = load_facts(self.config.energy_config.as_deref(), &factory).await?;
            self.inner.lock().await.eval.set_energy_facts(&factory, &facts);
        }
        Ok(())
    }

    /// The factory's energy configuration when `spec` needs it, with warnings for leaves
    /// that cannot hold on any device as configured now.
    async fn energy_facts(
        &self,
        factory: &FactoryId,
        spec: &crate::RuleSpec,
        warnings: &mut Vec<Warning>,
    ) -> Result<Option<EnergyFacts>, RulesError> {
        if !spec.condition.uses_energy() {
            return Ok(None);
        }
        let facts = load_facts(self.config.energy_config.as_deref(), factory).await?;
        let mut missing_power = Vec::new();
        let mut idle = false;
        spec.condition.visit_leaves(&mut |leaf| match leaf {
            crate::Condition::Demand { property, .. }
                if !facts.power.iter().any(|p| &p.property == property) && !missing_power.contains(property) =>
            {
                missing_power.push(property.clone());
            }
            crate::Condition::Idle => idle = true,
            _ => {}
        });
        for property in missing_power {
            warnings.push(Warning {
                field: "condition".into(),
                message: format!(
                    "`{property}` is not annotated as power (quantity `power` with a unit) on any device: its demand stays unknown until it is"
                ),
            });
        }
        if idle && facts.idle.is_empty() {
            warnings.push(Warning {
                field: "condition".into(),
                message: "no device has an idle definition (a state property or `idle_below_kw` with a power property): `idle` stays unknown".into(),
            });
        }
        Ok(Some(facts))
    }

    /// Validates and stores a rule, then evaluates it from the next event on.
    pub async fn create_rule(
        &self,
        factory: &FactoryId,
        body: &serde_json::Value,
        known_properties: &HashSet<String>,
    ) -> Result<RuleWithWarnings, RulesError> {
        let mut valid = validate_rule(body, known_properties).map_err(RulesError::Invalid)?;
        self.check_users(factory, &valid.spec).await?;
        let codes = self.state_codes(factory, &valid.spec, &mut valid.warnings).await?;
        let facts = self.energy_facts(factory, &valid.spec, &mut valid.warnings).await?;
        let mut inner = self.inner.lock().await;
        let rule = self.store.create_rule(factory, &valid.spec, self.clock.now_ms()).await?;
        inner.eval.set_state_codes(factory, &codes);
        if let Some(facts) = facts {
            inner.eval.set_energy_facts(factory, &facts);
            inner.energy_factories.insert(factory.clone());
        }
        let effects = inner
            .eval
            .upsert_rule(factory, &rule.id, &rule.spec, self.clock.now_ms())
            .map_err(|m| RulesError::Invalid(vec![crate::FieldError::new("", m)]))?;
        self.commit(&mut inner, effects).await?;
        Ok(RuleWithWarnings { rule, warnings: valid.warnings })
    }

    /// Replaces a rule (PUT). Open alerts stay and are judged by the new definition; devices
    /// no longer in scope, or a disabled rule, resolve theirs.
    pub async fn update_rule(
        &self,
        factory: &FactoryId,
        id: &str,
        body: &serde_json::Value,
        known_properties: &HashSet<String>,
    ) -> Result<RuleWithWarnings, RulesError> {
        let mut valid = validate_rule(body, known_properties).map_err(RulesError::Invalid)?;
        self.check_users(factory, &valid.spec).await?;
        let codes = self.state_codes(factory, &valid.spec, &mut valid.warnings).await?;
        let facts = self.energy_facts(factory, &valid.spec, &mut valid.warnings).await?;
        let mut inner = self.inner.lock().await;
        let rule = self.store.update_rule(factory, id, &valid.spec, self.clock.now_ms()).await?;
        inner.eval.set_state_codes(factory, &codes);
        if let Some(facts) = facts {
            inner.eval.set_energy_facts(factory, &facts);
            inner.energy_factories.insert(factory.clone());
        }
        let effects = inner
            .eval
            .upsert_rule(factory, &rule.id, &rule.spec, self.clock.now_ms())
            .map_err(|m| RulesError::Invalid(vec![crate::FieldError::new("", m)]))?;
        self.commit(&mut inner, effects).await?;
        Ok(RuleWithWarnings { rule, warnings: valid.warnings })
    }

    /// The codes of the state labels a rule names, registering new labels (ADR 0014); a
    /// label that cannot be registered (its property's dictionary is full) is a warning.
    async fn state_codes(
        &self,
        factory: &FactoryId,
        spec: &crate::RuleSpec,
        warnings: &mut Vec<Warning>,
    ) -> Result<Vec<StateCode>, RulesError> {
        let codes = resolve(self.config.state_labels.as_deref(), factory, spec).await?;
        for (property, label, code) in &codes {
            if code.is_none() {
                warnings.push(Warning {
                    field: "condition".into(),
                    message: format!(
                        "`{property}` has no state `{label}` and no room for a new one: `==` matches nothing, `!=` everything"
                    ),
                });
            }
        }
        Ok(codes)
    }

    /// Every user a rule notifies (`notify.users`, `notify.escalate_to.users`) must be a
    /// user of the rule's factory, looked up through the notifier's directory (identity,
    /// wired by the server). Without a notifier nobody is notified, so nothing is checked.
    async fn check_users(&self, factory: &FactoryId, spec: &crate::RuleSpec) -> Result<(), RulesError> {
        let Some(notifier) = &self.config.notifier else { return Ok(()) };
        let escalation = spec.notify.escalate_to.as_ref().map(|t| t.users.as_slice()).unwrap_or_default();
        let lists = [("notify.users", spec.notify.users.as_slice()), ("notify.escalate_to.users", escalation)];
        let mut errors = Vec::new();
        for (path, users) in lists {
            for (i, user) in users.iter().enumerate() {
                if !notifier.is_user(factory, user).await? {
                    errors.push(crate::FieldError::new(format!("{path}[{i}]"), "is not a user of this factory"));
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(RulesError::Invalid(errors)) }
    }

    /// Deletes a rule; its alerts are kept, open ones are resolved ("rule removed").
    pub async fn delete_rule(&self, factory: &FactoryId, id: &str) -> Result<(), RulesError> {
        let mut inner = self.inner.lock().await;
        self.store.delete_rule(factory, id).await?;
        let effects = inner.eval.remove_rule(factory, id, self.clock.now_ms());
        self.commit(&mut inner, effects).await?;
        Ok(())
    }

    /// open → acknowledged (stops reminders and escalation).
    pub async fn acknowledge(
        &self,
        factory: &FactoryId,
        alert_id: &str,
        actor: &str,
        note: Option<&str>,
    ) -> Result<Alert, RulesError> {
        let mut inner = self.inner.lock().await;
        let alert = self.store.acknowledge(factory, alert_id, actor, note, self.clock.now_ms()).await?;
        if let Ok(device) = factoryops_types::DeviceId::parse(alert.device_id.as_str()) {
            inner.eval.alert_acknowledged(factory, &alert.rule_id, &device, &alert.key);
        }
        self.wake();
        Ok(alert)
    }

    /// → resolved by a person. A new alert opens only after the condition cleared once.
    pub async fn resolve(
        &self,
        factory: &FactoryId,
        alert_id: &str,
        actor: &str,
        note: Option<&str>,
    ) -> Result<Alert, RulesError> {
        let mut inner = self.inner.lock().await;
        let alert = self.store.resolve(factory, alert_id, actor, note, self.clock.now_ms()).await?;
        if let Ok(device) = factoryops_types::DeviceId::parse(alert.device_id.as_str()) {
            inner.eval.alert_resolved(factory, &alert.rule_id, &device, &alert.key);
        }
        self.wake();
        Ok(alert)
    }

    fn wake(&self) {
        for wake in self.commit_wakes.lock().iter() {
            wake.notify_one();
        }
    }

    /// The factory's time zone as the engine knows it (UTC if never set).
    pub async fn factory_timezone(&self, factory: &FactoryId) -> Tz {
        self.inner.lock().await.timezones.get(factory).copied().unwrap_or(chrono_tz::UTC)
    }

    /// Backtests a stored rule (`rule_id`) or a draft body over `[from_ms, to_ms)`.
    #[allow(clippy::too_many_arguments)]
    pub async fn backtest(
        &self,
        factory: &FactoryId,
        rule_id: Option<&str>,
        draft: Option<&serde_json::Value>,
        from_ms: i64,
        to_ms: i64,
        tsdb: &dyn TelemetryStore,
        devices: Vec<BacktestDevice>,
    ) -> Result<BacktestResult, RulesError> {
        let (id, spec) = match (draft, rule_id) {
            (Some(body), _) => {
                let valid = validate_rule(body, &HashSet::new()).map_err(RulesError::Invalid)?;
                (rule_id.unwrap_or("draft").to_string(), valid.spec)
            }
            (None, Some(id)) => {
                let rule = self.store.get_rule(factory, id).await?;
                (rule.id, rule.spec)
            }
            (None, None) => return Err(RulesError::bad_request("rule", "a rule id or a draft rule is required")),
        };
        let timezone = self.factory_timezone(factory).await;
        let state_codes = resolve(self.config.state_labels.as_deref(), factory, &spec).await?;
        let energy = if spec.condition.uses_energy() {
            load_facts(self.config.energy_config.as_deref(), factory).await?
        } else {
            EnergyFacts::default()
        };
        let request = BacktestRequest {
            factory: factory.clone(),
            rule_id: id,
            spec,
            from_ms,
            to_ms,
            devices,
            timezone,
            state_codes,
            max_points: self.config.max_backtest_points,
            energy,
        };
        backtest(&request, tsdb).await
    }
}

/// A factory's energy configuration; nothing without a port (the leaves stay unknown).
async fn load_facts(port: Option<&dyn EnergyConfig>, factory: &FactoryId) -> Result<EnergyFacts, RulesError> {
    match port {
        Some(port) => Ok(port.facts(factory).await?),
        None => Ok(EnergyFacts::default()),
    }
}
