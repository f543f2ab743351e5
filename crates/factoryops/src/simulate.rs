//! `factoryops simulate`: a fleet of simulated energy meters publishing over real MQTT.
//! It can provision its factories and devices through the API, then reports sent and
//! acknowledged messages and the publish→PUBACK latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parking_lot::Mutex;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::{Value, json};

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
    /// Seconds to publish.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Share of messages carrying an invalid property (a string), 0..1.
    #[arg(long, default_value_t = 0.0)]
    pub bad_ratio: f64,
    /// Factory id prefix: factories are `<prefix>-1`, `<prefix>-2`, …
    #[arg(long, default_value = "sim")]
    pub prefix: String,
}

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

struct Device {
    username: String,
    secret: String,
    topic: String,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if args.qos > 1 {
        bail!("--qos must be 0 or 1");
    }
    if !args.rate.is_finite() || args.rate <= 0.0 || !(0.0..=1.0).contains(&args.bad_ratio) {
        bail!("--rate must be > 0 and --bad-ratio within 0..1");
    }
    let root = args
        .root_password
        .as_deref()
        .context("--root-password (or FACTORYOPS_ROOT_PASSWORD) is needed to provision devices")?;
    let devices = provision(&args, root).await?;
    println!(
        "provisioned {} devices in {} factories; publishing for {} s",
        devices.len(),
        args.factories,
        args.duration
    );

    let (host, port) = args.mqtt.rsplit_once(':').context("--mqtt must be host:port")?;
    let port: u16 = port.parse().context("--mqtt port")?;
    let totals = Arc::new(Totals::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    for (index, device) in devices.into_iter().enumerate() {
        let totals = totals.clone();
        let args = args.clone();
        let host = host.to_string();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = publish_loop(index, device, &host, port, &args, deadline, &totals).await {
                totals.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("device {index}: {e:#}");
            }
        }));
    }
    let progress = {
        let totals = totals.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let secs = started.elapsed().as_secs_f64();
                let acked = totals.acked.load(Ordering::Relaxed);
                println!(
                    "{secs:>6.1} s  sent {:>10}  acked {:>10}  {:>9.0} msg/s acked",
                    totals.sent.load(Ordering::Relaxed),
                    acked,
                    acked as f64 / secs
                );
            }
        })
    };
    for task in tasks {
        let _ = task.await;
    }
    progress.abort();
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = std::mem::take(&mut *totals.latencies_us.lock());
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies.get(((latencies.len().max(1) - 1) as f64 * p) as usize).map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    let acked = totals.acked.load(Ordering::Relaxed);
    println!("---");
    println!(
        "sent {}  acked {}  connection errors {}",
        totals.sent.load(Ordering::Relaxed),
        acked,
        totals.errors.load(Ordering::Relaxed)
    );
    println!(
        "throughput {:.0} msg/s = {:.0} points/s acknowledged over {elapsed:.1} s",
        acked as f64 / elapsed,
        (acked as f64 * args.properties as f64) / elapsed
    );
    if args.qos == 1 {
        println!("publish→PUBACK latency: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms", pct(0.5), pct(0.99), pct(1.0));
    }
    Ok(())
}

/// A realistic-looking message: power, voltage, current, an energy counter, a temperature,
/// then extra sensors up to `count` properties.
fn payload(count: usize, step: u64, phase: f64, bad: bool) -> String {
    let t = step as f64;
    let noise = |k: f64| ((t * 12.9898 + k * 78.233).sin() * 43_758.545).fract() - 0.5;
    let power = 40.0 + 15.0 * (t / 60.0 + phase).sin() + 2.0 * noise(1.0);
    let voltage = 230.0 + 2.0 * noise(2.0);
    let mut fields = serde_json::Map::new();
    let round = |v: f64| (v * 100.0).round() / 100.0;
    let standard = [
        ("power_kw", round(power)),
        ("voltage_v", round(voltage)),
        ("current_a", round(power * 1000.0 / voltage / 3.0)),
        ("energy_kwh", round(t * power / 3600.0 + phase * 1000.0)),
        ("temp_c", round(55.0 + 10.0 * (t / 600.0 + phase).sin() + noise(3.0))),
    ];
    for (name, value) in standard.iter().take(count) {
        fields.insert((*name).into(), json!(value));
    }
    for i in standard.len()..count {
        fields.insert(format!("sensor_{i}"), json!(round(100.0 + 10.0 * noise(i as f64))));
    }
    if bad {
        fields.insert("status".into(), json!("not a number"));
    }
    Value::Object(fields).to_string()
}

