#![allow(clippy::unwrap_used)]
//! The HTTP edge on both database backends: health, readiness, metrics, problems.

mod common;

use common::{TcpProxy, TestApp, test_config};
use factoryops_platform::secret::SecretUrl;
use factoryops_testkit::{Backend, TestDatabase, backend_matrix};

async fn health_and_readiness(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (status, body) = app.get("/healthz", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    let database = body["checks"].as_array().unwrap().iter().find(|c| c["name"] == "database").unwrap();
    assert_eq!(database["status"], "up");
    app.stop().await;
}

async fn metrics_have_route_histograms(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    app.get("/healthz", None).await;
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("factoryops_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("route=\"/healthz\""), "{text}");
    app.stop().await;
}

async fn errors_are_problems(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (status, body) = app.get("/no/such/route", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["type"], "urn:factoryops:problem:not-found");
    assert_eq!(body["status"], 404);

    let response = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/problem+json"));
    assert!(response.headers().contains_key("allow"));
    app.stop().await;
}

async fn responses_carry_request_ids(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let response = app.client.get(app.url("/healthz")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(!response.headers()["x-request-id"].is_empty());
    app.stop().await;
}

async fn docs_page_is_served_without_cdn(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let page = app.client.get(app.url("/api/docs/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(!html.contains("https://"), "the docs page must not load anything from the internet");
    let (status, doc) = app.get("/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["info"]["title"], "FactoryOps API");
    app.stop().await;
}

backend_matrix!(
    health_and_readiness,
    metrics_have_route_histograms,
    errors_are_problems,
    responses_carry_request_ids,
    docs_page_is_served_without_cdn,
);

#[test]
fn openapi_document_is_checked_in() {
    let generated = factoryops_api::openapi_document().to_pretty_json().unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    if std::env::var("UPDATE_OPENAPI").is_ok() {
        std::fs::write(path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json differs from the API in the code: run `make openapi` and commit the result"
    );
}

/// MariaDB behind a proxy the test cuts: `/readyz` turns 503 and names the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_an_unreachable_database() {
    let Some(db) = TestDatabase::create(Backend::MariaDb).await else { return };
    let proxy = TcpProxy::start("127.0.0.1:3306".parse().unwrap()).await;
    let mut config = test_config(&db);
    config.database_url = Some(SecretUrl::new(db.url.replace("127.0.0.1:3306", &proxy.addr.to_string())));
    let app = TestApp::spawn_with(db, config).await;
    assert_eq!(app.get("/readyz", None).await.0, 200);
    proxy.cut();
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], "urn:factoryops:problem:degraded");
    assert_eq!(body["degraded"], serde_json::json!(["database"]));
    // /healthz still answers: the process is alive, only a dependency is not.
    assert_eq!(app.get("/healthz", None).await.0, 200);
}
