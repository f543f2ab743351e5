//! The InfluxDB adapter: [`TelemetryStore`] over the InfluxDB v1 HTTP API (`/write` line
//! protocol, `/query` InfluxQL), so it works with InfluxDB 1.x and the v1-compatibility
//! endpoints of 2.x/3.x. See the crate README for the data shape, the boolean scheme, the
//! on-disk buffer and the guarantees.

mod buffer;
#[doc(hidden)]
pub mod protocol;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use factoryops_types::{DeviceId, FactoryId, PropertyName};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use buffer::{Buffered, Spool};
use protocol::{MAX_TS_MS, MIN_TS_MS};

use crate::{
    BulkBatch, BulkQuery, BulkStream, Point, Sample, SeriesQuery, StoreHealth, TelemetryStore, TsdbError, Value,
    WindowPlanner,
};
use futures::StreamExt as _;
use std::collections::HashMap;

/// Configuration of [`InfluxStore`]. Build with [`InfluxConfig::new`] and adjust fields.
#[derive(Clone)]
pub struct InfluxConfig {
    /// `http://[user:password@]host:port[/prefix]/?db=NAME[&token=T][&u=USER&p=PASSWORD][&rp=POLICY]`.
    /// `db` defaults to `factoryops`. A token is sent as `Authorization: Token T` (2.x/3.x);
    /// user/password (from the URL's user info or `u`/`p`) as basic auth.
    pub url: String,
    /// Directory of the on-disk buffer (created; locked while open).
    pub buffer_dir: PathBuf,
    /// Whole-request timeout of one HTTP call.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long a `write` retries a failing InfluxDB (connection error, 5xx, 429) with
    /// exponential backoff and jitter before it puts the batch into the on-disk buffer.
    pub retry_window: Duration,
    /// Largest backoff between attempts of the background replay.
    pub max_backoff: Duration,
    /// Lines per `/write` request; a larger `write` is split (in order).
    pub batch_points: usize,
    /// Bound of the on-disk buffer; when full, `write` waits (never drops).
    pub buffer_max_bytes: u64,
    /// Size at which a buffer file is closed and a new one started.
    pub buffer_file_bytes: u64,
    /// Rows per `/query` page for raw reads.
    pub query_page: usize,
    /// gzip level of write bodies (0–9).
    pub gzip_level: u32,
}

impl InfluxConfig {
    pub fn new(url: impl Into<String>, buffer_dir: impl Into<PathBuf>) -> Self {
        InfluxConfig {
            url: url.into(),
            buffer_dir: buffer_dir.into(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            retry_window: Duration::from_secs(2),
            max_backoff: Duration::from_secs(2),
            batch_points: 5000,
            buffer_max_bytes: 1 << 30,
            buffer_file_bytes: 8 << 20,
            query_page: 10_000,
            gzip_level: 1,
        }
    }
}

impl std::fmt::Debug for InfluxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxConfig")
            .field("url", &redact(&self.url))
            .field("buffer_dir", &self.buffer_dir)
            .field("request_timeout", &self.request_timeout)
            .field("retry_window", &self.retry_window)
            .field("batch_points", &self.batch_points)
            .field("buffer_max_bytes", &self.buffer_max_bytes)
            .finish_non_exhaustive()
    }
}

/// The URL without credentials, for logs and health details.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<invalid url>".into(),
    }
}

#[derive(Clone)]
enum Auth {
    None,
    Token(String),
    Basic(String, String),
}

#[derive(Clone)]
struct Endpoint {
    write_url: url::Url,
    query_url: url::Url,
    shown: String,
    db: String,
    rp: Option<String>,
    auth: Auth,
}

