use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("{0}")]
    BadCharacters(&'static str),
}

/// A new platform-created id: UUIDv7, so ids sort by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn check_slug(text: &str, max: usize, extra: &[u8], rule: &'static str) -> Result<(), IdError> {
    let bytes = text.as_bytes();
    let Some(first) = bytes.first() else {
        return Err(IdError::Empty);
    };
    if bytes.len() > max {
        return Err(IdError::TooLong { max });
    }
    let lower_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !lower_alnum(*first) || !bytes[1..].iter().all(|&b| lower_alnum(b) || extra.contains(&b)) {
        return Err(IdError::BadCharacters(rule));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident, $check:expr) => {
        $(#[$meta])*
        ///
        /// Shared, immutable text: a clone is a reference-count increment. The ingest path
        /// copies ids into every point, event and cache entry, and with `String` those
        /// copies were an allocation (and a free) each.
        #[derive(Debug, Clone, Eq, PartialOrd, Ord)]
        pub struct $name(std::sync::Arc<str>);

        /// The hash of the text (as `str` hashes), so maps keyed by the id can be searched
        /// with a `&str` (see `Borrow<str>` below).
        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state)
            }
        }

        /// Content equality, answered without comparing bytes when both are clones of one
        /// id (a message's points all carry its connection's device id).
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                std::sync::Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
            }
        }

        impl $name {
            pub fn parse(text: impl AsRef<str>) -> Result<Self, IdError> {
                let text = text.as_ref();
                ($check)(text)?;
                Ok(Self(std::sync::Arc::from(text)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0.to_string()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// Maps keyed by the id can be searched with a `&str` (no key allocated per lookup):
        /// `Hash` and `Eq` are those of the text.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<Self, IdError> {
                Self::parse(text)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                let text = String::deserialize(de)?;
                Self::parse(text).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(
    /// A factory's slug: `[a-z0-9][a-z0-9-]{0,62}`. It appears in MQTT topics and URLs.
    FactoryId,
    |t: &str| check_slug(t, 63, b"-", "must match [a-z0-9][a-z0-9-]{0,62}")
);

string_newtype!(
    /// A device's slug within its factory: `[a-z0-9][a-z0-9_-]{0,62}`.
    DeviceId,
    |t: &str| check_slug(t, 63, b"-_", "must match [a-z0-9][a-z0-9_-]{0,62}")
);

string_newtype!(
    /// A metric name as firmware sends it, flattened with dots: `[A-Za-z0-9_.:-]`, at most 128 characters,
    /// not starting or ending with a dot.
    PropertyName,
    |t: &str| {
        if t.is_empty() {
            return Err(IdError::Empty);
        }
        if t.len() > PropertyName::MAX_LEN {
            return Err(IdError::TooLong { max: PropertyName::MAX_LEN });
        }
        let ok = t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
            && !t.starts_with('.')
            && !t.ends_with('.')
            && !t.contains("..");
        if ok { Ok(()) } else { Err(IdError::BadCharacters("may contain only A-Z a-z 0-9 _ . : - (no leading, trailing or double dot)")) }
    }
);

impl PropertyName {
    pub const MAX_LEN: usize = 128;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_compare_and_hash_as_their_text() {
        let a = DeviceId::parse("press-1").unwrap();
        let same_text = DeviceId::parse(String::from("press-1")).unwrap();
        assert_eq!(a, a.clone());
        assert_eq!(a, same_text, "separately parsed, equal text");
        assert_ne!(a, DeviceId::parse("press-2").unwrap());
        let map: std::collections::HashMap<DeviceId, u8> = [(a.clone(), 7)].into();
        assert_eq!(map.get("press-1"), Some(&7), "found by &str");
        assert_eq!(map.get(&same_text), Some(&7));
        assert_eq!(serde_json::to_string(&a).unwrap(), r#""press-1""#);
        assert_eq!(serde_json::from_str::<DeviceId>(r#""press-1""#).unwrap(), a);
        assert_eq!(a.into_string(), "press-1");
    }

    #[test]
    fn factory_slugs() {
        assert!(FactoryId::parse("plant-1").is_ok());
        assert!(FactoryId::parse("a").is_ok());
        assert_eq!(FactoryId::parse(""), Err(IdError::Empty));
        assert!(FactoryId::parse("-plant").is_err());
        assert!(FactoryId::parse("Plant").is_err());
        assert!(FactoryId::parse("plant_1").is_err());
        assert!(FactoryId::parse("a".repeat(64)).is_err());
        assert!(FactoryId::parse("a".repeat(63)).is_ok());
        assert!(FactoryId::parse("plant/1").is_err());
    }

    #[test]
    fn device_slugs_allow_underscore() {
        assert!(DeviceId::parse("press_1").is_ok());
        assert!(DeviceId::parse("+").is_err());
        assert!(DeviceId::parse("#").is_err());
    }

    #[test]
    fn property_names() {
        assert!(PropertyName::parse("phase.l1.v").is_ok());
        assert!(PropertyName::parse("Power_kW").is_ok());
        assert!(PropertyName::parse(".x").is_err());
        assert!(PropertyName::parse("x..y").is_err());
        assert!(PropertyName::parse("a b").is_err());
    }

    #[test]
    fn deserialize_validates() {
        let bad: Result<FactoryId, _> = serde_json::from_str("\"Bad Id\"");
        assert!(bad.is_err());
        let good: FactoryId = serde_json::from_str("\"ok-1\"").unwrap();
        assert_eq!(good.as_str(), "ok-1");
    }

    proptest! {
        #[test]
        fn never_panics_and_accepted_ids_are_topic_safe(text in ".{0,80}") {
            if let Ok(id) = FactoryId::parse(text.clone()) {
                prop_assert!(!id.as_str().contains(['/', '+', '#']));
            }
            let _ = DeviceId::parse(text.clone());
            let _ = PropertyName::parse(text);
        }
    }
}
