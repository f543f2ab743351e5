//! The built-in MQTT endpoint: devices connect to FactoryOps itself.

pub mod codec;
mod limits;
mod server;

pub use limits::{ConnectLimiter, ConnectLimits, Refused as ConnectRefused};
pub use server::{MqttConfig, MqttError, MqttHandle, MqttServer, MqttTlsConfig, telemetry_topic};
