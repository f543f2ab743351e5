use factoryops_ingest::{
    DeviceFilter, DeviceStatus, DeviceUpdate, Encoded, PropertyCatalogue, PropertyUpdate, RejectReason, RepoError,
    ValueType, Verification,
};
use factoryops_testkit::{TestDatabase, backend_matrix};

use crate::common::{device, factory, new_device, open_db, prop};

async fn devices_crud_filter_and_pages(db: TestDatabase) {
    let registry = factoryops_ingest::DeviceRegistry::new(open_db(&db).await);
    let (a, b) = (factory("plant-a"), factory("plant-b"));
    for id in ["press-1", "press-2", "press-3", "pump_1"] {
        registry.create(&a, new_device(id), 1_000).await.unwrap();
    }
    let mut pump = new_device("pump-9");
    pump.device_type = "pump".into();
    pump.name = "Main Coolant PUMP".into();
    registry.create(&a, pump, 1_000).await.unwrap();
    registry.create(&b, new_device("press-1"), 1_000).await.unwrap();

    let conflict = registry.create(&a, new_device("press-1"), 2_000).await.unwrap_err();
    assert!(matches!(conflict, RepoError::Conflict(_)), "{conflict:?}");

    let got = registry.get(&a, &device("press-1")).await.unwrap().unwrap();
    assert_eq!(got.name, "Device press-1");
    assert_eq!(got.metadata["vendor"], "acme");
    assert_eq!(got.status, DeviceStatus::Active);
    assert!(!got.has_secret);
    assert_eq!(got.last_seen, None);
    assert!(registry.get(&a, &device("nope")).await.unwrap().is_none());

    // Filters.
    let pumps =
        registry.list(&a, &DeviceFilter { device_type: Some("pump".into()), ..Default::default() }).await.unwrap();
    assert_eq!(pumps.items.len(), 1);
    let text = registry.list(&a, &DeviceFilter { text: Some("coolant".into()), ..Default::default() }).await.unwrap();
    assert_eq!(text.items.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["pump-9"]);
    // `_` is a literal, not a LIKE wildcard.
    let literal = registry.list(&a, &DeviceFilter { text: Some("p_1".into()), ..Default::default() }).await.unwrap();
    assert_eq!(literal.items.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["pump_1"]);

    // Pages of two, in id order, and nothing of the other factory.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = registry
            .list(&a, &DeviceFilter { limit: Some(2), cursor: cursor.clone(), ..Default::default() })
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|d| d.id.as_str().to_string()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ["press-1", "press-2", "press-3", "pump-9", "pump_1"]);

    // Updates are partial and factory-scoped.
    let updated = registry
        .update(
            &a,
            &device("press-2"),
            DeviceUpdate {
                location: Some("hall 2".into()),
                status: Some(DeviceStatus::Disabled),
                ..Default::default()
            },
            3_000,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (updated.location.as_str(), updated.name.as_str(), updated.status),
        ("hall 2", "Device press-2", DeviceStatus::Disabled)
    );
    assert_eq!(updated.updated_at, 3_000);
    let disabled =
        registry.list(&a, &DeviceFilter { status: Some(DeviceStatus::Disabled), ..Default::default() }).await.unwrap();
    assert_eq!(disabled.items.len(), 1);
    assert!(registry.update(&b, &device("press-2"), DeviceUpdate::default(), 3_000).await.unwrap().is_none());
    let bad = registry
        .update(
            &a,
            &device("press-2"),
            DeviceUpdate { metadata: Some(serde_json::json!([1])), ..Default::default() },
            3_000,
        )
        .await;
    assert!(matches!(bad, Err(RepoError::Invalid { field: "metadata", .. })));
}