fn parse_endpoint(raw: &str) -> Result<Endpoint, TsdbError> {
    let bad = |why: &str| TsdbError::Unavailable(format!("invalid influxdb url {}: {why}", redact(raw)));
    let mut u = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(bad("expected http(s)://host:port/?db=…"));
    }
    let (mut db, mut rp, mut token, mut user, mut pass) = (None, None, None, None, None);
    for (k, v) in u.query_pairs() {
        match &*k {
            "db" => db = Some(v.into_owned()),
            "rp" => rp = Some(v.into_owned()),
            "token" => token = Some(v.into_owned()),
            "u" => user = Some(v.into_owned()),
            "p" => pass = Some(v.into_owned()),
            _ => return Err(bad(&format!("unknown parameter {k:?}"))),
        }
    }
    if !u.username().is_empty() {
        user = Some(percent_decode(u.username()));
        pass = u.password().map(percent_decode).or(pass);
    }
    let auth = match (token, user) {
        (Some(t), _) => Auth::Token(t),
        (None, Some(u)) => Auth::Basic(u, pass.unwrap_or_default()),
        (None, None) => Auth::None,
    };
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    let write_url = u.join("write").map_err(|e| bad(&e.to_string()))?;
    let query_url = u.join("query").map_err(|e| bad(&e.to_string()))?;
    let db = db.filter(|d| !d.is_empty()).unwrap_or_else(|| "factoryops".into());
    Ok(Endpoint { write_url, query_url, shown: u.to_string(), db, rp, auth })
}

/// Decodes `%XX` escapes (URL user info); anything malformed is kept as is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (b.get(i + 1).and_then(|&c| hex(c)), b.get(i + 2).and_then(|&c| hex(c)))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why an HTTP call failed.
#[derive(Debug)]
enum SendError {
    /// Connection error, timeout, 5xx, 429: try again later.
    Retryable(String),
    /// Any other 4xx but 401/403 (credentials, retried until fixed): the request itself is
    /// wrong; retrying cannot help.
    Rejected(String),
}

/// 401 (no or wrong credentials) and 403 (a user without the privilege).
fn is_auth_failure(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 401 | 403)
}

fn auth_reason(reason: &str) -> String {
    format!("{reason} (check the token or user and password in tsdb_url)")
}

#[derive(Debug, Default)]
struct Outage {
    since_ms: Option<i64>,
    last_error: String,
}

struct Shared {
    http: reqwest::Client,
    ep: Endpoint,
    cfg: InfluxConfig,
    spool: Arc<Mutex<Spool>>,
    /// New data in the buffer (wakes the replayer).
    buffered: Notify,
    /// Space freed in the buffer (wakes writers waiting on a full buffer).
    space: Notify,
    outage: Mutex<Outage>,
    health_tx: watch::Sender<StoreHealth>,
    jitter: Mutex<u64>,
    /// The retention policy's duration less one shard group, read at open (`None`: infinite
    /// or unknown); see [`TelemetryStore::backfill_horizon`].
    horizon: Mutex<Option<Duration>>,
}

/// [`TelemetryStore`] over InfluxDB's v1 HTTP API with an on-disk buffer for outages.
///
/// ```ignore
/// let store = InfluxStore::open(InfluxConfig::new("http://host:8086/?db=factoryops&token=T", "/var/lib/factoryops/influx-buffer")).await?;
/// let mut health = store.health_watch(); // changes when the store turns ready / not ready
/// ```
pub struct InfluxStore {
    shared: Arc<Shared>,
    replayer: tokio::task::JoinHandle<()>,
}

