#![allow(clippy::unwrap_used)]
//! Notifications end to end: MQTT publish → rule → alert → email at a real SMTP server
//! and WhatsApp at the Twilio stand-in; the delivery log, dead letters and their retry,
//! the admins' test message, preferences and `/readyz` while a provider is down.

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, mqtt, test_config};
use factoryops_platform::Config;
use factoryops_platform::secret::{Secret, SecretUrl};
use factoryops_testkit::smtp::{SmtpMode, SmtpSink};
use factoryops_testkit::twilio::{self, TwilioStandIn};
use factoryops_testkit::{TestDatabase, backend_matrix};
use serde_json::{Value, json};

const TOPIC: &str = "factories/plant-a/devices/press-1/telemetry";

fn with_channels(db: &TestDatabase, smtp: &SmtpSink, twilio_standin: Option<&TwilioStandIn>) -> Config {
    let mut config = test_config(db);
    config.smtp_url = Some(SecretUrl::new(smtp.url()));
    config.smtp_from = Some("alerts@factoryops.test".into());
    if let Some(standin) = twilio_standin {
        config.twilio_account_sid = Some(twilio::ACCOUNT_SID.into());
        config.twilio_auth_token = Some(Secret::new(twilio::AUTH_TOKEN));
        config.twilio_from = Some(twilio::FROM.into());
        config.twilio_base_url = standin.base_url();
    }
    config.notify.backoff_base_secs = 1;
    config.notify.backoff_max_secs = 1;
    config
}

struct Plant {
    admin: String,
    admin_id: String,
    secret: String,
}

