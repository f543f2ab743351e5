//! Stored responses of requests sent with an `Idempotency-Key` (ADR 0012).
//!
//! A key belongs to one principal of one factory: the row id is a hash of (factory,
//! principal, key), so a lookup can never reach another principal's response. A request
//! first claims its key (`pending`, with a lock that expires so a crashed process does not
//! hold it forever), runs, and then either stores its response (`done`, replayed for 24 h)
//! or releases the key so that a retry runs again.

use std::sync::Arc;
use std::time::Duration;

use factoryops_platform::shutdown::Shutdown;
use factoryops_types::{Clock, FactoryId};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Row};

use crate::{Database, DbError};

/// How long a stored response is replayed.
pub const RETENTION_MS: i64 = 24 * 3_600_000;

/// Who a key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyScope {
    /// `None` for the platform root.
    pub factory: Option<FactoryId>,
    /// The principal, e.g. `user:<id>` or `api_key:<id>`.
    pub principal: String,
    /// The client's `Idempotency-Key`.
    pub key: String,
}

impl KeyScope {
    /// The row id: the key can only be found again by the same factory and principal.
    fn id(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.factory.as_ref().map(FactoryId::as_str).unwrap_or_default().as_bytes());
        hash.update([0]);
        hash.update(self.principal.as_bytes());
        hash.update([0]);
        hash.update(self.key.as_bytes());
        format!("{:x}", hash.finalize())
    }
}

/// A response as stored and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's now: run it, then [`IdempotencyStore::complete`] or
    /// [`IdempotencyStore::release`].
    Claimed,
    /// The same request already ran: answer this.
    Replay(StoredResponse),
    /// The same request is still running elsewhere.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

#[derive(Clone, Debug)]
pub struct IdempotencyStore {
    db: Database,
}