impl Drop for InfluxStore {
    fn drop(&mut self) {
        self.replayer.abort();
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn blocking_err(e: tokio::task::JoinError) -> TsdbError {
    TsdbError::Unavailable(format!("influxdb buffer task failed: {e}"))
}

impl InfluxStore {
    /// Parses the URL, opens (and repairs) the on-disk buffer, creates the database if
    /// missing (a refusal, e.g. for lack of permission, or an unreachable server is only
    /// logged) and starts the background replay of buffered batches. Needs a tokio runtime.
    pub async fn open(config: InfluxConfig) -> Result<Self, TsdbError> {
        let ep = parse_endpoint(&config.url)?;
        let http = factoryops_platform::http::client_builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| TsdbError::Unavailable(format!("http client: {e}")))?;
        let dir = config.buffer_dir.clone();
        let file_limit = config.buffer_file_bytes.max(1);
        let (spool, report) =
            tokio::task::spawn_blocking(move || Spool::open(&dir, file_limit)).await.map_err(blocking_err)??;
        if report.points > 0 {
            tracing::warn!(
                points = report.points,
                files = report.files,
                "influxdb buffer holds points from an earlier run; replaying"
            );
        }
        let outage = Outage {
            since_ms: (!spool.is_empty()).then(now_ms),
            last_error: if spool.is_empty() { String::new() } else { "buffered by an earlier run".into() },
        };
        let (health_tx, _) = watch::channel(StoreHealth { ready: true, detail: "ok".into() });
        let seed = now_ms() as u64 | 1;
        let shared = Arc::new(Shared {
            http,
            ep,
            cfg: config,
            spool: Arc::new(Mutex::new(spool)),
            buffered: Notify::new(),
            space: Notify::new(),
            outage: Mutex::new(outage),
            health_tx,
            jitter: Mutex::new(seed),
            horizon: Mutex::new(None),
        });
        shared.publish_health();
        if let Err(e) = shared.create_database().await {
            tracing::warn!(error = %e, db = %shared.ep.db, "could not create the influxdb database (continuing)");
        }
        match shared.retention_horizon().await {
            Ok(horizon) => *shared.horizon.lock() = horizon,
            Err(e) => tracing::warn!(
                error = %e,
                db = %shared.ep.db,
                "could not read the influxdb retention policy; old points are not refused at ingestion (set ingest.max_backfill_secs)"
            ),
        }
        let replayer = tokio::spawn(replay_loop(Arc::clone(&shared)));
        Ok(InfluxStore { shared, replayer })
    }

    /// A receiver of the store's health; it changes when the store turns not-ready
    /// (InfluxDB unreachable, batches buffered on disk) and ready again (buffer replayed).
    pub fn health_watch(&self) -> watch::Receiver<StoreHealth> {
        self.shared.health_tx.subscribe()
    }

    /// Points in the on-disk buffer, not yet accepted by InfluxDB.
    pub fn buffered_points(&self) -> u64 {
        self.shared.spool.lock().points()
    }

    /// Waits until the on-disk buffer is empty; `false` on timeout.
    pub async fn wait_drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.shared.spool.lock().is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The base URL (without credentials) and database, for logs.
    pub fn describe(&self) -> String {
        format!("{} db={}", self.shared.ep.shown, self.shared.ep.db)
    }
}

impl Shared {
    fn jitter(&self, d: Duration) -> Duration {
        // xorshift64*; full jitter in [d/2, d].
        let mut s = self.jitter.lock();
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        let frac = r as f64 / (1u64 << 53) as f64;
        d.mul_f64(0.5 + 0.5 * frac)
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.ep.auth {
            Auth::None => req,
            Auth::Token(t) => req.header(reqwest::header::AUTHORIZATION, format!("Token {t}")),
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
        }
    }

