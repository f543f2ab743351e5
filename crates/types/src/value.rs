use serde::{Deserialize, Serialize};

/// A telemetry value: a number or a boolean. Numbers are always finite.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Float(f64),
    Bool(bool),
}

impl Value {
    /// The numeric view used by aggregations: `true` = 1, `false` = 0.
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Float(v) => v,
            Value::Bool(b) => f64::from(u8::from(b)),
        }
    }
}
