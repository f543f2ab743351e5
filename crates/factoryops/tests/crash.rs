#![allow(clippy::unwrap_used)]
//! PUBACK means durable: the real binary is SIGKILLed at random moments while a real
//! MQTT client publishes; after every restart each PUBACKed point is readable.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

struct Running {
    child: Child,
    http: String,
    mqtt_port: u16,
}

fn start(data_dir: &std::path::Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_factoryops"))
        .arg("serve")
        .env("FACTORYOPS_DATA_DIR", data_dir)
        .env("FACTORYOPS_HTTP_ADDR", "127.0.0.1:0")
        .env("FACTORYOPS_MQTT_ADDR", "127.0.0.1:0")
        .env("FACTORYOPS_LOG_FORMAT", "json")
        .env("FACTORYOPS_ROOT_PASSWORD", common::ROOT_PASSWORD)
        .env("FACTORYOPS_AUTH__BCRYPT_COST", "4")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<Value>(&line) {
                let message = event["message"].as_str().unwrap_or_default().to_string();
                if message == "http listening" || message == "mqtt listening" {
                    let _ = tx.send((message, event["addr"].as_str().unwrap_or_default().to_string()));
                }
            }
        }
    });
    let (mut http, mut mqtt) = (None, None);
    while http.is_none() || mqtt.is_none() {
        let (what, addr) = rx.recv_timeout(Duration::from_secs(30)).expect("the server logs its addresses");
        if what == "http listening" { http = Some(addr) } else { mqtt = Some(addr) }
    }
    let mqtt_port = mqtt.unwrap().rsplit(':').next().unwrap().parse().unwrap();
    Running { child, http: format!("http://{}", http.unwrap()), mqtt_port }
}

async fn post(client: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pubacked_point_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    let mut server = start(dir.path());
    let root = post(
        &http,
        format!("{}/api/v1/platform/login", server.http),
        None,
        json!({"username": "root", "password": common::ROOT_PASSWORD}),
    )
    .await;
    let root = root["access_token"].as_str().unwrap().to_string();
    post(
        &http,
        format!("{}/api/v1/platform/factories", server.http),
        Some(&root),
        json!({"id": "plant-a", "name": "A"}),
    )
    .await;
    post(
        &http,
        format!("{}/api/v1/platform/factories/plant-a/super-admins", server.http),
        Some(&root),
        json!({"email": "b@a.example", "name": "B", "password": "boss-password-1"}),
    )
    .await;
    let login = post(
        &http,
        format!("{}/api/v1/factories/plant-a/auth/login", server.http),
        None,
        json!({"email": "b@a.example", "password": "boss-password-1"}),
    )
    .await;
    let admin = login["access_token"].as_str().unwrap().to_string();
    post(
        &http,
        format!("{}/api/v1/factories/plant-a/devices", server.http),
        Some(&admin),
        json!({"id": "press-1", "name": "P"}),
    )
    .await;
    let creds = post(
        &http,
        format!("{}/api/v1/factories/plant-a/devices/press-1/credentials", server.http),
        Some(&admin),
        json!({}),
    )
    .await;
    let secret = creds["secret"].as_str().unwrap().to_string();

    let started_ms = chrono_now_ms();
    let mut acked: Vec<u64> = Vec::new();
    let mut seq = 0u64;
    for cycle in 0..20u64 {
        if cycle > 0 {
            server = start(dir.path());
        }
        let (client, mut el) = common::mqtt::client(server.mqtt_port, "plant-a/press-1", &secret);
        assert_eq!(common::mqtt::connack(&mut el).await.unwrap(), rumqttc::ConnectReturnCode::Success);
        // Kill after a pseudo-random 50–300 ms, in the middle of the publishing.
        let kill_after = Duration::from_millis(50 + (cycle * 7919) % 250);
        let pid = server.child.id();
        let killer = tokio::spawn(async move {
            tokio::time::sleep(kill_after).await;
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        });
        loop {
            seq += 1;
            let payload = json!({"seq": seq, "ts": started_ms + i64::try_from(seq).unwrap()}).to_string();
            match common::mqtt::publish_acked(&client, &mut el, "factories/plant-a/devices/press-1/telemetry", &payload)
                .await
            {
                Ok(()) => acked.push(seq),
                Err(_) => break,
            }
        }
        killer.await.unwrap();
        let _ = server.child.wait();
    }
    assert!(acked.len() >= 100, "only {} acknowledged publishes in 20 cycles", acked.len());

    let mut server = start(dir.path());
    let login = post(
        &http,
        format!("{}/api/v1/factories/plant-a/auth/login", server.http),
        None,
        json!({"email": "b@a.example", "password": "boss-password-1"}),
    )
    .await;
    let admin = login["access_token"].as_str().unwrap();
    let from = factoryops_types::format_rfc3339_ms(started_ms);
    let to = factoryops_types::format_rfc3339_ms(started_ms + i64::try_from(seq).unwrap() + 1);
    let url = format!(
        "{}/api/v1/factories/plant-a/telemetry/series?device_id=press-1&property=seq&from={from}&to={to}&limit=100000",
        server.http
    );
    let series: Value = http.get(url).bearer_auth(admin).send().await.unwrap().json().await.unwrap();
    let stored: std::collections::HashSet<u64> =
        series["points"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap() as u64).collect();
    let lost: Vec<u64> = acked.iter().copied().filter(|s| !stored.contains(s)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} PUBACKed points lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(20)]
    );
    let _ = server.child.kill();
    let _ = server.child.wait();
}

fn chrono_now_ms() -> i64 {
    use factoryops_types::Clock;
    factoryops_types::SystemClock.now_ms()
}
