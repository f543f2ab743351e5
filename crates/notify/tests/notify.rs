#![allow(clippy::unwrap_used)]
//! The notification outbox and worker against a real SMTP server (in process) and the
//! Twilio stand-in, on SQLite and MariaDB.

use std::sync::Arc;
use std::time::Duration;

use factoryops_db::Database;
use factoryops_notify::email::{SmtpChannel, SmtpSettings};
use factoryops_notify::enqueue::EnqueueOptions;
use factoryops_notify::health::{HealthConfig, HealthNotifier};
use factoryops_notify::metrics::NotifyMetrics;
use factoryops_notify::whatsapp::{TwilioChannel, TwilioSettings};
use factoryops_notify::worker::{NotificationWorker, WorkerConfig};
use factoryops_notify::{
    AlertNotice, Audience, Channel, ChannelKind, Contact, FactoryProfile, Notification, NotificationQuery,
    NotificationStatus, NotificationStore, Outgoing, Preferences, Recipients, SendError, StaticDirectory,
    enqueue_alert,
};
use factoryops_platform::bus::{Event, EventBus, MemoryBus, topics};
use factoryops_platform::shutdown::Shutdown;
use factoryops_testkit::smtp::{SmtpMode, SmtpSecurity, SmtpSink};
use factoryops_testkit::tls::TestCa;
use factoryops_testkit::twilio::{self, TwilioMode, TwilioStandIn};
use factoryops_testkit::{TestDatabase, backend_matrix};
use factoryops_types::{Clock, FactoryId, ManualClock, SystemClock};

const FACTORY: &str = "plant-a";
const USER: &str = "0192d6c2-0000-7000-8000-000000000001";

async fn open(db: &TestDatabase) -> Database {
    let database = Database::connect(&db.url).await.unwrap();
    database.migrate(&[&factoryops_db::MIGRATIONS, &factoryops_notify::MIGRATIONS]).await.unwrap();
    database
}

fn directory() -> StaticDirectory {
    let mut d = StaticDirectory::default();
    for (id, name) in [(FACTORY, "Plant A"), ("plant-b", "Plant B")] {
        d.factories.insert(id.into(), FactoryProfile { name: name.into(), timezone: "Europe/Berlin".into() });
    }
    d.users.insert(
        (FACTORY.into(), USER.into()),
        Contact { email: "ana@example.com".into(), phone: Some("+4915112345678".into()), active: true },
    );
    d
}

fn factory() -> FactoryId {
    FactoryId::parse(FACTORY).unwrap()
}

fn fast() -> WorkerConfig {
    WorkerConfig {
        backoff_base: Duration::from_millis(40),
        backoff_max: Duration::from_millis(200),
        poll_interval: Duration::from_millis(20),
        send_timeout: Duration::from_secs(5),
        breaker_open: Duration::from_millis(200),
        breaker_max_open: Duration::from_millis(400),
        ..WorkerConfig::default()
    }
}

fn smtp(sink: &SmtpSink) -> Arc<dyn Channel> {
    let settings = SmtpSettings::parse(&sink.url(), "alerts@factoryops.test", Duration::from_secs(5)).unwrap();
    Arc::new(SmtpChannel::new(&settings).unwrap())
}

fn whatsapp(standin: &TwilioStandIn) -> Arc<dyn Channel> {
    Arc::new(
        TwilioChannel::new(&TwilioSettings {
            base_url: standin.base_url(),
            account_sid: twilio::ACCOUNT_SID.into(),
            auth_token: twilio::AUTH_TOKEN.into(),
            from: twilio::FROM.into(),
            timeout: Duration::from_secs(5),
        })
        .unwrap(),
    )
}

fn start(db: &Database, channels: Vec<Arc<dyn Channel>>, config: WorkerConfig) -> (Arc<NotificationWorker>, Shutdown) {
    let shutdown = Shutdown::new();
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let worker = NotificationWorker::new(
        NotificationStore::new(db.clone()),
        channels,
        config,
        Arc::new(SystemClock),
        NotifyMetrics::unregistered(),
        bus,
    );
    worker.spawn(shutdown.clone());
    (worker, shutdown)
}

