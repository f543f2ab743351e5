//! The port through which rules learn the codes of state labels (ADR 0014). State values
//! are stored and published as codes; the dictionary belongs to ingest, whose tables the
//! rules never read: the server wires ingest's dictionary in behind this trait.

use async_trait::async_trait;
use factoryops_db::DbError;
use factoryops_types::{FactoryId, PropertyName};

use crate::model::{Condition, RuleSpec};

#[async_trait]
pub trait StateLabels: Send + Sync {
    /// The code of `label` of the factory's state property `property`, registering the
    /// label when it is new (so a rule counts as soon as data with it arrives); `None`
    /// when it cannot be registered (the property has the maximum number of labels).
    async fn code(&self, factory: &FactoryId, property: &PropertyName, label: &str) -> Result<Option<u32>, DbError>;
}

/// A state leaf's (property, label) and its code, `None` when unknown.
pub type StateCode = (PropertyName, String, Option<u32>);

/// The codes of every state label `spec` compares with. Without a port nothing is known:
/// `==` then matches no value, `!=` every value.
pub async fn resolve(
    port: Option<&dyn StateLabels>,
    factory: &FactoryId,
    spec: &RuleSpec,
) -> Result<Vec<StateCode>, DbError> {
    let mut wanted: Vec<(PropertyName, String)> = Vec::new();
    spec.condition.visit_leaves(&mut |leaf| {
        if let Condition::State { property, label, .. } = leaf
            && !wanted.iter().any(|(p, l)| p == property && l == label)
        {
            wanted.push((property.clone(), label.clone()));
        }
    });
    let mut out = Vec::with_capacity(wanted.len());
    for (property, label) in wanted {
        let code = match port {
            Some(port) => port.code(factory, &property, &label).await?,
            None => None,
        };
        out.push((property, label, code));
    }
    Ok(out)
}