/// Factory `plant-a` with its super admin (who has a phone number), device `press-1` and
/// a rule notifying the admin, a free address and a WhatsApp number.
async fn plant(app: &TestApp) -> Plant {
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", "boss-password-1").await;
    let (_, me) = app.get("/api/v1/me", Some(&admin)).await;
    let admin_id = me["user"]["id"].as_str().or(me["user_id"].as_str()).unwrap().to_string();
    let (status, body) = app
        .send(
            reqwest::Method::PATCH,
            &format!("/api/v1/factories/plant-a/users/{admin_id}"),
            Some(&admin),
            Some(json!({"phone": "+4915100000009"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let admin =
        app.login("plant-a", "boss@a.example", "boss-password-1").await["access_token"].as_str().unwrap().to_string();
    app.post("/api/v1/factories/plant-a/devices", Some(&admin), json!({"id": "press-1", "name": "P", "type": "press"}))
        .await;
    let (_, creds) = app.post("/api/v1/factories/plant-a/devices/press-1/credentials", Some(&admin), json!({})).await;
    let rule = json!({
        "name": "Compressor overheating", "scope": {"devices": ["press-1"]},
        "condition": {"property": "temp_c", "op": ">", "value": 80},
        "severity": "critical", "message": "{device} {property} = {value} (limit {threshold})",
        "auto_resolve": false,
        "notify": {"users": [admin_id], "emails": ["ops@example.com"], "whatsapp": ["+4915100000001"]}
    });
    let (status, body) = app.post("/api/v1/factories/plant-a/rules", Some(&admin), rule).await;
    assert_eq!(status, 201, "{body}");
    Plant { admin, admin_id, secret: creds["secret"].as_str().unwrap().to_string() }
}

async fn publish(app: &TestApp, secret: &str, temp: f64) {
    let (client, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-1", secret);
    mqtt::connack(&mut el).await.unwrap();
    let payload = json!({"temp_c": temp, "ts": app.clock_now()}).to_string();
    mqtt::publish_acked(&client, &mut el, TOPIC, &payload).await.unwrap();
}

async fn notifications(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/api/v1/factories/plant-a/notifications{query}"), Some(token)).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

async fn wait_log(app: &TestApp, token: &str, query: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let items = notifications(app, token, query).await;
        if done(&items) {
            return items;
        }
        assert!(Instant::now() < deadline, "timed out; log {query}: {items:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn alert_reaches_email_and_whatsapp_and_acknowledgement_follows(db: TestDatabase) {
    let smtp = SmtpSink::start();
    let standin = TwilioStandIn::start().await;
    let config = with_channels(&db, &smtp, Some(&standin));
    let app = TestApp::spawn_with(db, config).await;
    let p = plant(&app).await;

    let published = Instant::now();
    publish(&app, &p.secret, 85.0).await;
    let mails = smtp.wait_for(2, Duration::from_secs(15)).await;
    let latency = mails.iter().map(|m| m.received_at.duration_since(published)).max().unwrap();
    eprintln!("publish → email at the SMTP server: {latency:?}");
    let mut to: Vec<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
    to.sort();
    assert_eq!(to, ["boss@a.example", "ops@example.com"]);
    let mail = &mails[0];
    assert_eq!(
        mail.header("Subject").unwrap(),
        "[CRITICAL] Alert: Compressor overheating on press-1 (Factory plant-a)"
    );
    assert_eq!(mail.header("From").unwrap(), "\"Factory plant-a\" <alerts@factoryops.test>");
    assert!(mail.decoded().contains("press-1 temp_c = 85 (limit 80)"));

    let texts = standin.wait_for(2, Duration::from_secs(15)).await;
    let mut numbers: Vec<&str> = texts.iter().map(|t| t.to.as_str()).collect();
    numbers.sort();
    assert_eq!(numbers, ["whatsapp:+4915100000001", "whatsapp:+4915100000009"]);
    assert!(standin.violations().is_empty(), "{:?}", standin.violations());

    let log = wait_log(&app, &p.admin, "?status=delivered", |items| items.len() == 4).await;
    assert!(log.iter().all(|n| n["kind"] == "opened" && n["attempts"] == 1));
    let alert_id = log[0]["alert_id"].as_str().unwrap().to_string();
    assert!(log.iter().any(|n| n["user_id"] == p.admin_id.as_str()));

    let (status, _) = app
        .post(
            &format!("/api/v1/factories/plant-a/alerts/{alert_id}/acknowledge"),
            Some(&p.admin),
            json!({"note": "on it"}),
        )
        .await;
    assert_eq!(status, 200);
    let mails = smtp.wait_for(4, Duration::from_secs(15)).await;
    let ack = mails.iter().find(|m| m.header("Subject").unwrap().contains("Acknowledged")).unwrap();
    let body = ack.decoded();
    assert!(body.contains("By:       boss@a.example") && body.contains("Note:     on it"), "{body}");
    let (status, one) = app
        .get(&format!("/api/v1/factories/plant-a/notifications/{}", log[0]["id"].as_str().unwrap()), Some(&p.admin))
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["status"], "delivered");
    let _ = app.stop().await;
}

async fn dead_letters_are_listed_and_retried_through_the_api(db: TestDatabase) {
    let smtp = SmtpSink::start();
    smtp.set_mode(SmtpMode::Reject);
    let config = with_channels(&db, &smtp, None);
    let app = TestApp::spawn_with(db, config).await;
    let p = plant(&app).await;
    let (_, viewer) = app.user_with(&p.admin, "plant-a", "viewer@a.example", "viewer", &[]).await;

    publish(&app, &p.secret, 90.0).await;
    // Email is refused for good (550); WhatsApp is not configured: both are dead letters.
    let dead = wait_log(&app, &p.admin, "?status=dead", |items| items.len() == 4).await;
    let email = dead.iter().find(|n| n["recipient"] == "ops@example.com").unwrap();
    assert!(email["last_error"].as_str().unwrap().contains("550"), "{email}");
    let whatsapp = dead.iter().find(|n| n["channel"] == "whatsapp").unwrap();
    assert!(whatsapp["last_error"].as_str().unwrap().contains("FACTORYOPS_TWILIO"), "{whatsapp}");
    let id = email["id"].as_str().unwrap();

    let (status, _) =
        app.post(&format!("/api/v1/factories/plant-a/notifications/{id}/retry"), Some(&viewer), json!({})).await;
    assert_eq!(status, 403, "retry needs alerts:write");
    smtp.set_mode(SmtpMode::Accept);
    let (status, retried) =
        app.post(&format!("/api/v1/factories/plant-a/notifications/{id}/retry"), Some(&p.admin), json!({})).await;
    assert_eq!(status, 200, "{retried}");
    let mails = smtp.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(mails[0].to, ["ops@example.com"]);
    wait_log(&app, &p.admin, "?status=delivered", |items| items.len() == 1).await;
    let (status, problem) =
        app.post(&format!("/api/v1/factories/plant-a/notifications/{id}/retry"), Some(&p.admin), json!({})).await;
    assert_eq!(status, 409, "only dead letters: {problem}");
    let (status, _) = app.get("/api/v1/factories/plant-a/notifications?status=bogus", Some(&p.admin)).await;
    assert_eq!(status, 422);
    let (status, audit) = app.get("/api/v1/factories/plant-a/audit?action=notification.retried", Some(&p.admin)).await;
    assert_eq!(status, 200);
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    let _ = app.stop().await;
}

async fn admins_send_test_messages_and_users_keep_preferences(db: TestDatabase) {
    let smtp = SmtpSink::start();
    let standin = TwilioStandIn::start().await;
    let config = with_channels(&db, &smtp, Some(&standin));
    let app = TestApp::spawn_with(db, config).await;
    let p = plant(&app).await;
    let (_, viewer) = app.user_with(&p.admin, "plant-a", "viewer@a.example", "viewer", &[]).await;

    let (status, queued) =
        app.post("/api/v1/factories/plant-a/notifications/test", Some(&p.admin), json!({"channel": "email"})).await;
    assert_eq!(status, 202, "{queued}");
    assert_eq!((queued["recipient"].as_str(), queued["kind"].as_str()), (Some("boss@a.example"), Some("test")));
    let mails = smtp.wait_for(1, Duration::from_secs(15)).await;
    assert!(mails[0].header("Subject").unwrap().starts_with("FactoryOps test notification"));
    let (status, _) =
        app.post("/api/v1/factories/plant-a/notifications/test", Some(&p.admin), json!({"channel": "whatsapp"})).await;
    assert_eq!(status, 202);
    let texts = standin.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(texts[0].to, "whatsapp:+4915100000009");
    let (status, problem) = app
        .post(
            "/api/v1/factories/plant-a/notifications/test",
            Some(&p.admin),
            json!({"channel": "whatsapp", "to": "0151"}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, _) =
        app.post("/api/v1/factories/plant-a/notifications/test", Some(&viewer), json!({"channel": "email"})).await;
    assert_eq!(status, 403);

    let (status, prefs) = app.get("/api/v1/factories/plant-a/notification-preferences", Some(&viewer)).await;
    assert_eq!(status, 200);
    assert_eq!(prefs, json!({"email": true, "whatsapp": true, "quiet_hours": null}));
    let wanted = json!({"email": true, "whatsapp": false, "quiet_hours": {"from": "22:00", "to": "06:00"}});
    let (status, saved) = app
        .send(
            reqwest::Method::PUT,
            "/api/v1/factories/plant-a/notification-preferences",
            Some(&viewer),
            Some(wanted.clone()),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved, wanted);
    let (status, problem) = app
        .send(
            reqwest::Method::PUT,
            "/api/v1/factories/plant-a/notification-preferences",
            Some(&viewer),
            Some(json!({"email": true, "whatsapp": true, "quiet_hours": {"from": "7", "to": "6"}})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem.to_string().contains("quiet_hours.from") && problem.to_string().contains("quiet_hours.to"),
        "{problem}"
    );
    let (status, problem) = app
        .send(
            reqwest::Method::PUT,
            "/api/v1/factories/plant-a/notification-preferences",
            Some(&viewer),
            Some(json!({"email": false})),
        )
        .await;
    assert_eq!(status, 422, "a PUT replaces everything: missing fields are an error, not a default: {problem}");
    let (_, admin_prefs) = app.get("/api/v1/factories/plant-a/notification-preferences", Some(&p.admin)).await;
    assert_eq!(admin_prefs["whatsapp"], true, "preferences are per user");
    let _ = app.stop().await;
}

async fn a_failing_provider_degrades_readiness_and_messages_wait(db: TestDatabase) {
    let smtp = SmtpSink::reserve();
    let mut config = with_channels(&db, &smtp, None);
    config.notify.breaker_failures = 1;
    config.notify.breaker_open_secs = 1;
    let app = TestApp::spawn_with(db, config).await;
    let (status, ready) = app.get("/readyz", None).await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")), "{ready}");
    let p = plant(&app).await;
    publish(&app, &p.secret, 99.0).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let ready = loop {
        let (status, ready) = app.get("/readyz", None).await;
        assert_eq!(status, 200, "a provider outage does not make the server unready: {ready}");
        if ready["status"] == "degraded" {
            break ready;
        }
        assert!(Instant::now() < deadline, "readiness never degraded: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let check = ready["checks"].as_array().unwrap().iter().find(|c| c["name"] == "notifications").unwrap().clone();
    assert_eq!(check["status"], "degraded");
    assert!(check["detail"].as_str().unwrap().contains("email provider failing"), "{check}");
    let waiting = notifications(&app, &p.admin, "?channel=email").await;
    assert!(waiting.iter().all(|n| n["status"] == "pending" || n["status"] == "sending"), "{waiting:#?}");
    smtp.listen();
    smtp.wait_for(2, Duration::from_secs(20)).await;
    wait_log(&app, &p.admin, "?channel=email&status=delivered", |items| items.len() == 2).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, ready) = app.get("/readyz", None).await;
        if ready["status"] == "ready" {
            break;
        }
        assert!(Instant::now() < deadline, "readiness never recovered: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = app.stop().await;
}

/// A disabled user is no longer a notification target: a rule naming them writes no row
/// for them (the other recipients of the same event still get theirs).
async fn disabled_users_are_not_notified(db: TestDatabase) {
    let smtp = SmtpSink::start();
    let config = with_channels(&db, &smtp, None);
    let app = TestApp::spawn_with(db, config).await;
    let p = plant(&app).await;
    let (leaver, _) = app.user_with(&p.admin, "plant-a", "leaver@a.example", "viewer", &[]).await;
    let rule = json!({
        "name": "Leaver rule", "scope": {"devices": ["press-1"]},
        "condition": {"property": "temp_c", "op": ">", "value": 80}, "severity": "critical",
        "notify": {"users": [leaver.clone()], "emails": ["marker@example.com"]}
    });
    let (status, body) = app.post("/api/v1/factories/plant-a/rules", Some(&p.admin), rule).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = app
        .send(reqwest::Method::DELETE, &format!("/api/v1/factories/plant-a/users/{leaver}"), Some(&p.admin), None)
        .await;
    assert_eq!(status, 204, "the user is disabled");
    publish(&app, &p.secret, 85.0).await;
    // The event's rows are written in one transaction: once the marker's is there, all are.
    let log = wait_log(&app, &p.admin, "", |items| {
        items.iter().any(|n| n["recipient"] == "marker@example.com")
            && items.iter().any(|n| n["user_id"] == p.admin_id.as_str())
    })
    .await;
    assert!(!log.iter().any(|n| n["user_id"] == leaver.as_str()), "a disabled user was notified: {log:#?}");
    assert!(!log.iter().any(|n| n["recipient"] == "leaver@a.example"), "{log:#?}");
    let _ = app.stop().await;
}

backend_matrix!(
    disabled_users_are_not_notified,
    alert_reaches_email_and_whatsapp_and_acknowledgement_follows,
    dead_letters_are_listed_and_retried_through_the_api,
    admins_send_test_messages_and_users_keep_preferences,
    a_failing_provider_degrades_readiness_and_messages_wait,
);
