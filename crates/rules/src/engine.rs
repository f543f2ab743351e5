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
use crate::energy::{
    BaselineTarget, EnergyConfig, EnergyFacts, PERIOD_SETTLE_MS, PeriodFigures, SpecificEnergy, SpecificKey,
};
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
    /// The energy component's closed periods, kWh, units and baselines for
    /// `specific_energy` leaves (wired by the server); `None`: those leaves stay unknown.
    pub specific_energy: Option<Arc<dyn SpecificEnergy>>,
    /// How often the timer task looks for newly closed periods of `specific_energy` leaves
    /// (a period is judged at the first look after its end plus [`PERIOD_SETTLE_MS`]).
    pub period_poll: Duration,
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
            specific_energy: None,
            period_poll: Duration::from_secs(60),
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
    /// The end of the latest closed period judged per (factory, specific-energy key).
    judged: HashMap<(FactoryId, SpecificKey), i64>,
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
                judged: HashMap::new(),
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
            // The first look for closed periods comes at once (after a restart the latest
            // closed period is judged again; its alert keys make that idempotent).
            let mut polled: Option<std::time::Instant> = None;
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
                if polled.is_none_or(|t| t.elapsed() >= engine.config.period_poll) {
                    polled = Some(std::time::Instant::now());
                    if let Err(e) = engine.judge_periods(None).await {
                        tracing::warn!(error = %e, "rules: could not commit specific-energy verdicts; will retry");
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

    /// Judges the latest closed period of every `specific_energy` key the rules read (or,
    /// with `only`, of those keys of one factory, again even if judged already: a new or
    /// changed rule sees the latest period at once). A period is closed
    /// [`PERIOD_SETTLE_MS`] after its end; only the latest one is judged (after a long
    /// downtime the ones missed are not replayed: the backtest shows them). Returns how
    /// many periods were judged; a factory whose figures cannot be read is logged and
    /// tried again at the next poll.
    pub async fn judge_periods(&self, only: Option<(&FactoryId, &[SpecificKey])>) -> Result<usize, RulesError> {
        let Some(port) = self.config.specific_energy.clone() else { return Ok(0) };
        let wants = self.inner.lock().await.eval.specific_keys();
        let until = self.clock.now_ms().saturating_sub(PERIOD_SETTLE_MS);
        let mut judged = 0;
        for (factory, key, devices) in wants {
            if let Some((f, keys)) = only
                && (&factory != f || !keys.contains(&key))
            {
                continue;
            }
            let last = self.inner.lock().await.judged.get(&(factory.clone(), key.clone())).copied();
            // A shift lasts at most a day: two days back always reach the latest one.
            let periods = match port.periods(&factory, key.period, until.saturating_sub(2 * DAY_MS), until).await {
                Ok(periods) => periods,
                Err(e) => {
                    tracing::warn!(factory_id = %factory, error = %e, "rules: cannot read the closed periods");
                    continue;
                }
            };
            let Some(period) = periods.last() else { continue };
            if only.is_none() && last.is_some_and(|end| end >= period.end_ms) {
                continue;
            }
            let figures = match port.figures(&factory, period, devices.as_deref(), key.baseline_id.as_deref()).await {
                Ok(figures) => figures,
                Err(e) => {
                    tracing::warn!(factory_id = %factory, error = %e, "rules: cannot read the specific-energy figures");
                    continue;
                }
            };
            let batch = PeriodFigures {
                key: key.clone(),
                period: period.clone(),
                at_ms: period.end_ms.saturating_add(PERIOD_SETTLE_MS),
                figures,
            };
            let mut inner = self.inner.lock().await;
            let mut effects = Vec::new();
            inner.eval.on_period(&factory, &batch, &mut effects);
            inner.judged.insert((factory, key), period.end_ms);
            self.commit(&mut inner, effects).await?;
            judged += 1;
        }
        Ok(judged)
    }

    /// Checks the baselines `specific_energy` leaves name (a device baseline of this
    /// factory, 422 on the leaf's `baseline_id` otherwise) and warns about leaves that
    /// cannot hold as things are.
    async fn check_specific(
        &self,
        factory: &FactoryId,
        spec: &crate::RuleSpec,
        warnings: &mut Vec<Warning>,
    ) -> Result<(), RulesError> {
        let mut leaves = Vec::new();
        spec.condition.visit_leaves_with_path("condition", &mut |leaf, path| {
            if let crate::Condition::SpecificEnergy { period, expected, .. } = leaf {
                leaves.push((path.to_string(), *period, expected.clone()));
            }
        });
        if leaves.is_empty() {
            return Ok(());
        }
        let Some(port) = &self.config.specific_energy else {
            warnings.push(Warning {
                field: "condition".into(),
                message: "energy figures are not available to the rules here: `specific_energy` stays unknown".into(),
            });
            return Ok(());
        };
        let mut errors = Vec::new();
        let mut shift_checked = false;
        for (path, period, expected) in leaves {
            if let crate::ExpectedPerUnit::Baseline(id) = &expected {
                let field = if path.is_empty() { "baseline_id".to_string() } else { format!("{path}.baseline_id") };
                match port.baseline_target(factory, id).await? {
                    None => errors.push(crate::FieldError::new(field, "no such baseline")),
                    Some(BaselineTarget::Other(kind)) => errors.push(crate::FieldError::new(
                        field,
                        format!(
                            "is a {kind} baseline: the leaf judges one device's energy per unit, so it needs a device baseline"
                        ),
                    )),
                    Some(BaselineTarget::Device(device)) => {
                        let only_it = matches!(&spec.scope, crate::Scope::Devices { devices } if devices.iter().all(|d| d == &device));
                        if !only_it {
                            warnings.push(Warning {
                                field,
                                message: format!(
                                    "the baseline is fitted for `{device}`: the leaf is unknown for the rule's other devices"
                                ),
                            });
                        }
                    }
                }
            }
            if period == crate::SpecificPeriod::Shift && !shift_checked {
                shift_checked = true;
                let until = self.clock.now_ms();
                if port.periods(factory, period, until.saturating_sub(2 * DAY_MS), until).await?.is_empty() {
                    warnings.push(Warning {
                        field: path.clone(),
                        message: "no shift ended in the last two days (PUT /energy/shifts sets the calendar): the leaf stays unknown until one does".into(),
                    });
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(RulesError::Invalid(errors)) }
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
        self.check_specific(factory, &valid.spec, &mut valid.warnings).await?;
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
        drop(inner);
        self.judge_new_rule(factory, &rule.spec).await;
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
        self.check_specific(factory, &valid.spec, &mut valid.warnings).await?;
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
        drop(inner);
        self.judge_new_rule(factory, &rule.spec).await;
        Ok(RuleWithWarnings { rule, warnings: valid.warnings })
    }

    /// A saved rule with `specific_energy` leaves judges the latest closed period at once
    /// (the rule is stored whatever happens here: a failure waits for the next poll).
    async fn judge_new_rule(&self, factory: &FactoryId, spec: &crate::RuleSpec) {
        let keys = spec.condition.specific_keys();
        if keys.is_empty() || !spec.enabled {
            return;
        }
        if let Err(e) = self.judge_periods(Some((factory, &keys))).await {
            tracing::warn!(factory_id = %factory, error = %e, "rules: could not commit specific-energy verdicts; will retry");
        }
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
                let mut valid = validate_rule(body, &HashSet::new()).map_err(RulesError::Invalid)?;
                self.check_specific(factory, &valid.spec, &mut valid.warnings).await?;
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
        let periods = self.backtest_periods(factory, &spec, from_ms, to_ms).await?;
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
            periods,
        };
        backtest(&request, tsdb).await
    }

    /// The figures of every period a `specific_energy` leaf of `spec` would judge within
    /// `[from, to]` (judged at end + [`PERIOD_SETTLE_MS`]), in time order.
    async fn backtest_periods(
        &self,
        factory: &FactoryId,
        spec: &crate::RuleSpec,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<PeriodFigures>, RulesError> {
        let keys = spec.condition.specific_keys();
        let Some(port) = self.config.specific_energy.as_deref() else { return Ok(Vec::new()) };
        // The range itself is checked by `backtest`; nothing is read for a range it refuses.
        if keys.is_empty() || to_ms <= from_ms || to_ms - from_ms > crate::backtest::MAX_BACKTEST_RANGE_MS {
            return Ok(Vec::new());
        }
        let devices = match &spec.scope {
            crate::Scope::Devices { devices } => Some(devices.clone()),
            _ => None,
        };
        let mut out = Vec::new();
        for key in keys {
            let (after, until) = (from_ms - PERIOD_SETTLE_MS - 1, to_ms - PERIOD_SETTLE_MS);
            for period in port.periods(factory, key.period, after, until).await? {
                let figures = port.figures(factory, &period, devices.as_deref(), key.baseline_id.as_deref()).await?;
                let at_ms = period.end_ms.saturating_add(PERIOD_SETTLE_MS);
                out.push(PeriodFigures { key: key.clone(), period, at_ms, figures });
            }
        }
        out.sort_by_key(|p| p.at_ms);
        Ok(out)
    }
}

const DAY_MS: i64 = 86_400_000;

/// A factory's energy configuration; nothing without a port (the leaves stay unknown).
async fn load_facts(port: Option<&dyn EnergyConfig>, factory: &FactoryId) -> Result<EnergyFacts, RulesError> {
    match port {
        Some(port) => Ok(port.facts(factory).await?),
        None => Ok(EnergyFacts::default()),
    }
}
