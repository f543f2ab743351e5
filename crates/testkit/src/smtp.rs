//! A real SMTP server in the test process (mailin-embedded: the SMTP protocol on a TCP
//! port), recording what it receives. Its answer to the DATA command can be switched to a
//! temporary (451) or permanent (550) failure, and it can start late on a reserved port so a test
//! sees "server down, then up".

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailin_embedded::response::OK;
use mailin_embedded::{Handler, Response, Server, SslConfig};
use parking_lot::Mutex;

/// How the server answers at the end of DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpMode {
    Accept,
    /// 451: try again later.
    TempFail,
    /// 550: refused for good.
    Reject,
}

/// One received message.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    /// The raw message (headers and body) as it came over the wire.
    pub data: String,
    pub received_at: Instant,
}

impl ReceivedMail {
    /// A header's value (unfolded), case-insensitive name.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        let mut current: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(c) = current.as_mut() {
                    c.push(' ');
                    c.push_str(line.trim());
                }
                continue;
            }
            if let Some(c) = current.take()
                && value.is_none()
            {
                value = Some(c);
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case(name)
            {
                current = Some(v.trim().to_string());
            }
        }
        value.or(current)
    }

    /// The message with quoted-printable soft breaks and `=XX` escapes of ASCII undone, so
    /// tests can look for body text.
    pub fn decoded(&self) -> String {
        let joined = self.data.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = hex {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[derive(Default)]
struct Shared {
    mode: Option<SmtpMode>,
    received: Vec<ReceivedMail>,
    attempts: usize,
}

#[derive(Clone)]
struct Recorder {
    shared: Arc<Mutex<Shared>>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Recorder {
    // Failures are answered to the DATA command: mailin keeps a session that failed at the
    // end of DATA in its data state, which would swallow the client's RSET/QUIT.
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        let mut shared = self.shared.lock();
        shared.attempts += 1;
        match shared.mode.unwrap_or(SmtpMode::Accept) {
            SmtpMode::Accept => {
                self.from = from.to_string();
                self.to = to.to_vec();
                self.data.clear();
                OK
            }
            SmtpMode::TempFail => Response::custom(451, "4.3.0 try again later (test)".to_string()),
            SmtpMode::Reject => Response::custom(550, "5.7.1 mailbox unavailable: rejected by test".to_string()),
        }
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        self.shared.lock().received.push(ReceivedMail {
            from: std::mem::take(&mut self.from),
            to: std::mem::take(&mut self.to),
            data: String::from_utf8_lossy(&std::mem::take(&mut self.data)).into_owned(),
            received_at: Instant::now(),
        });
        OK
    }
}

/// The test's SMTP server. Its thread lives as long as the test process.
#[derive(Clone)]
pub struct SmtpSink {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl SmtpSink {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        let sink = Self::reserve();
        sink.listen();
        sink
    }

    /// Picks a free port without listening yet: connections are refused until [`SmtpSink::listen`].
    pub fn reserve() -> Self {
        let addr = match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(addr) => addr,
            Err(e) => panic!("cannot find a free port: {e}"),
        };
        Self { addr, shared: Arc::new(Mutex::new(Shared::default())) }
    }

    /// Starts listening on the reserved port.
    pub fn listen(&self) {
        let listener = match TcpListener::bind(self.addr) {
            Ok(l) => l,
            Err(e) => panic!("cannot listen on {}: {e}", self.addr),
        };
        let handler = Recorder { shared: self.shared.clone(), from: String::new(), to: Vec::new(), data: Vec::new() };
        std::thread::spawn(move || {
            let mut server = Server::new(handler);
            server.with_name("smtp.test");
            let configured = server.with_ssl(SslConfig::None).map(|s| {
                s.with_tcp_listener(listener);
            });
            if let Err(e) = configured {
                eprintln!("test smtp server: {e}");
                return;
            }
            if let Err(e) = server.serve() {
                eprintln!("test smtp server stopped: {e}");
            }
        });
    }

    /// `smtp://host:port?tls=none` for `FACTORYOPS_SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://{}?tls=none", self.addr)
    }

    pub fn set_mode(&self, mode: SmtpMode) {
        self.shared.lock().mode = Some(mode);
    }

    pub fn received(&self) -> Vec<ReceivedMail> {
        self.shared.lock().received.clone()
    }

    /// DATA transactions seen, accepted or not.
    pub fn attempts(&self) -> usize {
        self.shared.lock().attempts
    }

    /// Waits until `n` messages arrived (or panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if Instant::now() > deadline {
                panic!("expected {n} emails within {timeout:?}, got {}: {got:#?}", got.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
