//! The HTTP edge. Components stay HTTP-free; this crate turns their services into
//! routes (one module per component), maps every error to an RFC 9457 problem, and
//! owns the cross-cutting layers: request ids, tracing, metrics, body limits,
//! readiness and the OpenAPI document.

pub mod auth;
pub mod health;
pub mod idempotency;
mod layers;
pub mod problem;
mod router;
pub mod routes;
pub mod serve;
pub mod web;

pub use health::{DependencyState, ReadinessCheck};
pub use problem::{ApiJson, FieldError, Problem};
pub use router::{ApiDoc, AppState, build_router, openapi_document};
pub use serve::{EdgeConfig, serve};
