//! `factoryops simulate`: a fleet of simulated energy meters publishing over real MQTT.
//!
//! Against FactoryOps it provisions its factories and devices through the API; with
//! `--anchor` it publishes the same topics and payloads to a plain broker (e.g. the
//! machine's Mosquitto) without credentials. `--subscribe` adds one QoS 1 subscriber to
//! `factories/+/devices/+/telemetry` that counts what the broker relays, so the run
//! reports sent, PUBACKed, received and lost (= PUBACKed − received). `--probe-alerts`
//! measures publish → alert-opened latency through the live stream (see `probe.rs`).
//!
//! All devices connect first (paced by `--connect-rate`, refused CONNECTs are retried);
//! the measurement window of `--duration` seconds starts when the last one is connected.
//! Each device is one task driving its own TCP connection with rumqttc's MQTT 3.1.1 codec
//! (CONNECT, PUBLISH QoS 0/1 with up to `--inflight` unacknowledged, PINGREQ, DISCONNECT);
//! the subscriber and the probe use rumqttc's client.

mod probe;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use parking_lot::Mutex;
use rumqttc::mqttbytes::Error as MqttError;
use rumqttc::mqttbytes::v4 as mqtt;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// The MQTT endpoint, host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: String,
    /// The HTTP API, for provisioning devices.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// Platform root password: creates the factories, a super admin and the devices.
    #[arg(long, env = "FACTORYOPS_ROOT_PASSWORD")]
    pub root_password: Option<String>,
    /// Plain-broker mode (the benchmark anchor): no provisioning, no credentials, same
    /// topics and payloads.
    #[arg(long)]
    pub anchor: bool,
    /// Also subscribe at QoS 1 to `factories/+/devices/+/telemetry` and count what arrives
    /// (for a broker that relays; FactoryOps refuses subscriptions).
    #[arg(long)]
    pub subscribe: bool,
    #[arg(long, default_value_t = 1)]
    pub factories: usize,
    /// Devices per factory.
    #[arg(long, default_value_t = 10)]
    pub devices: usize,
    /// Properties per message.
    #[arg(long, default_value_t = 10)]
    pub properties: usize,
    /// Messages per second per device.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// 0 or 1.
    #[arg(long, default_value_t = 1)]
    pub qos: u8,
    /// Seconds to publish (after every device is connected).
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Share of messages carrying an invalid property (an array), 0..1.
    #[arg(long, default_value_t = 0.0)]
    pub bad_ratio: f64,
    /// Factory id prefix: factories are `<prefix>-1`, `<prefix>-2`, …
    #[arg(long, default_value = "sim")]
    pub prefix: String,
    /// New connections per second while the fleet connects.
    #[arg(long, default_value_t = 500.0)]
    pub connect_rate: f64,
    /// Unacknowledged QoS 1 messages per device connection.
    #[arg(long, default_value_t = 64)]
    pub inflight: u16,
    /// Concurrent API requests while provisioning.
    #[arg(long, default_value_t = 8)]
    pub provision_concurrency: usize,
    /// Measure publish → alert-opened latency this many times during the run (needs
    /// provisioning; creates device `probe-1` and a rule on it in `<prefix>-1`).
    #[arg(long, default_value_t = 0)]
    pub probe_alerts: usize,
    /// Print a machine-readable `result {json}` line at the end.
    #[arg(long)]
    pub json: bool,
    /// Keep the provisioned devices' credentials in this file and reuse them on the next
    /// run (with the same factories and devices) instead of provisioning again.
    #[arg(long)]
    pub credentials: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct Totals {
    connected: AtomicU64,
    connect_retries: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    /// PUBACKs that arrived within the measurement window.
    acked_in_window: AtomicU64,
    errors: AtomicU64,
    received: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

struct Device {
    client_id: String,
    credentials: Option<(String, String)>,
    topic: String,
}

/// The start of the measurement window, once every device is connected.
type Go = watch::Receiver<Option<Instant>>;

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if args.qos > 1 {
        bail!("--qos must be 0 or 1");
    }
    if !args.rate.is_finite() || args.rate <= 0.0 || !(0.0..=1.0).contains(&args.bad_ratio) {
        bail!("--rate must be > 0 and --bad-ratio within 0..1");
    }
    if !args.connect_rate.is_finite() || args.connect_rate <= 0.0 {
        bail!("--connect-rate must be > 0");
    }
    if args.anchor && args.probe_alerts > 0 {
        bail!("--probe-alerts needs the FactoryOps API (not --anchor)");
    }
    let (devices, tokens) = if args.anchor {
        (anchor_devices(&args), Vec::new())
    } else {
        let root = args
            .root_password
            .as_deref()
            .context("--root-password (or FACTORYOPS_ROOT_PASSWORD) is needed to provision devices")?;
        let provisioned = Instant::now();
        let saved = match &args.credentials {
            Some(path) if path.exists() => Some(load_credentials(path, args.factories * args.devices)?),
            _ => None,
        };
        if let Some(devices) = saved {
            let api = Api::new(&args.api);
            let mut tokens = Vec::new();
            if args.probe_alerts > 0 {
                let root = api.root_token(root).await?;
                tokens.push(api.factory_admin(&root, &format!("{}-1", args.prefix), 1).await?);
            }
            println!("reusing the credentials of {} devices", devices.len());
            (devices, tokens)
        } else {
            let (devices, tokens) = provision(&args, root).await?;
            println!(
                "provisioned {} devices in {} factories in {:.1} s",
                devices.len(),
                args.factories,
                provisioned.elapsed().as_secs_f64()
            );
            if let Some(path) = &args.credentials {
                save_credentials(path, &devices)?;
            }
            (devices, tokens)
        }
    };

    let (host, port) = args.mqtt.rsplit_once(':').context("--mqtt must be host:port")?;
    let port: u16 = port.parse().context("--mqtt port")?;
    let totals = Arc::new(Totals::default());
    let (go_tx, go_rx) = watch::channel(None::<Instant>);

    let subscriber = if args.subscribe { Some(subscriber(host, port, totals.clone()).await?) } else { None };
    let probe = if args.probe_alerts > 0 {
        let token = tokens.first().cloned().context("no factory token for the alert probe")?;
        Some(probe::Probe::prepare(&args, host, port, token).await?)
    } else {
        None
    };

    let count = devices.len();
    let connecting = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for (index, device) in devices.into_iter().enumerate() {
        let totals = totals.clone();
        let args = args.clone();
        let host = host.to_string();
        let go = go_rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = device_loop(index, device, &host, port, &args, go, &totals).await {
                totals.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("device {index}: {e:#}");
            }
        }));
    }
    // Wait for the fleet: every device connected, or stuck for 30 s.
    let mut last_change = (Instant::now(), 0);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let connected = totals.connected.load(Ordering::Relaxed);
        let failed = totals.errors.load(Ordering::Relaxed);
        if connected + failed >= count as u64 {
            break;
        }
        if connected != last_change.1 {
            last_change = (Instant::now(), connected);
        } else if last_change.0.elapsed() > Duration::from_secs(30) {
            eprintln!("only {connected} of {count} devices connected; starting anyway");
            break;
        }
    }
    println!(
        "connected {} of {count} devices in {:.1} s ({} refused CONNECTs retried); publishing for {} s",
        totals.connected.load(Ordering::Relaxed),
        connecting.elapsed().as_secs_f64(),
        totals.connect_retries.load(Ordering::Relaxed),
        args.duration
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let _ = go_tx.send(Some(started));

    let probe_task = probe.map(|probe| {
        let samples = args.probe_alerts;
        tokio::spawn(async move { probe.run(samples, deadline).await })
    });
    let progress = {
        let totals = totals.clone();
        tokio::spawn(async move {
            let mut previous = (0u64, 0u64);
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let secs = started.elapsed().as_secs_f64();
                let acked = totals.acked.load(Ordering::Relaxed);
                let received = totals.received.load(Ordering::Relaxed);
                println!(
                    "{secs:>6.1} s  sent {:>10}  acked {:>10} ({:>7.0}/s now)  received {:>10} ({:>7.0}/s now)",
                    totals.sent.load(Ordering::Relaxed),
                    acked,
                    (acked - previous.0) as f64 / 5.0,
                    received,
                    (received - previous.1) as f64 / 5.0,
                );
                previous = (acked, received);
            }
        })
    };
    for task in tasks {
        let _ = task.await;
    }
    let publishing_secs = started.elapsed().as_secs_f64();
    let probe_result = match probe_task {
        Some(task) => Some(task.await.context("alert probe task")??),
        None => None,
    };
    // The subscriber gets what the broker still relays, until nothing arrives for 3 s.
    if let Some(subscriber) = subscriber {
        let mut last = (Instant::now(), totals.received.load(Ordering::Relaxed));
        let acked = totals.acked.load(Ordering::Relaxed);
        while last.1 < acked && last.0.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = totals.received.load(Ordering::Relaxed);
            if now != last.1 {
                last = (Instant::now(), now);
            }
        }
        subscriber.abort();
    }
    progress.abort();

    let mut latencies = std::mem::take(&mut *totals.latencies_us.lock());
    latencies.sort_unstable();
    let pct = |p: f64| percentile_ms(&latencies, p);
    let sent = totals.sent.load(Ordering::Relaxed);
    let acked = totals.acked.load(Ordering::Relaxed);
    let in_window = totals.acked_in_window.load(Ordering::Relaxed);
    let window = args.duration as f64;
    println!("---");
    println!("sent {sent}  acked {acked}  connection errors {}", totals.errors.load(Ordering::Relaxed));
    println!(
        "throughput {:.0} msg/s = {:.0} points/s acknowledged within the {window:.0} s window ({:.0} msg/s incl. the drain, {publishing_secs:.1} s)",
        in_window as f64 / window,
        in_window as f64 * args.properties as f64 / window,
        acked as f64 / publishing_secs,
    );
    if args.qos == 1 {
        println!(
            "publish→PUBACK latency: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} samples)",
            pct(0.5),
            pct(0.99),
            pct(1.0),
            latencies.len()
        );
    }
    let received = totals.received.load(Ordering::Relaxed);
    if args.subscribe {
        println!(
            "subscriber received {received}  lost {} (PUBACKed − received)  relay {:.0} msg/s = {:.0} points/s",
            acked.saturating_sub(received),
            received as f64 / publishing_secs,
            received as f64 * args.properties as f64 / publishing_secs
        );
    }
    if let Some(probe) = &probe_result {
        println!("{probe}");
    }
    if args.json {
        let result = json!({
            "devices": count,
            "connected": totals.connected.load(Ordering::Relaxed),
            "properties": args.properties,
            "rate_per_device": args.rate,
            "window_secs": window,
            "sent": sent,
            "acked": acked,
            "acked_in_window": in_window,
            "msgs_per_sec": in_window as f64 / window,
            "points_per_sec": in_window as f64 * args.properties as f64 / window,
            "puback_p50_ms": pct(0.5),
            "puback_p99_ms": pct(0.99),
            "puback_max_ms": pct(1.0),
            "received": args.subscribe.then_some(received),
            "lost": args.subscribe.then(|| acked.saturating_sub(received)),
            "alert_probe": probe_result.as_ref().map(probe::ProbeResult::to_json),
            "errors": totals.errors.load(Ordering::Relaxed),
        });
        println!("result {result}");
    }
    Ok(())
}

