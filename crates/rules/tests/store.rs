#![allow(clippy::unwrap_used)]
//! The alert store and the engine on SQLite and MariaDB.

use std::collections::HashSet;
use std::sync::Arc;

use factoryops_db::Database;
use factoryops_platform::bus::{EventBus, MemoryBus, topics};
use factoryops_rules::{
    AlertQuery, AlertStatus, BacktestDevice, EngineConfig, Observation, RulesEngine, RulesError, RulesStore, Severity,
    validate_rule,
};
use factoryops_testkit::{TestDatabase, backend_matrix};
use factoryops_tsdb::{EmbeddedConfig, EmbeddedStore, Point, TelemetryStore, Value};
use factoryops_types::{Clock, DeviceId, FactoryId, ManualClock, PropertyName};
use serde_json::json;
use sqlx::Row;

async fn open(db: &TestDatabase) -> Database {
    let database = Database::connect(&db.url).await.unwrap();
    database.migrate(&[&factoryops_db::MIGRATIONS, &factoryops_rules::MIGRATIONS]).await.unwrap();
    database
}

fn fa() -> FactoryId {
    FactoryId::parse("plant-a").unwrap()
}

fn fb() -> FactoryId {
    FactoryId::parse("plant-b").unwrap()
}

fn rule_body(threshold: f64) -> serde_json::Value {
    json!({
        "name": "Overheating", "scope": {"devices": ["press-1"]},
        "condition": {"property": "temp_c", "op": ">", "value": threshold},
        "severity": "critical", "message": "{device} {property} = {value} (limit {threshold})",
        "notify": {"emails": ["ops@example.com"]}
    })
}

fn obs(factory: &FactoryId, device: &str, ts: i64, temp: f64) -> Observation {
    Observation {
        factory_id: factory.clone(),
        device_id: DeviceId::parse(device).unwrap(),
        device_type: Some("press".into()),
        ts_ms: ts,
        values: vec![(PropertyName::parse("temp_c").unwrap(), Value::Float(temp))],
        event_key: format!("{device}:{ts}"),
    }
}

