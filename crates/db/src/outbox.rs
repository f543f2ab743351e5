//! The transactional outbox: a component writes its state change and the event that
//! announces it in one transaction; the relay publishes pending events to the bus in
//! order and marks them. A crash between the two only delays an event, never loses it;
//! consumers de-duplicate by the event key.

use std::sync::Arc;
use std::time::Duration;

use factoryops_platform::bus::{Event, EventBus};
use factoryops_platform::shutdown::Shutdown;
use factoryops_types::{Clock, FactoryId};
use prometheus_client::metrics::histogram::Histogram;
use sqlx::{AssertSqlSafe, Row};

use crate::{Database, DbError, WriteTx};

/// Appends an event inside the caller's write transaction. A repeated `key` is ignored,
/// which makes re-running the same state change idempotent.
pub async fn append(
    db: &Database,
    tx: &mut WriteTx,
    factory: Option<&FactoryId>,
    topic: &str,
    key: &str,
    payload: &serde_json::Value,
    now_ms: i64,
) -> Result<(), DbError> {
    let sql = format!(
        "{} INTO outbox (factory_id, topic, event_key, payload, created_at) VALUES (?, ?, ?, ?, ?)",
        db.dialect().insert_ignore()
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(factory.map(|f| f.as_str().to_string()))
        .bind(topic)
        .bind(key)
        .bind(payload.to_string())
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Publishes up to `limit` pending events in order; returns how many were published.
pub async fn relay_once(db: &Database, bus: &dyn EventBus, limit: i64, now_ms: i64) -> Result<usize, DbError> {
    relay_observed(db, bus, limit, now_ms, None).await
}

/// [`relay_once`], recording each event's time from its commit to its publication.
async fn relay_observed(
    db: &Database,
    bus: &dyn EventBus,
    limit: i64,
    now_ms: i64,
    delay: Option<&Histogram>,
) -> Result<usize, DbError> {
    let rows = sqlx::query(
        "SELECT seq, factory_id, topic, event_key, payload, created_at FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT ?",
    )
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let mut published_seqs = Vec::new();
    for row in rows {
        let seq: i64 = row.try_get("seq")?;
        let factory: Option<String> = row.try_get("factory_id")?;
        let payload: String = row.try_get("payload")?;
        let event = Event {
            topic: row.try_get("topic")?,
            factory_id: factory
                .map(FactoryId::parse)
                .transpose()
                .map_err(|e| DbError::Malformed(format!("outbox factory_id: {e}")))?,
            key: row.try_get("event_key")?,
            at_ms: row.try_get("created_at")?,
            payload: serde_json::from_str(&payload).map_err(|e| DbError::Malformed(format!("outbox payload: {e}")))?,
        };
        let created_at = event.at_ms;
        if let Err(e) = bus.publish(event).await {
            tracing::warn!(error = %e, "outbox relay: bus unavailable, will retry");
            break;
        }
        published_seqs.push(seq);
        if let Some(delay) = delay {
            delay.observe((now_ms - created_at).max(0) as f64 / 1000.0);
        }
    }
    // One UPDATE for the whole run: an UPDATE per row took SQLite's single write lock once
    // per event, competing with alert commits. The ids are listed, not a `seq <=` range:
    // on MySQL a lower seq may commit after a higher one was read.
    if !published_seqs.is_empty() {
        let sql =
            format!("UPDATE outbox SET published_at = ? WHERE seq IN ({})", vec!["?"; published_seqs.len()].join(", "));
        // Only placeholders are interpolated; values are bound.
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(now_ms);
        for seq in &published_seqs {
            query = query.bind(*seq);
        }
        let _turn = db.write_turn().await;
        query.execute(db.pool()).await?;
    }
    Ok(published_seqs.len())
}

/// Runs the relay until shutdown; `wake` lets writers nudge it instead of waiting for the poll.
pub async fn run_relay(
    db: Database,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    wake: Arc<tokio::sync::Notify>,
    shutdown: Shutdown,
    delay: Histogram,
) {
    loop {
        match relay_observed(&db, bus.as_ref(), 500, clock.now_ms(), Some(&delay)).await {
            Ok(500) => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox relay failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.triggered() => {
                // One last pass so events committed before shutdown are not delayed to the next start.
                let _ = relay_once(&db, bus.as_ref(), 10_000, clock.now_ms()).await;
                return;
            }
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