fn save_credentials(path: &std::path::Path, devices: &[Device]) -> anyhow::Result<()> {
    let lines: Vec<String> = devices
        .iter()
        .map(|d| {
            let (username, secret) = d.credentials.clone().unwrap_or_default();
            json!({"client_id": d.client_id, "username": username, "secret": secret, "topic": d.topic}).to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").with_context(|| format!("writing {}", path.display()))
}

fn load_credentials(path: &std::path::Path, expected: usize) -> anyhow::Result<Vec<Device>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut devices = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}: bad line", path.display()))?;
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        devices.push(Device {
            client_id: field("client_id"),
            credentials: Some((field("username"), field("secret"))),
            topic: field("topic"),
        });
    }
    if devices.len() != expected {
        bail!("{} holds {} devices, not {expected}: delete it to provision again", path.display(), devices.len());
    }
    Ok(devices)
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    sorted_us.get(((sorted_us.len().max(1) - 1) as f64 * p) as usize).map_or(0.0, |us| f64::from(*us) / 1000.0)
}

fn anchor_devices(args: &SimulateArgs) -> Vec<Device> {
    let mut devices = Vec::with_capacity(args.factories * args.devices);
    for f in 1..=args.factories {
        for d in 1..=args.devices {
            devices.push(Device {
                client_id: format!("{}-{f}-meter-{d}", args.prefix),
                credentials: None,
                topic: format!("factories/{}-{f}/devices/meter-{d}/telemetry", args.prefix),
            });
        }
    }
    devices
}

