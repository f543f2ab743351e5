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