impl IdempotencyStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Claims `scope`'s key for the request whose hash is `request_hash`. A pending claim
    /// older than `lock_ms` (its process died) and an expired response are taken over.
    pub async fn claim(
        &self,
        scope: &KeyScope,
        request_hash: &str,
        now_ms: i64,
        lock_ms: i64,
    ) -> Result<Claim, DbError> {
        let id = scope.id();
        // A row that vanished (released, purged) between the insert and the read is simply
        // inserted again; a few rounds are plenty.
        for _ in 0..3 {
            let inserted = {
                let _turn = self.db.write_turn().await;
                sqlx::query(
                    "INSERT INTO idempotency_keys (id, factory_id, principal, request_hash, state, locked_until, created_at, expires_at) \
                     VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)",
                )
                .bind(&id)
                .bind(scope.factory.as_ref().map(|f| f.as_str().to_string()))
                .bind(&scope.principal)
                .bind(request_hash)
                .bind(now_ms + lock_ms)
                .bind(now_ms)
                .bind(now_ms + RETENTION_MS)
                .execute(self.db.pool())
                .await
                .map_err(DbError::from)
            };
            match inserted {
                Ok(_) => return Ok(Claim::Claimed),
                Err(e) if e.is_unique_violation() => {}
                Err(e) => return Err(e),
            }
            let row = sqlx::query(
                "SELECT request_hash, state, locked_until, expires_at, response_status, response_content_type, response_body \
                 FROM idempotency_keys WHERE id = ?",
            )
            .bind(&id)
            .fetch_optional(self.db.pool())
            .await?;
            let Some(row) = row else { continue };
            let state: String = row.try_get("state")?;
            let locked_until: i64 = row.try_get("locked_until")?;
            let expires_at: i64 = row.try_get("expires_at")?;
            if expires_at <= now_ms || (state == "pending" && locked_until <= now_ms) {
                if self.take_over(&id, request_hash, now_ms, lock_ms).await? {
                    return Ok(Claim::Claimed);
                }
                continue;
            }
            let stored_hash: String = row.try_get("request_hash")?;
            if stored_hash != request_hash {
                return Ok(Claim::Mismatch);
            }
            if state != "done" {
                return Ok(Claim::InProgress);
            }
            let status: Option<i64> = row.try_get("response_status")?;
            let body: Option<String> = row.try_get("response_body")?;
            let (Some(status), Some(body)) = (status, body) else {
                return Err(DbError::Malformed(format!("idempotency key {id}: done without a response")));
            };
            let status =
                u16::try_from(status).map_err(|_| DbError::Malformed(format!("idempotency status {status}")))?;
            return Ok(Claim::Replay(StoredResponse {
                status,
                content_type: row.try_get("response_content_type")?,
                body,
            }));
        }
        // Only a key that is claimed and released again and again in between gets here.
        Ok(Claim::InProgress)
    }

    /// Takes over an expired row or an abandoned claim; `false` when someone else did first.
    async fn take_over(&self, id: &str, request_hash: &str, now_ms: i64, lock_ms: i64) -> Result<bool, DbError> {
        let _turn = self.db.write_turn().await;
        let done = sqlx::query(
            "UPDATE idempotency_keys SET request_hash = ?, state = 'pending', locked_until = ?, response_status = NULL, \
             response_content_type = NULL, response_body = NULL, created_at = ?, expires_at = ? \
             WHERE id = ? AND (expires_at <= ? OR (state = 'pending' AND locked_until <= ?))",
        )
        .bind(request_hash)
        .bind(now_ms + lock_ms)
        .bind(now_ms)
        .bind(now_ms + RETENTION_MS)
        .bind(id)
        .bind(now_ms)
        .bind(now_ms)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores the response of a claimed key; it is replayed until 24 h after `now_ms`.
    pub async fn complete(&self, scope: &KeyScope, response: &StoredResponse, now_ms: i64) -> Result<(), DbError> {
        let _turn = self.db.write_turn().await;
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'done', response_status = ?, response_content_type = ?, response_body = ?, \
             expires_at = ? WHERE id = ? AND state = 'pending'",
        )
        .bind(i64::from(response.status))
        .bind(response.content_type.clone())
        .bind(&response.body)
        .bind(now_ms + RETENTION_MS)
        .bind(scope.id())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Gives a claimed key up (the request failed or was not worth storing): a retry runs again.
    pub async fn release(&self, scope: &KeyScope) -> Result<(), DbError> {
        let _turn = self.db.write_turn().await;
        sqlx::query("DELETE FROM idempotency_keys WHERE id = ? AND state = 'pending'")
            .bind(scope.id())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Deletes expired rows, at most 1,000 per statement so SQLite's writer is never held
    /// long; returns how many went.
    pub async fn purge_expired(&self, now_ms: i64) -> Result<u64, DbError> {
        let mut purged = 0;
        loop {
            let rows = sqlx::query("SELECT id FROM idempotency_keys WHERE expires_at <= ? LIMIT 1000")
                .bind(now_ms)
                .fetch_all(self.db.pool())
                .await?;
            if rows.is_empty() {
                return Ok(purged);
            }
            let ids = rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<Vec<_>, _>>()?;
            let sql = format!(
                "DELETE FROM idempotency_keys WHERE expires_at <= ? AND id IN ({})",
                vec!["?"; ids.len()].join(", ")
            );
            // Only placeholders are interpolated; values are bound.
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(now_ms);
            for id in &ids {
                query = query.bind(id);
            }
            let _turn = self.db.write_turn().await;
            purged += query.execute(self.db.pool()).await?.rows_affected();
            if ids.len() < 1000 {
                return Ok(purged);
            }
        }
    }

    /// Purges expired rows every `every` until shutdown.
    pub async fn run_cleanup(self, clock: Arc<dyn Clock>, every: Duration, shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.triggered() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.purge_expired(clock.now_ms()).await {
                Ok(0) => {}
                Ok(purged) => tracing::debug!(purged, "expired idempotency keys purged"),
                Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed; retrying later"),
            }
        }
    }
}
