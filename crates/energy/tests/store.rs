#![allow(clippy::unwrap_used)]
//! The energy store on SQLite and MariaDB: groups (hierarchy, tags, roll-up, cascade),
//! versioned settings and device configuration.

use chrono::NaiveDate;
use factoryops_db::Database;
use factoryops_energy::baseline::Model;
use factoryops_energy::store::{
    Baseline, DeviceEnergyConfig, Driver, EnergyStore, GroupKind, GroupUpdate, NewGroup, NewSetting, SettingKind,
    StoreError, in_force,
};
use factoryops_testkit::{TestDatabase, backend_matrix};
use factoryops_types::{DeviceId, FactoryId, PropertyName};
use serde_json::json;

async fn open(db: &TestDatabase) -> EnergyStore {
    let database = Database::connect(&db.url).await.unwrap();
    database.migrate(&[&factoryops_db::MIGRATIONS, &factoryops_energy::MIGRATIONS]).await.unwrap();
    EnergyStore::new(database)
}

fn fa() -> FactoryId {
    FactoryId::parse("plant-a").unwrap()
}

fn fb() -> FactoryId {
    FactoryId::parse("plant-b").unwrap()
}

fn dev(id: &str) -> DeviceId {
    DeviceId::parse(id).unwrap()
}

fn date(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

fn group(name: &str, parent: Option<&str>, devices: &[&str]) -> NewGroup {
    NewGroup {
        kind: GroupKind::Hierarchy,
        name: name.into(),
        parent_id: parent.map(str::to_string),
        level: None,
        devices: devices.iter().map(|d| dev(d)).collect(),
    }
}

async fn groups_form_a_hierarchy_and_tags(db: TestDatabase) {
    let store = open(&db).await;
    let site = store.create_group(&fa(), group("Site", None, &[]), 1).await.unwrap();
    let area = store.create_group(&fa(), group("Area 1", Some(&site.id), &["comp-1"]), 2).await.unwrap();
    let line = store.create_group(&fa(), group("Line 1", Some(&area.id), &["press-1", "press-2"]), 3).await.unwrap();
    assert_eq!(line.parent_id.as_deref(), Some(area.id.as_str()));
    assert_eq!(line.devices, vec![dev("press-1"), dev("press-2")]);

    // A device sits in one hierarchy group: the conflict names the device and its group.
    let err = store.create_group(&fa(), group("Line 2", Some(&area.id), &["oven-1", "press-2"]), 4).await.unwrap_err();
    match err {
        StoreError::DeviceTaken { device_id, group_id, group_name } => {
            assert_eq!((device_id.as_str(), group_id.as_str(), group_name.as_str()), ("press-2", &*line.id, "Line 1"));
        }
        other => panic!("{other:?}"),
    }
    // Moving it: out of Line 1, into Line 2.
    let line2 = store.create_group(&fa(), group("Line 2", Some(&area.id), &["oven-1"]), 4).await.unwrap();
    store
        .update_group(&fa(), &line.id, GroupUpdate { devices: Some(vec![dev("press-1")]), ..Default::default() }, 5)
        .await
        .unwrap();
    let moved = store
        .update_group(
            &fa(),
            &line2.id,
            GroupUpdate { devices: Some(vec![dev("oven-1"), dev("press-2")]), ..Default::default() },
            6,
        )
        .await
        .unwrap();
    assert_eq!(moved.devices, vec![dev("oven-1"), dev("press-2")]);
    assert_eq!(moved.updated_at, 6);

    // Tags overlap freely, with each other and with the hierarchy.
    let tag = NewGroup {
        kind: GroupKind::Tag,
        name: "Compressed air".into(),
        parent_id: None,
        level: None,
        devices: vec![dev("comp-1"), dev("press-1")],
    };
    let tag1 = store.create_group(&fa(), tag.clone(), 7).await.unwrap();
    let tag2 = store.create_group(&fa(), NewGroup { name: "Night shift".into(), ..tag.clone() }, 8).await.unwrap();
    assert_eq!(tag2.kind, GroupKind::Tag);
    let err = store.create_group(&fa(), NewGroup { parent_id: Some(site.id.clone()), ..tag }, 9).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid { ref field, .. } if field == "parent_id"), "{err:?}");

    // Roll-up: the group and all descendants.
    let all = store.group_rollup(&fa(), &site.id).await.unwrap().unwrap();
    assert_eq!(all, vec![dev("comp-1"), dev("oven-1"), dev("press-1"), dev("press-2")]);
    let lines = store.group_rollup(&fa(), &line2.id).await.unwrap().unwrap();
    assert_eq!(lines, vec![dev("oven-1"), dev("press-2")]);
    assert_eq!(store.group_rollup(&fa(), &tag1.id).await.unwrap().unwrap(), vec![dev("comp-1"), dev("press-1")]);

    // No cycles: a group cannot move below itself.
    let err = store
        .update_group(&fa(), &site.id, GroupUpdate { parent_id: Some(Some(line.id.clone())), ..Default::default() }, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { ref field, .. } if field == "parent_id"), "{err:?}");
    // To the top with null, a level set and cleared.
    let top = store
        .update_group(
            &fa(),
            &line.id,
            GroupUpdate { parent_id: Some(None), level: Some(Some("line".into())), ..Default::default() },
            11,
        )
        .await
        .unwrap();
    assert_eq!((top.parent_id, top.level.as_deref()), (None, Some("line")));

    // Another factory sees none of it.
    assert!(store.list_groups(&fb()).await.unwrap().is_empty());
    assert!(store.get_group(&fb(), &site.id).await.unwrap().is_none());
    assert!(store.group_rollup(&fb(), &site.id).await.unwrap().is_none());
    assert!(matches!(store.delete_group(&fb(), &site.id, true).await, Err(StoreError::NotFound)));
    assert!(matches!(store.update_group(&fb(), &site.id, GroupUpdate::default(), 12).await, Err(StoreError::NotFound)));
    // Factory B may use the same devices ids in its own hierarchy.
    store.create_group(&fb(), group("B site", None, &["press-1"]), 13).await.unwrap();

    // Deleting a parent needs cascade; cascade removes the subtree and frees its devices.
    assert!(matches!(store.delete_group(&fa(), &site.id, false).await, Err(StoreError::Conflict(_))));
    let deleted = store.delete_group(&fa(), &site.id, true).await.unwrap();
    assert_eq!(deleted.len(), 3, "site, area, line 2: {deleted:?}");
    let left: Vec<String> = store.list_groups(&fa()).await.unwrap().into_iter().map(|g| g.name).collect();
    assert_eq!(left, ["Line 1", "Compressed air", "Night shift"]);
    store.create_group(&fa(), group("New home", None, &["press-2", "oven-1"]), 14).await.unwrap();
}

