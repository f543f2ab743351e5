//! Types every component shares. Constructors validate ("parse, don't validate"):
//! once a `FactoryId` exists, the rest of the code trusts it.

mod clock;
mod ids;
mod time;

pub use clock::{Clock, ManualClock, OffsetClock, SystemClock};
pub use ids::{DeviceId, FactoryId, IdError, PropertyName, new_id};
pub use time::{format_rfc3339_ms, parse_rfc3339_ms};
