//! The built-in MQTT endpoint.
//!
//! Per connection: a reader decodes packets in order and submits each PUBLISH to the
//! [`Ingestor`]; an outbound task awaits each submission in the same order and only then
//! writes its PUBACK. At most `receive_maximum` messages are between the two; when that
//! many are pending the reader stops reading the socket, so TCP pushes back on the device.
//! Nothing is dropped.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use factoryops_types::{Clock, DeviceId, FactoryId};
use parking_lot::Mutex;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::codec::{self, CodecError, ConnAckProperties, Connect, Packet, Protocol, Publish, connack_v3, reason};
use super::limits::{ConnectLimiter, ConnectLimits};
use crate::devices::{DeviceRegistry, Verification};
use crate::metrics::IngestMetrics;
use crate::pipeline::{IngestOutcome, Ingestor, SchemaMemo, Submitted};
use factoryops_platform::logline::{LogLimiter, clip};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MqttConfig {
    /// `ip:port`; port 0 picks a free port (see [`MqttServer::local_addr`]).
    pub addr: String,
    /// A second listener speaking MQTT over TLS; off when `None`.
    pub tls: Option<MqttTlsConfig>,
    /// Largest accepted packet, fixed header included.
    pub max_packet_bytes: usize,
    /// Unacknowledged PUBLISHes per connection before the socket is no longer read.
    pub receive_maximum: u16,
    /// Unacknowledged PUBLISHes over all connections before sockets are no longer read:
    /// bounds the endpoint's memory whatever the number of connections (10k devices ×
    /// `receive_maximum` would otherwise be 640k parsed messages in memory).
    pub max_inflight_total: usize,
    /// Time allowed between accepting a socket and its CONNECT (TLS handshake included).
    pub connect_timeout_ms: u64,
    /// Upper bound on an MQTT 5 client's keep-alive (announced as Server Keep Alive).
    pub max_keep_alive_secs: u16,
    /// Upper bound on an MQTT 5 session expiry interval.
    pub max_session_expiry_secs: u32,
    /// How long a 3.1.1 persistent session (clean session = 0) is kept after its
    /// connection ends; 3.1.1 has no expiry of its own. Capped by `max_session_expiry_secs`.
    pub v311_session_expiry_secs: u32,
    /// Sessions kept for disconnected clients; beyond it those expiring soonest are evicted.
    pub max_offline_sessions: usize,
    /// How often expired sessions are removed.
    pub session_sweep_secs: u64,
    /// CONNECT rate limits per source IP and for the whole endpoint.
    pub connect_limits: ConnectLimits,
    /// Open sockets (before and after CONNECT) beyond which new ones are closed at once,
    /// so a flood of sockets cannot take the descriptors the rest of the process needs.
    pub max_connections: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttTlsConfig {
    /// `ip:port` of the TLS listener (conventionally 8883); port 0 picks a free port.
    pub addr: String,
    /// PEM certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            addr: "0.0.0.0:1883".into(),
            tls: None,
            max_packet_bytes: 256 * 1024,
            receive_maximum: 64,
            max_inflight_total: 16_384,
            connect_timeout_ms: 10_000,
            max_keep_alive_secs: 3_600,
            max_session_expiry_secs: 7 * 24 * 3600,
            v311_session_expiry_secs: 24 * 3600,
            max_offline_sessions: 100_000,
            session_sweep_secs: 60,
            connect_limits: ConnectLimits::default(),
            max_connections: 65_536,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("MQTT TLS: {0}")]
    Tls(String),
}

/// The topic a device may publish to.
pub fn telemetry_topic(factory: &FactoryId, device: &DeviceId) -> String {
    format!("factories/{factory}/devices/{device}/telemetry")
}

struct Ctx {
    config: MqttConfig,
    registry: DeviceRegistry,
    ingestor: Ingestor,
    metrics: IngestMetrics,
    clock: Arc<dyn Clock>,
    sessions: Sessions,
    limiter: ConnectLimiter,
    /// The endpoint-wide in-flight window (`max_inflight_total`).
    inflight_total: Arc<Semaphore>,
    shutdown: CancellationToken,
    next_conn: AtomicU64,
    /// Open sockets (`max_connections`).
    connections: Arc<Semaphore>,
    /// Refusals are logged rate-limited, client strings clipped (ADR 0011).
    logs: RefusalLogs,
}

#[derive(Default)]
struct RefusalLogs {
    acl: LogLimiter,
    connect: LogLimiter,
    cap: LogLimiter,
    accept: LogLimiter,
}

/// A running endpoint. Dropping it does not stop it; call [`MqttServer::shutdown`].
pub struct MqttServer {
    local_addr: SocketAddr,
    tls_local_addr: Option<SocketAddr>,
    ctx: Arc<Ctx>,
    tracker: TaskTracker,
    accept: Vec<JoinHandle<()>>,
}

