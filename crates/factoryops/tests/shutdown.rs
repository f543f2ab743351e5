#![allow(clippy::unwrap_used)]
//! The real binary: SIGTERM during a request lets the request finish and exits 0.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::binary::Running;

fn terminate(child: &Child) {
    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the server did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_during_a_request_completes_it_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path(), &[]);
    let (mut child, addr) = (server.child, server.http_addr);

    let body = br#"{"username": "root", "password": "root-password-for-tests"}"#;
    let (first, rest) = body.split_at(10);
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        stream,
        "POST /api/v1/platform/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(first).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    terminate(&child);
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "the server waits for the request in flight");
    stream.write_all(rest).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("access_token"), "{response}");

    let status = wait_exit(&mut child, Duration::from_secs(12));
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
}

#[test]
fn a_taken_port_stops_start_up_with_one_line_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_factoryops"))
        .arg("serve")
        .env("FACTORYOPS_DATA_DIR", dir.path())
        .env("FACTORYOPS_HTTP_ADDR", &addr)
        .env("FACTORYOPS_MQTT_ADDR", "127.0.0.1:0")
        .env("FACTORYOPS_AUTH__BCRYPT_COST", "4")
        .env("FACTORYOPS_LOG_LEVEL", "off")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("FACTORYOPS_HTTP_ADDR") && lines[0].contains("in use"), "{stderr}");
}

#[test]
fn config_command_masks_secrets_and_bad_values_name_the_key() {
    let output = Command::new(env!("CARGO_BIN_EXE_factoryops"))
        .arg("config")
        .env("FACTORYOPS_ROOT_PASSWORD", "very-secret-root")
        .env("FACTORYOPS_DATABASE_URL", "mysql://root:dbsecret@127.0.0.1:3306/x")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!text.contains("very-secret-root") && !text.contains("dbsecret"), "{text}");
    assert!(text.contains("root_password = \"********\""), "{text}");

    let output = Command::new(env!("CARGO_BIN_EXE_factoryops"))
        .arg("serve")
        .env("FACTORYOPS_AUTH__BCRYPT_COST", "lots")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("auth.bcrypt_cost") && stderr.contains("FACTORYOPS_AUTH__BCRYPT_COST"), "{stderr}");
}

#[test]
fn migrate_and_version_commands() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_factoryops"))
        .arg("migrate")
        .env("FACTORYOPS_DATA_DIR", dir.path())
        .env("FACTORYOPS_LOG_LEVEL", "off")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(dir.path().join("factoryops.db").exists());
    let output = Command::new(env!("CARGO_BIN_EXE_factoryops")).arg("version").output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("factoryops "));
}
