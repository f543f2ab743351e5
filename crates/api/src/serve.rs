//! Serving the router on a TCP listener, with the bounds `axum::serve` lacks (ADR 0011).
//!
//! Half-open connections (a request head that never ends, or no byte at all) used to stay
//! open for minutes; twenty thousand of them took every file descriptor, and `/healthz`
//! and MQTT CONNECTs timed out with them. Here each connection has a header-read timeout
//! (hyper's, which also bounds the wait for a keep-alive connection's next request), an
//! idle timeout (no byte either way), and the listener caps open connections in total and
//! per client IP. A connection over a cap gets a minimal `503` problem with `Retry-After`
//! and is closed; refusals are counted and logged rate-limited.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use factoryops_platform::logline::LogLimiter;
use factoryops_platform::metrics::Metrics;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The listener's bounds (`http.*` keys; the caps sized by `ConnectionBudget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeConfig {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4_096,
            max_connections_per_ip: 1_024,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The edge's metrics, registered once per server.
#[derive(Clone)]
struct EdgeMetrics {
    open: Gauge,
    refused: Family<ReasonLabels, Counter>,
    closed: Family<ReasonLabels, Counter>,
}

impl EdgeMetrics {
    fn register(metrics: &Metrics) -> Self {
        let this = Self { open: Gauge::default(), refused: Family::default(), closed: Family::default() };
        metrics.register("http_connections", "Open HTTP connections", this.open.clone());
        metrics.register(
            "http_connections_refused",
            "HTTP connections refused at accept (reason: per_ip or total cap, accept_error)",
            this.refused.clone(),
        );
        metrics.register(
            "http_connections_timed_out",
            "HTTP connections closed by the server (reason: header_read or idle timeout)",
            this.closed.clone(),
        );
        this
    }
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    PerIp,
    Total,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::PerIp => "per_ip",
            Refusal::Total => "total",
        }
    }
}

/// Open connections, in total and per client IP.
struct Admission {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<AdmissionState>,
}

#[derive(Default)]
struct AdmissionState {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it frees its place.
struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    fn new(config: &EdgeConfig) -> Arc<Self> {
        Arc::new(Self {
            max_total: config.max_connections.max(1),
            max_per_ip: config.max_connections_per_ip.max(1),
            state: Mutex::new(AdmissionState::default()),
        })
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        let mut state = self.state.lock();
        let from_ip = state.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        if state.total >= self.max_total {
            return Err(Refusal::Total);
        }
        state.total += 1;
        state.per_ip.insert(ip, from_ip + 1);
        Ok(Admitted { admission: self.clone(), ip })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut state = self.admission.state.lock();
        state.total = state.total.saturating_sub(1);
        if let Some(count) = state.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                state.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Refusals answered at once; beyond this many in progress a refused socket is just closed,
/// so answering refusals cannot itself use up descriptors.
const REFUSALS_IN_FLIGHT: usize = 32;
/// How long a refusal may take to write its 503 and see the client's request out.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// The client is asked to come back after this many seconds.
const RETRY_AFTER_SECS: u64 = 5;

fn refusal_response(refusal: Refusal) -> Vec<u8> {
    let detail = match refusal {
        Refusal::PerIp => "too many open connections from this client; close idle ones or retry later",
        Refusal::Total => "the server has too many open connections; retry later",
    };
    let body = serde_json::json!({
        "type": "urn:factoryops:problem:too-many-connections",
        "title": "Service Unavailable",
        "status": 503,
        "detail": detail,
        "retry_after": RETRY_AFTER_SECS,
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: {RETRY_AFTER_SECS}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Writes the 503, stops sending, and reads whatever request the client sent until it
/// closes or [`REFUSAL_LINGER`] passes: closing a socket with unread data resets it, and
/// the client might lose the answer.
async fn refuse(mut stream: TcpStream, response: Vec<u8>) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(&response).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

/// The last time a byte moved on a connection, for the idle timeout.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    /// Resolves once nothing moved for `idle`.
    async fn idle(&self, idle: Duration) {
        loop {
            let quiet = self.quiet_for();
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    }
}

/// A socket that records its activity.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What the accept loop shares with connection tasks.
struct Edge {
    config: EdgeConfig,
    admission: Arc<Admission>,
    metrics: EdgeMetrics,
    refusals: Arc<Semaphore>,
    log_per_ip: LogLimiter,
    log_total: LogLimiter,
    log_accept: LogLimiter,
}

/// Serves `router` on `listener` until `stop` resolves, then stops accepting, lets
/// requests in flight finish (idle connections close at once) and returns when every
/// connection is closed — the graceful shutdown `axum::serve` had.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: EdgeConfig,
    metrics: &Metrics,
    stop: impl Future<Output = ()> + Send,
) {
    let edge = Arc::new(Edge {
        config,
        admission: Admission::new(&config),
        metrics: EdgeMetrics::register(metrics),
        refusals: Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT)),
        log_per_ip: LogLimiter::default(),
        log_total: LogLimiter::default(),
        log_accept: LogLimiter::default(),
    });
    let draining = CancellationToken::new();
    let tracker = TaskTracker::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning, and say so rarely.
                    count(&edge.metrics.refused, "accept_error");
                    if let Some(suppressed) = edge.log_accept.admit() {
                        tracing::warn!(error = %e, suppressed, "HTTP accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        match edge.admission.admit(peer.ip()) {
            Ok(admitted) => {
                let edge = edge.clone();
                let router = router.clone();
                let draining = draining.clone();
                tracker.spawn(async move {
                    edge.metrics.open.inc();
                    serve_connection(&edge, stream, peer, router, draining).await;
                    edge.metrics.open.dec();
                    drop(admitted);
                });
            }
            Err(refusal) => {
                count(&edge.metrics.refused, refusal.label());
                let limiter = match refusal {
                    Refusal::PerIp => &edge.log_per_ip,
                    Refusal::Total => &edge.log_total,
                };
                if let Some(suppressed) = limiter.admit() {
                    let cap = match refusal {
                        Refusal::PerIp => edge.config.max_connections_per_ip,
                        Refusal::Total => edge.config.max_connections,
                    };
                    tracing::warn!(client_ip = %peer.ip(), cap, reason = refusal.label(), suppressed, "HTTP connection refused: too many open connections");
                }
                if let Ok(permit) = edge.refusals.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(stream, refusal_response(refusal)).await;
                        drop(permit);
                    });
                }
            }
        }
    }
    drop(listener);
    draining.cancel();
    tracker.close();
    tracker.wait().await;
}