async fn secrets_issue_rotate_and_verify(db: TestDatabase) {
    let registry = factoryops_ingest::DeviceRegistry::new(open_db(&db).await);
    let (a, b) = (factory("plant-a"), factory("plant-b"));
    registry.create(&a, new_device("press-1"), 0).await.unwrap();
    let d = device("press-1");
    assert_eq!(
        registry.verify(&a, &d, b"anything").await.unwrap(),
        Verification::BadCredentials,
        "no secret issued yet"
    );

    let issued = registry.issue_secret(&a, &d, 10).await.unwrap().unwrap();
    assert!(issued.secret.starts_with("fod_") && issued.secret.len() == 4 + 64, "{}", issued.secret);
    assert_eq!(issued.username, "plant-a/press-1");
    assert!(registry.get(&a, &d).await.unwrap().unwrap().has_secret);
    assert_eq!(registry.verify(&a, &d, issued.secret.as_bytes()).await.unwrap(), Verification::Ok);
    assert_eq!(registry.verify(&a, &d, b"fod_wrong").await.unwrap(), Verification::BadCredentials);
    assert_eq!(registry.verify(&b, &d, issued.secret.as_bytes()).await.unwrap(), Verification::BadCredentials);
    assert!(registry.issue_secret(&b, &d, 10).await.unwrap().is_none(), "another factory's device is not found");

    let rotated = registry.issue_secret(&a, &d, 20).await.unwrap().unwrap();
    assert_ne!(rotated.secret, issued.secret);
    assert_eq!(registry.verify(&a, &d, issued.secret.as_bytes()).await.unwrap(), Verification::BadCredentials);
    assert_eq!(registry.verify(&a, &d, rotated.secret.as_bytes()).await.unwrap(), Verification::Ok);

    registry
        .update(&a, &d, DeviceUpdate { status: Some(DeviceStatus::Disabled), ..Default::default() }, 30)
        .await
        .unwrap();
    assert_eq!(registry.verify(&a, &d, rotated.secret.as_bytes()).await.unwrap(), Verification::Disabled);
}

