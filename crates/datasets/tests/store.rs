#![allow(clippy::unwrap_used)]
//! Dataset records on SQLite and MariaDB: the job lifecycle, tenancy, references and the
//! retention policy that never removes a referenced dataset.

use factoryops_datasets::store::{DatasetStore, Status};
use factoryops_datasets::{DatasetQuery, DatasetRequest, ExportSummary, Limits, validate};
use factoryops_db::Database;
use factoryops_testkit::{TestDatabase, backend_matrix};
use factoryops_types::FactoryId;

async fn open(db: &TestDatabase) -> DatasetStore {
    let database = Database::connect(&db.url).await.unwrap();
    database.migrate(&[&factoryops_db::MIGRATIONS, &factoryops_datasets::store::MIGRATIONS]).await.unwrap();
    DatasetStore::new(database)
}

fn fa() -> FactoryId {
    FactoryId::parse("plant-a").unwrap()
}

fn fb() -> FactoryId {
    FactoryId::parse("plant-b").unwrap()
}

fn query() -> DatasetQuery {
    let req: DatasetRequest = serde_json::from_value(serde_json::json!({"devices": ["m1"], "properties": ["kw"],
        "from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "every": "1h", "agg": "avg"}))
    .unwrap();
    validate(&req, &Limits::default()).unwrap()
}

fn summary(sha: &str) -> ExportSummary {
    ExportSummary { rows: 24, columns: 2, values: 24, sha256: sha.repeat(64), bytes: 1234 }
}

async fn lifecycle_and_tenancy(db: TestDatabase) {
    let store = open(&db).await;
    let d = store.create(&fa(), "ds-1", &query(), "user-1", 1_000).await.unwrap();
    assert_eq!((d.status, d.progress, d.attempts, d.manifest.is_none()), (Status::Queued, 0.0, 0, true));
    assert_eq!(d.query, query(), "the canonical query reads back");
    assert!(store.get(&fb(), "ds-1").await.unwrap().is_none(), "another factory does not see it");
    assert!(store.list(&fb(), 10).await.unwrap().is_empty());

    assert!(store.start_attempt(&fa(), "ds-1", 2_000).await.unwrap());
    assert!(store.set_progress(&fa(), "ds-1", 0.25, 2_100).await.unwrap());
    assert!(!store.set_progress(&fb(), "ds-1", 0.5, 2_100).await.unwrap(), "scoped by factory");
    assert!(store.fail(&fa(), "ds-1", "object store unavailable", true, 2_200).await.unwrap());
    let d = store.get(&fa(), "ds-1").await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts, d.error.as_deref()), (Status::Queued, 1, Some("object store unavailable")));
    assert!(store.start_attempt(&fa(), "ds-1", 3_000).await.unwrap());
    assert!(store.succeed(&fa(), "ds-1", &summary("a"), 3_500).await.unwrap());
    let d = store.get(&fa(), "ds-1").await.unwrap().unwrap();
    assert_eq!((d.status, d.progress, d.attempts, d.error), (Status::Succeeded, 1.0, 2, None));
    assert_eq!(d.finished_at, Some(3_500));
    let m = d.manifest.unwrap();
    assert_eq!((m.rows, m.columns, m.values, m.bytes), (24, 2, 24, 1234));
    assert_eq!((m.sha256, m.created_by, m.created_at), ("a".repeat(64), "user-1".to_string(), 1_000));
    assert!(!store.start_attempt(&fa(), "ds-1", 4_000).await.unwrap(), "a finished dataset is never run again");
    assert!(!store.succeed(&fa(), "ds-1", &summary("b"), 4_000).await.unwrap(), "nor overwritten");

    store.create(&fa(), "ds-2", &query(), "user-1", 5_000).await.unwrap();
    let ids: Vec<String> = store.list(&fa(), 10).await.unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, vec!["ds-2", "ds-1"], "newest first");
    assert!(store.start_attempt(&fa(), "ds-2", 5_100).await.unwrap());
    assert!(store.fail(&fa(), "ds-2", "too many values", false, 5_200).await.unwrap());
    assert_eq!(store.get(&fa(), "ds-2").await.unwrap().unwrap().status, Status::Failed);
}

async fn retention_keeps_referenced_datasets_and_shared_files(db: TestDatabase) {
    let store = open(&db).await;
    // Three finished datasets, two of them with the same file; one referenced by a run.
    for (id, sha) in [("old-1", "a"), ("old-2", "a"), ("old-3", "b"), ("used", "c")] {
        store.create(&fa(), id, &query(), "u", 1_000).await.unwrap();
        store.start_attempt(&fa(), id, 1_100).await.unwrap();
        store.succeed(&fa(), id, &summary(sha), 1_200).await.unwrap();
    }
    store.create(&fa(), "new", &query(), "u", 9_000).await.unwrap();
    store.create(&fa(), "queued-old", &query(), "u", 1_000).await.unwrap();
    store.create(&fb(), "other", &query(), "u", 1_000).await.unwrap();
    store.add_reference(&fa(), "used", "run", "run-7", 1_300).await.unwrap();
    store.add_reference(&fa(), "used", "run", "run-7", 1_300).await.unwrap(); // idempotent
    assert_eq!(store.referenced_by(&fa(), "used").await.unwrap(), vec!["run:run-7"]);

    let mut expired = store.expire(&fa(), 5_000).await.unwrap();
    expired.sort_by(|a, b| a.dataset_id.cmp(&b.dataset_id));
    let got: Vec<(&str, bool)> = expired.iter().map(|e| (e.dataset_id.as_str(), e.delete_file)).collect();
    assert_eq!(got, vec![("old-1", true), ("old-2", false), ("old-3", true)], "file `a` deleted once");
    for kept in ["used", "new", "queued-old"] {
        assert!(store.get(&fa(), kept).await.unwrap().is_some(), "{kept} is kept");
    }
    assert!(store.get(&fb(), "other").await.unwrap().is_some(), "another factory's policy is its own");

    store.remove_reference(&fa(), "used", "run", "run-7").await.unwrap();
    let expired = store.expire(&fa(), 5_000).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!((expired[0].dataset_id.as_str(), expired[0].delete_file), ("used", true));
}

backend_matrix!(lifecycle_and_tenancy, retention_keeps_referenced_datasets_and_shared_files);
