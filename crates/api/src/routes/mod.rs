//! Route modules, one per component.

pub mod identity;
pub mod ingest;
pub mod notifications;
pub mod rules;
