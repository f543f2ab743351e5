//! Publish → alert-opened latency, end to end (issue 7): a probe device publishes a value
//! above a rule's threshold over MQTT and waits for the `alert.opened` event on the
//! factory's live stream (SSE), then a normal value and waits for `alert.resolved`. Both
//! timestamps come from this process's monotonic clock. It runs while the simulated fleet
//! provides the background load.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Api, SimulateArgs, percentile_ms};

const PROBE_DEVICE: &str = "probe-1";
const PROBE_PROPERTY: &str = "probe_value";
const WAIT: Duration = Duration::from_secs(5);

pub(super) struct Probe {
    api: Api,
    factory: String,
    token: String,
    rule_id: String,
    client: AsyncClient,
    topic: String,
    mqtt: tokio::task::JoinHandle<()>,
}

/// An alert event as seen on the stream: arrival time, `type`, `rule_id`.
type Seen = (Instant, String, String);

pub(super) struct ProbeResult {
    opened_us: Vec<u32>,
    resolved_us: Vec<u32>,
    timeouts: usize,
    stream_reconnects: usize,
}

impl ProbeResult {
    pub(super) fn to_json(&self) -> Value {
        json!({
            "samples": self.opened_us.len(),
            "opened_p50_ms": percentile_ms(&self.opened_us, 0.5),
            "opened_p99_ms": percentile_ms(&self.opened_us, 0.99),
            "opened_max_ms": percentile_ms(&self.opened_us, 1.0),
            "resolved_p50_ms": percentile_ms(&self.resolved_us, 0.5),
            "resolved_p99_ms": percentile_ms(&self.resolved_us, 0.99),
            "timeouts": self.timeouts,
            "stream_reconnects": self.stream_reconnects,
        })
    }
}

impl fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "publish→alert opened (SSE): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} samples, {} timeouts, {} stream reconnects); publish→resolved p50 {:.2} ms  p99 {:.2} ms",
            percentile_ms(&self.opened_us, 0.5),
            percentile_ms(&self.opened_us, 0.99),
            percentile_ms(&self.opened_us, 1.0),
            self.opened_us.len(),
            self.timeouts,
            self.stream_reconnects,
            percentile_ms(&self.resolved_us, 0.5),
            percentile_ms(&self.resolved_us, 0.99),
        )
    }
}

impl Probe {
    /// Registers the probe device and its rule in `<prefix>-1`, connects it.
    pub(super) async fn prepare(args: &SimulateArgs, host: &str, port: u16, token: String) -> anyhow::Result<Self> {
        let api = Api::new(&args.api);
        let factory = format!("{}-1", args.prefix);
        let device = api.device(&token, &factory, PROBE_DEVICE, "probe").await?;
        let (status, rule) = api
            .post(
                &format!("/api/v1/factories/{factory}/rules"),
                Some(&token),
                json!({
                    "name": format!("alert latency probe {}", std::process::id()),
                    "enabled": true,
                    "scope": {"devices": [PROBE_DEVICE]},
                    "condition": {"property": PROBE_PROPERTY, "op": ">", "value": 100},
                    "severity": "info",
                    "message": "{device} {property} = {value}",
                    "auto_resolve": true,
                }),
            )
            .await?;
        if status != 201 {
            bail!("create the probe rule ({status}): {rule}");
        }
        let rule_id = rule["id"].as_str().context("rule id")?.to_string();

        let mut options = MqttOptions::new(device.client_id, host, port);
        if let Some((username, secret)) = device.credentials {
            options.set_credentials(username, secret);
        }
        options.set_keep_alive(Duration::from_secs(60));
        let (client, mut events) = AsyncClient::new(options, 16);
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(anyhow::Error::from(e)),
                }
            }
        })
        .await
        .context("probe: no CONNACK within 10 s")??;
        let mqtt = tokio::spawn(async move {
            loop {
                if events.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Ok(Self { api, factory, token, rule_id, client, topic: device.topic, mqtt })
    }

    /// `samples` excursions spread over the window ending at `deadline`.
    pub(super) async fn run(self, samples: usize, deadline: Instant) -> anyhow::Result<ProbeResult> {
        let (tx, mut rx) = mpsc::channel::<Seen>(64);
        let (reconnects_tx, reconnects_rx) = tokio::sync::watch::channel(0usize);
        let reader = {
            let (api, url, token) = (
                self.api.clone(),
                format!("/api/v1/factories/{}/stream?device_id={PROBE_DEVICE}", self.factory),
                self.token.clone(),
            );
            tokio::spawn(async move { read_stream(api, url, token, tx, reconnects_tx).await })
        };
        // Let the stream subscribe before the first excursion.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let start = Instant::now();
        let window = deadline.saturating_duration_since(start).saturating_sub(WAIT);
        let every = window.checked_div(u32::try_from(samples.max(1)).unwrap_or(u32::MAX)).unwrap_or_default();
        let mut result =
            ProbeResult { opened_us: Vec::new(), resolved_us: Vec::new(), timeouts: 0, stream_reconnects: 0 };
        for i in 0..samples {
            tokio::time::sleep_until((start + every * u32::try_from(i).unwrap_or(u32::MAX)).into()).await;
            if Instant::now() >= deadline {
                break;
            }
            for (value, kind, into) in
                [(150.0, "alert.opened", &mut result.opened_us), (0.0, "alert.resolved", &mut result.resolved_us)]
            {
                while rx.try_recv().is_ok() {}
                let sent = Instant::now();
                self.client
                    .publish(&self.topic, QoS::AtLeastOnce, false, json!({ PROBE_PROPERTY: value }).to_string())
                    .await?;
                let seen = tokio::time::timeout(WAIT, async {
                    while let Some((at, event, rule)) = rx.recv().await {
                        if event == kind && rule == self.rule_id {
                            return Some(at);
                        }
                    }
                    None
                })
                .await;
                match seen {
                    Ok(Some(at)) => into.push(u32::try_from((at - sent).as_micros()).unwrap_or(u32::MAX)),
                    Ok(None) => bail!("the live stream reader stopped"),
                    Err(_) => result.timeouts += 1,
                }
            }
        }
        reader.abort();
        self.mqtt.abort();
        result.opened_us.sort_unstable();
        result.resolved_us.sort_unstable();
        result.stream_reconnects = *reconnects_rx.borrow();
        Ok(result)
    }
}

/// Follows the SSE stream (reconnecting if the server drops it) and forwards alert events.
async fn read_stream(
    api: Api,
    path: String,
    token: String,
    tx: mpsc::Sender<Seen>,
    reconnects: tokio::sync::watch::Sender<usize>,
) {
    loop {
        let response = api.http().get(api.url(&path)).bearer_auth(&token).send().await;
        let mut response = match response {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                eprintln!("probe: live stream answered {}", r.status());
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => {
                eprintln!("probe: live stream: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut text = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            let at = Instant::now();
            text.push_str(&String::from_utf8_lossy(&chunk));
            // Events end with a blank line.
            while let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                let mut name = "";
                let mut data = String::new();
                for line in event.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if name != "alert" {
                    continue;
                }
                let Ok(payload) = serde_json::from_str::<Value>(&data) else { continue };
                let kind = payload["type"].as_str().unwrap_or_default().to_string();
                let rule = payload["rule_id"].as_str().unwrap_or_default().to_string();
                if tx.send((at, kind, rule)).await.is_err() {
                    return;
                }
            }
        }
        reconnects.send_modify(|n| *n += 1);
    }
}
