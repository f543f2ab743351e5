#![allow(clippy::unwrap_used)]
//! Identity end to end through the real server, on SQLite and MariaDB.

mod common;

use common::TestApp;
use factoryops_testkit::{TestDatabase, backend_matrix};
use reqwest::Method;
use serde_json::{Value, json};

const PW: &str = "super-secret-pw-1";

fn claims(token: &str) -> Value {
    use std::io::Read;
    let payload = token.split('.').nth(1).unwrap();
    // base64url without padding, decoded by hand to avoid a test-only dependency.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in payload.bytes() {
        let v = alphabet.iter().position(|&a| a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    let mut text = String::new();
    out.as_slice().read_to_string(&mut text).unwrap();
    serde_json::from_str(&text).unwrap()
}

async fn root_manages_factories(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (status, body) =
        app.post("/api/v1/platform/login", None, json!({"username": "root", "password": "wrong-password"})).await;
    assert_eq!(status, 401, "{body}");
    let root = app.root_token().await;

    let (status, body) = app
        .post(
            "/api/v1/platform/factories",
            Some(&root),
            json!({"id": "plant-a", "name": "Plant A", "timezone": "Europe/Berlin"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "active");
    let (status, _) =
        app.post("/api/v1/platform/factories", Some(&root), json!({"id": "plant-a", "name": "Again"})).await;
    assert_eq!(status, 409);
    let (status, body) = app
        .post(
            "/api/v1/platform/factories",
            Some(&root),
            json!({"id": "Plant_A!", "name": "x", "timezone": "Mars/Base"}),
        )
        .await;
    assert_eq!(status, 422);
    let fields: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["id", "timezone"], "{body}");

    let (status, body) = app.get("/api/v1/factories", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["items"], json!([{"id": "plant-a", "name": "Plant A"}]));

    let (status, body) = app
        .send(
            Method::PATCH,
            "/api/v1/platform/factories/plant-a",
            Some(&root),
            Some(json!({"name": "Plant Alpha", "timezone": "America/New_York"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "Plant Alpha");
    assert_eq!(body["timezone"], "America/New_York");
    let (status, _) =
        app.send(Method::PATCH, "/api/v1/platform/factories/nope", Some(&root), Some(json!({"name": "x"}))).await;
    assert_eq!(status, 404);

    // The super admin works until the factory is disabled, then at once no more.
    let (status, body) = app
        .post(
            "/api/v1/platform/factories/plant-a/super-admins",
            Some(&root),
            json!({"email": "boss@a.example", "name": "Boss", "password": PW}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["role"], "super_admin");
    let token = app.login("plant-a", "boss@a.example", PW).await["access_token"].as_str().unwrap().to_string();
    assert_eq!(app.get("/api/v1/factories/plant-a/users", Some(&token)).await.0, 200);
    let (status, _) = app
        .send(Method::PATCH, "/api/v1/platform/factories/plant-a", Some(&root), Some(json!({"status": "disabled"})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.get("/api/v1/factories/plant-a/users", Some(&token)).await.0, 401);
    let (status, _) = app
        .post("/api/v1/factories/plant-a/auth/login", None, json!({"email": "boss@a.example", "password": PW}))
        .await;
    assert_eq!(status, 401);
    assert_eq!(app.get("/api/v1/factories", None).await.1["items"], json!([]));

    // Root cannot read factory data, and factory users cannot reach the platform routes.
    let (status, _) = app
        .send(Method::PATCH, "/api/v1/platform/factories/plant-a", Some(&root), Some(json!({"status": "active"})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.get("/api/v1/factories/plant-a/users", Some(&root)).await.0, 403);
    let token = app.login("plant-a", "boss@a.example", PW).await["access_token"].as_str().unwrap().to_string();
    assert_eq!(app.get("/api/v1/platform/factories", Some(&token)).await.0, 403);
    let (status, me) = app.get("/api/v1/me", Some(&root)).await;
    assert_eq!((status, me["kind"].as_str()), (200, Some("root")));
    app.stop().await;
}

async fn login_is_factory_scoped_and_does_not_enumerate(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    app.factory_with_admin(&root, "plant-a", "same@example.com", "password-of-a-1").await;
    app.factory_with_admin(&root, "plant-b", "same@example.com", "password-of-b-1").await;

    let a = app.login("plant-a", "SAME@example.com", "password-of-a-1").await;
    let b = app.login("plant-b", "same@example.com", "password-of-b-1").await;
    assert_ne!(a["user"]["id"], b["user"]["id"], "two unrelated users");
    assert_eq!(claims(a["access_token"].as_str().unwrap())["factory_id"], "plant-a");

    let attempts = [
        ("plant-a", "same@example.com", "password-of-b-1"),
        ("plant-b", "same@example.com", "password-of-a-1"),
        ("plant-a", "nobody@example.com", "password-of-a-1"),
        ("no-such-plant", "same@example.com", "password-of-a-1"),
        ("Not A Slug", "same@example.com", "password-of-a-1"),
    ];
    let mut bodies = Vec::new();
    for (factory, email, password) in attempts {
        let (status, body) = app
            .post(
                &format!("/api/v1/factories/{factory}/auth/login"),
                None,
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(status, 401, "{factory} {email}");
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "identical answers: {bodies:?}");
    app.stop().await;
}

async fn tokens_carry_the_claims_and_expire(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", PW).await;
    let (_, token) = app.user_with(&admin, "plant-a", "rules@a.example", "admin", &["rules:write"]).await;
    let c = claims(&token);
    for key in ["sub", "factory_id", "role", "perms", "exp", "iat", "jti"] {
        assert!(!c[key].is_null(), "claim {key} in {c}");
    }
    assert_eq!(c["role"], "admin");
    assert_eq!(c["perms"], json!(["data:read", "rules:write"]));
    assert!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap() <= 900);

    let (status, me) = app.get("/api/v1/me", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(me["user"]["email"], "rules@a.example");
    assert_eq!(me["factory"]["id"], "plant-a");
    assert_eq!(me["permissions"], json!(["data:read", "rules:write"]));

    app.clock.advance(901_000);
    let (status, body) = app.get("/api/v1/me", Some(&token)).await;
    assert_eq!(status, 401);
    assert!(body["detail"].as_str().unwrap().contains("expired"), "{body}");
    assert_eq!(app.get("/api/v1/me", Some("not.a.jwt")).await.0, 401);
    assert_eq!(app.get("/api/v1/me", None).await.0, 401);
    app.stop().await;
}

async fn refresh_rotates_and_reuse_revokes_the_family(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    app.factory_with_admin(&root, "plant-a", "boss@a.example", PW).await;
    let first = app.login("plant-a", "boss@a.example", PW).await;
    let r1 = first["refresh_token"].as_str().unwrap();

    let (status, second) = app.post("/api/v1/factories/plant-a/auth/refresh", None, json!({"refresh_token": r1})).await;
    assert_eq!(status, 200, "{second}");
    let r2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2);
    let access2 = second["access_token"].as_str().unwrap();
    assert_eq!(app.get("/api/v1/me", Some(access2)).await.0, 200);

    // The wrong factory never accepts the token.
    let (status, _) = app.post("/api/v1/factories/plant-b/auth/refresh", None, json!({"refresh_token": r2})).await;
    assert_eq!(status, 401);

    // r1 again: stolen or replayed. The family dies, r2 and its access token with it.
    let (status, _) = app.post("/api/v1/factories/plant-a/auth/refresh", None, json!({"refresh_token": r1})).await;
    assert_eq!(status, 401);
    let (status, _) = app.post("/api/v1/factories/plant-a/auth/refresh", None, json!({"refresh_token": r2})).await;
    assert_eq!(status, 401);
    assert_eq!(app.get("/api/v1/me", Some(access2)).await.0, 401);

    let admin = app.login("plant-a", "boss@a.example", PW).await;
    let admin_token = admin["access_token"].as_str().unwrap();
    let (_, audit) = app.get("/api/v1/factories/plant-a/audit?action=token.reuse_detected", Some(admin_token)).await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");

    // Logout ends the session: refresh and access token both stop working.
    let refresh = admin["refresh_token"].as_str().unwrap();
    let (status, _) = app.post("/api/v1/factories/plant-a/auth/logout", None, json!({"refresh_token": refresh})).await;
    assert_eq!(status, 204);
    assert_eq!(
        app.post("/api/v1/factories/plant-a/auth/refresh", None, json!({"refresh_token": refresh})).await.0,
        401
    );
    assert_eq!(app.get("/api/v1/me", Some(admin_token)).await.0, 401);

    // The platform root rotates too.
    let (_, root_login) =
        app.post("/api/v1/platform/login", None, json!({"username": "root", "password": common::ROOT_PASSWORD})).await;
    let (status, _) =
        app.post("/api/v1/platform/refresh", None, json!({"refresh_token": root_login["refresh_token"]})).await;
    assert_eq!(status, 200);
    app.stop().await;
}

async fn roles_and_permission_flags(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", PW).await;
    let (_, devices_admin) = app.user_with(&admin, "plant-a", "dev@a.example", "admin", &["devices:write"]).await;
    let (_, users_reader) = app.user_with(&admin, "plant-a", "hr@a.example", "admin", &["users:read"]).await;
    let (viewer_id, viewer) = app.user_with(&admin, "plant-a", "view@a.example", "viewer", &[]).await;

    let new_user = json!({"email": "x@a.example", "name": "X", "role": "viewer", "password": "long-enough-pw"});
    for token in [&devices_admin, &users_reader, &viewer] {
        assert_eq!(app.post("/api/v1/factories/plant-a/users", Some(token), new_user.clone()).await.0, 403);
        assert_eq!(app.get("/api/v1/factories/plant-a/api-keys", Some(token)).await.0, 403);
        assert_eq!(app.get("/api/v1/factories/plant-a/audit", Some(token)).await.0, 403);
    }
    assert_eq!(app.get("/api/v1/factories/plant-a/users", Some(&devices_admin)).await.0, 403);
    assert_eq!(app.get("/api/v1/factories/plant-a/users", Some(&viewer)).await.0, 403);
    let (status, users) = app.get("/api/v1/factories/plant-a/users", Some(&users_reader)).await;
    assert_eq!(status, 200);
    assert_eq!(users["items"].as_array().unwrap().len(), 4);

    // A permission change takes effect with the next token: the old one is refused.
    app.clock.advance(1_000);
    let (status, body) = app
        .send(
            Method::PATCH,
            &format!("/api/v1/factories/plant-a/users/{viewer_id}"),
            Some(&admin),
            Some(json!({"role": "admin", "permissions": ["alerts:write"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["permissions"], json!(["alerts:write"]));
    assert_eq!(app.get("/api/v1/me", Some(&viewer)).await.0, 401);
    let fresh = app.login("plant-a", "view@a.example", "user-password-123").await;
    assert_eq!(fresh["user"]["role"], "admin");

    // A viewer cannot hold flags; the last super admin cannot be demoted.
    let (status, body) = app.post("/api/v1/factories/plant-a/users", Some(&admin), json!({"email": "v2@a.example", "name": "V", "role": "viewer", "permissions": ["rules:write"], "password": "long-enough-pw"})).await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "permissions");
    let me = app.get("/api/v1/me", Some(&admin)).await.1;
    let boss_id = me["user"]["id"].as_str().unwrap();
    let (status, _) = app
        .send(
            Method::PATCH,
            &format!("/api/v1/factories/plant-a/users/{boss_id}"),
            Some(&admin),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, 409);
    app.stop().await;
}

async fn disabled_user_is_refused_at_the_next_request(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", PW).await;
    let (id, token) = app.user_with(&admin, "plant-a", "leaver@a.example", "viewer", &[]).await;
    assert_eq!(app.get("/api/v1/me", Some(&token)).await.0, 200);
    let (status, _) =
        app.send(Method::DELETE, &format!("/api/v1/factories/plant-a/users/{id}"), Some(&admin), None).await;
    assert_eq!(status, 204);
    assert_eq!(app.get("/api/v1/me", Some(&token)).await.0, 401);
    let (status, _) = app
        .post(
            "/api/v1/factories/plant-a/auth/login",
            None,
            json!({"email": "leaver@a.example", "password": "user-password-123"}),
        )
        .await;
    assert_eq!(status, 401);
    let (_, user) = app.get(&format!("/api/v1/factories/plant-a/users/{id}"), Some(&admin)).await;
    assert_eq!(user["status"], "disabled");
    app.stop().await;
}

async fn passwords_change_and_reset(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", PW).await;
    let (id, token) = app.user_with(&admin, "plant-a", "op@a.example", "viewer", &[]).await;

    let path = "/api/v1/factories/plant-a/auth/password";
    let (status, body) = app
        .post(path, Some(&token), json!({"current_password": "wrong-one-123", "new_password": "brand-new-pw-1"}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "current_password");
    let (status, body) =
        app.post(path, Some(&token), json!({"current_password": "user-password-123", "new_password": "short"})).await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "new_password");
    let (status, body) = app
        .post(path, Some(&token), json!({"current_password": "user-password-123", "new_password": "op@a.example"}))
        .await;
    assert_eq!(status, 422, "{body}");
    app.clock.advance(1_000);
    let (status, _) = app
        .post(path, Some(&token), json!({"current_password": "user-password-123", "new_password": "brand-new-pw-1"}))
        .await;
    assert_eq!(status, 204);
    assert_eq!(app.get("/api/v1/me", Some(&token)).await.0, 401, "sessions end with the password change");
    app.login("plant-a", "op@a.example", "brand-new-pw-1").await;

    app.clock.advance(1_000);
    let (status, _) = app
        .post(
            &format!("/api/v1/factories/plant-a/users/{id}/password"),
            Some(&admin),
            json!({"password": "reset-by-admin-1"}),
        )
        .await;
    assert_eq!(status, 204);
    app.login("plant-a", "op@a.example", "reset-by-admin-1").await;
    app.stop().await;
}

async fn api_keys_are_shown_once_and_revocable(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", PW).await;
    let (status, created) = app
        .post(
            "/api/v1/factories/plant-a/api-keys",
            Some(&admin),
            json!({"name": "gateway", "permissions": ["telemetry:write", "data:read"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("fo_"));
    let (_, list) = app.get("/api/v1/factories/plant-a/api-keys", Some(&admin)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&key), "the key is never shown again");

    let (status, me) = app.get("/api/v1/me", Some(&key)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["kind"], "api_key");
    assert_eq!(me["factory"]["id"], "plant-a");
    // Keys are machine credentials: no user management.
    assert_eq!(app.get("/api/v1/factories/plant-a/users", Some(&key)).await.0, 403);

    let (status, body) = app
        .post(
            "/api/v1/factories/plant-a/api-keys",
            Some(&admin),
            json!({"name": "bad", "permissions": ["telemetry:write", "launch:rockets"]}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "permissions[1]");
    let (status, body) = app
        .post(
            "/api/v1/factories/plant-a/api-keys",
            Some(&admin),
            json!({"name": "old", "permissions": ["data:read"], "expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "expires_at");

    let id = created["id"].as_str().unwrap();
    let (status, _) =
        app.send(Method::DELETE, &format!("/api/v1/factories/plant-a/api-keys/{id}"), Some(&admin), None).await;
    assert_eq!(status, 204);
    assert_eq!(app.get("/api/v1/me", Some(&key)).await.0, 401);
    assert_eq!(app.get("/api/v1/me", Some("fo_0000")).await.0, 401);

    // An expiring key stops working when its time comes.
    let soon = factoryops_types::format_rfc3339_ms(app.clock_now() + 60_000);
    let (_, expiring) = app
        .post(
            "/api/v1/factories/plant-a/api-keys",
            Some(&admin),
            json!({"name": "temp", "permissions": ["data:read"], "expires_at": soon}),
        )
        .await;
    let temp = expiring["key"].as_str().unwrap();
    assert_eq!(app.get("/api/v1/me", Some(temp)).await.0, 200);
    app.clock.advance(61_000);
    assert_eq!(app.get("/api/v1/me", Some(temp)).await.0, 401);
    app.stop().await;
}

async fn audit_log_records_and_filters(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", PW).await;
    app.user_with(&admin, "plant-a", "u1@a.example", "viewer", &[]).await;
    let (status, _) = app
        .post(
            "/api/v1/factories/plant-a/auth/login",
            None,
            json!({"email": "u1@a.example", "password": "not-the-password"}),
        )
        .await;
    assert_eq!(status, 401);

    let (status, all) = app.get("/api/v1/factories/plant-a/audit", Some(&admin)).await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = all["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for expected in ["factory.created", "super_admin.created", "login.succeeded", "user.created", "login.failed"] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    let failed = &all["items"].as_array().unwrap().iter().find(|e| e["action"] == "login.failed").unwrap().clone();
    assert_eq!(failed["target"], "u1@a.example");
    assert_eq!(failed["source_ip"], "127.0.0.1");

    let (_, page1) = app.get("/api/v1/factories/plant-a/audit?limit=2", Some(&admin)).await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = app.get(&format!("/api/v1/factories/plant-a/audit?limit=2&cursor={cursor}"), Some(&admin)).await;
    assert_ne!(page1["items"][0]["id"], page2["items"][0]["id"]);

    let (_, created) = app.get("/api/v1/factories/plant-a/audit?action=user.created", Some(&admin)).await;
    assert_eq!(created["items"].as_array().unwrap().len(), 1);
    let (status, body) = app.get("/api/v1/factories/plant-a/audit?from=yesterday", Some(&admin)).await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "from");
    app.stop().await;
}

async fn logins_are_rate_limited(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    app.factory_with_admin(&root, "plant-a", "boss@a.example", PW).await;
    let mut last = (0, Value::Null);
    for _ in 0..12 {
        last = app
            .post(
                "/api/v1/factories/plant-a/auth/login",
                None,
                json!({"email": "boss@a.example", "password": "guessing-pw-1"}),
            )
            .await;
    }
    assert_eq!(last.0, 429, "{}", last.1);
    assert!(last.1["retry_after"].as_u64().unwrap() > 0);
    let response = app
        .client
        .post(app.url("/api/v1/factories/plant-a/auth/login"))
        .json(&json!({"email": "boss@a.example", "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    // Another account from the same address is still allowed (the per-IP limit is higher).
    let (status, _) = app
        .post(
            "/api/v1/factories/plant-a/auth/login",
            None,
            json!({"email": "other@a.example", "password": "whatever-pw-1"}),
        )
        .await;
    assert_eq!(status, 401);
    app.clock.advance(301_000);
    app.login("plant-a", "boss@a.example", PW).await;
    app.stop().await;
}

async fn bad_input_names_the_field(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", PW).await;
    let users = "/api/v1/factories/plant-a/users";
    let cases = [
        (json!({"email": "not-an-email", "name": "N", "role": "viewer", "password": "long-enough-pw"}), "email"),
        (
            json!({"email": "a@a.example", "name": "N".repeat(201), "role": "viewer", "password": "long-enough-pw"}),
            "name",
        ),
        (json!({"email": "a@a.example", "name": "N", "role": "overlord", "password": "long-enough-pw"}), "role"),
        (
            json!({"email": "a@a.example", "name": "N", "role": "admin", "permissions": ["x:y"], "password": "long-enough-pw"}),
            "permissions[0]",
        ),
        (json!({"email": "a@a.example", "name": "N", "role": "viewer", "password": "short"}), "password"),
        (
            json!({"email": "a@a.example", "name": "N", "role": "viewer", "password": "long-enough-pw", "phone": "12345"}),
            "phone",
        ),
        (json!({"email": "a@a.example", "name": "N", "role": "viewer"}), "password"),
        (json!({"email": 7, "name": "N", "role": "viewer", "password": "long-enough-pw"}), "email"),
    ];
    for (body, field) in cases {
        let (status, problem) = app.post(users, Some(&admin), body.clone()).await;
        assert_eq!(status, 422, "{body} -> {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{body} -> {problem}");
    }
    let (status, _) = app
        .post(
            users,
            Some(&admin),
            json!({"email": "dup@a.example", "name": "N", "role": "viewer", "password": "long-enough-pw"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, problem) = app
        .post(
            users,
            Some(&admin),
            json!({"email": "DUP@a.example", "name": "N", "role": "viewer", "password": "long-enough-pw"}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["field"], "email");

    let raw = |body: &'static str| {
        app.client.post(app.url(users)).bearer_auth(&admin).header("content-type", "application/json").body(body).send()
    };
    let response = raw("{\"email\": ").await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["type"], "urn:factoryops:problem:malformed-json");
    let response = app.client.post(app.url(users)).bearer_auth(&admin).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 415);
    let huge = format!("{{\"email\": \"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let response = app
        .client
        .post(app.url(users))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/problem+json"));
    app.stop().await;
}

async fn refresh_tokens_expire_after_their_lifetime(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    app.factory_with_admin(&root, "plant-a", "boss@a.example", PW).await;
    let refresh_path = "/api/v1/factories/plant-a/auth/refresh";
    let lifetime_ms = 30 * 24 * 3600 * 1000_i64;

    // Just before the end of its lifetime the token still rotates; the new one lives anew.
    let first = app.login("plant-a", "boss@a.example", PW).await;
    app.clock.advance(lifetime_ms - 60_000);
    let (status, second) = app.post(refresh_path, None, json!({"refresh_token": first["refresh_token"]})).await;
    assert_eq!(status, 200, "{second}");

    // A token left unused past its lifetime is refused, and no longer rotates.
    app.clock.advance(lifetime_ms + 1_000);
    let (status, body) = app.post(refresh_path, None, json!({"refresh_token": second["refresh_token"]})).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = app.post(refresh_path, None, json!({"refresh_token": second["refresh_token"]})).await;
    assert_eq!(status, 401);
    // It expired, it was not reused: the audit says nothing about reuse.
    let admin = app.login("plant-a", "boss@a.example", PW).await;
    let token = admin["access_token"].as_str().unwrap();
    let (_, audit) = app.get("/api/v1/factories/plant-a/audit?action=token.reuse_detected", Some(token)).await;
    assert_eq!(audit["items"], json!([]), "{audit}");
    app.stop().await;
}

async fn an_admins_password_reset_ends_the_users_sessions(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", PW).await;
    let (id, _) = app.user_with(&admin, "plant-a", "op@a.example", "viewer", &[]).await;
    let session = app.login("plant-a", "op@a.example", "user-password-123").await;
    let access = session["access_token"].as_str().unwrap();
    assert_eq!(app.get("/api/v1/me", Some(access)).await.0, 200);

    app.clock.advance(1_000);
    let (status, _) = app
        .post(
            &format!("/api/v1/factories/plant-a/users/{id}/password"),
            Some(&admin),
            json!({"password": "reset-by-admin-1"}),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(app.get("/api/v1/me", Some(access)).await.0, 401, "the access token ends");
    let (status, _) = app
        .post("/api/v1/factories/plant-a/auth/refresh", None, json!({"refresh_token": session["refresh_token"]}))
        .await;
    assert_eq!(status, 401, "the refresh token ends");
    let (status, _) = app
        .post(
            "/api/v1/factories/plant-a/auth/login",
            None,
            json!({"email": "op@a.example", "password": "user-password-123"}),
        )
        .await;
    assert_eq!(status, 401, "the old password ends");
    app.login("plant-a", "op@a.example", "reset-by-admin-1").await;
    let (_, audit) = app.get("/api/v1/factories/plant-a/audit?action=user.password_reset", Some(&admin)).await;
    assert_eq!(audit["items"][0]["target"], id.as_str(), "{audit}");
    app.stop().await;
}

async fn api_keys_of_a_disabled_factory_are_refused(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", PW).await;
    let (status, created) = app
        .post(
            "/api/v1/factories/plant-a/api-keys",
            Some(&admin),
            json!({"name": "gateway", "permissions": ["telemetry:write", "data:read"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap();
    assert_eq!(app.get("/api/v1/me", Some(key)).await.0, 200);
    assert_eq!(app.get("/api/v1/factories/plant-a/devices", Some(key)).await.0, 200);

    let factory = "/api/v1/platform/factories/plant-a";
    let (status, _) = app.send(Method::PATCH, factory, Some(&root), Some(json!({"status": "disabled"}))).await;
    assert_eq!(status, 200);
    assert_eq!(app.get("/api/v1/me", Some(key)).await.0, 401);
    assert_eq!(app.get("/api/v1/factories/plant-a/devices", Some(key)).await.0, 401);
    let (status, _) =
        app.post("/api/v1/factories/plant-a/telemetry", Some(key), json!({"device_id": "d1", "t": 1})).await;
    assert_eq!(status, 401, "no ingestion either");

    // Enabled again, the key (never revoked) works again.
    let (status, _) = app.send(Method::PATCH, factory, Some(&root), Some(json!({"status": "active"}))).await;
    assert_eq!(status, 200);
    assert_eq!(app.get("/api/v1/me", Some(key)).await.0, 200);
    app.stop().await;
}

async fn two_concurrent_refreshes_with_one_token_count_as_reuse(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    app.factory_with_admin(&root, "plant-a", "boss@a.example", PW).await;
    let path = "/api/v1/factories/plant-a/auth/refresh";
    for round in 0..5 {
        let session = app.login("plant-a", "boss@a.example", PW).await;
        let body = json!({"refresh_token": session["refresh_token"]});
        let (a, b) = tokio::join!(app.post(path, None, body.clone()), app.post(path, None, body.clone()));
        let mut statuses = [a.0, b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 401], "round {round}: one rotates, the other is reuse");
        // Whatever the winner got died with the family.
        let winner = if a.0 == 200 { a.1 } else { b.1 };
        let (status, _) = app.post(path, None, json!({"refresh_token": winner["refresh_token"]})).await;
        assert_eq!(status, 401, "round {round}: the winner's refresh token is revoked");
        let access = winner["access_token"].as_str().unwrap();
        assert_eq!(app.get("/api/v1/me", Some(access)).await.0, 401, "round {round}: and its access token");
    }
    let admin = app.login("plant-a", "boss@a.example", PW).await;
    let token = admin["access_token"].as_str().unwrap();
    let (_, audit) = app.get("/api/v1/factories/plant-a/audit?action=token.reuse_detected", Some(token)).await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 5, "{audit}");
    app.stop().await;
}

async fn logout_with_another_factorys_refresh_token_revokes_nothing(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    app.factory_with_admin(&root, "plant-a", "boss@a.example", PW).await;
    let admin_b = app.factory_with_admin(&root, "plant-b", "boss@b.example", PW).await;
    let session = app.login("plant-a", "boss@a.example", PW).await;
    let refresh = session["refresh_token"].as_str().unwrap();
    let access = session["access_token"].as_str().unwrap();

    // Answered like an unknown token (logout never says whether a token exists), and
    // nothing is revoked or audited in either factory.
    let (foreign, _) = app.post("/api/v1/factories/plant-b/auth/logout", None, json!({"refresh_token": refresh})).await;
    let (unknown, _) =
        app.post("/api/v1/factories/plant-b/auth/logout", None, json!({"refresh_token": "fort_nothing"})).await;
    assert_eq!((foreign, unknown), (204, 204));
    assert_eq!(app.get("/api/v1/me", Some(access)).await.0, 200, "the session lives on");
    let (status, rotated) =
        app.post("/api/v1/factories/plant-a/auth/refresh", None, json!({"refresh_token": refresh})).await;
    assert_eq!(status, 200, "{rotated}");
    let (_, audit) = app.get("/api/v1/factories/plant-b/audit?action=logout", Some(&admin_b)).await;
    assert_eq!(audit["items"], json!([]));
    let token_a = rotated["access_token"].as_str().unwrap();
    let (_, audit) = app.get("/api/v1/factories/plant-a/audit?action=logout", Some(token_a)).await;
    assert_eq!(audit["items"], json!([]));
    app.stop().await;
}

async fn failed_logins_of_unknown_identifiers_are_hashed_and_bounded(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", PW).await;
    let login = "/api/v1/factories/plant-a/auth/login";
    let long = format!("{}@evil.example", "x".repeat(5_000));
    let (status, _) = app.post(login, None, json!({"email": long, "password": "guess-guess-1"})).await;
    assert_eq!(status, 401);
    let (status, _) = app.post(login, None, json!({"email": "boss@a.example", "password": "guess-guess-1"})).await;
    assert_eq!(status, 401);
    let (_, audit) = app.get("/api/v1/factories/plant-a/audit?action=login.failed", Some(&admin)).await;
    let targets: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|e| e["target"].as_str().unwrap()).collect();
    assert_eq!(targets.len(), 2, "{audit}");
    assert_eq!(targets[0], "boss@a.example", "an existing account is named");
    assert!(targets[1].starts_with("unknown:") && targets[1].len() == 24, "{}", targets[1]);
    assert!(!audit.to_string().contains("xxxxxxxxxxxxxxxx"), "never verbatim");

    // A flood from many names: 20 rows a minute for the factory, the rest counted once.
    for n in 0..48 {
        let (status, _) =
            app.post(login, None, json!({"email": format!("nobody{n}@a.example"), "password": "guess-guess-1"})).await;
        assert_eq!(status, 401);
    }
    let (_, audit) = app.get("/api/v1/factories/plant-a/audit?action=login.failed&limit=500", Some(&admin)).await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 20, "{audit}");
    app.clock.advance(61_000);
    let (_, summary) = app.get("/api/v1/factories/plant-a/audit?action=login.failed_suppressed", Some(&admin)).await;
    let items = summary["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{summary}");
    assert_eq!(items[0]["detail"]["count"], 30, "{summary}");
    // A new minute has its own budget.
    let (status, _) = app.post(login, None, json!({"email": "late@a.example", "password": "guess-guess-1"})).await;
    assert_eq!(status, 401);
    let (_, audit) = app.get("/api/v1/factories/plant-a/audit?action=login.failed&limit=500", Some(&admin)).await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 21);
    app.stop().await;
}

backend_matrix!(
    root_manages_factories,
    login_is_factory_scoped_and_does_not_enumerate,
    tokens_carry_the_claims_and_expire,
    refresh_rotates_and_reuse_revokes_the_family,
    roles_and_permission_flags,
    disabled_user_is_refused_at_the_next_request,
    passwords_change_and_reset,
    api_keys_are_shown_once_and_revocable,
    audit_log_records_and_filters,
    logins_are_rate_limited,
    bad_input_names_the_field,
    refresh_tokens_expire_after_their_lifetime,
    an_admins_password_reset_ends_the_users_sessions,
    api_keys_of_a_disabled_factory_are_refused,
    two_concurrent_refreshes_with_one_token_count_as_reuse,
    logout_with_another_factorys_refresh_token_revokes_nothing,
    failed_logins_of_unknown_identifiers_are_hashed_and_bounded,
);