async fn publish_loop(
    index: usize,
    device: Device,
    host: &str,
    port: u16,
    args: &SimulateArgs,
    deadline: Instant,
    totals: &Totals,
) -> anyhow::Result<()> {
    let mut options = MqttOptions::new(format!("sim-{index}"), host, port);
    options.set_credentials(device.username, device.secret);
    options.set_keep_alive(Duration::from_secs(60));
    options.set_inflight(64);
    let (client, mut events) = AsyncClient::new(options, 128);
    let qos = if args.qos == 1 { QoS::AtLeastOnce } else { QoS::AtMostOnce };
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let phase = index as f64 * 0.37;
    let bad_every = if args.bad_ratio > 0.0 { (1.0 / args.bad_ratio).round().max(1.0) as u64 } else { 0 };
    let publisher = {
        let client = client.clone();
        let count = args.properties;
        tokio::spawn(async move {
            // Spread the fleet over the first interval instead of bursting together.
            tokio::time::sleep(interval.mul_f64((index % 1000) as f64 / 1000.0)).await;
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut step = 0u64;
            while Instant::now() < deadline {
                ticker.tick().await;
                step += 1;
                let bad = bad_every > 0 && step.is_multiple_of(bad_every);
                if client.publish(&device.topic, qos, false, payload(count, step, phase, bad)).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut sent_at = std::collections::HashMap::new();
    let mut local = Vec::new();
    let drain_until = deadline + Duration::from_secs(5);
    loop {
        // After the deadline: wait for the outstanding PUBACKs (at most 5 s), then leave.
        if Instant::now() >= deadline
            && publisher.is_finished()
            && (sent_at.is_empty() || Instant::now() >= drain_until)
        {
            let _ = client.disconnect().await;
        }
        let polled = match tokio::time::timeout(Duration::from_millis(200), events.poll()).await {
            Ok(polled) => polled,
            Err(_) => continue,
        };
        match polled {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                totals.sent.fetch_add(1, Ordering::Relaxed);
                if qos == QoS::AtMostOnce {
                    totals.acked.fetch_add(1, Ordering::Relaxed);
                } else {
                    sent_at.insert(pkid, Instant::now());
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                totals.acked.fetch_add(1, Ordering::Relaxed);
                if let Some(at) = sent_at.remove(&ack.pkid) {
                    local.push(u32::try_from(at.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => {
                if Instant::now() >= deadline {
                    break;
                }
                publisher.abort();
                totals.latencies_us.lock().extend(local);
                return Err(e).context("mqtt connection");
            }
        }
    }
    let _ = publisher.await;
    totals.latencies_us.lock().extend(local);
    Ok(())
}

async fn provision(args: &SimulateArgs, root_password: &str) -> anyhow::Result<Vec<Device>> {
    let http = factoryops_platform::http::client();
    let api = args.api.trim_end_matches('/');
    let post = |url: String, token: Option<String>, body: Value| {
        let http = http.clone();
        async move {
            let mut request = http.post(url).json(&body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await?;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, body))
        }
    };
    let (status, login) =
        post(format!("{api}/api/v1/platform/login"), None, json!({"username": "root", "password": root_password}))
            .await?;
    if status != 200 {
        bail!("platform login failed ({status}): {login}");
    }
    let root = login["access_token"].as_str().unwrap_or_default().to_string();
    let admin_password = "simulator-password-1";
    let mut devices = Vec::new();
    for f in 1..=args.factories {
        let factory = format!("{}-{f}", args.prefix);
        let (status, body) = post(
            format!("{api}/api/v1/platform/factories"),
            Some(root.clone()),
            json!({"id": factory, "name": format!("Simulated {f}")}),
        )
        .await?;
        if status != 201 && status != 409 {
            bail!("create factory {factory} ({status}): {body}");
        }
        let email = format!("sim@{factory}.example");
        let (status, body) = post(
            format!("{api}/api/v1/platform/factories/{factory}/super-admins"),
            Some(root.clone()),
            json!({"email": email, "name": "Simulator", "password": admin_password}),
        )
        .await?;
        if status != 201 && status != 422 {
            bail!("create super admin in {factory} ({status}): {body}");
        }
        let (status, login) = post(
            format!("{api}/api/v1/factories/{factory}/auth/login"),
            None,
            json!({"email": email, "password": admin_password}),
        )
        .await?;
        if status != 200 {
            bail!("log in to {factory} ({status}): {login}");
        }
        let token = login["access_token"].as_str().unwrap_or_default().to_string();
        for d in 1..=args.devices {
            let device = format!("meter-{d}");
            let (status, body) = post(
                format!("{api}/api/v1/factories/{factory}/devices"),
                Some(token.clone()),
                json!({"id": device, "name": format!("Meter {d}"), "type": "meter"}),
            )
            .await?;
            if status != 201 && status != 409 {
                bail!("register {device} ({status}): {body}");
            }
            let (status, creds) = post(
                format!("{api}/api/v1/factories/{factory}/devices/{device}/credentials"),
                Some(token.clone()),
                json!({}),
            )
            .await?;
            if status != 201 {
                bail!("credentials for {device} ({status}): {creds}");
            }
            devices.push(Device {
                username: creds["username"].as_str().unwrap_or_default().into(),
                secret: creds["secret"].as_str().unwrap_or_default().into(),
                topic: creds["mqtt"]["topic"].as_str().unwrap_or_default().into(),
            });
        }
    }
    Ok(devices)
}
