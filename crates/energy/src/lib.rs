//! Energy intelligence. The pure modules (slots, calendar, shifts, peak, specific,
//! tariff, emission, baseline) do no I/O and read no clock: everything that decides a
//! number lives there and is tested against hand-computed figures. The I/O half
//! ([`store`], [`service`], [`cache`]) reads settings, groups and raw telemetry, caches
//! closed days and shapes the answers (ADR 0015).
//!
//! The unit of work is the [`Slot`]: the energy of one device in one fixed interval of
//! [`SLOT_MS`] aligned to the clock (UTC multiples, which are local multiples in every
//! real time zone: all offsets are multiples of 15 minutes). Consumption, cost, CO2,
//! idle energy and peak demand are all folds over slots, so a bucket boundary, a tariff
//! period boundary or a shift boundary on the 15-minute grid is exact.

pub mod baseline;
pub mod calendar;
pub mod clock;
pub mod emission;
pub mod peak;
pub mod shifts;
pub mod slots;
pub mod specific;
pub mod tariff;

// The I/O half: storage, the slot cache and the service the API calls.
pub mod cache;
pub mod persisted;
pub mod service;
pub mod store;

pub use clock::{Day, LocalMinute, SLOT_MS};

use factoryops_db::Migrations;

/// The I/O half's tables (`energy_groups`, `energy_group_devices`, `energy_settings`,
/// `energy_device_config`, `energy_baselines`, `energy_days`).
pub static MIGRATIONS: Migrations = Migrations {
    component: "energy",
    sqlite: sqlx::migrate!("migrations/sqlite"),
    mysql: sqlx::migrate!("migrations/mysql"),
};

/// A domain error with the path of the offending field (e.g. `periods[2].to`), so the
/// API can answer with a problem naming it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSetting {
    pub field: String,
    pub message: String,
}

impl InvalidSetting {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// The energy of one device in one slot `[start_ms, start_ms + SLOT_MS)`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Slot {
    pub start_ms: i64,
    pub kwh: f64,
    /// The part of `kwh` consumed while the device was idle (state idle/off/setup, or
    /// power below the device's idle threshold).
    pub idle_kwh: f64,
    /// Milliseconds of the slot covered by data (the rest lies in gaps).
    pub covered_ms: i64,
}

/// A stretch without data longer than the allowed maximum: no energy is invented for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub from_ms: i64,
    pub to_ms: i64,
}