async fn settings_are_versioned_forward_only(db: TestDatabase) {
    let store = open(&db).await;
    let today = date("2026-12-03");
    let kind = SettingKind::Tariff;
    assert!(store.setting_versions(&fa(), kind).await.unwrap().is_empty());
    // The first version may omit valid_from: since always.
    let v1 = store
        .append_setting(
            &fa(),
            NewSetting { kind, valid_from: None, body: &json!({"price": 1}), created_by: "user:a" },
            today,
            10,
        )
        .await
        .unwrap();
    assert_eq!((v1.version, v1.valid_from), (1, None));
    // Later ones must name a date, today or later, after the last one's.
    let err = store
        .append_setting(
            &fa(),
            NewSetting { kind, valid_from: None, body: &json!({"price": 2}), created_by: "user:a" },
            today,
            11,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { ref field, .. } if field == "valid_from"), "{err:?}");
    let err = store
        .append_setting(
            &fa(),
            NewSetting { kind, valid_from: Some(date("2026-12-02")), body: &json!({"price": 2}), created_by: "user:a" },
            today,
            11,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { ref field, .. } if field == "valid_from"), "{err:?}");
    store
        .append_setting(
            &fa(),
            NewSetting { kind, valid_from: Some(date("2027-01-01")), body: &json!({"price": 2}), created_by: "user:b" },
            today,
            12,
        )
        .await
        .unwrap();
    let err = store
        .append_setting(
            &fa(),
            NewSetting { kind, valid_from: Some(date("2027-01-01")), body: &json!({"price": 3}), created_by: "user:b" },
            today,
            13,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { ref field, .. } if field == "valid_from"), "{err:?}");
    store
        .append_setting(
            &fa(),
            NewSetting { kind, valid_from: Some(date("2027-02-01")), body: &json!({"price": 3}), created_by: "user:b" },
            today,
            14,
        )
        .await
        .unwrap();

    let versions = store.setting_versions(&fa(), kind).await.unwrap();
    let summary: Vec<_> = versions.iter().map(|v| (v.version, v.valid_from, v.body["price"].clone())).collect();
    assert_eq!(
        summary,
        [(1, None, json!(1)), (2, Some(date("2027-01-01")), json!(2)), (3, Some(date("2027-02-01")), json!(3))]
    );
    assert_eq!(versions[1].created_by, "user:b");
    assert_eq!(in_force(&versions, today).unwrap().version, 1);
    assert_eq!(in_force(&versions, date("2027-01-15")).unwrap().version, 2);

    // Kinds and factories are separate.
    assert!(store.setting_versions(&fa(), SettingKind::Shifts).await.unwrap().is_empty());
    assert!(store.setting_versions(&fb(), kind).await.unwrap().is_empty());
    // A first version that starts later cannot lie in the past either.
    let err = store
        .append_setting(
            &fb(),
            NewSetting {
                kind: SettingKind::EmissionFactor,
                valid_from: Some(date("2026-01-01")),
                body: &json!({}),
                created_by: "u",
            },
            today,
            1,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
}

