#![allow(clippy::unwrap_used)]
//! Crash safety of the real binary under SIGKILL: every PUBACKed point is readable after
//! a restart, and a notification queued before the kill is delivered exactly once after it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::binary::{Running, login, post, provision};
use factoryops_testkit::smtp::SmtpSink;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pubacked_point_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let http = factoryops_platform::http::client();

    let mut server = Running::start(dir.path(), &[]);
    let (_, secret) = provision(&http, &server).await;

    let started_ms = chrono_now_ms();
    let mut acked: Vec<u64> = Vec::new();
    let mut seq = 0u64;
    for cycle in 0..20u64 {
        if cycle > 0 {
            server = Running::start(dir.path(), &[]);
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

    let mut server = Running::start(dir.path(), &[]);
    let admin = login(&http, &server).await;
    let from = factoryops_types::format_rfc3339_ms(started_ms);
    let to = factoryops_types::format_rfc3339_ms(started_ms + i64::try_from(seq).unwrap() + 1);
    let url = format!(
        "{}/api/v1/factories/plant-a/telemetry/series?device_id=press-1&property=seq&from={from}&to={to}&limit=100000",
        server.http
    );
    let series: Value = http.get(url).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
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

/// An alert's email is queued while the SMTP server is down; the server is killed before
/// it could deliver; after the restart (SMTP now up) the email arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_notification_survives_sigkill_and_is_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let http = factoryops_platform::http::client();
    let smtp = SmtpSink::reserve();
    let env = [
        ("FACTORYOPS_SMTP_URL", smtp.url()),
        ("FACTORYOPS_SMTP_FROM", "alerts@factoryops.test".to_string()),
        ("FACTORYOPS_NOTIFY__BACKOFF_BASE_SECS", "1".to_string()),
        ("FACTORYOPS_NOTIFY__BACKOFF_MAX_SECS", "1".to_string()),
    ];
    let mut server = Running::start(dir.path(), &env);
    let (admin, secret) = provision(&http, &server).await;
    let rule = json!({
        "name": "hot", "scope": {"devices": ["press-1"]}, "condition": {"property": "temp_c", "op": ">", "value": 80},
        "severity": "critical", "notify": {"emails": ["ops@example.com"]}
    });
    post(&http, server.url("/api/v1/factories/plant-a/rules"), Some(&admin), rule).await;
    let (client, mut el) = common::mqtt::client(server.mqtt_port, "plant-a/press-1", &secret);
    common::mqtt::connack(&mut el).await.unwrap();
    let payload = json!({"temp_c": 90, "ts": chrono_now_ms()}).to_string();
    common::mqtt::publish_acked(&client, &mut el, "factories/plant-a/devices/press-1/telemetry", &payload)
        .await
        .unwrap();

    // Wait until the notification exists and its first attempt failed (SMTP is down), then kill.
    let url = server.url("/api/v1/factories/plant-a/notifications");
    let mut queued = false;
    for _ in 0..300 {
        let log: Value = http.get(&url).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
        if log["items"].as_array().is_some_and(|items| items.iter().any(|n| n["attempts"].as_i64() >= Some(1))) {
            queued = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(queued, "the alert's email was queued and tried");
    server.kill();

    smtp.listen();
    let mut server = Running::start(dir.path(), &env);
    let mails = smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(mails[0].to, ["ops@example.com"]);
    // Give a duplicate every chance to appear.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.received().len(), 1, "delivered exactly once");
    let admin = login(&http, &server).await;
    let log: Value = http
        .get(server.url("/api/v1/factories/plant-a/notifications"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log["items"][0]["status"], "delivered", "{log}");
    server.kill();
}
