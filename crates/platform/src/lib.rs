//! The small shared platform: configuration, secrets, logging, the metrics
//! registry, ordered shutdown and the event-bus port. No global state: every
//! piece is a value passed to whoever needs it.

pub mod bus;
pub mod config;
pub mod fdlimit;
pub mod http;
pub mod logging;
pub mod logline;
pub mod metrics;
pub mod secret;
pub mod shutdown;

pub use config::{Config, ConfigError};
pub use secret::{Secret, SecretUrl};
