//! Telemetry storage. [`TelemetryStore`] is the port every other component uses;
//! the embedded engine (default, zero install) and the InfluxDB adapter implement it.
//!
//! Every read and write takes the factory scope first: no function here reads
//! across factories.

mod port;

pub use port::{Agg, Point, Sample, SeriesQuery, StoreHealth, TelemetryStore, TsdbError, Value};