async fn catalogue_registers_guards_and_edits(db: TestDatabase) {
    let database = open_db(&db).await;
    let registry = factoryops_ingest::DeviceRegistry::new(database.clone());
    let (a, b) = (factory("plant-a"), factory("plant-b"));
    registry.create(&a, new_device("press-1"), 0).await.unwrap();
    let d = device("press-1");
    let catalogue = PropertyCatalogue::new(database.clone(), 3);

    let names = [prop("power_kw"), prop("running")];
    let refused = catalogue
        .register(&a, &d, [(&names[0], ValueType::Number), (&names[1], ValueType::Boolean)].into_iter(), 1_000)
        .await
        .unwrap();
    assert!(refused.is_empty());
    // Same names again: served from the cache, no change.
    let refused = catalogue.register(&a, &d, [(&names[0], ValueType::Number)].into_iter(), 2_000).await.unwrap();
    assert!(refused.is_empty());

    // Cardinality guard: one slot left, two new names → one refused; known names keep flowing.
    let more = [prop("temp_c"), prop("volts"), prop("power_kw")];
    let refused = catalogue.register(&a, &d, more.iter().map(|n| (n, ValueType::Number)), 3_000).await.unwrap();
    assert_eq!(refused, vec![(prop("volts"), RejectReason::CardinalityLimit)]);

    // A fresh catalogue (restart) counts what is in the database.
    let restarted = PropertyCatalogue::new(database.clone(), 3);
    let refused = restarted.register(&a, &d, [(&more[1], ValueType::Number)].into_iter(), 4_000).await.unwrap();
    assert_eq!(refused, vec![(prop("volts"), RejectReason::CardinalityLimit)]);
    assert!(restarted.register(&a, &d, [(&names[0], ValueType::Number)].into_iter(), 4_000).await.unwrap().is_empty());

    let listed = catalogue.list_for_device(&a, &d).await.unwrap();
    assert_eq!(listed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["power_kw", "running", "temp_c"]);
    assert_eq!(listed[1].value_type, ValueType::Boolean);
    assert_eq!((listed[0].first_seen, listed[0].last_seen), (1_000, 1_000));
    assert!(catalogue.list_for_device(&b, &d).await.unwrap().is_empty());

    // last_seen is buffered and flushed in one go (properties and device).
    catalogue.touch(&a, &d, [&names[0]].into_iter(), 9_000);
    catalogue.touch(&a, &d, [&names[0]].into_iter(), 8_000);
    catalogue.flush_last_seen().await.unwrap();
    let power = catalogue.get(&a, &d, &names[0]).await.unwrap().unwrap();
    assert_eq!((power.first_seen, power.last_seen), (1_000, 9_000));
    assert_eq!(registry.get(&a, &d).await.unwrap().unwrap().last_seen, Some(9_000));

    // Unit and description: set, keep, clear.
    let edited = catalogue
        .update(
            &a,
            &d,
            &names[0],
            PropertyUpdate {
                unit: Some(Some("kW".into())),
                description: Some(Some("Active power".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((edited.unit.as_deref(), edited.description.as_deref()), (Some("kW"), Some("Active power")));
    let edited = catalogue
        .update(&a, &d, &names[0], PropertyUpdate { unit: None, description: Some(None), ..Default::default() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((edited.unit.as_deref(), edited.description.as_deref()), (Some("kW"), None));
    assert!(catalogue.update(&b, &d, &names[0], PropertyUpdate::default()).await.unwrap().is_none());

    // Factory-wide list, paged.
    registry.create(&a, new_device("pump-1"), 0).await.unwrap();
    catalogue.register(&a, &device("pump-1"), [(&names[0], ValueType::Number)].into_iter(), 5_000).await.unwrap();
    let first = catalogue.list_for_factory(&a, 3, None).await.unwrap();
    assert_eq!(first.items.len(), 3);
    let second = catalogue.list_for_factory(&a, 3, first.next_cursor.as_deref()).await.unwrap();
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.items[0].device_id.as_str(), "pump-1");
    assert!(second.next_cursor.is_none());
    assert!(catalogue.list_for_factory(&b, 10, None).await.unwrap().items.is_empty());
}

/// Device `last_seen` is written many devices per statement: each device gets its own
/// time, across factories and chunks, and never moves backwards.
async fn device_last_seen_is_batched_and_monotonic(db: TestDatabase) {
    let database = open_db(&db).await;
    let registry = factoryops_ingest::DeviceRegistry::new(database.clone());
    let catalogue = PropertyCatalogue::new(database.clone(), 10);
    let (a, b) = (factory("plant-a"), factory("plant-b"));
    let p = prop("power_kw");
    for i in 0..230 {
        let f = if i % 2 == 0 { &a } else { &b };
        registry.create(f, new_device(&format!("m-{i}")), 0).await.unwrap();
        catalogue.touch(f, &device(&format!("m-{i}")), [&p].into_iter(), 10_000 + i);
    }
    catalogue.flush_devices_last_seen().await.unwrap();
    for i in [0, 1, 99, 100, 101, 229] {
        let f = if i % 2 == 0 { &a } else { &b };
        assert_eq!(registry.get(f, &device(&format!("m-{i}"))).await.unwrap().unwrap().last_seen, Some(10_000 + i));
    }
    // An older time does not overwrite a newer one.
    catalogue.touch(&a, &device("m-0"), [&p].into_iter(), 5);
    catalogue.touch(&a, &device("m-2"), [&p].into_iter(), 50_000);
    catalogue.flush_last_seen().await.unwrap();
    assert_eq!(registry.get(&a, &device("m-0")).await.unwrap().unwrap().last_seen, Some(10_000));
    assert_eq!(registry.get(&a, &device("m-2")).await.unwrap().unwrap().last_seen, Some(50_000));
}

/// The chunked `last_seen` flush runs while registrations keep every pooled connection
/// busy writing: a flush that held SQLite's write lock while waiting for a connection
/// deadlocked against them until the 10-s busy timeout failed the registrations.
async fn last_seen_flushes_and_registrations_do_not_starve_each_other(db: TestDatabase) {
    let database = open_db(&db).await;
    let registry = factoryops_ingest::DeviceRegistry::new(database.clone());
    let catalogue = std::sync::Arc::new(PropertyCatalogue::new(database.clone(), 1_000));
    let f = factory("plant-a");
    for i in 0..400 {
        registry.create(&f, new_device(&format!("m-{i}")), 0).await.unwrap();
        catalogue.touch(&f, &device(&format!("m-{i}")), [&prop("power_kw")].into_iter(), 1_000 + i);
    }
    // A deadlock shows as registrations failing at SQLite's busy timeout (the unwraps
    // below), not as a duration: a slow machine must not fail this test.
    let mut writers = Vec::new();
    for w in 0..24 {
        let (catalogue, f) = (catalogue.clone(), f.clone());
        writers.push(tokio::spawn(async move {
            for n in 0..10 {
                let names: Vec<_> = (0..20).map(|k| prop(&format!("w{w}_n{n}_p{k}"))).collect();
                let d = device(&format!("m-{}", (w * 10 + n) % 400));
                let kinds = names.iter().map(|p| (p, factoryops_ingest::ValueType::Number));
                catalogue.register(&f, &d, kinds, 5).await.unwrap();
            }
        }));
    }
    for _ in 0..3 {
        catalogue.flush_devices_last_seen().await.unwrap();
        for i in 0..400 {
            catalogue.touch(&f, &device(&format!("m-{i}")), [&prop("power_kw")].into_iter(), 2_000 + i);
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    catalogue.flush_last_seen().await.unwrap();
    assert_eq!(registry.get(&f, &device("m-399")).await.unwrap().unwrap().last_seen, Some(2_399));
}

/// Semantics round trip through the database, validation naming fields, and the one-query
/// read the energy computations use (annotated properties only, this factory only).
async fn catalogue_semantics(db: TestDatabase) {
    use factoryops_types::{Counting, Quantity};
    let database = open_db(&db).await;
    let registry = factoryops_ingest::DeviceRegistry::new(database.clone());
    let catalogue = PropertyCatalogue::new(database, 100);
    let (a, b) = (factory("plant-a"), factory("plant-b"));
    let d = device("meter-1");
    registry.create(&a, new_device("meter-1"), 0).await.unwrap();
    registry.create(&b, new_device("meter-1"), 0).await.unwrap();
    let names = [prop("power_kw"), prop("kwh_total"), prop("parts"), prop("running")];
    let types = [ValueType::Number, ValueType::Number, ValueType::Number, ValueType::Boolean];
    let props = names.iter().zip(types);
    catalogue.register(&a, &d, props.clone(), 1_000).await.unwrap();
    catalogue.register(&b, &d, props, 1_000).await.unwrap();

    let set = |quantity: Quantity, unit: &str| PropertyUpdate {
        quantity: Some(Some(quantity)),
        unit: Some(Some(unit.into())),
        ..Default::default()
    };
    let power = catalogue.update(&a, &d, &names[0], set(Quantity::Power, "kW")).await.unwrap().unwrap();
    assert_eq!(power.semantics().unwrap().kw(2.0), Some(2.0));
    let mut counter = set(Quantity::EnergyCounter, "Wh");
    counter.rollover = Some(Some(4_294_967_296.0));
    catalogue.update(&a, &d, &names[1], counter).await.unwrap().unwrap();
    let parts = catalogue.update(&a, &d, &names[2], set(Quantity::ProductionCount, "pcs")).await.unwrap().unwrap();
    assert_eq!(parts.counting, Some(Counting::Cumulative), "the default is stored");

    // Invalid: each error names its field, nothing is written.
    let mut wrong = set(Quantity::Power, "kWh");
    wrong.rollover = Some(Some(10.0));
    match catalogue.update(&a, &d, &names[0], wrong).await {
        Err(RepoError::InvalidFields(errors)) => {
            assert_eq!(errors.iter().map(|e| e.field).collect::<Vec<_>>(), ["unit", "rollover"]);
        }
        other => panic!("{other:?}"),
    }
    let boolean = catalogue.update(&a, &d, &names[3], set(Quantity::Power, "kW")).await;
    assert!(matches!(boolean, Err(RepoError::InvalidFields(ref e)) if e[0].field == "quantity"), "{boolean:?}");
    let state = catalogue
        .update(
            &a,
            &d,
            &names[0],
            PropertyUpdate { quantity: Some(Some(Quantity::State)), unit: Some(None), ..Default::default() },
        )
        .await;
    assert!(matches!(state, Err(RepoError::InvalidFields(ref e)) if e[0].field == "quantity"), "{state:?}");
    let orphan = PropertyUpdate { wh_per_pulse: Some(Some(1.0)), ..Default::default() };
    let orphan = catalogue.update(&a, &d, &names[3], orphan).await;
    assert!(matches!(orphan, Err(RepoError::InvalidFields(ref e)) if e[0].field == "wh_per_pulse"), "{orphan:?}");

    let read = catalogue.get(&a, &d, &names[1]).await.unwrap().unwrap();
    assert_eq!(read.quantity, Some(Quantity::EnergyCounter));
    assert_eq!((read.unit.as_deref(), read.rollover), (Some("Wh"), Some(4_294_967_296.0)));
    assert_eq!(read.semantics().unwrap().kwh(2500.0), Some(2.5));
    assert_eq!(catalogue.get(&a, &d, &names[0]).await.unwrap().unwrap().unit.as_deref(), Some("kW"));

    let all = catalogue.semantics_for_factory(&a).await.unwrap();
    let listed: Vec<(&str, Quantity)> = all.iter().map(|(_, n, s)| (n.as_str(), s.quantity)).collect();
    assert_eq!(
        listed,
        [("kwh_total", Quantity::EnergyCounter), ("parts", Quantity::ProductionCount), ("power_kw", Quantity::Power)]
    );
    assert!(all.iter().all(|(device, _, _)| device == &d));
    assert!(catalogue.semantics_for_factory(&b).await.unwrap().is_empty());

    // A new quantity resets the old one's parameters; clearing the quantity keeps the unit
    // as free text.
    let changed = catalogue.update(&a, &d, &names[1], set(Quantity::Power, "W")).await.unwrap().unwrap();
    assert_eq!((changed.quantity, changed.rollover), (Some(Quantity::Power), None));
    let cleared = catalogue
        .update(&a, &d, &names[1], PropertyUpdate { quantity: Some(None), ..Default::default() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((cleared.quantity, cleared.unit.as_deref()), (None, Some("W")));
    let free = catalogue
        .update(&a, &d, &names[1], PropertyUpdate { unit: Some(Some("furlongs".into())), ..Default::default() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(free.unit.as_deref(), Some("furlongs"));
    assert_eq!(catalogue.semantics_for_factory(&a).await.unwrap().len(), 2);
}

/// State properties: the kind guard on registration (cached and from the database) and
/// the label dictionary (dense codes per (factory, property), the bound, another
/// process's catalogue reading what this one registered).
async fn state_kinds_and_dictionary(db: TestDatabase) {
    let database = open_db(&db).await;
    let catalogue = PropertyCatalogue::new(database.clone(), 100).with_max_state_labels(3);
    let (a, b) = (factory("plant-a"), factory("plant-b"));
    let d = device("press-1");
    let (state, power) = (prop("state"), prop("power_kw"));
    let refused = catalogue
        .register(&a, &d, [(&state, ValueType::State), (&power, ValueType::Number)].into_iter(), 1_000)
        .await
        .unwrap();
    assert!(refused.is_empty());
    let swapped = [(&state, ValueType::Number), (&power, ValueType::State)];
    let expected = vec![(state.clone(), RejectReason::NotAState), (power.clone(), RejectReason::String)];
    assert_eq!(catalogue.register(&a, &d, swapped.into_iter(), 2_000).await.unwrap(), expected);
    // Booleans and numbers mix as before.
    assert!(catalogue.register(&a, &d, [(&power, ValueType::Boolean)].into_iter(), 2_000).await.unwrap().is_empty());
    let fresh = PropertyCatalogue::new(database.clone(), 100);
    assert_eq!(fresh.register(&a, &d, swapped.into_iter(), 3_000).await.unwrap(), expected, "from the database");
    assert_eq!(fresh.get(&a, &d, &state).await.unwrap().unwrap().value_type, ValueType::State);

    let states = catalogue.states();
    assert_eq!(states.encode(&a, &state, "running").await.unwrap(), Encoded::Code(0));
    assert_eq!(states.encode(&a, &state, "idle").await.unwrap(), Encoded::Code(1));
    assert_eq!(states.encode(&a, &state, "running").await.unwrap(), Encoded::Code(0));
    assert_eq!(states.encode(&b, &state, "idle").await.unwrap(), Encoded::Code(0), "per factory");
    assert_eq!(states.encode(&a, &state, "off").await.unwrap(), Encoded::Code(2));
    assert_eq!(states.encode(&a, &state, "setup").await.unwrap(), Encoded::Full);
    assert_eq!(states.encode(&a, &state, "idle").await.unwrap(), Encoded::Code(1), "known labels still encode");
    // Another process: its cache is empty, the database has the labels.
    let other = fresh.states();
    let labels = other.labels(&a, &state).await.unwrap();
    let listed: Vec<(u32, &str)> = labels.iter().map(|(c, l)| (c, l.as_ref())).collect();
    assert_eq!(listed, [(0, "running"), (1, "idle"), (2, "off")]);
    assert_eq!(labels.label_of(1.0).map(|l| l.as_ref()), Some("idle"));
    assert_eq!(labels.label_of(1.5), None);
    assert_eq!(other.encode(&a, &state, "idle").await.unwrap(), Encoded::Code(1));
    assert!(other.labels(&b, &power).await.unwrap().is_empty());
}

backend_matrix!(
    state_kinds_and_dictionary,
    catalogue_semantics,
    devices_crud_filter_and_pages,
    last_seen_flushes_and_registrations_do_not_starve_each_other,
    secrets_issue_rotate_and_verify,
    catalogue_registers_guards_and_edits,
    device_last_seen_is_batched_and_monotonic
);
