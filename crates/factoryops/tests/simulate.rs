#![allow(clippy::unwrap_used)]
//! `factoryops simulate` provisions its devices through the API and every message it
//! sends is acknowledged and stored.

mod common;

use common::TestApp;
use factoryops_testkit::{Backend, TestDatabase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_provisions_publishes_and_everything_is_acknowledged() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let app = TestApp::spawn(db).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_factoryops"))
        .args(["simulate", "--mqtt", &format!("127.0.0.1:{}", app.mqtt_port), "--api", &app.base])
        .args(["--root-password", common::ROOT_PASSWORD, "--factories", "2", "--devices", "3"])
        .args(["--properties", "6", "--rate", "10", "--duration", "2", "--bad-ratio", "0.2"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let summary = stdout.lines().find(|l| l.starts_with("sent ")).unwrap();
    let numbers: Vec<u64> = summary.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert!(numbers[0] >= 60, "{summary}");
    assert_eq!(numbers[0], numbers[1], "every message acknowledged: {summary}");
    assert_eq!(numbers[2], 0, "no connection errors: {summary}");
    assert!(stdout.contains("publish→PUBACK latency"), "{stdout}");

    let token = app.login("sim-2", "sim@sim-2.example", "simulator-password-1").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, latest) = app.get("/api/v1/factories/sim-2/telemetry/latest?device_id=meter-3", Some(&token)).await;
    assert_eq!(latest["properties"].as_array().unwrap().len(), 6, "{latest}");
    let (_, errors) = app.get("/api/v1/factories/sim-2/devices/meter-3/errors", Some(&token)).await;
    assert_eq!(errors["items"][0]["property"], "status", "bad payloads are recorded: {errors}");
    app.stop().await;
}

/// The numbers of a summary line, in order.
fn numbers(line: &str) -> Vec<f64> {
    line.split_whitespace().filter_map(|w| w.trim_end_matches([',', ')']).parse().ok()).collect()
}

/// `--probe-alerts`: a probe device crosses a rule's threshold and back; every opening
/// and resolution arrives on the live stream and is timed. `--credentials` reuses the
/// provisioned devices on the second run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_measures_alert_latency_and_reuses_credentials() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let app = TestApp::spawn(db).await;
    let credentials = app.db.dir.path().join("credentials.jsonl");
    let run = |extra: &'static [&'static str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_factoryops"));
        command
            .args(["simulate", "--mqtt", &format!("127.0.0.1:{}", app.mqtt_port), "--api", &app.base])
            .args(["--root-password", common::ROOT_PASSWORD, "--devices", "3", "--rate", "5", "--duration", "3"])
            .arg("--credentials")
            .arg(&credentials)
            .args(extra);
        command.output()
    };
    let first = run(&[]).await.unwrap();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&first.stderr));
    assert!(stdout.contains("provisioned 3 devices"), "{stdout}");

    let second = run(&["--probe-alerts", "4", "--json"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&second.stderr));
    assert!(stdout.contains("reusing the credentials of 3 devices"), "{stdout}");
    let summary = stdout.lines().find(|l| l.starts_with("sent ")).unwrap();
    let n = numbers(summary);
    assert_eq!(n[0], n[1], "every message acknowledged: {summary}");
    let probe = stdout.lines().find(|l| l.starts_with("publish→alert opened")).unwrap();
    assert!(probe.contains("(4 samples, 0 timeouts"), "{probe}");
    let result: serde_json::Value =
        serde_json::from_str(stdout.lines().find_map(|l| l.strip_prefix("result ")).unwrap()).unwrap();
    assert_eq!(result["alert_probe"]["samples"], 4, "{result}");
    assert!(result["alert_probe"]["opened_p50_ms"].as_f64().unwrap() > 0.0, "{result}");
    app.stop().await;
}

/// `--anchor --subscribe` against a plain broker (the machine's Mosquitto on 1883, when
/// there is one): no provisioning, and the subscriber counts what the broker relays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_runs_against_a_plain_broker_and_counts_relayed_messages() {
    // `make test` starts Mosquitto when the machine has none; under CI a missing broker fails.
    if let Err(e) = std::net::TcpStream::connect("127.0.0.1:1883") {
        return factoryops_testkit::unavailable("an MQTT broker on 127.0.0.1:1883", &e.to_string()).unwrap_or(());
    }
    let prefix = format!("simtest{}", std::process::id());
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_factoryops"))
        .args(["simulate", "--anchor", "--subscribe", "--mqtt", "127.0.0.1:1883", "--prefix", &prefix])
        .args(["--factories", "2", "--devices", "3", "--rate", "10", "--duration", "2"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let summary = stdout.lines().find(|l| l.starts_with("sent ")).unwrap();
    let n = numbers(summary);
    assert!(n[0] >= 60.0 && n[0] == n[1], "{summary}");
    let relayed = stdout.lines().find(|l| l.starts_with("subscriber received")).unwrap();
    let r = numbers(relayed);
    // Other tests or benchmarks may publish to the same broker: at least ours arrived.
    assert!(r[0] >= n[1], "{relayed}");
}