    async fn post_write(&self, body: Vec<u8>) -> Result<(), SendError> {
        let mut url = self.ep.write_url.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("db", &self.ep.db).append_pair("precision", "ms");
            if let Some(rp) = &self.ep.rp {
                q.append_pair("rp", rp);
            }
        }
        let req = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_ENCODING, "gzip")
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body);
        let resp =
            self.auth(req).send().await.map_err(|e| SendError::Retryable(format!("influxdb unreachable: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        let reason = format!("influxdb answered {status}: {}", text.trim());
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            return Err(SendError::Retryable(reason));
        }
        if is_auth_failure(status) {
            // The data is fine, the credentials are not: keep it (buffer, not ready with
            // the reason) until the operator fixes tsdb_url or InfluxDB's users.
            return Err(SendError::Retryable(auth_reason(&reason)));
        }
        if status.as_u16() == 404 && text.contains("database not found") {
            // Created on open unless it was unreachable then; try again and retry the write.
            if let Err(e) = self.create_database().await {
                return Err(SendError::Rejected(format!("{reason} (and creating it failed: {e})")));
            }
            return Err(SendError::Retryable(reason));
        }
        Err(SendError::Rejected(reason))
    }

    async fn post_query(&self, q: &str, db: bool) -> Result<Vec<protocol::StatementResult>, TsdbError> {
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("q", q).append_pair("epoch", "ms");
            if db {
                form.append_pair("db", &self.ep.db);
                if let Some(rp) = &self.ep.rp {
                    form.append_pair("rp", rp);
                }
            }
            form.finish()
        };
        let req = self
            .http
            .post(self.ep.query_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        let resp =
            self.auth(req).send().await.map_err(|e| TsdbError::Unavailable(format!("influxdb unreachable: {e}")))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| TsdbError::Unavailable(format!("influxdb query: {e}")))?;
        if status.is_success() {
            return protocol::parse_response(&body);
        }
        Err(query_status_error(status, &String::from_utf8_lossy(&body)))
    }

    /// A query answered with `chunked=true`: InfluxDB streams one JSON object per chunk
    /// of at most `query_page` rows (a series may span several chunks, in time order),
    /// and each is handed to `each` as it arrives instead of holding the whole body.
    async fn post_query_chunked(
        &self,
        q: &str,
        mut each: impl FnMut(protocol::StatementResult) -> Result<(), TsdbError>,
    ) -> Result<(), TsdbError> {
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("q", q)
                .append_pair("epoch", "ms")
                .append_pair("db", &self.ep.db)
                .append_pair("chunked", "true")
                .append_pair("chunk_size", &self.cfg.query_page.max(1).to_string());
            if let Some(rp) = &self.ep.rp {
                form.append_pair("rp", rp);
            }
            form.finish()
        };
        let req = self
            .http
            .post(self.ep.query_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        let mut resp =
            self.auth(req).send().await.map_err(|e| TsdbError::Unavailable(format!("influxdb unreachable: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(query_status_error(status, &text));
        }
        let mut buf: Vec<u8> = Vec::new();
        let mut handle = |line: &[u8]| -> Result<(), TsdbError> {
            if line.trim_ascii().is_empty() {
                return Ok(());
            }
            protocol::parse_response(line)?.into_iter().try_for_each(&mut each)
        };
        while let Some(chunk) =
            resp.chunk().await.map_err(|e| TsdbError::Unavailable(format!("influxdb query: {e}")))?
        {
            buf.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
                handle(&buf[start..start + nl])?;
                start += nl + 1;
            }
            buf.drain(..start);
        }
        handle(&buf)
    }

    /// InfluxDB drops a written point older than its retention policy's duration
    /// (`partial write: points beyond retention policy`, a 400 that fails the whole batch)
    /// and later deletes whole shard groups. Less one shard group, a point accepted now is
    /// kept for a while after it reaches InfluxDB, also when it waits in the buffer briefly.
    async fn retention_horizon(&self) -> Result<Option<Duration>, TsdbError> {
        let q = format!("SHOW RETENTION POLICIES ON {}", protocol::identifier(&self.ep.db));
        let results = self.post_query(&q, false).await?;
        let Some(series) = results.first().and_then(|r| r.series.first()) else {
            return Ok(None);
        };
        let column = |name: &str| series.columns.iter().position(|c| c == name);
        let (Some(name), Some(duration), Some(shard), Some(default)) =
            (column("name"), column("duration"), column("shardGroupDuration"), column("default"))
        else {
            return Err(TsdbError::Unavailable("unexpected SHOW RETENTION POLICIES answer".into()));
        };
        let policy = series.values.iter().find(|row| match &self.ep.rp {
            Some(rp) => row.get(name).and_then(|v| v.as_str()) == Some(rp.as_str()),
            None => row.get(default).and_then(|v| v.as_bool()) == Some(true),
        });
        let Some(policy) = policy else { return Ok(None) };
        let parse = |i: usize| policy.get(i).and_then(|v| v.as_str()).and_then(protocol::parse_go_duration);
        match (parse(duration), parse(shard)) {
            // `0s` is an infinite retention.
            (Some(keep), _) if keep.is_zero() => Ok(None),
            (Some(keep), shard) => Ok(Some(keep.saturating_sub(shard.unwrap_or_default()))),
            (None, _) => Err(TsdbError::Unavailable("unreadable retention policy duration".into())),
        }
    }

    async fn create_database(&self) -> Result<(), TsdbError> {
        self.post_query(&format!("CREATE DATABASE {}", protocol::identifier(&self.ep.db)), false).await.map(drop)
    }

    fn gzip(&self, lines: &[u8]) -> Result<Vec<u8>, TsdbError> {
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(lines.len() / 4),
            flate2::Compression::new(self.cfg.gzip_level.min(9)),
        );
        enc.write_all(lines)?;
        Ok(enc.finish()?)
    }

    /// Sends with retries for up to `retry_window`.
    async fn send_with_retry(&self, body: Vec<u8>) -> Result<(), SendError> {
        let deadline = Instant::now() + self.cfg.retry_window;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.post_write(body.clone()).await {
                Ok(()) => return Ok(()),
                Err(SendError::Rejected(e)) => return Err(SendError::Rejected(e)),
                Err(SendError::Retryable(e)) => {
                    let wait = self.jitter(backoff);
                    if Instant::now() + wait > deadline {
                        return Err(SendError::Retryable(e));
                    }
                    tracing::debug!(error = %e, "influxdb write failed; retrying");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                }
            }
        }
    }

    /// Appends a batch to the on-disk buffer (fsynced), waiting while the buffer is full.
    async fn buffer(&self, points: u32, lines: Vec<u8>) -> Result<(), TsdbError> {
        let lines = Arc::new(lines);
        loop {
            let spool = Arc::clone(&self.spool);
            let max = self.cfg.buffer_max_bytes;
            let data = Arc::clone(&lines);
            let appended = tokio::task::spawn_blocking(move || {
                let mut s = spool.lock();
                if !s.is_empty() && s.bytes() + data.len() as u64 + 12 > max {
                    return Ok(false);
                }
                s.append(points, &data).map(|()| true)
            })
            .await
            .map_err(blocking_err)??;
            if appended {
                self.buffered.notify_one();
                self.publish_health();
                return Ok(());
            }
            // Full: back-pressure until the replay frees space (re-checked periodically).
            let _ = tokio::time::timeout(Duration::from_millis(200), self.space.notified()).await;
        }
    }

    fn note_failure(&self, error: &str) {
        let mut o = self.outage.lock();
        if o.since_ms.is_none() {
            o.since_ms = Some(now_ms());
            tracing::warn!(error, "influxdb unavailable; buffering writes on disk");
        }
        o.last_error = error.to_string();
    }

    fn health_now(&self) -> StoreHealth {
        let (empty, points) = {
            let s = self.spool.lock();
            (s.is_empty(), s.points())
        };
        let mut o = self.outage.lock();
        if empty {
            if o.since_ms.take().is_some() {
                tracing::info!("influxdb reachable again; buffer replayed");
            }
            return StoreHealth { ready: true, detail: format!("ok ({} db={})", self.ep.shown, self.ep.db) };
        }
        let since = o.since_ms.get_or_insert_with(now_ms);
        StoreHealth {
            ready: false,
            detail: format!(
                "influxdb unreachable since {}, buffering {points} points on disk (last error: {})",
                factoryops_types::format_rfc3339_ms(*since),
                o.last_error
            ),
        }
    }

    /// Publishes a change of readiness to the watch (the detail of an unchanged state is
    /// not re-published; `health()` always computes it fresh).
    fn publish_health(&self) {
        let h = self.health_now();
        self.health_tx.send_if_modified(|cur| {
            if cur.ready != h.ready {
                *cur = h;
                true
            } else {
                false
            }
        });
    }

    async fn peek(&self) -> Result<Option<Buffered>, TsdbError> {
        let spool = Arc::clone(&self.spool);
        tokio::task::spawn_blocking(move || spool.lock().peek()).await.map_err(blocking_err)?
    }
}

