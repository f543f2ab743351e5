//! Route modules, one per component.

pub mod identity;
pub mod ingest;
pub mod rules;
