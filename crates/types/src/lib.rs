//! Types every component shares. Constructors validate ("parse, don't validate"):
//! once a `FactoryId` exists, the rest of the code trusts it.

mod clock;
mod contact;
mod ids;
mod semantics;
pub mod states;
mod time;
mod value;

pub use clock::{Clock, ManualClock, OffsetClock, SystemClock};
pub use contact::{is_e164, is_email};
pub use ids::{DeviceId, FactoryId, IdError, PropertyName, new_id};
pub use semantics::{Counting, Quantity, Semantics, SemanticsError, suggest, to_kw, to_kwh};
pub use time::{format_rfc3339_ms, parse_rfc3339_ms, ser_opt_time, ser_time};
pub use value::Value;