async fn outbox_count(db: &Database, prefix: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE topic = 'alerts' AND event_key LIKE ?")
        .bind(format!("{prefix}%"))
        .fetch_one(db.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

async fn engine(db: &Database, clock: &ManualClock) -> Arc<RulesEngine> {
    let config = EngineConfig { timer_grace_ms: 0, ..EngineConfig::default() };
    RulesEngine::start(db.clone(), Arc::new(clock.clone()), config).await.unwrap()
}

async fn rule_crud_is_tenant_scoped(db: TestDatabase) {
    let database = open(&db).await;
    let store = RulesStore::new(database.clone());
    let spec = validate_rule(&rule_body(80.0), &HashSet::new()).unwrap().spec;
    let rule = store.create_rule(&fa(), &spec, 1_000).await.unwrap();
    assert_eq!(store.get_rule(&fa(), &rule.id).await.unwrap().spec, spec);
    assert!(matches!(store.get_rule(&fb(), &rule.id).await, Err(RulesError::NotFound)));
    assert!(matches!(store.delete_rule(&fb(), &rule.id).await, Err(RulesError::NotFound)));
    let mut changed = spec.clone();
    changed.name = "Renamed".into();
    changed.enabled = false;
    assert!(matches!(store.update_rule(&fb(), &rule.id, &changed, 2_000).await, Err(RulesError::NotFound)));
    let updated = store.update_rule(&fa(), &rule.id, &changed, 2_000).await.unwrap();
    assert_eq!(updated.spec.name, "Renamed");
    assert!(!updated.spec.enabled);
    assert_eq!((updated.created_at, updated.updated_at), (1_000, 2_000));
    for _ in 0..3 {
        store.create_rule(&fa(), &spec, 3_000).await.unwrap();
    }
    let first = store.list_rules(&fa(), Some(2), None).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let second = store.list_rules(&fa(), Some(2), first.next_cursor.as_deref()).await.unwrap();
    assert_eq!(second.items.len(), 2);
    assert!(second.next_cursor.is_none());
    assert!(store.list_rules(&fb(), None, None).await.unwrap().items.is_empty());
    // JSON shape for the API: the rule fields plus id and RFC 3339 times.
    let json = serde_json::to_value(&updated).unwrap();
    assert_eq!(json["id"], rule.id.as_str());
    assert_eq!(json["condition"]["op"], ">");
    assert_eq!(json["updated_at"], "1970-01-01T00:00:02.000Z");
    store.delete_rule(&fa(), &rule.id).await.unwrap();
    assert!(matches!(store.get_rule(&fa(), &rule.id).await, Err(RulesError::NotFound)));
}

async fn engine_lifecycle_with_history_and_outbox(db: TestDatabase) {
    let database = open(&db).await;
    let clock = ManualClock::new(10_000);
    let engine = engine(&database, &clock).await;
    let created = engine.create_rule(&fa(), &rule_body(80.0), &HashSet::from(["temp_c".to_string()])).await.unwrap();
    assert!(created.warnings.is_empty());
    let unknown = engine.create_rule(&fb(), &rule_body(80.0), &HashSet::new()).await.unwrap();
    assert_eq!(unknown.warnings.len(), 1, "temp_c was never seen in plant-b");

    let s = engine.feed(&obs(&fa(), "press-1", 20_000, 85.0)).await.unwrap();
    assert_eq!((s.opened, s.notifications), (1, 1));
    // Replay: same event → nothing.
    let s = engine.feed(&obs(&fa(), "press-1", 20_000, 85.0)).await.unwrap();
    assert_eq!(s.opened, 0);
    // Factory B's event does not touch A's alert.
    engine.feed(&obs(&fb(), "press-9", 20_000, 99.0)).await.unwrap();

    let store = engine.store();
    let page = store.list_alerts(&fa(), &AlertQuery::default()).await.unwrap();
    assert_eq!(page.items.len(), 1);
    let alert = &page.items[0];
    assert_eq!(alert.status, AlertStatus::Open);
    assert_eq!(alert.severity, Severity::Critical);
    assert_eq!(alert.message, "press-1 temp_c = 85 (limit 80)");
    assert_eq!(alert.value, Some(json!(85.0)));
    assert_eq!(alert.opened_at, 20_000);
    assert!(store.list_alerts(&fb(), &AlertQuery::default()).await.unwrap().items.is_empty());
    assert!(matches!(store.get_alert(&fb(), &alert.id).await, Err(RulesError::NotFound)));
    assert!(matches!(engine.acknowledge(&fb(), &alert.id, "u", None).await, Err(RulesError::NotFound)));

    clock.set(30_000);
    let acked = engine.acknowledge(&fa(), &alert.id, "user-1", Some("on it")).await.unwrap();
    assert_eq!(acked.status, AlertStatus::Acknowledged);
    assert_eq!(acked.acknowledged_at, Some(30_000));
    assert!(matches!(engine.acknowledge(&fa(), &alert.id, "user-1", None).await, Err(RulesError::Conflict(_))));

    // Back to normal → auto-resolved by the engine.
    let s = engine.feed(&obs(&fa(), "press-1", 40_000, 70.0)).await.unwrap();
    assert_eq!(s.resolved, 1);
    let full = store.get_alert(&fa(), &alert.id).await.unwrap();
    assert_eq!(full.status, AlertStatus::Resolved);
    assert_eq!(full.resolved_at, Some(40_000));
    let history = full.history.clone().unwrap();
    let statuses: Vec<_> = history.iter().map(|h| (h.status, h.by.as_str(), h.note.as_deref())).collect();
    assert_eq!(
        statuses,
        [
            (AlertStatus::Open, "rules-engine", None),
            (AlertStatus::Acknowledged, "user-1", Some("on it")),
            (AlertStatus::Resolved, "rules-engine", Some("condition cleared")),
        ]
    );
    assert_eq!(history[2].value, Some(json!(70.0)));
    assert!(matches!(engine.resolve(&fa(), &alert.id, "user-1", None).await, Err(RulesError::Conflict(_))));
    let json = serde_json::to_value(&full).unwrap();
    assert_eq!(json["opened_at"], "1970-01-01T00:00:20.000Z");
    assert_eq!(json["history"][1]["by"], "user-1");

    // Manual resolve of a second alert.
    engine.feed(&obs(&fa(), "press-1", 50_000, 90.0)).await.unwrap();
    let open =
        store.list_alerts(&fa(), &AlertQuery { status: Some(AlertStatus::Open), ..Default::default() }).await.unwrap();
    assert_eq!(open.items.len(), 1);
    let resolved = engine.resolve(&fa(), &open.items[0].id, "user-2", Some("fixed")).await.unwrap();
    assert_eq!(resolved.status, AlertStatus::Resolved);
    // Still hot: the manual resolve is respected, no new alert until it cools down.
    engine.feed(&obs(&fa(), "press-1", 60_000, 95.0)).await.unwrap();
    assert_eq!(store.list_alerts(&fa(), &AlertQuery::default()).await.unwrap().items.len(), 2);

    // Outbox: opened ×2, acknowledged, resolved ×2, notifications.
    assert_eq!(outbox_count(&database, "alert:").await, 5);
    assert!(outbox_count(&database, "notify:").await >= 2);

    // Filters and pagination.
    let q = |f: AlertQuery| {
        let store = store.clone();
        async move { store.list_alerts(&fa(), &f).await.unwrap() }
    };
    assert_eq!(q(AlertQuery { device_id: Some("press-1".into()), ..Default::default() }).await.items.len(), 2);
    assert_eq!(q(AlertQuery { device_id: Some("press-2".into()), ..Default::default() }).await.items.len(), 0);
    assert_eq!(q(AlertQuery { rule_id: Some(created.rule.id.clone()), ..Default::default() }).await.items.len(), 2);
    assert_eq!(q(AlertQuery { severity: Some(Severity::Info), ..Default::default() }).await.items.len(), 0);
    assert_eq!(q(AlertQuery { from: Some(45_000), ..Default::default() }).await.items.len(), 1);
    assert_eq!(q(AlertQuery { to: Some(45_000), ..Default::default() }).await.items.len(), 1);
    let p1 = q(AlertQuery { limit: Some(1), ..Default::default() }).await;
    assert_eq!(p1.items[0].opened_at, 50_000, "newest first");
    let p2 = q(AlertQuery { limit: Some(1), cursor: p1.next_cursor.clone(), ..Default::default() }).await;
    assert_eq!(p2.items[0].opened_at, 20_000);
    assert!(p2.next_cursor.is_none());

    // Deleting the rule keeps its alerts.
    engine.delete_rule(&fa(), &created.rule.id).await.unwrap();
    assert_eq!(q(AlertQuery::default()).await.items.len(), 2);
}

async fn restart_restores_open_alerts_and_replays_are_harmless(db: TestDatabase) {
    let database = open(&db).await;
    let clock = ManualClock::new(0);
    let mut body = rule_body(80.0);
    body["notify"]["remind_every_minutes"] = json!(5);
    let rule_id = {
        let engine = engine(&database, &clock).await;
        let r = engine.create_rule(&fa(), &body, &HashSet::new()).await.unwrap();
        engine.feed(&obs(&fa(), "press-1", 1_000, 90.0)).await.unwrap();
        engine.feed(&obs(&fa(), "press-2", 1_000, 90.0)).await.unwrap(); // not in scope
        r.rule.id
    };
    // A new process.
    let engine = engine(&database, &clock).await;
    assert_eq!(engine.stats().await.active_alerts, 1);
    let s = engine.feed(&obs(&fa(), "press-1", 1_000, 90.0)).await.unwrap();
    assert_eq!(s.opened + s.duplicates, 0, "the restored state knows the alert is open");
    // A reminder from the restored state.
    let s = engine.tick_at(301_000).await.unwrap();
    assert_eq!(s.notifications, 1);
    // Resolve, restart, replay the original event: same idempotency key → no duplicate.
    engine.feed(&obs(&fa(), "press-1", 400_000, 10.0)).await.unwrap();
    let engine = self::engine(&database, &clock).await;
    let s = engine.feed(&obs(&fa(), "press-1", 1_000, 90.0)).await.unwrap();
    assert_eq!((s.opened, s.duplicates), (0, 1));
    let alerts =
        engine.store().list_alerts(&fa(), &AlertQuery { rule_id: Some(rule_id), ..Default::default() }).await.unwrap();
    assert_eq!(alerts.items.len(), 1);
    assert_eq!(alerts.items[0].status, AlertStatus::Resolved);
}

async fn cooldown_survives_a_restart(db: TestDatabase) {
    let database = open(&db).await;
    let clock = ManualClock::new(0);
    let mut body = rule_body(80.0);
    body["cooldown_seconds"] = json!(600);
    body["auto_resolve"] = json!(true);
    {
        let engine = engine(&database, &clock).await;
        engine.create_rule(&fa(), &body, &HashSet::new()).await.unwrap();
        let s = engine.feed(&obs(&fa(), "press-1", 1_000, 90.0)).await.unwrap();
        assert_eq!((s.opened, s.notifications), (1, 1));
        let s = engine.feed(&obs(&fa(), "press-1", 2_000, 10.0)).await.unwrap();
        assert_eq!(s.resolved, 1);
    }
    // A new process, still inside the 10-minute cooldown: a new alert, but no new notification.
    let engine = engine(&database, &clock).await;
    let s = engine.feed(&obs(&fa(), "press-1", 60_000, 95.0)).await.unwrap();
    assert_eq!((s.opened, s.notifications), (1, 0), "the cooldown held across the restart");
    engine.feed(&obs(&fa(), "press-1", 61_000, 10.0)).await.unwrap();
    // After the cooldown, notifications resume.
    let s = engine.feed(&obs(&fa(), "press-1", 700_000, 95.0)).await.unwrap();
    assert_eq!((s.opened, s.notifications), (1, 1));
}

async fn backtest_equals_live(db: TestDatabase) {
    let database = open(&db).await;
    let clock = ManualClock::new(0);
    let engine = engine(&database, &clock).await;
    engine.set_factory_timezone(&fa(), "Europe/Berlin").await.unwrap();
    let body = json!({
        "name": "Hot and running", "scope": {"device_type": "press"},
        "condition": {"all": [
            {"property": "temp_c", "op": ">", "value": 80},
            {"property": "running", "op": "==", "value": true}
        ]},
        "for_seconds": 20, "clear_for_seconds": 10, "deadband": 1,
        "schedule": {"timezone": "factory", "windows": [{"from": "06:00", "to": "22:00"}]},
        "severity": "warning", "message": "{device} {value} at {time}",
        "notify": {"emails": ["ops@example.com"]}
    });
    let rule = engine.create_rule(&fa(), &body, &HashSet::new()).await.unwrap().rule;

    let dir = tempfile::tempdir().unwrap();
    let tsdb = EmbeddedStore::open(EmbeddedConfig::new(dir.path()), Arc::new(clock.clone())).unwrap();
    let start = factoryops_types::parse_rfc3339_ms("2026-03-29T03:00:00Z").unwrap(); // 05:00 CEST
    let mut points = Vec::new();
    // A recorded series: two presses, one point every 5 s for 3 h, with a few hot spells.
    for i in 0..(3 * 720) {
        let ts = start + i * 5_000;
        for (d, device) in ["press-1", "press-2"].iter().enumerate() {
            let phase = (i + d as i64 * 97) % 300;
            let temp =
                if (100..160).contains(&phase) { 85.0 + (phase % 7) as f64 * 0.3 } else { 60.0 + (phase % 11) as f64 };
            let running = phase % 50 != 0;
            let device = DeviceId::parse(*device).unwrap();
            points.push((ts, device.clone(), temp, running));
        }
    }
    let tsdb_points: Vec<Point> = points
        .iter()
        .flat_map(|(ts, device, temp, running)| {
            [
                Point {
                    device: device.clone(),
                    property: PropertyName::parse("temp_c").unwrap(),
                    ts_ms: *ts,
                    value: Value::Float(*temp),
                },
                Point {
                    device: device.clone(),
                    property: PropertyName::parse("running").unwrap(),
                    ts_ms: *ts,
                    value: Value::Bool(*running),
                },
            ]
        })
        .collect();
    tsdb.write(&fa(), &tsdb_points).await.unwrap();
    let end = start + 3 * 3_600_000;
    // Live: the same messages through the engine, with the timer ticking every 7 s.
    let mut next_tick = start;
    for (ts, device, temp, running) in &points {
        while next_tick < *ts {
            engine.tick_at(next_tick).await.unwrap();
            next_tick += 7_000;
        }
        engine
            .feed(&Observation {
                factory_id: fa(),
                device_id: device.clone(),
                device_type: Some("press".into()),
                ts_ms: *ts,
                values: vec![
                    (PropertyName::parse("temp_c").unwrap(), Value::Float(*temp)),
                    (PropertyName::parse("running").unwrap(), Value::Bool(*running)),
                ],
                event_key: format!("{device}:{ts}"),
            })
            .await
            .unwrap();
    }
    engine.tick_at(end).await.unwrap();
    let devices = ["press-1", "press-2"]
        .iter()
        .map(|d| BacktestDevice { device_id: DeviceId::parse(*d).unwrap(), device_type: Some("press".into()) })
        .collect();
    let result = engine.backtest(&fa(), Some(&rule.id), None, start, end, &tsdb, devices).await.unwrap();
    assert!(result.opened >= 4, "the series has hot spells: {}", result.opened);
    let mut live = Vec::new();
    let mut cursor = None;
    loop {
        let page = engine
            .store()
            .list_alerts(&fa(), &AlertQuery { limit: Some(500), cursor, ..Default::default() })
            .await
            .unwrap();
        live.extend(page.items);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let mut live: Vec<_> =
        live.into_iter().map(|a| (a.device_id, a.opened_at, a.resolved_at, a.count, a.message, a.value)).collect();
    live.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let mut backtested: Vec<_> = result
        .alerts
        .iter()
        .map(|a| {
            (
                a.device_id.to_string(),
                a.opened_at,
                a.resolved_at,
                a.count,
                a.message.clone(),
                a.value.map(|v| serde_json::to_value(v).unwrap()),
            )
        })
        .collect();
    backtested.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    assert_eq!(live, backtested);
    // Deterministic.
    let again = engine
        .backtest(
            &fa(),
            None,
            Some(&body),
            start,
            end,
            &tsdb,
            vec![BacktestDevice { device_id: DeviceId::parse("press-1").unwrap(), device_type: Some("press".into()) }],
        )
        .await
        .unwrap();
    let press1: Vec<_> =
        result.alerts.iter().filter(|a| a.device_id.as_str() == "press-1").map(|a| a.opened_at).collect();
    assert_eq!(again.alerts.iter().map(|a| a.opened_at).collect::<Vec<_>>(), press1);
    let _ = clock.now_ms();
    tsdb.flush().await.unwrap();
}

async fn timer_task_opens_for_duration_and_stale_alerts_until_shutdown(db: TestDatabase) {
    let database = open(&db).await;
    let clock = ManualClock::new(1_000_000);
    let config = EngineConfig {
        tick_interval: std::time::Duration::from_millis(20),
        timer_grace_ms: 0,
        ..EngineConfig::default()
    };
    let engine = RulesEngine::start(database.clone(), Arc::new(clock.clone()), config).await.unwrap();
    let wake = Arc::new(tokio::sync::Notify::new());
    engine.add_commit_wake(wake.clone());
    let body = json!({
        "name": "Silent press", "scope": {"all": true}, "condition": {"op": "stale", "seconds": 60},
        "severity": "warning", "notify": {"emails": ["ops@example.com"]}
    });
    engine.create_rule(&fa(), &body, &HashSet::new()).await.unwrap();
    let shutdown = factoryops_platform::shutdown::Shutdown::new();
    let task = engine.spawn_timer(shutdown.clone());
    engine.feed(&obs(&fa(), "press-1", 1_000_000, 20.0)).await.unwrap();
    clock.advance(60_000);
    // The timer task notices without any event.
    tokio::time::timeout(std::time::Duration::from_secs(5), wake.notified()).await.unwrap();
    let alerts = engine.store().list_alerts(&fa(), &AlertQuery::default()).await.unwrap();
    assert_eq!(alerts.items.len(), 1);
    assert_eq!(alerts.items[0].opened_at, 1_060_000);
    assert_eq!(alerts.items[0].threshold.as_deref(), Some("60s"));
    shutdown.trigger();
    tokio::time::timeout(std::time::Duration::from_secs(5), task).await.unwrap().unwrap();
}

/// On the in-process bus the engine publishes alert events itself right after each commit
/// (no outbox rows, no relay), in commit order, and a re-trigger's history keeps the
/// alert's current status.
async fn in_process_bus_gets_alert_events_right_after_the_commit(db: TestDatabase) {
    let database = open(&db).await;
    let clock = ManualClock::new(10_000);
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let mut events = bus.subscribe(topics::ALERTS, 64);
    let config = EngineConfig { timer_grace_ms: 0, bus: Some(bus.clone()), ..EngineConfig::default() };
    let engine = RulesEngine::start(database.clone(), Arc::new(clock.clone()), config).await.unwrap();
    let mut body = rule_body(80.0);
    body["auto_resolve"] = json!(false);
    engine.create_rule(&fa(), &body, &HashSet::new()).await.unwrap();

    assert_eq!(engine.feed(&obs(&fa(), "press-1", 20_000, 85.0)).await.unwrap().opened, 1);
    let alert = engine.store().list_alerts(&fa(), &AlertQuery::default()).await.unwrap().items.remove(0);
    engine.acknowledge(&fa(), &alert.id, "user-1", None).await.unwrap();
    engine.feed(&obs(&fa(), "press-1", 30_000, 70.0)).await.unwrap();
    assert_eq!(engine.feed(&obs(&fa(), "press-1", 40_000, 90.0)).await.unwrap().updated, 1);
    engine.resolve(&fa(), &alert.id, "user-1", Some("fixed")).await.unwrap();

    let mut kinds = Vec::new();
    while let Ok(Some(delivery)) = tokio::time::timeout(std::time::Duration::from_millis(200), events.next()).await {
        let event = &delivery.event;
        assert_eq!(event.factory_id, Some(fa()));
        assert_eq!(event.payload["alert_id"], alert.id.as_str());
        kinds.push(event.payload["type"].as_str().unwrap().to_string());
    }
    kinds.retain(|k| k != "notification");
    assert_eq!(kinds, ["alert.opened", "alert.acknowledged", "alert.updated", "alert.resolved"]);

    // After a restart, the first event replayed opens nothing and announces nothing.
    let config = EngineConfig { timer_grace_ms: 0, bus: Some(bus.clone()), ..EngineConfig::default() };
    let restarted = RulesEngine::start(database.clone(), Arc::new(clock.clone()), config).await.unwrap();
    assert_eq!(restarted.feed(&obs(&fa(), "press-1", 20_000, 85.0)).await.unwrap().duplicates, 1);
    assert!(tokio::time::timeout(std::time::Duration::from_millis(100), events.next()).await.is_err());
    assert_eq!(outbox_count(&database, "").await, 0, "nothing for the relay");

    let history = engine.store().get_alert(&fa(), &alert.id).await.unwrap().history.unwrap();
    let rows: Vec<_> = history.iter().map(|h| (h.status, h.note.as_deref(), h.value.clone())).collect();
    assert_eq!(
        rows,
        [
            (AlertStatus::Open, None, Some(json!(85.0))),
            (AlertStatus::Acknowledged, None, Some(json!(85.0))),
            (AlertStatus::Acknowledged, Some("re-triggered (count 2)"), Some(json!(90.0))),
            (AlertStatus::Resolved, Some("fixed"), Some(json!(90.0))),
        ]
    );
}

backend_matrix!(
    timer_task_opens_for_duration_and_stale_alerts_until_shutdown,
    rule_crud_is_tenant_scoped,
    engine_lifecycle_with_history_and_outbox,
    restart_restores_open_alerts_and_replays_are_harmless,
    cooldown_survives_a_restart,
    backtest_equals_live,
    in_process_bus_gets_alert_events_right_after_the_commit,
);
