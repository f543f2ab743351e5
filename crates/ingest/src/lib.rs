//! Ingestion: the path from a device to a durable point.
//!
//! - [`devices::DeviceRegistry`]: factory-scoped device metadata and MQTT secrets.
//! - [`catalogue::PropertyCatalogue`]: auto-discovered properties, registered before a
//!   point is acknowledged, with a per-device cardinality guard.
//! - [`payload`]: the pure JSON payload parser (flattening, limits, per-property rejection).
//! - [`pipeline::Ingestor`]: parse → register → group-committed durable write → bus event.
//!   Used by the MQTT endpoint and by HTTP ingestion alike.
//! - [`states::StateDictionary`]: the code ↔ label dictionary of state properties (ADR 0014).
//! - [`stamps::Stamps`]: unique server-given timestamps per device (ADR 0009).
//! - [`mqtt::MqttServer`]: the built-in MQTT 3.1.1 / 5.0 endpoint with topic ACL and
//!   PUBACK only after the points are durable.

pub mod catalogue;
pub mod devices;
mod error;
pub mod metrics;
pub mod mqtt;
pub mod payload;
pub mod pipeline;
pub mod stamps;
pub mod states;

pub use catalogue::{Property, PropertyCatalogue, PropertyUpdate, ValueType};
pub use devices::{
    Device, DeviceFilter, DeviceRegistry, DeviceStatus, DeviceUpdate, IssuedSecret, NewDevice, Verification,
};
pub use error::{IngestError, RepoError};
pub use payload::{MessageRejection, ParsedPayload, PayloadLimits, RejectReason, RejectedProperty};
pub use pipeline::{IngestConfig, IngestErrorRecord, IngestOutcome, Ingestor, SchemaMemo, StoredSummary};
pub use states::{Encoded, Labels, StateDictionary};

use factoryops_db::Migrations;

/// This crate's tables (`ingest_devices`, `ingest_properties`).
pub static MIGRATIONS: Migrations = Migrations {
    component: "ingest",
    sqlite: sqlx::migrate!("migrations/sqlite"),
    mysql: sqlx::migrate!("migrations/mysql"),
};

/// A page of a cursor-paginated list: `next_cursor` is `None` on the last page.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
