//! Telemetry storage. [`TelemetryStore`] is the port every other component uses;
//! the embedded engine (default, zero install) and the InfluxDB adapter implement it.
//!
//! Every read and write takes the factory scope first: no function here reads
//! across factories.

mod bulk;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod embedded;
pub mod influx;
mod port;

pub use bulk::{BulkBatch, BulkQuery, BulkStream, WindowPlanner};
pub use embedded::{
    CheckReport, EmbeddedConfig, EmbeddedStore, HeadLimit, RetentionConfig, RetentionPolicy, StoreStats, SyncMode,
    check_dir,
};
pub use influx::{InfluxConfig, InfluxStore};
pub use port::{Agg, Point, Sample, SeriesQuery, StoreHealth, TelemetryStore, TsdbError, Value};
