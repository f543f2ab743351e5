//! Local wall-clock vocabulary shared by shifts, tariffs and windows.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::InvalidSetting;

/// The width of an energy slot: 15 minutes.
pub const SLOT_MS: i64 = 15 * 60 * 1000;

/// A day of the week as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    pub const ALL: [Day; 7] = [Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri, Day::Sat, Day::Sun];

    pub fn of(weekday: chrono::Weekday) -> Self {
        Day::ALL[weekday.num_days_from_monday() as usize]
    }
}

/// A local time of day on the 15-minute grid, `00:00` to `24:00` inclusive (`24:00` ends
/// a day). Finer times are refused: slots are 15 minutes wide, so a boundary off the grid
/// could not be honoured exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalMinute(u16);

impl LocalMinute {
    pub const MIDNIGHT: LocalMinute = LocalMinute(0);
    pub const END_OF_DAY: LocalMinute = LocalMinute(24 * 60);

    /// Minutes since local midnight (0..=1440).
    pub fn minutes(self) -> u16 {
        self.0
    }

    pub fn from_minutes(minutes: u16) -> Result<Self, InvalidSetting> {
        if minutes > 24 * 60 || !minutes.is_multiple_of(15) {
            return Err(InvalidSetting::new("", "a time must be HH:MM between 00:00 and 24:00 on the 15-minute grid"));
        }
        Ok(LocalMinute(minutes))
    }
}

impl FromStr for LocalMinute {
    type Err = InvalidSetting;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad =
            || InvalidSetting::new("", format!("`{text}` is not a time HH:MM on the 15-minute grid (00:00 … 24:00)"));
        let (h, m) = text.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: u16 = h.parse().map_err(|_| bad())?;
        let m: u16 = m.parse().map_err(|_| bad())?;
        if m >= 60 {
            return Err(bad());
        }
        LocalMinute::from_minutes(h * 60 + m).map_err(|_| bad())
    }
}

impl fmt::Display for LocalMinute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for LocalMinute {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LocalMinute {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e: InvalidSetting| serde::de::Error::custom(e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_minutes_parse_on_the_grid_only() {
        assert_eq!("06:00".parse::<LocalMinute>().map(LocalMinute::minutes), Ok(360));
        assert_eq!("24:00".parse::<LocalMinute>().map(LocalMinute::minutes), Ok(1440));
        assert_eq!("22:45".parse::<LocalMinute>().map(|m| m.to_string()), Ok("22:45".to_owned()));
        for bad in ["6:00", "06:10", "24:15", "25:00", "06:60", "0600", "", "aa:bb"] {
            assert!(bad.parse::<LocalMinute>().is_err(), "{bad}");
        }
    }

    #[test]
    fn days_follow_chrono() {
        assert_eq!(Day::of(chrono::Weekday::Mon), Day::Mon);
        assert_eq!(Day::of(chrono::Weekday::Sun), Day::Sun);
        assert_eq!(serde_json::to_string(&Day::Wed).ok().as_deref(), Some("\"wed\""));
    }
}