/// The error of a `/query` answered with a non-success status.
fn query_status_error(status: reqwest::StatusCode, text: &str) -> TsdbError {
    let reason = format!("influxdb answered {status}: {}", text.trim());
    if is_auth_failure(status) {
        // Not the query's fault: the store is unavailable to us.
        return TsdbError::Unavailable(auth_reason(&reason));
    }
    if status.is_client_error() && status.as_u16() != 429 {
        TsdbError::InvalidQuery(reason)
    } else {
        TsdbError::Unavailable(reason)
    }
}

async fn replay_loop(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let batch = match shared.peek().await {
            Ok(Some(b)) => b,
            Ok(None) => {
                shared.publish_health();
                let _ = tokio::time::timeout(Duration::from_secs(1), shared.buffered.notified()).await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "influxdb buffer unreadable; retrying");
                tokio::time::sleep(shared.cfg.max_backoff).await;
                continue;
            }
        };
        let body = match shared.gzip(&batch.lines) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "gzip failed");
                tokio::time::sleep(shared.cfg.max_backoff).await;
                continue;
            }
        };
        let outcome = shared.post_write(body).await;
        let spool = Arc::clone(&shared.spool);
        let result = match outcome {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                tracing::debug!(points = batch.points, "replayed a buffered batch into influxdb");
                let (seq, off) = (batch.seq, batch.offset);
                tokio::task::spawn_blocking(move || spool.lock().pop(seq, off)).await
            }
            Err(SendError::Rejected(reason)) => {
                tokio::task::spawn_blocking(move || {
                    let kept = spool.lock().reject(&batch)?;
                    tracing::error!(%reason, file = %kept.display(), "influxdb refused a buffered batch; kept aside, not retried");
                    Ok(())
                })
                .await
            }
            Err(SendError::Retryable(e)) => {
                shared.note_failure(&e);
                tokio::time::sleep(shared.jitter(backoff)).await;
                backoff = (backoff * 2).min(shared.cfg.max_backoff);
                continue;
            }
        };
        match result {
            Ok(Ok(())) => {
                shared.space.notify_waiters();
                shared.publish_health();
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "influxdb buffer update failed");
                tokio::time::sleep(shared.cfg.max_backoff).await;
            }
            Err(e) => tracing::error!(error = %e, "influxdb buffer task failed"),
        }
    }
}

