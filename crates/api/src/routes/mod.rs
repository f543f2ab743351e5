//! Route modules, one per component.

pub mod analytics;
pub mod dashboards;
pub mod energy;
pub mod identity;
pub mod ingest;
pub mod notifications;
pub mod reports;
pub mod rules;

use crate::auth::Tenant;
use crate::router::AppState;

/// Appends to the factory's audit log on behalf of the request's principal. The change
/// it records is already committed, so a failure to write the entry is logged loudly
/// rather than turned into a failed request.
pub(crate) async fn audit<R>(state: &AppState, t: &Tenant<R>, action: &str, target: &str, detail: serde_json::Value) {
    let entry = factoryops_identity::AuditRecord {
        factory: &t.factory,
        actor: t.principal.actor(),
        action,
        target: Some(target),
        source_ip: t.ctx.source_ip.as_deref(),
        detail,
    };
    if let Err(e) = state.identity.record_audit(entry).await {
        tracing::error!(factory_id = %t.factory, action, target, error = %e, "cannot write the audit entry");
    }
}
