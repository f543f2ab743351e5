//! The built-in MQTT endpoint: devices connect to FactoryOps itself.

pub mod codec;
mod server;

pub use server::{MqttConfig, MqttError, MqttHandle, MqttServer, MqttTlsConfig, telemetry_topic};
