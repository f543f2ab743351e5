//! Route modules, one per component.

pub mod identity;
pub mod ingest;
