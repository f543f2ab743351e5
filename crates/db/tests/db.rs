#![allow(clippy::unwrap_used)]
use factoryops_db::idempotency::{self, Claim, IdempotencyStore, KeyScope, StoredResponse};
use factoryops_db::jobs::{CancelOutcome, JobQueue, JobStatus, NewJob};
use factoryops_db::{Database, MIGRATIONS, outbox};
use factoryops_platform::bus::{EventBus, MemoryBus, topics};
use factoryops_testkit::{Backend, TestDatabase, backend_matrix};
use factoryops_types::FactoryId;
use sqlx::Row;

async fn open(db: &TestDatabase) -> Database {
    let database = Database::connect(&db.url).await.unwrap();
    database.migrate(&[&MIGRATIONS]).await.unwrap();
    database
}

fn job(kind: &str, key: Option<&str>) -> NewJob {
    NewJob {
        factory_id: Some(FactoryId::parse("plant-a").unwrap()),
        kind: kind.into(),
        payload: serde_json::json!({ "report": 1 }),
        run_after: 0,
        max_attempts: 2,
        idempotency_key: key.map(str::to_string),
    }
}

async fn migrations_are_idempotent_and_sqlite_uses_wal(db: TestDatabase) {
    let database = open(&db).await;
    database.migrate(&[&MIGRATIONS]).await.unwrap();
    database.ping().await.unwrap();
    if db.backend == Backend::Sqlite {
        let mode: String = sqlx::query("PRAGMA journal_mode").fetch_one(database.pool()).await.unwrap().get(0);
        assert_eq!(mode.to_lowercase(), "wal");
    }
}

