//! Login throughput and latency at a given bcrypt cost, and the per-request cost of
//! verifying an access token. Run: `cargo bench -p factoryops-identity`.
//! Env: `BCRYPT_COST` (default 12, the production default), `LOGINS` (default 40).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use factoryops_db::Database;
use factoryops_identity::{Identity, IdentityConfig, NewFactory, NewUser, Principal, RequestContext};
use factoryops_types::{FactoryId, SystemClock};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn main() {
    let cost: u32 = std::env::var("BCRYPT_COST").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let logins: usize = std::env::var("LOGINS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let db =
            Database::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display())).await.unwrap();
        db.migrate(&[&factoryops_db::MIGRATIONS, &factoryops_identity::MIGRATIONS]).await.unwrap();
        let mut config = IdentityConfig::new(b"bench-secret-bench-secret-bench-secret".to_vec(), cost);
        config.login_attempts_per_account = u32::MAX;
        config.login_attempts_per_ip = u32::MAX;
        let identity = Arc::new(Identity::new(db, Arc::new(SystemClock), config).await.unwrap());
        let ctx = RequestContext::default();
        identity
            .create_factory(NewFactory { id: "bench".into(), name: "Bench".into(), timezone: None }, &ctx)
            .await
            .unwrap();
        let factory = FactoryId::parse("bench").unwrap();
        for i in 0..2 {
            let user = NewUser {
                email: format!("user{i}@bench.example"),
                name: "Bench".into(),
                role: "admin".into(),
                permissions: vec!["rules:write".into()],
                password: "bench-password-1".into(),
                phone: None,
            };
            identity.create_user(&factory, &Principal::Root, user, &ctx).await.unwrap();
        }

        // Logins: two concurrent clients (one per core), each logging in repeatedly.
        let started = Instant::now();
        let mut tasks = Vec::new();
        for client in 0..2 {
            let identity = identity.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                for _ in 0..logins / 2 {
                    let t = Instant::now();
                    identity
                        .login(
                            "bench",
                            &format!("user{client}@bench.example"),
                            "bench-password-1",
                            &RequestContext::default(),
                        )
                        .await
                        .unwrap();
                    latencies.push(t.elapsed());
                }
                latencies
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        let elapsed = started.elapsed();
        latencies.sort();
        println!(
            "login (bcrypt cost {cost}, 2 concurrent clients, {} logins): {:.1} logins/s, p50 {:.1} ms, p99 {:.1} ms",
            latencies.len(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        );

        // Token verification: the signature check alone, then the full per-request path
        // (signature + expiry + revocation + cached user/factory state).
        let token =
            identity.login("bench", "user0@bench.example", "bench-password-1", &ctx).await.unwrap().tokens.access_token;
        let rounds = 200_000;
        let t = Instant::now();
        for _ in 0..rounds {
            assert!(identity.verify_access_token(std::hint::black_box(&token)).is_some());
        }
        let verify = t.elapsed() / rounds;
        identity.authenticate(&token).await.unwrap();
        let t = Instant::now();
        for _ in 0..rounds {
            identity.authenticate(std::hint::black_box(&token)).await.unwrap();
        }
        let full = t.elapsed() / rounds;
        println!("token signature + claims: {:.2} µs/request", verify.as_secs_f64() * 1e6);
        println!("authenticate (full per-request check, cached state): {:.2} µs/request", full.as_secs_f64() * 1e6);
    });
}
