//! A real SMTP server in the test process (the `mailin` protocol state machine on a TCP
//! port, a thread per connection), recording what it receives. Its answer to the DATA
//! command can be switched to a temporary (451) or permanent (550) failure, it can start
//! late on a reserved port so a test sees "server down, then up", and it can speak
//! STARTTLS or implicit TLS (OpenSSL, a certificate from [`crate::tls::TestCa`]) and
//! require AUTH PLAIN/LOGIN with one user name and password.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailin::response::{AUTH_OK, INVALID_CREDENTIALS, OK};
use mailin::{Action, AuthMechanism, Handler, Response, Session, SessionBuilder};
use openssl::ssl::{SslAcceptor, SslMethod};
use parking_lot::Mutex;

use crate::tls::ServerCert;

/// How the server secures its connections.
#[derive(Clone)]
pub enum SmtpSecurity {
    /// Plain text, no STARTTLS offered (`tls=none`).
    None,
    /// Plain greeting, STARTTLS offered and required before AUTH (`tls=starttls`).
    StartTls(ServerCert),
    /// TLS from the first byte, like port 465 (`tls=tls`).
    ImplicitTls(ServerCert),
}

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
    auth_failures: usize,
}

#[derive(Clone)]
struct Recorder {
    shared: Arc<Mutex<Shared>>,
    /// The one user name and password AUTH accepts (AUTH is offered only when set).
    credentials: Option<Arc<(String, String)>>,
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

    fn auth_plain(&mut self, _authorization_id: &str, authentication_id: &str, password: &str) -> Response {
        self.authenticate(authentication_id, password)
    }

    fn auth_login(&mut self, username: &str, password: &str) -> Response {
        self.authenticate(username, password)
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

impl Recorder {
    fn authenticate(&mut self, user: &str, password: &str) -> Response {
        match &self.credentials {
            Some(c) if c.0 == user && c.1 == password => AUTH_OK,
            _ => {
                self.shared.lock().auth_failures += 1;
                INVALID_CREDENTIALS
            }
        }
    }
}

/// The test's SMTP server. Its thread lives as long as the test process.
#[derive(Clone)]
pub struct SmtpSink {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    security: SmtpSecurity,
    credentials: Option<Arc<(String, String)>>,
}

impl SmtpSink {
    /// Starts a plain server (no TLS, no AUTH) on a free port.
    pub fn start() -> Self {
        let sink = Self::reserve();
        sink.listen();
        sink
    }

    /// Starts a server with TLS (`security`) and, with `credentials`, AUTH required
    /// before mail is accepted.
    pub fn start_secure(security: SmtpSecurity, credentials: Option<(&str, &str)>) -> Self {
        let mut sink = Self::reserve();
        sink.security = security;
        sink.credentials = credentials.map(|(u, p)| Arc::new((u.to_string(), p.to_string())));
        sink.listen();
        sink
    }

    /// Picks a free port without listening yet: connections are refused until [`SmtpSink::listen`].
    pub fn reserve() -> Self {
        let addr = match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(addr) => addr,
            Err(e) => panic!("cannot find a free port: {e}"),
        };
        Self { addr, shared: Arc::new(Mutex::new(Shared::default())), security: SmtpSecurity::None, credentials: None }
    }

    /// Starts listening on the reserved port.
    pub fn listen(&self) {
        let listener = match TcpListener::bind(self.addr) {
            Ok(l) => l,
            Err(e) => panic!("cannot listen on {}: {e}", self.addr),
        };
        let (cert, implicit) = match &self.security {
            SmtpSecurity::None => (None, false),
            SmtpSecurity::StartTls(c) => (Some(c), false),
            SmtpSecurity::ImplicitTls(c) => (Some(c), true),
        };
        let server =
            Arc::new(ServerConfig { acceptor: cert.map(acceptor), implicit, auth: self.credentials.is_some() });
        let handler = Recorder {
            shared: self.shared.clone(),
            credentials: self.credentials.clone(),
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
        };
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                let (server, handler) = (server.clone(), handler.clone());
                std::thread::spawn(move || {
                    if let Err(e) = server.connection(stream, handler) {
                        eprintln!("test smtp server: connection ended: {e}");
                    }
                });
            }
        });
    }

    /// `smtp://127.0.0.1:port?tls=…` for `FACTORYOPS_SMTP_URL`, the mode matching the
    /// server's security.
    pub fn url(&self) -> String {
        let tls = match self.security {
            SmtpSecurity::None => "none",
            SmtpSecurity::StartTls(_) => "starttls",
            SmtpSecurity::ImplicitTls(_) => "tls",
        };
        format!("smtp://{}?tls={tls}", self.addr)
    }

    /// [`SmtpSink::url`] with a user name and password.
    pub fn url_with_login(&self, user: &str, password: &str) -> String {
        self.url().replacen("smtp://", &format!("smtp://{user}:{password}@"), 1)
    }

    /// AUTH attempts refused.
    pub fn auth_failures(&self) -> usize {
        self.shared.lock().auth_failures
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

fn acceptor(cert: &ServerCert) -> SslAcceptor {
    let built = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).and_then(|mut b| {
        b.set_private_key(&cert.key)?;
        b.set_certificate(&cert.cert)?;
        b.check_private_key()?;
        Ok(b.build())
    });
    built.unwrap_or_else(|e| panic!("test smtp server: tls setup: {e}"))
}

struct ServerConfig {
    acceptor: Option<SslAcceptor>,
    implicit: bool,
    auth: bool,
}

impl ServerConfig {
    fn connection(&self, stream: TcpStream, handler: Recorder) -> Result<(), String> {
        let remote = stream.peer_addr().map(|a| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        let mut builder = SessionBuilder::new("smtp.test");
        if self.acceptor.is_some() {
            builder.enable_start_tls();
        }
        if self.auth {
            builder.enable_auth(AuthMechanism::Plain).enable_auth(AuthMechanism::Login);
        }
        let mut session = builder.build(remote, handler);
        let tls = |stream: TcpStream| match &self.acceptor {
            Some(a) => a.accept(stream).map_err(|e| format!("tls handshake: {e}")),
            None => Err("STARTTLS without a certificate".to_string()),
        };
        if self.implicit {
            let stream = tls(stream)?;
            session.tls_active();
            converse(&mut session, stream, true)?;
        } else if let Some(stream) = converse(&mut session, stream, true)? {
            // The client waits for our 220 before its handshake, so nothing is buffered.
            let stream = tls(stream)?;
            session.tls_active();
            converse(&mut session, stream, false)?;
        }
        Ok(())
    }
}

/// Runs the session's lines until the client leaves (`None`) or STARTTLS was granted
/// (the stream is handed back for the handshake).
fn converse<S: Read + Write>(session: &mut Session<Recorder>, stream: S, greet: bool) -> Result<Option<S>, String> {
    let mut reader = BufReader::new(stream);
    let reply = |reader: &mut BufReader<S>, res: &Response| {
        let out = reader.get_mut();
        res.write_to(out).and_then(|()| out.flush()).map_err(|e| format!("write: {e}"))
    };
    if greet {
        reply(&mut reader, &session.greeting())?;
    }
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(|e| format!("read: {e}"))? == 0 {
            return Ok(None);
        }
        let res = session.process(&line);
        match res.action {
            Action::Reply => reply(&mut reader, &res)?,
            Action::Close => {
                reply(&mut reader, &res)?;
                return Ok(None);
            }
            Action::UpgradeTls => {
                reply(&mut reader, &res)?;
                return Ok(Some(reader.into_inner()));
            }
            Action::NoReply => {}
        }
    }
}