async fn jobs_lease_retry_and_fail(db: TestDatabase) {
    let queue = JobQueue::new(open(&db).await);
    let id = queue.enqueue(job("report", None), 1_000).await.unwrap();
    assert!(queue.claim(&["other"], "w1", 10_000, 1_000).await.unwrap().is_none());

    let claimed = queue.claim(&["report"], "w1", 10_000, 1_000).await.unwrap().unwrap();
    assert_eq!(claimed.id, id);
    assert_eq!(claimed.status, JobStatus::Running);
    assert_eq!((claimed.attempts, claimed.started_at, claimed.created_at), (1, Some(1_000), 1_000));
    assert_eq!(claimed.payload["report"], 1);
    // Leased: nobody else gets it until the lease runs out.
    assert!(queue.claim(&["report"], "w2", 10_000, 5_000).await.unwrap().is_none());
    assert!(queue.report(&id, "w1", 0.25, &["step 1".into()], 5_500).await.unwrap());
    let hb = queue.heartbeat(&id, "w1", 10_000, 5_600).await.unwrap();
    assert!(hb.held && !hb.cancel_requested);

    assert_eq!(queue.fail(&id, "w1", "boom", Some(20_000), 6_000).await.unwrap(), Some(JobStatus::Queued));
    assert!(queue.claim(&["report"], "w2", 10_000, 19_999).await.unwrap().is_none(), "not before run_after");
    let again = queue.claim(&["report"], "w2", 10_000, 20_000).await.unwrap().unwrap();
    assert_eq!(again.attempts, 2);
    assert_eq!(again.last_error.as_deref(), Some("boom"));
    assert_eq!((again.progress, again.log.clone()), (0.25, vec!["step 1".to_string()]));
    // The old owner lost the lease and cannot complete it, nor heartbeat.
    assert!(!queue.complete(&id, "w1", None, 20_001).await.unwrap());
    assert!(!queue.heartbeat(&id, "w1", 10_000, 20_001).await.unwrap().held);
    assert_eq!(queue.fail(&id, "w2", "boom again", Some(30_000), 21_000).await.unwrap(), Some(JobStatus::Failed));
    let failed = queue.get(&id).await.unwrap().unwrap();
    assert_eq!((failed.finished_at, failed.last_error.as_deref()), (Some(21_000), Some("boom again")));
    assert!(queue.claim(&["report"], "w3", 10_000, 99_000).await.unwrap().is_none());

    // A manual retry keeps the payload and starts a fresh budget.
    assert!(queue.retry(&id, 100_000).await.unwrap());
    let revived = queue.claim(&["report"], "w3", 10_000, 100_000).await.unwrap().unwrap();
    assert_eq!((revived.attempts, revived.payload.clone()), (1, serde_json::json!({ "report": 1 })));
    let output = serde_json::json!({ "rows": 3 });
    assert!(queue.complete(&id, "w3", Some(&output), 100_001).await.unwrap());
    let done = queue.get(&revived.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!((done.progress, done.output, done.finished_at), (1.0, Some(output), Some(100_001)));
    assert!(!queue.retry(&id, 100_002).await.unwrap(), "only failed or cancelled jobs are retried");

    // A permanent error fails at once, whatever the attempts left.
    let id = queue.enqueue(NewJob { max_attempts: 5, ..job("report", None) }, 0).await.unwrap();
    queue.claim(&["report"], "w1", 10_000, 200_000).await.unwrap().unwrap();
    assert_eq!(queue.fail(&id, "w1", "bad parameters", None, 200_001).await.unwrap(), Some(JobStatus::Failed));
}

async fn cancel_queued_at_once_and_running_on_request(db: TestDatabase) {
    let queue = JobQueue::new(open(&db).await);
    let factory = FactoryId::parse("plant-a").unwrap();
    let queued = queue.enqueue(job("report", None), 0).await.unwrap();
    assert_eq!(queue.cancel(&queued, 10).await.unwrap(), Some(CancelOutcome::Cancelled));
    assert_eq!(queue.get(&queued).await.unwrap().unwrap().status, JobStatus::Cancelled);
    assert!(queue.claim(&["report"], "w1", 1_000, 20).await.unwrap().is_none());

    let running = queue.enqueue(job("report", None), 0).await.unwrap();
    queue.claim(&["report"], "w1", 1_000, 20).await.unwrap().unwrap();
    assert_eq!(queue.cancel(&running, 30).await.unwrap(), Some(CancelOutcome::Requested));
    assert!(queue.heartbeat(&running, "w1", 1_000, 40).await.unwrap().cancel_requested);
    assert!(queue.mark_cancelled(&running, "w1", 50).await.unwrap());
    assert_eq!(queue.cancel(&running, 60).await.unwrap(), Some(CancelOutcome::AlreadyFinished(JobStatus::Cancelled)));
    assert_eq!(queue.cancel("no-such-job", 60).await.unwrap(), None);
    // Factory scope: another factory's job is not found.
    assert!(queue.get_in(&factory, &running).await.unwrap().is_some());
    assert!(queue.get_in(&FactoryId::parse("plant-b").unwrap(), &running).await.unwrap().is_none());
    assert_eq!(queue.list_in(&factory, "report", 10).await.unwrap().len(), 2);
}

async fn a_dead_workers_job_is_retried_or_failed_never_stuck(db: TestDatabase) {
    let queue = JobQueue::new(open(&db).await);
    let one_shot = queue.enqueue(NewJob { max_attempts: 1, ..job("x", None) }, 0).await.unwrap();
    let cancelled = queue.enqueue(NewJob { max_attempts: 3, ..job("x", None) }, 0).await.unwrap();
    queue.claim(&["x"], "dead", 1_000, 0).await.unwrap().unwrap();
    queue.claim(&["x"], "dead", 1_000, 0).await.unwrap().unwrap();
    queue.cancel(&cancelled, 10).await.unwrap();
    // Lease still valid: nothing to sweep.
    assert_eq!(queue.sweep(&["x"], 500).await.unwrap(), Default::default());
    let sweep = queue.sweep(&["x"], 1_001).await.unwrap();
    assert_eq!((sweep.failed, sweep.cancelled), (vec![one_shot.clone()], vec![cancelled.clone()]));
    let failed = queue.get(&one_shot).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(failed.last_error.unwrap().contains("worker stopped"));
    assert_eq!(queue.get(&cancelled).await.unwrap().unwrap().status, JobStatus::Cancelled);
    // Released on shutdown: queued again without spending the attempt.
    let released = queue.enqueue(job("y", None), 0).await.unwrap();
    queue.claim(&["y"], "w1", 1_000, 0).await.unwrap().unwrap();
    assert!(queue.release(&released, "w1", 5).await.unwrap());
    let job = queue.get(&released).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempts), (JobStatus::Queued, 0));
}