/// Enqueues one alert event in its own transaction; returns the rows written.
async fn alert(db: &Database, key: &str, severity: &str, recipients: Recipients) -> usize {
    let mut tx = db.begin_write().await.unwrap();
    let f = factory();
    let notice = AlertNotice {
        factory_id: &f,
        alert_id: "0192d6c2-aaaa-7000-8000-000000000001",
        event_key: key,
        kind: "opened",
        rule_name: "Compressor overheating",
        device_id: "press-1",
        severity,
        message: "press-1 temp_c = 85 (limit 80)",
        value: Some("85".into()),
        at_ms: SystemClock.now_ms(),
        by: None,
        note: None,
        recipients: &recipients,
    };
    let audience = Audience::resolve(&directory(), &f, &recipients.users, None).await.unwrap();
    let n =
        enqueue_alert(db, &mut tx, &audience, &notice, &EnqueueOptions::default(), SystemClock.now_ms()).await.unwrap();
    tx.commit().await.unwrap();
    n
}

fn emails(list: &[&str]) -> Recipients {
    Recipients { emails: list.iter().map(|s| s.to_string()).collect(), ..Recipients::default() }
}

async fn log(db: &Database) -> Vec<Notification> {
    NotificationStore::new(db.clone()).list(&factory(), &NotificationQuery::default()).await.unwrap().items
}

