#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns
//! Integration tests: repositories and the pipeline on SQLite and MariaDB, and the MQTT
//! endpoint end to end with real clients (rumqttc, mosquitto_pub). One test binary, so
//! the crate is linked once.

mod common;
mod guards;
mod mqtt;
mod mqtt_edge;
mod pipeline;
mod points;
mod repo;