/// One QoS 1 subscriber to every device topic; counts the messages it receives.
async fn subscriber(host: &str, port: u16, totals: Arc<Totals>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut options = MqttOptions::new(format!("sim-subscriber-{}", std::process::id()), host, port);
    options.set_keep_alive(Duration::from_secs(60));
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, 16);
    client.subscribe("factories/+/devices/+/telemetry", QoS::AtLeastOnce).await?;
    // Wait for the SUBACK so nothing published afterwards can be missed.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(anyhow::Error::from(e)),
            }
        }
    })
    .await
    .context("no SUBACK within 10 s")??;
    Ok(tokio::spawn(async move {
        let _client = client;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    totals.received.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("subscriber: {e}; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }))
}

/// A realistic-looking message: power, voltage, current, an energy counter, a temperature,
/// then extra sensors up to `count` properties. Built by hand: at tens of thousands of
/// messages per second the simulator's own CPU matters on a shared machine.
fn payload(count: usize, step: u64, phase: f64, bad: bool) -> String {
    let t = step as f64;
    let noise = |k: f64| ((t * 12.9898 + k * 78.233).sin() * 43_758.545).fract() - 0.5;
    let power = 40.0 + 15.0 * (t / 60.0 + phase).sin() + 2.0 * noise(1.0);
    let voltage = 230.0 + 2.0 * noise(2.0);
    let standard = [
        ("power_kw", power),
        ("voltage_v", voltage),
        ("current_a", power * 1000.0 / voltage / 3.0),
        ("energy_kwh", t * power / 3600.0 + phase * 1000.0),
        ("temp_c", 55.0 + 10.0 * (t / 600.0 + phase).sin() + noise(3.0)),
    ];
    let mut out = String::with_capacity(32 + count * 24);
    out.push('{');
    for (i, (name, value)) in standard.iter().take(count).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{name}\":{value:.2}");
    }
    for i in standard.len()..count {
        let _ = write!(out, ",\"sensor_{i}\":{:.2}", 100.0 + 10.0 * noise(i as f64));
    }
    if bad {
        // An array: strings are state labels since ADR 0014, arrays are never accepted.
        out.push_str(if count > 0 { ",\"status\":[\"not a number\"]" } else { "\"status\":[\"not a number\"]" });
    }
    out.push('}');
    out
}

/// Why a device's CONNECT failed.
enum ConnectFailure {
    /// CONNACK with a refusal (e.g. the server's CONNECT rate limit): retry later.
    Refused(mqtt::ConnectReturnCode),
    Other(anyhow::Error),
}

/// TCP connect, CONNECT, CONNACK.
async fn connect(
    host: &str,
    port: u16,
    device: &Device,
    keep_alive_secs: u16,
) -> Result<(tokio::net::TcpStream, BytesMut), ConnectFailure> {
    let other = |e: anyhow::Error| ConnectFailure::Other(e);
    let mut stream = tokio::net::TcpStream::connect((host, port)).await.context("TCP connect").map_err(other)?;
    stream.set_nodelay(true).context("TCP_NODELAY").map_err(other)?;
    let mut connect = mqtt::Connect::new(device.client_id.as_str());
    connect.keep_alive = keep_alive_secs;
    if let Some((username, secret)) = &device.credentials {
        connect.set_login(username.as_str(), secret.as_str());
    }
    let mut out = BytesMut::new();
    mqtt::Packet::Connect(connect).write(&mut out, MAX_PACKET).context("encode CONNECT").map_err(other)?;
    stream.write_all(&out).await.context("send CONNECT").map_err(other)?;
    let mut buf = BytesMut::with_capacity(256);
    loop {
        match mqtt::Packet::read(&mut buf, MAX_PACKET) {
            Ok(mqtt::Packet::ConnAck(ack)) if ack.code == mqtt::ConnectReturnCode::Success => return Ok((stream, buf)),
            Ok(mqtt::Packet::ConnAck(ack)) => return Err(ConnectFailure::Refused(ack.code)),
            Ok(packet) => return Err(other(anyhow::anyhow!("expected CONNACK, got {packet:?}"))),
            Err(MqttError::InsufficientBytes(_)) => {}
            Err(e) => return Err(other(anyhow::anyhow!("bad CONNACK: {e}"))),
        }
        if stream.read_buf(&mut buf).await.context("read CONNACK").map_err(other)? == 0 {
            return Err(other(anyhow::anyhow!("connection closed before CONNACK")));
        }
    }
}

const MAX_PACKET: usize = 1 << 20;

/// Encodes and writes one packet; returns when it was sent (for the keep-alive).
async fn send(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    out: &mut BytesMut,
    packet: mqtt::Packet,
) -> anyhow::Result<tokio::time::Instant> {
    packet.write(out, MAX_PACKET).map_err(|e| anyhow::anyhow!("encode: {e}"))?;
    let sent = write.write_all(out).await;
    out.clear();
    sent?;
    Ok(tokio::time::Instant::now())
}
const KEEP_ALIVE_SECS: u16 = 60;

/// One simulated device: its own MQTT connection, driven directly with rumqttc's MQTT 3.1.1
/// codec (no client event loop per device: at 10k devices and tens of thousands of
/// messages per second the simulator shares the machine with the server it measures).
/// Publishes every `1/rate` s while fewer than `--inflight` QoS 1 messages are unacknowledged.
async fn device_loop(
    index: usize,
    device: Device,
    host: &str,
    port: u16,
    args: &SimulateArgs,
    mut go: Go,
    totals: &Totals,
) -> anyhow::Result<()> {
    let qos = if args.qos == 1 { QoS::AtLeastOnce } else { QoS::AtMostOnce };
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let phase = index as f64 * 0.37;
    let bad_every = if args.bad_ratio > 0.0 { (1.0 / args.bad_ratio).round().max(1.0) as u64 } else { 0 };
    let duration = Duration::from_secs(args.duration);
    let max_inflight = usize::from(args.inflight.max(1));

    // Pace the fleet's CONNECTs.
    tokio::time::sleep(Duration::from_secs_f64(index as f64 / args.connect_rate)).await;
    let mut backoff = Duration::from_millis(250);
    let (stream, mut buf) = loop {
        match tokio::time::timeout(Duration::from_secs(30), connect(host, port, &device, KEEP_ALIVE_SECS)).await {
            Ok(Ok(connected)) => break connected,
            Ok(Err(ConnectFailure::Refused(code))) => {
                // E.g. the server's CONNECT rate limit: come back later, like a real device.
                totals.connect_retries.fetch_add(1, Ordering::Relaxed);
                if backoff > Duration::from_secs(20) {
                    bail!("CONNECT refused: {code:?}");
                }
                let jitter = (index % 97) as f64 / 97.0;
                tokio::time::sleep(backoff.mul_f64(1.0 + jitter)).await;
                backoff *= 2;
            }
            Ok(Err(ConnectFailure::Other(e))) => return Err(e).context("mqtt connect"),
            Err(_) => bail!("no CONNACK within 30 s"),
        }
    };
    totals.connected.fetch_add(1, Ordering::Relaxed);
    let (mut read, mut write) = stream.into_split();
    let mut out = BytesMut::with_capacity(512);
    let ping_every = Duration::from_secs(u64::from(KEEP_ALIVE_SECS) / 2);
    let mut last_sent = tokio::time::Instant::now();

    // Idle (keeping the connection alive) until the whole fleet is connected.
    let start = loop {
        tokio::select! {
            started = async { go.wait_for(Option::is_some).await.ok().and_then(|s| *s) } => {
                break started.unwrap_or_else(Instant::now);
            }
            _ = tokio::time::sleep_until(last_sent + ping_every) => {
                last_sent = send(&mut write, &mut out, mqtt::Packet::PingReq).await.context("send PINGREQ")?;
            }
            n = read.read_buf(&mut buf) => {
                if n.context("read")? == 0 {
                    bail!("connection closed by the server");
                }
                buf.clear(); // PINGRESP
            }
        }
    };
    let deadline = tokio::time::Instant::from_std(start + duration);
    let drain_deadline = deadline + Duration::from_secs(5);
    // Spread the fleet over the first interval instead of bursting together.
    let spread = tokio::time::Instant::now() + interval.mul_f64((index % 1000) as f64 / 1000.0);
    let mut ticker = tokio::time::interval_at(spread.min(deadline), interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut sent_at: std::collections::HashMap<u16, Instant> = std::collections::HashMap::with_capacity(max_inflight);
    let mut latencies = Vec::new();
    let mut next_pkid: u16 = 0;
    let mut step = 0u64;
    let mut publishing = true;
    let result: anyhow::Result<()> = async {
        loop {
            if !publishing && (sent_at.is_empty() || tokio::time::Instant::now() >= drain_deadline) {
                return Ok(());
            }
            tokio::select! {
                _ = ticker.tick(), if publishing && sent_at.len() < max_inflight => {
                    if tokio::time::Instant::now() >= deadline {
                        publishing = false;
                        continue;
                    }
                    step += 1;
                    let bad = bad_every > 0 && step.is_multiple_of(bad_every);
                    let mut publish = mqtt::Publish::new(device.topic.as_str(), qos, payload(args.properties, step, phase, bad));
                    if qos == QoS::AtLeastOnce {
                        next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                        while sent_at.contains_key(&next_pkid) {
                            next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                        }
                        publish.pkid = next_pkid;
                    }
                    last_sent = send(&mut write, &mut out, mqtt::Packet::Publish(publish)).await.context("send PUBLISH")?;
                    totals.sent.fetch_add(1, Ordering::Relaxed);
                    if qos == QoS::AtMostOnce {
                        totals.acked.fetch_add(1, Ordering::Relaxed);
                        totals.acked_in_window.fetch_add(1, Ordering::Relaxed);
                    } else {
                        sent_at.insert(next_pkid, Instant::now());
                    }
                }
                _ = tokio::time::sleep_until(deadline), if publishing => publishing = false,
                _ = tokio::time::sleep_until(drain_deadline), if !publishing => {}
                _ = tokio::time::sleep_until(last_sent + ping_every) => {
                    last_sent = send(&mut write, &mut out, mqtt::Packet::PingReq).await.context("send PINGREQ")?;
                }
                n = read.read_buf(&mut buf) => {
                    if n.context("read")? == 0 {
                        bail!("connection closed by the server");
                    }
                    loop {
                        match mqtt::Packet::read(&mut buf, MAX_PACKET) {
                            Ok(mqtt::Packet::PubAck(ack)) => {
                                totals.acked.fetch_add(1, Ordering::Relaxed);
                                if tokio::time::Instant::now() < deadline {
                                    totals.acked_in_window.fetch_add(1, Ordering::Relaxed);
                                }
                                if let Some(at) = sent_at.remove(&ack.pkid) {
                                    latencies.push(u32::try_from(at.elapsed().as_micros()).unwrap_or(u32::MAX));
                                }
                            }
                            Ok(_) => {}
                            Err(MqttError::InsufficientBytes(_)) => break,
                            Err(e) => bail!("bad packet from the server: {e}"),
                        }
                    }
                }
            }
        }
    }
    .await;
    totals.latencies_us.lock().extend(latencies);
    result?;
    let _ = send(&mut write, &mut out, mqtt::Packet::Disconnect).await;
    let _ = write.shutdown().await;
    Ok(())
}

/// Logs in as the platform root, creates the factories with a super admin each, then
/// registers the devices and issues their secrets (a few requests at a time). Returns
/// the devices and one admin access token per factory.
async fn provision(args: &SimulateArgs, root_password: &str) -> anyhow::Result<(Vec<Device>, Vec<String>)> {
    let api = Api::new(&args.api);
    let root = api.root_token(root_password).await?;
    let mut devices = Vec::new();
    let mut tokens = Vec::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(args.provision_concurrency.max(1)));
    for f in 1..=args.factories {
        let factory = format!("{}-{f}", args.prefix);
        let token = api.factory_admin(&root, &factory, f).await?;
        let mut set = tokio::task::JoinSet::new();
        for d in 1..=args.devices {
            let (api, token, factory, limit) = (api.clone(), token.clone(), factory.clone(), limit.clone());
            set.spawn(async move {
                let _permit = limit.acquire_owned().await?;
                let device = api.device(&token, &factory, &format!("meter-{d}"), "meter").await?;
                anyhow::Ok((d, device))
            });
        }
        let mut factory_devices = Vec::with_capacity(args.devices);
        while let Some(joined) = set.join_next().await {
            factory_devices.push(joined??);
        }
        factory_devices.sort_by_key(|(d, _)| *d);
        devices.extend(factory_devices.into_iter().map(|(_, device)| device));
        tokens.push(token);
    }
    Ok((devices, tokens))
}

/// The few API calls the simulator makes.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

const ADMIN_PASSWORD: &str = "simulator-password-1";

impl Api {
    fn new(base: &str) -> Self {
        Self { http: factoryops_platform::http::client(), base: base.trim_end_matches('/').to_string() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn root_token(&self, root_password: &str) -> anyhow::Result<String> {
        let (status, login) =
            self.post("/api/v1/platform/login", None, json!({"username": "root", "password": root_password})).await?;
        if status != 200 {
            bail!("platform login failed ({status}): {login}");
        }
        Ok(login["access_token"].as_str().unwrap_or_default().to_string())
    }

    /// Creates the factory and its simulator super admin (both may exist), logs in.
    async fn factory_admin(&self, root: &str, factory: &str, number: usize) -> anyhow::Result<String> {
        let (status, body) = self
            .post(
                "/api/v1/platform/factories",
                Some(root),
                json!({"id": factory, "name": format!("Simulated {number}")}),
            )
            .await?;
        if status != 201 && status != 409 {
            bail!("create factory {factory} ({status}): {body}");
        }
        let email = format!("sim@{factory}.example");
        let (status, body) = self
            .post(
                &format!("/api/v1/platform/factories/{factory}/super-admins"),
                Some(root),
                json!({"email": email, "name": "Simulator", "password": ADMIN_PASSWORD}),
            )
            .await?;
        if status != 201 && status != 422 {
            bail!("create super admin in {factory} ({status}): {body}");
        }
        let (status, login) = self
            .post(
                &format!("/api/v1/factories/{factory}/auth/login"),
                None,
                json!({"email": email, "password": ADMIN_PASSWORD}),
            )
            .await?;
        if status != 200 {
            bail!("log in to {factory} ({status}): {login}");
        }
        Ok(login["access_token"].as_str().unwrap_or_default().to_string())
    }

    /// Registers the device (it may exist) and issues a fresh secret.
    async fn device(&self, token: &str, factory: &str, id: &str, kind: &str) -> anyhow::Result<Device> {
        let (status, body) = self
            .post(
                &format!("/api/v1/factories/{factory}/devices"),
                Some(token),
                json!({"id": id, "name": id, "type": kind}),
            )
            .await?;
        if status != 201 && status != 409 {
            bail!("register {id} ({status}): {body}");
        }
        let (status, creds) =
            self.post(&format!("/api/v1/factories/{factory}/devices/{id}/credentials"), Some(token), json!({})).await?;
        if status != 201 {
            bail!("credentials for {id} ({status}): {creds}");
        }
        Ok(Device {
            client_id: format!("{factory}-{id}"),
            credentials: Some((
                creds["username"].as_str().unwrap_or_default().into(),
                creds["secret"].as_str().unwrap_or_default().into(),
            )),
            topic: creds["mqtt"]["topic"].as_str().unwrap_or_default().into(),
        })
    }
}