async fn wait_until<F: Fn(&[Notification]) -> bool>(db: &Database, what: &str, done: F) -> Vec<Notification> {
    for _ in 0..500 {
        let items = log(db).await;
        if done(&items) {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}; log: {:#?}", log(db).await);
}

fn all(status: NotificationStatus) -> impl Fn(&[Notification]) -> bool {
    move |items| !items.is_empty() && items.iter().all(|n| n.status == status)
}

async fn email_arrives_with_headers_and_bodies(db: TestDatabase) {
    let database = open(&db).await;
    let sink = SmtpSink::start();
    let (_worker, shutdown) = start(&database, vec![smtp(&sink)], fast());
    let recipients = Recipients { users: vec![USER.into()], emails: vec!["ops@example.com".into()], whatsapp: vec![] };
    // Ana gets email (and WhatsApp, which is not configured here), ops@ gets email.
    assert_eq!(alert(&database, "notify:a1:opened:1", "critical", recipients).await, 3);
    let mails = sink.wait_for(2, Duration::from_secs(10)).await;
    let to_ana = mails.iter().find(|m| m.to == ["ana@example.com"]).unwrap();
    assert_eq!(to_ana.from, "alerts@factoryops.test");
    assert_eq!(to_ana.header("From").unwrap(), "\"Plant A\" <alerts@factoryops.test>");
    assert_eq!(to_ana.header("To").unwrap(), "ana@example.com");
    assert_eq!(to_ana.header("Subject").unwrap(), "[CRITICAL] Alert: Compressor overheating on press-1 (Plant A)");
    let items = wait_until(&database, "email delivered, whatsapp dead", |items| {
        items.iter().filter(|n| n.status == NotificationStatus::Delivered).count() == 2
            && items.iter().any(|n| n.status == NotificationStatus::Dead)
    })
    .await;
    let ana = items.iter().find(|n| n.recipient == "ana@example.com").unwrap();
    assert!(to_ana.header("Message-ID").unwrap().contains(&ana.id), "stable Message-ID for dedupe");
    let body = to_ana.decoded();
    assert!(body.contains("multipart/alternative"), "plain text + HTML");
    assert!(body.contains("press-1 temp_c = 85 (limit 80)"));
    assert!(body.contains("Device:   press-1"));
    assert!(body.contains("<h2 style=\"color:#b91c1c\">Alert Compressor overheating</h2>"), "{body}");
    let wa = items.iter().find(|n| n.channel == ChannelKind::Whatsapp).unwrap();
    assert_eq!(wa.recipient, "+4915112345678");
    assert!(wa.last_error.as_deref().unwrap().contains("FACTORYOPS_TWILIO_ACCOUNT_SID"), "names the setting");
    assert_eq!(ana.attempts, 1);
    assert!(ana.delivered_at.is_some());
    shutdown.trigger();
}

async fn smtp_down_then_up_delivers_after_retry(db: TestDatabase) {
    let database = open(&db).await;
    let sink = SmtpSink::reserve();
    let (_worker, shutdown) = start(&database, vec![smtp(&sink)], fast());
    alert(&database, "notify:a2:opened:1", "warning", emails(&["ops@example.com"])).await;
    let items = wait_until(&database, "a failed attempt", |items| {
        items.iter().any(|n| n.attempts >= 1 && n.status == NotificationStatus::Pending && n.last_error.is_some())
    })
    .await;
    assert!(items[0].last_error.as_deref().unwrap().contains("smtp"), "{:?}", items[0].last_error);
    sink.listen();
    sink.wait_for(1, Duration::from_secs(10)).await;
    let items = wait_until(&database, "delivered", all(NotificationStatus::Delivered)).await;
    assert!(items[0].attempts >= 2);
    assert_eq!(sink.received().len(), 1, "exactly once");
    shutdown.trigger();
}

async fn smtp_permanent_refusal_is_a_dead_letter_and_retry_delivers(db: TestDatabase) {
    let database = open(&db).await;
    let sink = SmtpSink::start();
    sink.set_mode(SmtpMode::Reject);
    let (worker, shutdown) = start(&database, vec![smtp(&sink)], fast());
    alert(&database, "notify:a3:opened:1", "critical", emails(&["ops@example.com"])).await;
    let items = wait_until(&database, "dead letter", all(NotificationStatus::Dead)).await;
    assert_eq!(items[0].attempts, 1, "a permanent refusal is not retried");
    assert!(items[0].last_error.as_deref().unwrap().contains("550"), "{:?}", items[0].last_error);
    // Other factories cannot retry it; its own can.
    let store = NotificationStore::new(database.clone());
    let other = FactoryId::parse("plant-b").unwrap();
    assert!(store.retry(&other, &items[0].id, SystemClock.now_ms()).await.is_err());
    sink.set_mode(SmtpMode::Accept);
    let retried = store.retry(&factory(), &items[0].id, SystemClock.now_ms()).await.unwrap();
    assert_eq!((retried.status, retried.attempts), (NotificationStatus::Pending, 0));
    assert!(store.retry(&factory(), &items[0].id, SystemClock.now_ms()).await.is_err(), "only dead letters");
    worker.wake().notify_one();
    sink.wait_for(1, Duration::from_secs(10)).await;
    wait_until(&database, "delivered", all(NotificationStatus::Delivered)).await;
    shutdown.trigger();
}

async fn temporary_failures_retry_then_give_up(db: TestDatabase) {
    let database = open(&db).await;
    let sink = SmtpSink::start();
    sink.set_mode(SmtpMode::TempFail);
    let config = WorkerConfig { breaker_failures: 100, ..fast() };
    let (_worker, shutdown) = start(&database, vec![smtp(&sink)], config);
    let mut tx = database.begin_write().await.unwrap();
    let f = factory();
    let recipients = emails(&["ops@example.com"]);
    let notice = AlertNotice {
        factory_id: &f,
        alert_id: "a4",
        event_key: "notify:a4:opened:1",
        kind: "opened",
        rule_name: "r",
        device_id: "d",
        severity: "info",
        message: "m",
        value: None,
        at_ms: 0,
        by: None,
        note: None,
        recipients: &recipients,
    };
    let options = EnqueueOptions { max_attempts: 3, public_url: None };
    let audience = Audience::resolve(&directory(), &f, &[], None).await.unwrap();
    enqueue_alert(&database, &mut tx, &audience, &notice, &options, SystemClock.now_ms()).await.unwrap();
    tx.commit().await.unwrap();
    let items = wait_until(&database, "dead after 3 attempts", all(NotificationStatus::Dead)).await;
    assert_eq!(items[0].attempts, 3);
    assert!(items[0].last_error.as_deref().unwrap().starts_with("gave up after 3 attempts"));
    assert_eq!(sink.attempts(), 3);
    assert!(sink.received().is_empty());
    shutdown.trigger();
}

async fn replayed_events_and_duplicate_recipients_write_one_row(db: TestDatabase) {
    let database = open(&db).await;
    let recipients = Recipients {
        users: vec![USER.into()],
        emails: vec!["ANA@example.com".into(), "not-an-address".into()],
        whatsapp: vec!["+4915112345678".into(), "0151".into()],
    };
    assert_eq!(alert(&database, "notify:a5:opened:1", "critical", recipients.clone()).await, 2);
    assert_eq!(alert(&database, "notify:a5:opened:1", "critical", recipients.clone()).await, 0, "replay");
    assert_eq!(alert(&database, "notify:a5:reminder:2", "critical", recipients).await, 2, "a new event");
    assert_eq!(log(&database).await.len(), 4);
}

async fn preferences_and_quiet_hours_shape_the_rows(db: TestDatabase) {
    let database = open(&db).await;
    let store = NotificationStore::new(database.clone());
    let f = factory();
    assert_eq!(store.preferences(&f, USER).await.unwrap(), Preferences::default());
    // Quiet all day except one minute: any current time is inside.
    let prefs: Preferences = serde_json::from_value(
        serde_json::json!({"email": true, "whatsapp": false, "quiet_hours": {"from": "00:00", "to": "23:59"}}),
    )
    .unwrap();
    let now = SystemClock.now_ms();
    let saved = store.set_preferences(&f, USER, &prefs, now).await.unwrap();
    assert_eq!(saved, prefs);
    let bad: Preferences = serde_json::from_value(
        serde_json::json!({"email": true, "whatsapp": true, "quiet_hours": {"from": "25:00", "to": "6"}}),
    )
    .unwrap();
    match store.set_preferences(&f, USER, &bad, now).await {
        Err(factoryops_notify::NotifyError::InvalidFields(fields)) => {
            let names: Vec<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
            assert_eq!(names, ["quiet_hours.from", "quiet_hours.to"], "both bad times are named");
        }
        other => panic!("expected a 422 naming both times: {other:?}"),
    }
    let users = Recipients { users: vec![USER.into()], ..Recipients::default() };
    assert_eq!(alert(&database, "notify:a6:opened:1", "warning", users.clone()).await, 1, "email only");
    assert_eq!(alert(&database, "notify:a7:opened:1", "critical", users).await, 1);
    let items = log(&database).await;
    let warning = items.iter().find(|n| n.severity.as_deref() == Some("warning")).unwrap();
    let critical = items.iter().find(|n| n.severity.as_deref() == Some("critical")).unwrap();
    assert_eq!(warning.channel, ChannelKind::Email);
    let berlin = chrono::Utc::now().with_timezone(&chrono_tz::Europe::Berlin).format("%H:%M").to_string();
    if berlin != "23:59" {
        assert!(warning.next_attempt_at > now, "held back until the quiet hours end");
    }
    assert!(critical.next_attempt_at <= SystemClock.now_ms(), "critical alerts ignore quiet hours");
}

async fn whatsapp_requests_have_twilio_shape_and_outcomes(db: TestDatabase) {
    let database = open(&db).await;
    let standin = TwilioStandIn::start().await;
    let config = WorkerConfig { breaker_failures: 100, ..fast() };
    let (_worker, shutdown) = start(&database, vec![whatsapp(&standin)], config);
    let to = |n: &str| Recipients { whatsapp: vec![n.into()], ..Recipients::default() };

    alert(&database, "w:1", "critical", to("+4915100000001")).await;
    let sent = standin.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(sent[0].to, "whatsapp:+4915100000001");
    assert_eq!(sent[0].from, twilio::FROM);
    assert!(sent[0].body.starts_with("[CRITICAL] Alert: Compressor overheating"), "{}", sent[0].body);
    let items = wait_until(&database, "delivered", all(NotificationStatus::Delivered)).await;
    assert_eq!(items[0].provider_id.as_deref(), Some(sent[0].sid.as_str()));

    standin.set_mode(TwilioMode::BadRequest);
    alert(&database, "w:2", "critical", to("+4915100000002")).await;
    let items =
        wait_until(&database, "400 dead letter", |items| items.iter().any(|n| n.status == NotificationStatus::Dead))
            .await;
    let dead = items.iter().find(|n| n.status == NotificationStatus::Dead).unwrap();
    assert_eq!(dead.attempts, 1);
    assert!(dead.last_error.as_deref().unwrap().contains("21211"), "{:?}", dead.last_error);

    for (mode, key, number) in
        [(TwilioMode::TooManyRequests, "w:3", "+4915100000003"), (TwilioMode::ServerError, "w:4", "+4915100000004")]
    {
        standin.set_mode(mode);
        alert(&database, key, "critical", to(number)).await;
        wait_until(&database, "a retryable failure", |items| {
            items.iter().any(|n| n.recipient == number && n.status == NotificationStatus::Pending && n.attempts >= 1)
        })
        .await;
        standin.set_mode(TwilioMode::Created);
        let items = wait_until(&database, "delivered after retry", |items| {
            items.iter().any(|n| n.recipient == number && n.status == NotificationStatus::Delivered)
        })
        .await;
        let n = items.iter().find(|n| n.recipient == number).unwrap();
        assert!(n.attempts >= 2);
    }
    assert!(standin.violations().is_empty(), "{:?}", standin.violations());
    shutdown.trigger();
}

async fn circuit_breaker_keeps_messages_queued_and_recovers(db: TestDatabase) {
    let database = open(&db).await;
    let sink = SmtpSink::reserve();
    let config = WorkerConfig {
        breaker_failures: 2,
        breaker_open: Duration::from_millis(300),
        breaker_max_open: Duration::from_millis(300),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(20),
        ..fast()
    };
    let (worker, shutdown) = start(&database, vec![smtp(&sink)], config);
    for i in 0..5 {
        alert(&database, &format!("cb:{i}"), "critical", emails(&[&format!("ops{i}@example.com")])).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let states = worker.channel_states();
    let email = states.iter().find(|s| s.channel == ChannelKind::Email).unwrap();
    assert!(email.circuit_open, "{states:?}");
    let items = log(&database).await;
    assert!(items.iter().all(|n| n.status == NotificationStatus::Pending || n.status == NotificationStatus::Sending));
    let attempts: i64 = items.iter().map(|n| n.attempts).sum();
    assert!(attempts <= 6, "open circuit: the provider is not hammered ({attempts} attempts)");
    sink.listen();
    sink.wait_for(5, Duration::from_secs(10)).await;
    wait_until(&database, "all delivered", all(NotificationStatus::Delivered)).await;
    assert!(!worker.channel_states().iter().any(|s| s.circuit_open));
    shutdown.trigger();
}

async fn health_events_reach_the_operators_once_and_on_recovery(db: TestDatabase) {
    let database = open(&db).await;
    let sink = SmtpSink::start();
    let (worker, shutdown) = start(&database, vec![smtp(&sink)], fast());
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let config = HealthConfig { emails: vec!["oncall@example.com".into()], ..HealthConfig::default() };
    HealthNotifier::new(NotificationStore::new(database.clone()), config, Arc::new(SystemClock), worker.wake())
        .spawn(&bus, shutdown.clone());
    let event = |status: &str| Event {
        topic: topics::PLATFORM_HEALTH.into(),
        factory_id: None,
        key: factoryops_types::new_id(),
        at_ms: SystemClock.now_ms(),
        payload: serde_json::json!({"component": "tsdb", "status": status, "detail": "influxdb unreachable", "stateful": true}),
    };
    bus.publish(event("degraded")).await.unwrap();
    bus.publish(event("degraded")).await.unwrap();
    let mails = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(mails[0].to, ["oncall@example.com"]);
    assert_eq!(mails[0].header("Subject").unwrap(), "[FactoryOps platform] Degraded: tsdb");
    bus.publish(event("recovered")).await.unwrap();
    let mails = sink.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 2, "raised once, then recovered");
    assert_eq!(mails[1].header("Subject").unwrap(), "[FactoryOps platform] Recovered: tsdb");
    assert!(log(&database).await.is_empty(), "operator messages belong to no factory");
    shutdown.trigger();
}

/// A TLS server with AUTH, and a client URL trusting `ca` through `ca_file` (in `dir`).
fn secure_smtp(sink: &SmtpSink, password: &str, trusted: Option<&TestCa>, dir: &std::path::Path) -> Arc<dyn Channel> {
    let mut url = sink.url_with_login("mailer", password);
    if let Some(ca) = trusted {
        let path = dir.join("private-ca.pem");
        std::fs::write(&path, ca.cert_pem()).unwrap();
        url.push_str(&format!("&ca_file={}", path.display()));
    }
    let settings = SmtpSettings::parse(&url, "alerts@factoryops.test", Duration::from_secs(5)).unwrap();
    Arc::new(SmtpChannel::new(&settings).unwrap())
}

const SMTP_PASSWORD: &str = "s3cret-pass";

/// Real providers take mail only over TLS and after AUTH: STARTTLS on 587 (the default
/// `tls=starttls`) and implicit TLS on 465 (`tls=tls`), the server's certificate signed
/// by a private CA that `ca_file` trusts.
async fn smtp_starttls_and_implicit_tls_with_auth_deliver(db: TestDatabase) {
    let database = open(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("FactoryOps test CA");
    let creds = Some(("mailer", SMTP_PASSWORD));
    let starttls = SmtpSink::start_secure(SmtpSecurity::StartTls(ca.issue(&[])), creds);
    let implicit = SmtpSink::start_secure(SmtpSecurity::ImplicitTls(ca.issue(&[])), creds);
    assert!(starttls.url().ends_with("?tls=starttls") && implicit.url().ends_with("?tls=tls"));
    for (i, sink) in [&starttls, &implicit].into_iter().enumerate() {
        let (_worker, shutdown) =
            start(&database, vec![secure_smtp(sink, SMTP_PASSWORD, Some(&ca), dir.path())], fast());
        alert(&database, &format!("notify:tls{i}:opened:1"), "critical", emails(&["ops@example.com"])).await;
        let mails = sink.wait_for(1, Duration::from_secs(10)).await;
        assert_eq!(mails[0].to, ["ops@example.com"]);
        wait_until(&database, "delivered", all(NotificationStatus::Delivered)).await;
        assert_eq!(sink.auth_failures(), 0);
        shutdown.trigger();
    }
}

/// A wrong password is answered 535: a dead letter at once whose reason says so.
async fn smtp_wrong_password_is_a_dead_letter_with_the_reason(db: TestDatabase) {
    let database = open(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("FactoryOps test CA");
    let sink = SmtpSink::start_secure(SmtpSecurity::StartTls(ca.issue(&[])), Some(("mailer", SMTP_PASSWORD)));
    let (_worker, shutdown) = start(&database, vec![secure_smtp(&sink, "wrong", Some(&ca), dir.path())], fast());
    alert(&database, "notify:auth:opened:1", "critical", emails(&["ops@example.com"])).await;
    let items = wait_until(&database, "dead letter", all(NotificationStatus::Dead)).await;
    assert_eq!(items[0].attempts, 1, "a refused login is not retried");
    let reason = items[0].last_error.as_deref().unwrap();
    assert!(reason.contains("535") && reason.contains("Invalid credentials"), "{reason}");
    assert_eq!(sink.auth_failures(), 1);
    assert!(sink.received().is_empty());
    shutdown.trigger();
}

/// A certificate the client does not trust (no `ca_file`, or another CA's) is refused in
/// the handshake, before AUTH: the password never crosses an unverified connection. The
/// failure is transient (the operator fixes `ca_file` or the server's certificate, and the
/// queued message goes out), and its reason names the certificate problem.
async fn smtp_untrusted_certificate_is_refused_with_a_clear_reason(db: TestDatabase) {
    let database = open(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("FactoryOps test CA");
    let stranger = TestCa::new("Somebody else's CA");
    for (i, security) in
        [SmtpSecurity::StartTls(ca.issue(&[])), SmtpSecurity::ImplicitTls(ca.issue(&[]))].into_iter().enumerate()
    {
        let sink = SmtpSink::start_secure(security, Some(("mailer", SMTP_PASSWORD)));
        let trusted = if i == 0 { None } else { Some(&stranger) };
        let channel = secure_smtp(&sink, SMTP_PASSWORD, trusted, dir.path());
        let (_worker, shutdown) = start(&database, vec![channel], WorkerConfig { breaker_failures: 100, ..fast() });
        let key = format!("notify:cert{i}:opened:1");
        alert(&database, &key, "critical", emails(&["ops@example.com"])).await;
        let items = wait_until(&database, "a failed attempt", |items| {
            items.iter().any(|n| n.attempts >= 1 && n.last_error.is_some())
        })
        .await;
        let row = items.iter().find(|n| n.attempts >= 1).unwrap();
        assert_eq!(row.status, NotificationStatus::Pending, "retried: {row:?}");
        let reason = row.last_error.as_deref().unwrap();
        assert!(reason.contains("certificate") && reason.contains("UnknownIssuer"), "{reason}");
        assert_eq!((sink.auth_failures(), sink.received().len()), (0, 0), "no AUTH, no mail");
        shutdown.trigger();
        // The next case's rows are its own.
        sqlx::query("DELETE FROM notifications").execute(database.pool()).await.unwrap();
    }
}

/// An email channel that never answers (a provider that hangs), counting the attempts.
#[derive(Default)]
struct Hanging {
    calls: std::sync::atomic::AtomicUsize,
    /// Signalled when a send has begun (a permit is kept if nobody waits yet).
    entered: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Channel for Hanging {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }
    async fn send(&self, _: &Outgoing) -> Result<String, SendError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.entered.notify_one();
        std::future::pending().await
    }
}

/// A worker on `clock` and `bus` (the `start` helper has its own).
fn start_on(
    db: &Database,
    channels: Vec<Arc<dyn Channel>>,
    config: WorkerConfig,
    clock: &ManualClock,
    bus: Arc<dyn EventBus>,
) -> (Arc<NotificationWorker>, tokio::task::JoinHandle<()>, Shutdown) {
    let shutdown = Shutdown::new();
    let worker = NotificationWorker::new(
        NotificationStore::new(db.clone()),
        channels,
        config,
        Arc::new(clock.clone()),
        NotifyMetrics::unregistered(),
        bus,
    );
    let task = worker.spawn(shutdown.clone());
    (worker, task, shutdown)
}

/// A worker that dies mid-send (its task is aborted, like a killed process) leaves the
/// row in `sending`. Nobody takes it while the lease runs; once it expires the next worker
/// sends it (attempt 2: at least once, same Message-ID).
async fn a_send_of_a_crashed_worker_is_reclaimed_when_its_lease_expires(db: TestDatabase) {
    let database = open(&db).await;
    let clock = ManualClock::new(SystemClock.now_ms() + 10_000);
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let hanging = Arc::new(Hanging::default());
    let config = WorkerConfig { send_timeout: Duration::from_secs(60), ..fast() };
    let (_a, task, _shutdown_a) =
        start_on(&database, vec![hanging.clone() as Arc<dyn Channel>], config.clone(), &clock, bus.clone());
    alert(&database, "notify:lease:opened:1", "critical", emails(&["ops@example.com"])).await;
    let items = wait_until(&database, "leased", all(NotificationStatus::Sending)).await;
    assert_eq!(items[0].attempts, 1);
    // Kill it mid-send, not between the claim and the send: a busy machine can abort the
    // task in that window, and then the provider was never called.
    tokio::time::timeout(Duration::from_secs(10), hanging.entered.notified()).await.expect("the send began");
    task.abort();
    let _ = task.await;
    // The lease is the send timeout plus 30 s: live for 90 s after the claim.
    let lease_ms = 90_000;
    let store = NotificationStore::new(database.clone());
    assert!(store.claim(ChannelKind::Email, 10, 1_000, clock.now_ms() + lease_ms - 1_000).await.unwrap().is_empty());
    let sink = SmtpSink::start();
    let (b, _task_b, shutdown_b) = start_on(&database, vec![smtp(&sink)], config, &clock, bus);
    clock.advance(lease_ms + 1);
    b.wake().notify_one();
    let mails = sink.wait_for(1, Duration::from_secs(10)).await;
    let items = wait_until(&database, "delivered", all(NotificationStatus::Delivered)).await;
    assert_eq!(items[0].attempts, 2, "the crashed attempt counts");
    assert!(mails[0].header("Message-ID").unwrap().contains(&items[0].id));
    assert_eq!(hanging.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    shutdown_b.trigger();
}

/// A provider that never answers: each send ends at `send_timeout` as a transient failure
/// (retried, the reason says so) until the attempts run out; the dead letters then raise
/// the platform-health alarm (`dead_letter_alarm`) once, on the worker's clock.
async fn send_timeout_retries_then_dead_letters_raise_the_alarm(db: TestDatabase) {
    let database = open(&db).await;
    let clock = ManualClock::new(SystemClock.now_ms() + 10_000);
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let mut health = bus.subscribe(topics::PLATFORM_HEALTH, 64);
    let hanging = Arc::new(Hanging::default());
    let config =
        WorkerConfig { send_timeout: Duration::from_millis(50), breaker_failures: 100, dead_letter_alarm: 2, ..fast() };
    let (worker, _task, shutdown) = start_on(&database, vec![hanging.clone() as Arc<dyn Channel>], config, &clock, bus);
    let f = factory();
    let recipients = emails(&["ops@example.com", "shift@example.com"]);
    let mut tx = database.begin_write().await.unwrap();
    let notice = AlertNotice {
        factory_id: &f,
        alert_id: "a-timeout",
        event_key: "notify:timeout:opened:1",
        kind: "opened",
        rule_name: "r",
        device_id: "d",
        severity: "critical",
        message: "m",
        value: None,
        at_ms: 0,
        by: None,
        note: None,
        recipients: &recipients,
    };
    let options = EnqueueOptions { max_attempts: 2, public_url: None };
    let audience = Audience::resolve(&directory(), &f, &[], None).await.unwrap();
    enqueue_alert(&database, &mut tx, &audience, &notice, &options, clock.now_ms()).await.unwrap();
    tx.commit().await.unwrap();
    worker.wake().notify_one();
    let items = wait_until(&database, "a timed-out attempt", |items| {
        items.iter().any(|n| n.status == NotificationStatus::Pending && n.attempts == 1 && n.last_error.is_some())
    })
    .await;
    let retried = items.iter().find(|n| n.attempts == 1).unwrap();
    assert!(retried.last_error.as_deref().unwrap().contains("no answer within 50ms"), "{retried:?}");
    // Retries wait for their backoff on the worker's clock.
    let dead = loop {
        clock.advance(1_000);
        worker.wake().notify_one();
        let items = log(&database).await;
        if items.iter().all(|n| n.status == NotificationStatus::Dead) {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(dead.iter().all(|n| n.attempts == 2), "{dead:#?}");
    assert!(dead[0].last_error.as_deref().unwrap().starts_with("gave up after 2 attempts: no answer within"));
    // The alarm is checked every 30 s of the worker's clock.
    clock.advance(30_000);
    worker.wake().notify_one();
    let event = loop {
        let delivery = tokio::time::timeout(Duration::from_secs(10), health.next()).await.unwrap().unwrap();
        if delivery.event.payload["component"] == "notifications.dead-letters" {
            break delivery.event;
        }
    };
    assert_eq!(event.payload["status"], "degraded");
    assert!(event.payload["detail"].as_str().unwrap().starts_with("2 notifications became dead letters"), "{event:?}");
    shutdown.trigger();
}

backend_matrix!(
    a_send_of_a_crashed_worker_is_reclaimed_when_its_lease_expires,
    send_timeout_retries_then_dead_letters_raise_the_alarm,
    smtp_starttls_and_implicit_tls_with_auth_deliver,
    smtp_wrong_password_is_a_dead_letter_with_the_reason,
    smtp_untrusted_certificate_is_refused_with_a_clear_reason,
    email_arrives_with_headers_and_bodies,
    smtp_down_then_up_delivers_after_retry,
    smtp_permanent_refusal_is_a_dead_letter_and_retry_delivers,
    temporary_failures_retry_then_give_up,
    replayed_events_and_duplicate_recipients_write_one_row,
    preferences_and_quiet_hours_shape_the_rows,
    whatsapp_requests_have_twilio_shape_and_outcomes,
    circuit_breaker_keeps_messages_queued_and_recovers,
    health_events_reach_the_operators_once_and_on_recovery,
);