fn validate(points: &[Point]) -> Result<(), TsdbError> {
    for (index, p) in points.iter().enumerate() {
        if let Value::Float(v) = p.value
            && !v.is_finite()
        {
            return Err(TsdbError::InvalidPoint { index, reason: format!("value {v} is not a finite number") });
        }
        if !(MIN_TS_MS..=MAX_TS_MS).contains(&p.ts_ms) {
            return Err(TsdbError::InvalidPoint {
                index,
                reason: format!("timestamp {} ms is outside InfluxDB's range (years 1677–2262)", p.ts_ms),
            });
        }
    }
    Ok(())
}

#[async_trait]
impl TelemetryStore for InfluxStore {
    async fn write(&self, factory: &FactoryId, points: &[Point]) -> Result<(), TsdbError> {
        validate(points)?;
        let sh = &self.shared;
        for chunk in points.chunks(sh.cfg.batch_points.max(1)) {
            let mut lines = String::with_capacity(chunk.len() * 96);
            for p in chunk {
                protocol::push_line(
                    &mut lines,
                    factory.as_str(),
                    p.device.as_str(),
                    p.property.as_str(),
                    p.ts_ms,
                    p.value,
                );
            }
            let n = chunk.len() as u32;
            // Behind the buffer while it holds anything, so order is kept.
            if !sh.spool.lock().is_empty() {
                sh.buffer(n, lines.into_bytes()).await?;
                continue;
            }
            let body = sh.gzip(lines.as_bytes())?;
            match sh.send_with_retry(body).await {
                Ok(()) => {}
                Err(SendError::Rejected(reason)) => {
                    return Err(TsdbError::Unavailable(format!("influxdb rejected the batch: {reason}")));
                }
                Err(SendError::Retryable(e)) => {
                    sh.note_failure(&e);
                    sh.buffer(n, lines.into_bytes()).await?;
                }
            }
        }
        Ok(())
    }

