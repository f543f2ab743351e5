//! Datasets (HLD 8.2): immutable snapshots of telemetry for analytics.
//!
//! - [`query`]: the request `{devices, properties, from, to, every?, agg?}`, its
//!   validation with field paths and limits, and its canonical form.
//! - [`export`]: the streaming export from the `TelemetryStore` port into a wide Parquet
//!   file (`ts` Timestamp(ms, UTC) + one nullable Float64 column per
//!   `device_id/property`), hashed with sha256 while written, byte-for-byte
//!   deterministic for the same data.
//! - [`manifest`]: the manifest and the content-addressed object path.
//! - [`store`]: dataset records (job state + manifest) and references, on SQLite/MySQL.

pub mod export;
pub mod manifest;
pub mod query;
pub mod store;

pub use export::{CREATED_BY, DEFAULT_BATCH_VALUES, ExportError, ExportSummary, export, schema, writer_properties};
pub use manifest::{Manifest, download_name, object_path};
pub use query::{DatasetQuery, DatasetRequest, FieldError, Limits, parse_agg, parse_every, validate};