async fn expired_lease_is_reclaimed_after_restart(db: TestDatabase) {
    let id = {
        let queue = JobQueue::new(open(&db).await);
        let id = queue.enqueue(job("export", None), 0).await.unwrap();
        queue.claim(&["export"], "crashed-worker", 1_000, 0).await.unwrap().unwrap();
        id
    };
    // A new process: same database, the first worker never came back.
    let queue = JobQueue::new(open(&db).await);
    assert!(queue.claim(&["export"], "w2", 1_000, 500).await.unwrap().is_none());
    let job = queue.claim(&["export"], "w2", 1_000, 1_001).await.unwrap().unwrap();
    assert_eq!(job.id, id);
    assert_eq!(job.lease_owner.as_deref(), Some("w2"));
}

async fn idempotency_key_returns_the_same_job(db: TestDatabase) {
    let queue = JobQueue::new(open(&db).await);
    let a = queue.enqueue(job("report", Some("req-1")), 0).await.unwrap();
    let b = queue.enqueue(job("report", Some("req-1")), 0).await.unwrap();
    let c = queue.enqueue(job("report", Some("req-2")), 0).await.unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

async fn concurrent_workers_never_share_a_job(db: TestDatabase) {
    let queue = JobQueue::new(open(&db).await);
    for _ in 0..20 {
        queue.enqueue(job("n", None), 0).await.unwrap();
    }
    let mut handles = Vec::new();
    for w in 0..4 {
        let queue = queue.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(job) = queue.claim(&["n"], &format!("w{w}"), 60_000, 1).await.unwrap() {
                mine.push(job.id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(total, 20);
    assert_eq!(all.len(), 20);
}

async fn outbox_relays_in_order_once(db: TestDatabase) {
    let database = open(&db).await;
    let factory = FactoryId::parse("plant-a").unwrap();
    let bus = MemoryBus::new();
    let mut sub = bus.subscribe(topics::ALERTS, 100);
    let mut tx = database.begin_write().await.unwrap();
    for n in 0..3 {
        let payload = serde_json::json!({ "n": n });
        outbox::append(&database, &mut tx, Some(&factory), topics::ALERTS, &format!("k{n}"), &payload, 5)
            .await
            .unwrap();
    }
    // The same key again is ignored: re-running a state change does not duplicate its event.
    outbox::append(&database, &mut tx, Some(&factory), topics::ALERTS, "k0", &serde_json::json!({}), 5).await.unwrap();
    tx.commit().await.unwrap();

    // An uncommitted append never reaches the bus.
    let mut tx = database.begin_write().await.unwrap();
    outbox::append(&database, &mut tx, Some(&factory), topics::ALERTS, "rolled-back", &serde_json::json!({}), 5)
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    assert_eq!(outbox::relay_once(&database, &bus, 100, 10).await.unwrap(), 3);
    assert_eq!(outbox::relay_once(&database, &bus, 100, 11).await.unwrap(), 0);
    for n in 0..3 {
        let d = sub.next().await.unwrap();
        assert_eq!(d.event.key, format!("k{n}"));
        assert_eq!(d.event.factory_id.as_ref(), Some(&factory));
        assert_eq!(d.event.payload["n"], n);
    }
}

fn scope(factory: &str, principal: &str, key: &str) -> KeyScope {
    KeyScope { factory: Some(FactoryId::parse(factory).unwrap()), principal: principal.into(), key: key.into() }
}

async fn idempotency_keys_replay_conflict_and_expire(db: TestDatabase) {
    let store = IdempotencyStore::new(open(&db).await);
    let a = scope("plant-a", "user:1", "k1");
    let response =
        StoredResponse { status: 201, content_type: Some("application/json".into()), body: "{\"id\":1}".into() };
    assert_eq!(store.claim(&a, "h1", 1_000, 30_000).await.unwrap(), Claim::Claimed);
    // While it runs: the same request waits, a different one is refused.
    assert_eq!(store.claim(&a, "h1", 2_000, 30_000).await.unwrap(), Claim::InProgress);
    assert_eq!(store.claim(&a, "h2", 2_000, 30_000).await.unwrap(), Claim::Mismatch);
    // The same key of another principal or another factory is another key.
    assert_eq!(store.claim(&scope("plant-a", "user:2", "k1"), "h1", 2_000, 30_000).await.unwrap(), Claim::Claimed);
    assert_eq!(store.claim(&scope("plant-b", "user:1", "k1"), "h1", 2_000, 30_000).await.unwrap(), Claim::Claimed);

    store.complete(&a, &response, 3_000).await.unwrap();
    assert_eq!(store.claim(&a, "h1", 4_000, 30_000).await.unwrap(), Claim::Replay(response.clone()));
    assert_eq!(store.claim(&a, "h2", 4_000, 30_000).await.unwrap(), Claim::Mismatch);
    // 24 h after the response it is gone: the key is new again.
    let expired = 3_000 + idempotency::RETENTION_MS;
    assert_eq!(store.claim(&a, "h2", expired, 30_000).await.unwrap(), Claim::Claimed);

    // A released key runs again; an abandoned claim (its process died) is taken over after its lock.
    let b = scope("plant-a", "user:1", "k2");
    assert_eq!(store.claim(&b, "h1", 1_000, 30_000).await.unwrap(), Claim::Claimed);
    store.release(&b).await.unwrap();
    assert_eq!(store.claim(&b, "h1", 1_000, 30_000).await.unwrap(), Claim::Claimed);
    assert_eq!(store.claim(&b, "h1", 30_999, 30_000).await.unwrap(), Claim::InProgress);
    assert_eq!(store.claim(&b, "h1", 31_000, 30_000).await.unwrap(), Claim::Claimed);

    // Cleanup removes expired rows only.
    let purged = store.purge_expired(expired + 1).await.unwrap();
    assert_eq!(purged, 2, "the other principal's and the other factory's claims expired; k1 and k2 are newer");
    assert_eq!(store.claim(&a, "h2", expired + 1, 30_000).await.unwrap(), Claim::InProgress);
}

/// Read-then-write transactions from two processes (two `Database`s, each with its own
/// write turn) on the same database: every one commits and no increment is lost. On SQLite
/// a deferred `BEGIN` fails here with SQLITE_BUSY when the other process commits between
/// the read and the write; `begin_write` takes the lock up front (`BEGIN IMMEDIATE`). On
/// MySQL the read locks its row (`Dialect::lock_rows`).
async fn read_then_write_transactions_never_fail_or_lose_updates(db: TestDatabase) {
    let first = open(&db).await;
    let second = Database::connect(&db.url).await.unwrap();
    sqlx::query("CREATE TABLE counter (id INTEGER PRIMARY KEY NOT NULL, n INTEGER NOT NULL)")
        .execute(first.pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO counter (id, n) VALUES (1, 0)").execute(first.pool()).await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..12 {
        let database = if task % 2 == 0 { first.clone() } else { second.clone() };
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let mut tx = database.begin_write().await?;
                let sql = format!("SELECT n FROM counter WHERE id = 1{}", database.dialect().lock_rows());
                let n: i64 = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *tx).await?.try_get(0)?;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                sqlx::query("UPDATE counter SET n = ? WHERE id = 1").bind(n + 1).execute(&mut *tx).await?;
                tx.commit().await?;
            }
            Ok::<_, factoryops_db::DbError>(())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let n: i64 = sqlx::query("SELECT n FROM counter WHERE id = 1").fetch_one(first.pool()).await.unwrap().get(0);
    assert_eq!(n, 60);
}

backend_matrix!(
    idempotency_keys_replay_conflict_and_expire,
    read_then_write_transactions_never_fail_or_lose_updates,
    migrations_are_idempotent_and_sqlite_uses_wal,
    jobs_lease_retry_and_fail,
    cancel_queued_at_once_and_running_on_request,
    a_dead_workers_job_is_retried_or_failed_never_stuck,
    expired_lease_is_reclaimed_after_restart,
    idempotency_key_returns_the_same_job,
    concurrent_workers_never_share_a_job,
    outbox_relays_in_order_once,
);
