//! Wiring: builds every component from the configuration and runs the chosen ones.
//! This is the only place that knows which adapters exist.

mod analytics;
mod components;
mod energy;
mod jobs;
mod notify;
mod objects;
mod reports;
mod rules;
mod server;
pub mod simulate;
pub mod telemetry;

pub use components::{Component, Components};
pub use server::{Server, StartError, open_database as open_database_for_migrate, start};