    async fn query(&self, factory: &FactoryId, query: &SeriesQuery) -> Result<Vec<Sample>, TsdbError> {
        if let Some((every, _)) = query.aggregation
            && every <= 0
        {
            return Err(TsdbError::InvalidQuery(format!("aggregation interval must be positive, got {every} ms")));
        }
        let limit = query.limit.unwrap_or(usize::MAX);
        if query.from_ms >= query.to_ms || limit == 0 {
            return Ok(Vec::new());
        }
        let w = protocol::series_where(factory.as_str(), query.device.as_str(), query.property.as_str());
        let sh = &self.shared;
        let mut out = Vec::new();
        match query.aggregation {
            Some((every, agg)) => {
                let stmt = protocol::agg_statement(&w, query.from_ms, query.to_ms, every, agg);
                for series in sh.post_query(&stmt, true).await?.into_iter().flat_map(|r| r.series) {
                    for row in &series.values {
                        let ts = protocol::cell_ts(row)?;
                        let Some(v) = protocol::cell_f64(row, 1)? else { continue };
                        out.push(Sample { ts_ms: ts, value: protocol::row_value(v, protocol::cell_bool(row, 2)?) });
                    }
                }
                out.sort_by_key(|s| s.ts_ms);
                out.truncate(limit);
            }
            None => {
                let page = sh.cfg.query_page.max(1);
                let mut from = query.from_ms;
                loop {
                    let want = page.min(limit - out.len());
                    let stmt = protocol::raw_statement(&w, from, query.to_ms, want);
                    let results = sh.post_query(&stmt, true).await?;
                    let partial = results.iter().any(|r| r.partial);
                    let mut got = 0;
                    for series in results.into_iter().flat_map(|r| r.series) {
                        for row in &series.values {
                            let ts = protocol::cell_ts(row)?;
                            let Some(v) = protocol::cell_f64(row, 1)? else { continue };
                            out.push(Sample { ts_ms: ts, value: protocol::row_value(v, protocol::cell_bool(row, 2)?) });
                            got += 1;
                        }
                    }
                    let Some(last) = out.last() else { break };
                    if (got < want && !partial) || got == 0 || out.len() >= limit || last.ts_ms >= query.to_ms - 1 {
                        break;
                    }
                    from = last.ts_ms + 1;
                }
                out.truncate(limit);
            }
        }
        Ok(out)
    }