fn count(family: &Family<ReasonLabels, Counter>, reason: &'static str) {
    family.get_or_create(&ReasonLabels { reason }).inc();
}

async fn serve_connection(
    edge: &Edge,
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    draining: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity { start: Instant::now(), last_ms: AtomicU64::new(0) });
    let io = TokioIo::new(Tracked { stream, activity: activity.clone() });
    let service = TowerToHyperService::new(router.map_request(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    }));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(edge.config.header_read_timeout).keep_alive(true);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let mut drain_started = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    if e.is_timeout() {
                        count(&edge.metrics.closed, "header_read");
                    }
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = draining.cancelled(), if !drain_started => {
                // Finishes the request in flight, then closes; an idle connection closes now.
                connection.as_mut().graceful_shutdown();
                drain_started = true;
            }
            () = activity.idle(edge.config.idle_timeout) => {
                count(&edge.metrics.closed, "idle");
                tracing::debug!(%peer, "HTTP connection closed: idle");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn admission_caps_per_ip_and_in_total_and_frees_on_drop() {
        let admission =
            Admission::new(&EdgeConfig { max_connections: 3, max_connections_per_ip: 2, ..EdgeConfig::default() });
        let a1 = admission.admit(ip(1)).unwrap();
        let _a2 = admission.admit(ip(1)).unwrap();
        assert_eq!(admission.admit(ip(1)).err(), Some(Refusal::PerIp));
        let _b1 = admission.admit(ip(2)).unwrap();
        assert_eq!(admission.admit(ip(3)).err(), Some(Refusal::Total));
        drop(a1);
        let _c1 = admission.admit(ip(3)).unwrap();
        assert_eq!(admission.state.lock().per_ip.len(), 3);
    }

    #[test]
    fn the_refusal_is_a_complete_problem_response() {
        let response = String::from_utf8(refusal_response(Refusal::PerIp)).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains("retry-after: 5") && head.contains("connection: close"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 503);
        assert_eq!(problem["type"], "urn:factoryops:problem:too-many-connections");
    }
}