async fn listen(addr: &str) -> Result<(TcpListener, SocketAddr), MqttError> {
    let bind_error = |source| MqttError::Bind { addr: addr.to_string(), source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// A TLS acceptor from PEM files, with the ring provider named explicitly so it works
/// whether or not (and whichever) process-wide rustls provider is installed.
fn tls_acceptor(tls: &MqttTlsConfig) -> Result<TlsAcceptor, MqttError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_path)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| MqttError::Tls(format!("certificate {}: {e}", tls.cert_path.display())))?;
    if certs.is_empty() {
        return Err(MqttError::Tls(format!("no certificate in {}", tls.cert_path.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_path)
        .map_err(|e| MqttError::Tls(format!("private key {}: {e}", tls.key_path.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| MqttError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl MqttServer {
    /// Binds the listener(s) and starts accepting.
    pub async fn bind(
        config: MqttConfig,
        registry: DeviceRegistry,
        ingestor: Ingestor,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, MqttError> {
        let tls = match &config.tls {
            Some(tls) => {
                let acceptor = tls_acceptor(tls)?;
                let (listener, local) = listen(&tls.addr).await?;
                tracing::info!(local_addr = %local, "MQTT over TLS listening");
                Some((listener, local, acceptor))
            }
            None => None,
        };
        let (listener, local_addr) = listen(&config.addr).await?;
        tracing::info!(%local_addr, "MQTT endpoint listening");
        let metrics = ingestor.metrics().clone();
        let limiter = ConnectLimiter::new(config.connect_limits.clone(), clock.now_ms());
        let inflight_total = Arc::new(Semaphore::new(config.max_inflight_total.max(1)));
        let connections = Arc::new(Semaphore::new(config.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
        let ctx = Arc::new(Ctx {
            connections,
            logs: RefusalLogs::default(),
            config,
            registry,
            ingestor,
            metrics,
            clock,
            inflight_total,
            sessions: Sessions::default(),
            limiter,
            shutdown: CancellationToken::new(),
            next_conn: AtomicU64::new(1),
        });
        let tracker = TaskTracker::new();
        let mut accept = vec![
            tokio::spawn(accept_loop(listener, None, ctx.clone(), tracker.clone())),
            tokio::spawn(sweep_loop(ctx.clone())),
        ];
        let mut tls_local_addr = None;
        if let Some((listener, local, acceptor)) = tls {
            tls_local_addr = Some(local);
            accept.push(tokio::spawn(accept_loop(listener, Some(acceptor), ctx.clone(), tracker.clone())));
        }
        Ok(Self { local_addr, tls_local_addr, ctx, tracker, accept })
    }

    /// The plain listener's address (the bound port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TLS listener's address, when TLS is configured.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_local_addr
    }

    /// A cheap handle for other components (the API) to act on live connections.
    pub fn handle(&self) -> MqttHandle {
        MqttHandle { ctx: self.ctx.clone() }
    }

    /// Stops accepting, lets every connection finish and acknowledge the messages it
    /// already read (MQTT 5 clients then get DISCONNECT "server shutting down"), and
    /// returns once all connections are closed. Bound it with a deadline.
    pub async fn shutdown(self) {
        self.ctx.shutdown.cancel();
        for accept in self.accept {
            let _ = accept.await;
        }
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Acts on the endpoint's live connections; clone freely.
#[derive(Clone)]
pub struct MqttHandle {
    ctx: Arc<Ctx>,
}

impl MqttHandle {
    /// Closes every open connection of a device (after it was disabled or its secret
    /// rotated), after the acks already due; MQTT 5 clients get DISCONNECT 0x87. Returns
    /// how many connections were told to close.
    pub fn disconnect_device(&self, factory: &FactoryId, device: &DeviceId) -> usize {
        let table = self.ctx.sessions.map.lock();
        let mut closed = 0;
        for ((f, d, _), entry) in table.entries.iter() {
            if f == factory
                && d == device
                && let Some(live) = &entry.live
            {
                live.stop_reason.store(reason::NOT_AUTHORIZED, Ordering::SeqCst);
                live.stop.cancel();
                closed += 1;
            }
        }
        closed
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, ctx: Arc<Ctx>, tracker: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = ctx.shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(open) = ctx.connections.clone().try_acquire_owned() else {
                    // Over the cap: nothing is read or answered, the socket is closed now.
                    IngestMetrics::reason(&ctx.metrics.mqtt_connects_refused, "max_connections");
                    if let Some(suppressed) = ctx.logs.cap.admit() {
                        tracing::warn!(client_ip = %peer.ip(), cap = ctx.config.max_connections, suppressed, "MQTT connection refused: too many open connections");
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                let tls = tls.clone();
                tracker.spawn(async move {
                    let _open = open;
                    ctx.metrics.mqtt_connections.inc();
                    match tls {
                        None => {
                            let (read, write) = stream.into_split();
                            serve_connection(read, write, peer, &ctx).await;
                        }
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(
                                Duration::from_millis(ctx.config.connect_timeout_ms),
                                acceptor.accept(stream),
                            );
                            match handshake.await {
                                Ok(Ok(stream)) => {
                                    let (read, write) = tokio::io::split(stream);
                                    serve_connection(read, write, peer, &ctx).await;
                                }
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }
                    }
                    ctx.metrics.mqtt_connections.dec();
                });
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                if let Some(suppressed) = ctx.logs.accept.admit() {
                    tracing::warn!(error = %e, suppressed, "MQTT accept failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

// ---- sessions ----

type SessionKey = (FactoryId, DeviceId, String);

/// Session state of this endpoint: it never publishes to clients, so a session is its
/// identity and expiry only; still, the table is bounded (expiry, sweep, capacity).
#[derive(Default)]
struct Sessions {
    map: Mutex<SessionTable>,
    attaches: AtomicU64,
}

#[derive(Default)]
struct SessionTable {
    entries: HashMap<SessionKey, SessionEntry>,
    /// Entries without a live connection (kept until their expiry).
    offline: usize,
}

/// Expired sessions are also swept every this many CONNECTs, so a reconnect storm
/// does not let them pile up between two periodic sweeps.
const SWEEP_EVERY: u64 = 1024;

struct SessionEntry {
    /// The connection currently using the session.
    live: Option<LiveConnection>,
    /// Outlives its connection (session expiry > 0, or a 3.1.1 persistent session).
    persistent: bool,
    /// Kept after the connection ends until this time (ms); `None` = not kept.
    keep_until_ms: Option<i64>,
}

impl SessionEntry {
    fn is_alive(&self, now_ms: i64) -> bool {
        self.live.is_some() || self.keep_until_ms.is_some_and(|t| t > now_ms)
    }
}

struct LiveConnection {
    conn_id: u64,
    stop: CancellationToken,
    stop_reason: Arc<AtomicU8>,
}

impl SessionTable {
    /// Drops expired offline sessions; returns how many.
    fn sweep(&mut self, now_ms: i64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.is_alive(now_ms));
        let removed = before - self.entries.len();
        self.offline -= removed;
        removed
    }

    /// Over capacity: evicts the offline sessions expiring soonest, down to 90 % of it,
    /// so a table at its bound does not scan on every disconnect.
    fn evict_over(&mut self, max_offline: usize) -> usize {
        if self.offline <= max_offline {
            return 0;
        }
        let target = max_offline - max_offline / 10;
        let mut offline: Vec<(i64, SessionKey)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.live.is_none())
            .map(|(k, e)| (e.keep_until_ms.unwrap_or(i64::MIN), k.clone()))
            .collect();
        let excess = offline.len().saturating_sub(target);
        if excess == 0 {
            return 0;
        }
        offline.select_nth_unstable_by_key(excess - 1, |(until, _)| *until);
        for (_, key) in offline.iter().take(excess) {
            self.entries.remove(key);
        }
        self.offline -= excess;
        excess
    }
}

impl Sessions {
    /// Registers a connection; returns whether a previous session is resumed. An older
    /// connection with the same key is taken over (closed).
    fn attach(
        &self,
        key: SessionKey,
        clean_start: bool,
        persistent: bool,
        live: LiveConnection,
        now_ms: i64,
    ) -> (bool, usize) {
        let mut table = self.map.lock();
        let mut expired = 0;
        if self.attaches.fetch_add(1, Ordering::Relaxed).is_multiple_of(SWEEP_EVERY) {
            expired = table.sweep(now_ms);
        }
        let previous = table.entries.remove(&key);
        if previous.as_ref().is_some_and(|e| e.live.is_none()) {
            table.offline -= 1;
        }
        let mut present = false;
        if let Some(previous) = previous.filter(|e| e.is_alive(now_ms)) {
            if let Some(old) = previous.live {
                old.stop_reason.store(reason::SESSION_TAKEN_OVER, Ordering::SeqCst);
                old.stop.cancel();
            }
            present = !clean_start && previous.persistent;
        }
        table.entries.insert(key, SessionEntry { live: Some(live), persistent, keep_until_ms: None });
        (present, expired)
    }

    /// The connection ended; keep the session for `expiry_secs` (0 = drop it). Returns
    /// how many other sessions were evicted to stay within `max_offline`.
    fn detach(&self, key: &SessionKey, conn_id: u64, expiry_secs: u32, now_ms: i64, max_offline: usize) -> usize {
        let mut table = self.map.lock();
        let Some(entry) = table.entries.get_mut(key) else { return 0 };
        if entry.live.as_ref().is_none_or(|l| l.conn_id != conn_id) {
            return 0;
        }
        if expiry_secs == 0 {
            table.entries.remove(key);
            0
        } else {
            entry.live = None;
            entry.persistent = true;
            entry.keep_until_ms = Some(now_ms.saturating_add(i64::from(expiry_secs) * 1000));
            table.offline += 1;
            table.evict_over(max_offline)
        }
    }

    fn sweep(&self, now_ms: i64) -> usize {
        self.map.lock().sweep(now_ms)
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let table = self.map.lock();
        (table.entries.len(), table.offline)
    }
}

/// Removes expired sessions periodically, so an idle endpoint frees them too.
async fn sweep_loop(ctx: Arc<Ctx>) {
    let every = Duration::from_secs(ctx.config.session_sweep_secs.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = ctx.shutdown.cancelled() => return,
        }
        let expired = ctx.sessions.sweep(ctx.clock.now_ms());
        if expired > 0 {
            ctx.metrics.mqtt_sessions_evicted.get_or_create(&reason_label("expired")).inc_by(expired as u64);
        }
    }
}

fn reason_label(reason: &str) -> crate::metrics::ReasonLabels {
    crate::metrics::ReasonLabels { reason: reason.to_string() }
}

// ---- one connection ----

/// A response the connection still owes, in the order the client's packets came: a
/// PUBACK waits for its message's durable write; other frames are ready at once but queue
/// behind earlier acks (MQTT: PUBACKs in the order the PUBLISHes arrived).
enum Pending {
    Frame(Bytes),
    Ack {
        pkid: Option<u16>,
        submitted: Submitted,
        /// When the PUBLISH entered the pipeline (for `mqtt_puback_seconds`).
        received: std::time::Instant,
        /// A slot of the endpoint-wide in-flight window, freed when the ack is written.
        _permit: OwnedSemaphorePermit,
    },
}

struct Authenticated {
    factory: FactoryId,
    device: DeviceId,
    topic: String,
}

async fn serve_connection<R, W>(mut read: R, mut write: W, peer: SocketAddr, ctx: &Arc<Ctx>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // Small to start: 10k mostly idle connections must stay cheap; it grows with the traffic.
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let max_packet = ctx.config.max_packet_bytes;

    let first = tokio::select! {
        r = tokio::time::timeout(
            Duration::from_millis(ctx.config.connect_timeout_ms),
            read_packet(&mut read, &mut buf, None, max_packet),
        ) => r,
        _ = ctx.shutdown.cancelled() => return,
    };
    let connect = match first {
        Ok(Ok(Some(Packet::Connect(c)))) => c,
        Ok(Err(ReadError::Codec(CodecError::UnsupportedProtocol { level }))) => {
            tracing::debug!(%peer, level, "MQTT protocol level not supported");
            IngestMetrics::reason(&ctx.metrics.mqtt_connects_refused, "protocol_version");
            let frame =
                codec::connack(Protocol::V311, false, connack_v3::UNACCEPTABLE_PROTOCOL, &ConnAckProperties::default());
            let _ = write.write_all(&frame).await;
            return;
        }
        Ok(Err(ReadError::Codec(e))) => {
            tracing::debug!(%peer, error = %e, "bad CONNECT");
            ctx.metrics.mqtt_protocol_errors.inc();
            return;
        }
        // Closed, timed out, or an I/O error before CONNECT: nothing to answer.
        _ => return,
    };
    let protocol = connect.protocol;

    // Rate limits come before any verification work.
    if let Err(refused) = ctx.limiter.check(peer.ip(), ctx.clock.now_ms()) {
        tracing::debug!(%peer, limit = refused.as_str(), "CONNECT refused by the rate limit");
        IngestMetrics::reason(&ctx.metrics.mqtt_connects_refused, refused.as_str());
        let code = match protocol {
            Protocol::V5 => reason::CONNECTION_RATE_EXCEEDED,
            Protocol::V311 => connack_v3::SERVER_UNAVAILABLE,
        };
        let _ = write.write_all(&codec::connack(protocol, false, code, &ConnAckProperties::default())).await;
        return;
    }

    let auth = match authenticate(ctx, &connect).await {
        Ok(auth) => auth,
        Err((label, v3, v5)) => {
            IngestMetrics::reason(&ctx.metrics.mqtt_connects_refused, label);
            if let Some(suppressed) = ctx.logs.connect.admit() {
                tracing::info!(%peer, reason = label, username = %clip(connect.username.as_deref().unwrap_or("")), client_id = %clip(&connect.client_id), suppressed, "MQTT CONNECT refused");
            }
            let code = if protocol == Protocol::V5 { v5 } else { v3 };
            let _ = write.write_all(&codec::connack(protocol, false, code, &ConnAckProperties::default())).await;
            return;
        }
    };

    let mut props = ConnAckProperties {
        receive_maximum: ctx.config.receive_maximum.max(1),
        maximum_packet_size: u32::try_from(max_packet).unwrap_or(u32::MAX),
        ..ConnAckProperties::default()
    };
    let mut client_id = connect.client_id.clone();
    if client_id.is_empty() {
        if protocol == Protocol::V311 && !connect.clean_start {
            IngestMetrics::reason(&ctx.metrics.mqtt_connects_refused, "client_id");
            let frame = codec::connack(protocol, false, connack_v3::IDENTIFIER_REJECTED, &props);
            let _ = write.write_all(&frame).await;
            return;
        }
        client_id = format!("auto-{}", factoryops_types::new_id());
        if protocol == Protocol::V5 {
            props.assigned_client_id = Some(client_id.clone());
        }
    }
    let mut keep_alive = connect.keep_alive_secs;
    let mut session_expiry = match protocol {
        // 3.1.1 persistent sessions have no expiry of their own: the configured one bounds the memory.
        Protocol::V311 if !connect.clean_start => {
            ctx.config.v311_session_expiry_secs.min(ctx.config.max_session_expiry_secs)
        }
        Protocol::V311 => 0,
        Protocol::V5 => connect.session_expiry_secs.unwrap_or(0),
    };
    if protocol == Protocol::V5 {
        if keep_alive == 0 || keep_alive > ctx.config.max_keep_alive_secs {
            keep_alive = ctx.config.max_keep_alive_secs;
            props.server_keep_alive = Some(keep_alive);
        }
        if session_expiry > ctx.config.max_session_expiry_secs {
            session_expiry = ctx.config.max_session_expiry_secs;
            props.session_expiry = Some(session_expiry);
        }
    }

    let conn_id = ctx.next_conn.fetch_add(1, Ordering::Relaxed);
    let stop = ctx.shutdown.child_token();
    let stop_reason = Arc::new(AtomicU8::new(reason::SERVER_SHUTTING_DOWN));
    let key: SessionKey = (auth.factory.clone(), auth.device.clone(), client_id);
    let live = LiveConnection { conn_id, stop: stop.clone(), stop_reason: stop_reason.clone() };
    let (session_present, expired) =
        ctx.sessions.attach(key.clone(), connect.clean_start, session_expiry > 0, live, ctx.clock.now_ms());
    if expired > 0 {
        ctx.metrics.mqtt_sessions_evicted.get_or_create(&reason_label("expired")).inc_by(expired as u64);
    }
    let success = if protocol == Protocol::V5 { reason::SUCCESS } else { connack_v3::ACCEPTED };
    if write.write_all(&codec::connack(protocol, session_present, success, &props)).await.is_err() {
        detach(ctx, &key, conn_id, session_expiry);
        return;
    }
    tracing::debug!(%peer, factory_id = %auth.factory, device_id = %auth.device, ?protocol, "MQTT client connected");

    let mut conn = Connection {
        ctx,
        auth: &auth,
        protocol,
        session_expiry,
        schema: SchemaMemo::default(),
        pending: VecDeque::new(),
        window: usize::from(ctx.config.receive_maximum.max(1)),
        // PUBACKs are 4–5 bytes: a window of 64 fits in 320 bytes (10k connections each keep one).
        write: BufWriter::with_capacity(320, write),
    };
    let end = conn.run(&mut read, &mut buf, keep_alive, &stop, &stop_reason).await;
    if end.is_protocol_error() {
        ctx.metrics.mqtt_protocol_errors.inc();
    }
    // Acks already submitted are written first, then the DISCONNECT, then the socket closes.
    conn.finish(&end).await;
    session_expiry = conn.session_expiry;
    detach(ctx, &key, conn_id, session_expiry);
    tracing::debug!(%peer, factory_id = %auth.factory, device_id = %auth.device, ?end, "MQTT connection closed");
}

fn detach(ctx: &Ctx, key: &SessionKey, conn_id: u64, session_expiry: u32) {
    let evicted =
        ctx.sessions.detach(key, conn_id, session_expiry, ctx.clock.now_ms(), ctx.config.max_offline_sessions.max(1));
    if evicted > 0 {
        ctx.metrics.mqtt_sessions_evicted.get_or_create(&reason_label("capacity")).inc_by(evicted as u64);
    }
}

type Refusal = (&'static str, u8, u8);

async fn authenticate(ctx: &Ctx, connect: &Connect) -> Result<Authenticated, Refusal> {
    const BAD: Refusal = ("bad_credentials", connack_v3::BAD_USERNAME_OR_PASSWORD, reason::BAD_USERNAME_OR_PASSWORD);
    if connect.auth_method.is_some() {
        return Err(("auth_method", connack_v3::NOT_AUTHORIZED, reason::BAD_AUTHENTICATION_METHOD));
    }
    let (Some(username), Some(password)) = (&connect.username, &connect.password) else {
        return Err(BAD);
    };
    let Some((factory, device)) = username.split_once('/') else {
        return Err(BAD);
    };
    let (Ok(factory), Ok(device)) = (FactoryId::parse(factory), DeviceId::parse(device)) else {
        return Err(BAD);
    };
    match ctx.registry.verify(&factory, &device, password).await {
        Ok(Verification::Ok) => {
            let topic = telemetry_topic(&factory, &device);
            Ok(Authenticated { factory, device, topic })
        }
        Ok(Verification::BadCredentials) => Err(BAD),
        Ok(Verification::Disabled) => Err(("disabled", connack_v3::NOT_AUTHORIZED, reason::NOT_AUTHORIZED)),
        Err(e) => {
            tracing::error!(error = %e, "device verification failed");
            Err(("unavailable", connack_v3::SERVER_UNAVAILABLE, reason::SERVER_UNAVAILABLE))
        }
    }
}

/// Why the read loop ended.
#[derive(Debug)]
enum End {
    /// DISCONNECT from the client, or the socket closed.
    Client,
    KeepAliveTimeout,
    Stopped(u8),
    Protocol(u8),
    /// The ingest pipeline failed: close so the device redelivers what was not acked.
    Internal,
    /// A message's durable write failed: no further acks (its DISCONNECT is already written).
    AckFailed,
    /// Writing to the socket failed.
    WriteFailed,
}

impl End {
    fn disconnect_reason(&self) -> Option<u8> {
        match self {
            End::Client | End::AckFailed | End::WriteFailed => None,
            End::KeepAliveTimeout => Some(reason::KEEP_ALIVE_TIMEOUT),
            End::Stopped(code) | End::Protocol(code) => Some(*code),
            End::Internal => Some(reason::UNSPECIFIED_ERROR),
        }
    }

    fn is_protocol_error(&self) -> bool {
        matches!(self, End::Protocol(_))
    }
}

/// One connection, served by one task: it reads packets, submits PUBLISHes and writes
/// each PUBACK once its message is durable, in arrival order. With 10k mostly idle
/// devices, a second task and a channel per connection cost more memory than they saved.
struct Connection<'a, W> {
    ctx: &'a Arc<Ctx>,
    auth: &'a Authenticated,
    protocol: Protocol,
    session_expiry: u32,
    /// The device's already-registered property set, so repeat messages skip the catalogue.
    schema: SchemaMemo,
    /// Responses owed, oldest first; the socket is not read while `window` are owed.
    pending: VecDeque<Pending>,
    window: usize,
    write: BufWriter<W>,
}

/// The oldest owed response, once it can be written: `Ok(None)` for a QoS 0 message
/// (durable, nothing to send), `Err` when its write failed (no PUBACK: the device must
/// redeliver). Pending while nothing is owed.
fn poll_oldest(
    pending: &mut VecDeque<Pending>,
    protocol: Protocol,
    acks: &Histogram,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Bytes>, ()>> {
    let frame = match pending.front_mut() {
        None => return Poll::Pending,
        Some(Pending::Frame(frame)) => Some(std::mem::take(frame)),
        Some(Pending::Ack { pkid, submitted, received, .. }) => match std::task::ready!(submitted.poll_outcome(cx)) {
            Ok(IngestOutcome::Stored(_)) => pkid.map(|pkid| {
                acks.observe(received.elapsed().as_secs_f64());
                codec::puback(protocol, pkid, reason::SUCCESS)
            }),
            // Redelivery cannot fix a malformed payload: acknowledge it (with the reason on v5).
            Ok(IngestOutcome::MessageRejected(_)) => {
                pkid.map(|pkid| codec::puback(protocol, pkid, reason::PAYLOAD_FORMAT_INVALID))
            }
            Err(_) => {
                pending.pop_front();
                return Poll::Ready(Err(()));
            }
        },
    };
    pending.pop_front();
    Poll::Ready(Ok(frame))
}

impl<W: AsyncWrite + Unpin> Connection<'_, W> {
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        read: &mut R,
        buf: &mut BytesMut,
        keep_alive_secs: u16,
        stop: &CancellationToken,
        stop_reason: &AtomicU8,
    ) -> End {
        // MQTT: the server disconnects after one and a half keep-alive periods of silence.
        let idle = (keep_alive_secs > 0).then(|| Duration::from_millis(u64::from(keep_alive_secs) * 1500));
        let idle_timer = tokio::time::sleep(idle.unwrap_or(Duration::from_secs(3600)));
        tokio::pin!(idle_timer);
        let max_packet = self.ctx.config.max_packet_bytes;
        let protocol = self.protocol;
        // A PUBLISH read while the endpoint-wide window was full waits here for a slot.
        let mut waiting: Option<Publish> = None;
        let mut was_reading = true;
        loop {
            if let Err(end) =
                write_ready(&mut self.pending, &mut self.write, protocol, &self.ctx.metrics.mqtt_puback_seconds).await
            {
                return end;
            }
            let reading = waiting.is_none() && self.pending.len() < self.window;
            if reading
                && !was_reading
                && let Some(idle) = idle
            {
                // The client could not send while we were not reading: its silence starts now.
                idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
            }
            was_reading = reading;
            let event = tokio::select! {
                biased;
                _ = stop.cancelled() => return End::Stopped(stop_reason.load(Ordering::SeqCst)),
                out = std::future::poll_fn(|cx| poll_oldest(&mut self.pending, protocol, &self.ctx.metrics.mqtt_puback_seconds, cx)),
                    if !self.pending.is_empty() => Event::Owed(out),
                permit = self.ctx.inflight_total.clone().acquire_owned(), if waiting.is_some() => {
                    match (permit, waiting.take()) {
                        (Ok(permit), Some(publish)) => Event::Admitted(publish, permit),
                        _ => return End::Internal,
                    }
                }
                packet = read_packet(read, buf, Some(protocol), max_packet), if reading => Event::Read(packet),
                () = &mut idle_timer, if reading && idle.is_some() => return End::KeepAliveTimeout,
            };
            let packet = match event {
                Event::Owed(out) => {
                    if let Err(end) = self.write_owed(out).await {
                        return end;
                    }
                    continue;
                }
                Event::Admitted(publish, permit) => {
                    if let Err(end) = self.submit(publish, permit).await {
                        return end;
                    }
                    continue;
                }
                Event::Read(packet) => packet,
            };
            if let Some(idle) = idle {
                idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
            }
            let packet = match packet {
                Ok(Some(packet)) => packet,
                Ok(None) => return End::Client,
                Err(ReadError::Io(e)) => {
                    tracing::debug!(error = %e, "MQTT read failed");
                    return End::Client;
                }
                Err(ReadError::Codec(CodecError::TooLarge { .. })) => return End::Protocol(reason::PACKET_TOO_LARGE),
                Err(ReadError::Codec(CodecError::Malformed(_))) => return End::Protocol(reason::MALFORMED_PACKET),
                Err(ReadError::Codec(_)) => return End::Protocol(reason::PROTOCOL_ERROR),
            };
            match packet {
                Packet::Publish(publish) => {
                    let publish = match self.check_publish(publish) {
                        Ok(Some(publish)) => publish,
                        Ok(None) => continue,
                        Err(end) => return end,
                    };
                    {
                        // Back-pressure: with the endpoint's window full the socket is not
                        // read until a slot frees (acks keep being written meanwhile).
                        match self.ctx.inflight_total.clone().try_acquire_owned() {
                            Ok(permit) => {
                                if let Err(end) = self.submit(publish, permit).await {
                                    return end;
                                }
                            }
                            Err(_) => waiting = Some(publish),
                        }
                    }
                }
                Packet::PingReq => self.pending.push_back(Pending::Frame(codec::pingresp())),
                Packet::Subscribe(s) => {
                    // This endpoint only receives telemetry: no subscription is granted.
                    let code = if protocol == Protocol::V5 { reason::NOT_AUTHORIZED } else { 0x80 };
                    let codes = vec![code; s.filters.len()];
                    self.pending.push_back(Pending::Frame(codec::suback(protocol, s.pkid, &codes)));
                }
                Packet::Unsubscribe(u) => {
                    self.pending.push_back(Pending::Frame(codec::unsuback(protocol, u.pkid, u.filters.len())));
                }
                // We never publish to clients, so there is nothing to acknowledge.
                Packet::PubAck { .. } => {}
                Packet::Disconnect(d) => {
                    if let Some(expiry) = d.session_expiry_secs {
                        self.session_expiry = expiry.min(self.ctx.config.max_session_expiry_secs);
                    }
                    return End::Client;
                }
                Packet::Unsupported { .. } => return End::Protocol(reason::PROTOCOL_ERROR),
                Packet::Connect(_) => return End::Protocol(reason::PROTOCOL_ERROR),
            }
        }
    }

    /// Refuses what a PUBLISH may not do; `Ok(None)` when it was answered (v5 ACL refusal).
    fn check_publish(&mut self, publish: Publish) -> Result<Option<Publish>, End> {
        if publish.qos > 1 {
            // v5: Maximum QoS 1 was announced, so QoS 2 is a protocol error; 3.1.1 has no way to refuse but closing.
            return Err(End::Protocol(reason::QOS_NOT_SUPPORTED));
        }
        if publish.topic_alias.is_some() {
            // Topic Alias Maximum is 0 (not announced), so any alias is invalid.
            return Err(End::Protocol(reason::TOPIC_ALIAS_INVALID));
        }
        if publish.topic != self.auth.topic {
            self.ctx.metrics.mqtt_acl_denied.inc();
            if let Some(suppressed) = self.ctx.logs.acl.admit() {
                tracing::warn!(factory_id = %self.auth.factory, device_id = %self.auth.device, topic = %clip(&publish.topic), suppressed, "PUBLISH outside the device's topic refused");
            }
            return match (self.protocol, publish.pkid) {
                (Protocol::V5, Some(pkid)) => {
                    self.pending.push_back(Pending::Frame(codec::puback(self.protocol, pkid, reason::NOT_AUTHORIZED)));
                    Ok(None)
                }
                (Protocol::V5, None) => Ok(None),
                (Protocol::V311, _) => Err(End::Stopped(reason::NOT_AUTHORIZED)),
            };
        }
        Ok(Some(publish))
    }

    /// Hands a PUBLISH to the pipeline and queues its ack. Acks that become due while the
    /// submission waits (registration, a full writer queue) are written meanwhile.
    async fn submit(&mut self, publish: Publish, permit: OwnedSemaphorePermit) -> Result<(), End> {
        let received = std::time::Instant::now();
        // A message without its own `ts` gets a unique stamp per device from the pipeline
        // (shared with the device's other connections and HTTP; ADR 0009).
        let received_at = self.ctx.clock.now_ms();
        let submit = self.ctx.ingestor.submit_with(
            &self.auth.factory,
            &self.auth.device,
            &publish.payload,
            received_at,
            &mut self.schema,
        );
        tokio::pin!(submit);
        let submitted = loop {
            let owed = tokio::select! {
                biased;
                submitted = &mut submit => break submitted,
                out = std::future::poll_fn(|cx| poll_oldest(&mut self.pending, self.protocol, &self.ctx.metrics.mqtt_puback_seconds, cx)),
                    if !self.pending.is_empty() => out,
            };
            write_owed(&mut self.write, self.protocol, owed).await?;
            write_ready(&mut self.pending, &mut self.write, self.protocol, &self.ctx.metrics.mqtt_puback_seconds)
                .await?;
        };
        let submitted = submitted.map_err(|e| {
            tracing::warn!(factory_id = %self.auth.factory, device_id = %self.auth.device, error = %e, "message not ingested; closing so the device redelivers");
            End::Internal
        })?;
        self.pending.push_back(Pending::Ack { pkid: publish.pkid, submitted, received, _permit: permit });
        Ok(())
    }

    async fn write_owed(&mut self, out: Result<Option<Bytes>, ()>) -> Result<(), End> {
        write_owed(&mut self.write, self.protocol, out).await
    }

    /// After the read side ended: the acks already submitted (unless writing failed), the
    /// DISCONNECT (v5), then the socket closes.
    async fn finish(&mut self, end: &End) {
        if !matches!(end, End::WriteFailed | End::AckFailed) {
            while !self.pending.is_empty() {
                let out = std::future::poll_fn(|cx| {
                    poll_oldest(&mut self.pending, self.protocol, &self.ctx.metrics.mqtt_puback_seconds, cx)
                })
                .await;
                if self.write_owed(out).await.is_err() {
                    return;
                }
            }
        }
        if let (Protocol::V5, Some(code)) = (self.protocol, end.disconnect_reason())
            && self.write.write_all(&codec::disconnect_v5(code)).await.is_err()
        {
            return;
        }
        let _ = self.write.flush().await;
        let _ = self.write.shutdown().await;
    }
}

/// What woke a connection up.
enum Event {
    Owed(Result<Option<Bytes>, ()>),
    Admitted(Publish, OwnedSemaphorePermit),
    Read(Result<Option<Packet>, ReadError>),
}

/// Writes every owed response that is ready now, then flushes once: a group commit
/// completes many acks at once, and batching never delays an ack already due.
async fn write_ready<W: AsyncWrite + Unpin>(
    pending: &mut VecDeque<Pending>,
    write: &mut BufWriter<W>,
    protocol: Protocol,
    acks: &Histogram,
) -> Result<(), End> {
    loop {
        let ready = poll_oldest(pending, protocol, acks, &mut Context::from_waker(std::task::Waker::noop()));
        let Poll::Ready(out) = ready else { break };
        write_owed(write, protocol, out).await?;
    }
    if !write.buffer().is_empty() {
        write.flush().await.map_err(|_| End::WriteFailed)?;
    }
    Ok(())
}

/// Buffers one owed response; a failed durable write ends the connection without an ack.
async fn write_owed<W: AsyncWrite + Unpin>(
    write: &mut BufWriter<W>,
    protocol: Protocol,
    out: Result<Option<Bytes>, ()>,
) -> Result<(), End> {
    match out {
        Ok(Some(frame)) => write.write_all(&frame).await.map_err(|_| End::WriteFailed),
        Ok(None) => Ok(()),
        // Not durable: no PUBACK. Close, so the device redelivers after reconnecting.
        Err(()) => {
            if protocol == Protocol::V5 {
                let _ = write.write_all(&codec::disconnect_v5(reason::UNSPECIFIED_ERROR)).await;
            }
            Err(End::AckFailed)
        }
    }
}

/// Initial read buffer of a connection, and how much it grows by when nearly full. 1 KiB
/// saved 10 MB with 10k connections but cost ~25 % more CPU per message under load
/// (more reads and buffer growth per packet).
const READ_BUFFER: usize = 2048;

#[derive(Debug)]
enum ReadError {
    Io(std::io::Error),
    Codec(CodecError),
}

/// The next packet; `Ok(None)` when the peer closed the connection. Cancel-safe:
/// partial input stays in `buf`.
async fn read_packet<R: AsyncRead + Unpin>(
    read: &mut R,
    buf: &mut BytesMut,
    protocol: Option<Protocol>,
    max_packet: usize,
) -> Result<Option<Packet>, ReadError> {
    loop {
        if let Some(packet) = codec::decode(buf, protocol, max_packet).map_err(ReadError::Codec)? {
            return Ok(Some(packet));
        }
        if buf.capacity() - buf.len() < READ_BUFFER / 2 {
            buf.reserve(READ_BUFFER);
        }
        let n = read.read_buf(buf).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(client: &str) -> SessionKey {
        (FactoryId::parse("plant-a").unwrap(), DeviceId::parse("press-1").unwrap(), client.to_string())
    }

    fn live(conn_id: u64) -> LiveConnection {
        LiveConnection { conn_id, stop: CancellationToken::new(), stop_reason: Arc::new(AtomicU8::new(0)) }
    }

    #[test]
    fn a_persistent_session_is_resumed_until_it_expires() {
        let sessions = Sessions::default();
        assert_eq!(sessions.attach(key("c"), false, true, live(1), 0), (false, 0));
        assert_eq!(sessions.detach(&key("c"), 1, 10, 1_000, 100), 0);
        assert_eq!(sessions.counts(), (1, 1));
        // Within the expiry (10 s after the disconnect at 1 s): resumed.
        assert!(sessions.attach(key("c"), false, true, live(2), 10_999).0);
        assert_eq!(sessions.counts(), (1, 0));
        sessions.detach(&key("c"), 2, 10, 11_000, 100);
        // After it: a new session.
        assert!(!sessions.attach(key("c"), false, true, live(3), 21_001).0);
        // A clean start never resumes.
        sessions.detach(&key("c"), 3, 10, 21_001, 100);
        assert!(!sessions.attach(key("c"), true, true, live(4), 21_002).0);
    }

    #[test]
    fn expired_sessions_are_swept_and_clean_ones_not_kept() {
        let sessions = Sessions::default();
        for (i, expiry) in [(1, 5), (2, 50), (3, 0)] {
            let k = key(&format!("c{i}"));
            sessions.attach(k.clone(), false, expiry > 0, live(i), 0);
            sessions.detach(&k, i, expiry, 0, 100);
        }
        assert_eq!(sessions.counts(), (2, 2), "expiry 0 is not kept");
        assert_eq!(sessions.sweep(5_000), 1);
        assert_eq!(sessions.counts(), (1, 1));
        assert_eq!(sessions.sweep(50_000), 1);
        assert_eq!(sessions.counts(), (0, 0));
    }

    #[test]
    fn offline_sessions_are_bounded_evicting_those_expiring_first() {
        let sessions = Sessions::default();
        let mut evicted = 0;
        for i in 0..25u64 {
            let k = key(&format!("c{i}"));
            sessions.attach(k.clone(), false, true, live(i), 0);
            // Later clients get longer expiries.
            evicted += sessions.detach(&k, i, 100 + i as u32, 0, 20);
        }
        let (entries, offline) = sessions.counts();
        assert!(offline <= 20 && entries == offline, "{entries} {offline}");
        assert_eq!(evicted, 25 - offline);
        // The survivors are the ones expiring last.
        assert!(sessions.attach(key("c24"), false, true, live(100), 1).0);
        assert!(!sessions.attach(key("c0"), false, true, live(101), 1).0);
        // Live connections are never evicted.
        assert_eq!(sessions.counts().0 - sessions.counts().1, 2);
    }

    #[test]
    fn a_stale_detach_does_not_touch_the_new_connection() {
        let sessions = Sessions::default();
        sessions.attach(key("c"), false, true, live(1), 0);
        sessions.attach(key("c"), false, true, live(2), 0);
        assert_eq!(sessions.detach(&key("c"), 1, 10, 0, 100), 0);
        assert_eq!(sessions.counts(), (1, 0));
    }
}