    async fn latest(&self, factory: &FactoryId, device: &DeviceId) -> Result<Vec<(PropertyName, Sample)>, TsdbError> {
        let stmts = protocol::latest_statements(factory.as_str(), device.as_str());
        let results = self.shared.post_query(&stmts, true).await?;
        let mut floats = std::collections::BTreeMap::new();
        let mut bools = std::collections::BTreeMap::new();
        for (i, r) in results.into_iter().enumerate() {
            for series in r.series {
                let Some(prop) = series.tags.get("property_name") else { continue };
                let Some(row) = series.values.first() else { continue };
                let ts = protocol::cell_ts(row)?;
                if i == 0 {
                    if let Some(v) = protocol::cell_f64(row, 1)? {
                        floats.insert(protocol::decode_tag(prop), (ts, v));
                    }
                } else if let Some(b) = protocol::cell_bool(row, 1)? {
                    bools.insert(protocol::decode_tag(prop), (ts, b));
                }
            }
        }
        let mut out = Vec::with_capacity(floats.len());
        for (prop, (ts, v)) in floats {
            // Names InfluxDB holds but the platform would not accept are skipped.
            let Ok(name) = PropertyName::parse(prop.as_str()) else { continue };
            let b = bools.get(&prop).filter(|(bts, _)| *bts == ts).map(|&(_, b)| b);
            out.push((name, Sample { ts_ms: ts, value: protocol::row_value(v, b) }));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// One InfluxQL statement per window for all series (grouped by device and property),
    /// read with a chunked response.
    fn bulk_read<'a>(&'a self, factory: &FactoryId, query: BulkQuery) -> BulkStream<'a> {
        let planner = match WindowPlanner::new(&query) {
            Ok(p) => p,
            Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
        };
        let mut slots: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, (d, p)) in query.series.iter().enumerate() {
            slots.entry((d.as_str().to_owned(), p.as_str().to_owned())).or_default().push(i);
        }
        let where_series = (!query.series.is_empty()).then(|| {
            let mut devices: Vec<&str> = query.series.iter().map(|(d, _)| d.as_str()).collect();
            let mut properties: Vec<&str> = query.series.iter().map(|(_, p)| p.as_str()).collect();
            devices.sort_unstable();
            devices.dedup();
            properties.sort_unstable();
            properties.dedup();
            protocol::bulk_where(factory.as_str(), &devices, &properties)
        });
        let ctx = Arc::new((slots, where_series, query.series.len(), query.aggregation));
        futures::stream::try_unfold(planner, move |mut planner| {
            let ctx = Arc::clone(&ctx);
            async move {
                let (slots, where_series, n, aggregation) = &*ctx;
                let Some((from_ms, to_ms)) = planner.next_window() else { return Ok::<_, TsdbError>(None) };
                let mut series: Vec<Vec<Sample>> = vec![Vec::new(); *n];
                if let Some(w) = where_series {
                    let stmt = protocol::bulk_statement(w, from_ms, to_ms.min(MAX_TS_MS), *aggregation);
                    self.shared
                        .post_query_chunked(&stmt, |result| {
                            for s in result.series {
                                let (Some(d), Some(p)) = (s.tags.get("device_id"), s.tags.get("property_name")) else {
                                    continue;
                                };
                                let Some(at) = slots.get(&(protocol::decode_tag(d), protocol::decode_tag(p))) else {
                                    continue;
                                };
                                for row in &s.values {
                                    let ts = protocol::cell_ts(row)?;
                                    let Some(v) = protocol::cell_f64(row, 1)? else { continue };
                                    let sample = Sample {
                                        ts_ms: ts,
                                        value: protocol::row_value(v, protocol::cell_bool(row, 2)?),
                                    };
                                    for &i in at {
                                        series[i].push(sample);
                                    }
                                }
                            }
                            Ok(())
                        })
                        .await?;
                    for s in &mut series {
                        // Chunks of a series arrive in time order; this only guards the contract.
                        if !s.is_sorted_by_key(|x| x.ts_ms) {
                            s.sort_by_key(|x| x.ts_ms);
                        }
                    }
                }
                let batch = BulkBatch { from_ms, to_ms, series };
                planner.observe(batch.values());
                Ok(Some((batch, planner)))
            }
        })
        .boxed()
    }

    async fn health(&self) -> StoreHealth {
        self.shared.publish_health();
        self.shared.health_now()
    }

    /// The same for every factory: they share one database and retention policy.
    fn backfill_horizon(&self, _factory: &FactoryId) -> Option<Duration> {
        *self.shared.horizon.lock()
    }

    /// Nothing to do: every acknowledged batch is already in InfluxDB or fsynced in the
    /// buffer (replayed by the next store opened on the same directory). Use
    /// [`InfluxStore::wait_drained`] to wait for the replay.
    async fn flush(&self) -> Result<(), TsdbError> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = parse_endpoint("http://h:8086/?db=x&token=abc").unwrap();
        assert_eq!(e.write_url.as_str(), "http://h:8086/write");
        assert_eq!(e.db, "x");
        assert!(matches!(e.auth, Auth::Token(ref t) if t == "abc"));
        let e = parse_endpoint("http://us%40er:p%3Ass%2Bw+d@h:8086/influx?db=x").unwrap();
        assert_eq!(e.query_url.as_str(), "http://h:8086/influx/query");
        assert!(matches!(e.auth, Auth::Basic(ref u, ref p) if u == "us@er" && p == "p:ss+w+d"), "{}", e.shown);
        assert!(parse_endpoint("https://h/?db=x").is_ok(), "https via rustls");
        let e = parse_endpoint("http://h/?u=a&p=b&rp=raw").unwrap();
        assert!(matches!(e.auth, Auth::Basic(ref u, ref p) if u == "a" && p == "b"));
        assert_eq!((e.db.as_str(), e.rp.as_deref()), ("factoryops", Some("raw")));
        assert!(parse_endpoint("ftp://h/").is_err());
        assert!(parse_endpoint("http://h/?bogus=1").is_err());
        assert!(!redact("http://u:secret@h:8086/?token=t").contains("secret"));
        assert!(!format!("{:?}", InfluxConfig::new("http://h/?token=topsecret", "/tmp")).contains("topsecret"));
    }
}