async fn device_configs_round_trip(db: TestDatabase) {
    let store = open(&db).await;
    assert!(store.device_config(&fa(), &dev("press-1")).await.unwrap().is_none());
    let config = DeviceEnergyConfig {
        source_property: Some(PropertyName::parse("power_kw").unwrap()),
        state_property: Some(PropertyName::parse("state").unwrap()),
        idle_below_kw: Some(2.5),
        max_gap_minutes: Some(30),
    };
    store.put_device_config(&fa(), &dev("press-1"), &config, 5).await.unwrap();
    assert_eq!(store.device_config(&fa(), &dev("press-1")).await.unwrap(), Some((config.clone(), 5)));
    assert_eq!(config.max_gap_ms(), 30 * 60_000);
    let cleared = DeviceEnergyConfig::default();
    store.put_device_config(&fa(), &dev("press-1"), &cleared, 6).await.unwrap();
    assert_eq!(store.device_config(&fa(), &dev("press-1")).await.unwrap(), Some((cleared.clone(), 6)));
    assert_eq!(cleared.max_gap_ms(), 15 * 60_000);
    store.put_device_config(&fa(), &dev("press-2"), &config, 7).await.unwrap();
    assert_eq!(store.device_configs(&fa()).await.unwrap().len(), 2);
    assert!(store.device_configs(&fb()).await.unwrap().is_empty());
    for bad in [
        DeviceEnergyConfig { idle_below_kw: Some(-1.0), ..Default::default() },
        DeviceEnergyConfig { max_gap_minutes: Some(0), ..Default::default() },
        DeviceEnergyConfig { max_gap_minutes: Some(24 * 60 + 1), ..Default::default() },
    ] {
        assert!(matches!(
            store.put_device_config(&fa(), &dev("press-3"), &bad, 8).await,
            Err(StoreError::Invalid { .. })
        ));
    }
}

async fn baselines_are_versioned_per_name_and_target(db: TestDatabase) {
    let store = open(&db).await;
    let baseline = |name: &str, target: &str| Baseline {
        id: String::new(),
        name: name.into(),
        version: 0,
        target_kind: "device".into(),
        target_id: target.into(),
        drivers: vec![
            Driver::OperatingHours,
            Driver::HeatingDegreeDays {
                device_id: dev("weather"),
                property: PropertyName::parse("temp_c").unwrap(),
                base_c: 15.5,
            },
        ],
        period_from: date("2026-01-01"),
        period_to: date("2026-02-01"),
        model: Model {
            intercept: 100.0,
            coefficients: vec![("operating_hours".into(), 2.0), ("hdd:weather/temp_c".into(), 3.5)],
            r2: 0.93,
            cv_rmse: 0.08,
            n: 31,
        },
        created_at: 7,
        created_by: "user:a".into(),
    };
    let v1 = store.create_baseline(&fa(), baseline("EnPI", "press-1")).await.unwrap();
    let v2 = store.create_baseline(&fa(), baseline("EnPI", "press-1")).await.unwrap();
    let other = store.create_baseline(&fa(), baseline("EnPI", "press-2")).await.unwrap();
    assert_eq!((v1.version, v2.version, other.version), (1, 2, 1));
    assert_ne!(v1.id, v2.id);
    let read = store.get_baseline(&fa(), &v2.id).await.unwrap().unwrap();
    assert_eq!(read, v2);
    assert_eq!(store.list_baselines(&fa()).await.unwrap().len(), 3);
    assert!(store.get_baseline(&fb(), &v1.id).await.unwrap().is_none());
    assert!(store.list_baselines(&fb()).await.unwrap().is_empty());
}

backend_matrix!(
    groups_form_a_hierarchy_and_tags,
    settings_are_versioned_forward_only,
    device_configs_round_trip,
    baselines_are_versioned_per_name_and_target
);
