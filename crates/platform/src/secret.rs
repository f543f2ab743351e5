use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MASK: &str = "********";

/// A secret string (password, token, key). `Debug`, `Display` and `Serialize`
/// print a mask, so it cannot leak through logs or `factoryops config`;
/// [`Secret::expose`] is the one explicit way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(ScalarAsString).map(Secret)
    }
}

/// Accepts any scalar as its text: an env var like `FACTORYOPS_ROOT_PASSWORD=1234567890`
/// arrives as a number, but a secret is always a string.
struct ScalarAsString;

impl serde::de::Visitor<'_> for ScalarAsString {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// A URL that may carry credentials (`mysql://user:pass@host/db`,
/// `smtp://user:pass@host`). Shown with the password masked.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by a mask; unparsable input is masked whole.
    pub fn masked(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    // set_password fails only for URLs that cannot carry credentials.
                    let _ = url.set_password(Some(MASK));
                }
                for (key, _) in url.query_pairs() {
                    if is_secret_query_key(&key) {
                        return mask_query(url.clone());
                    }
                }
                url.to_string()
            }
            Err(_) => MASK.to_string(),
        }
    }
}

fn is_secret_query_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "token", "secret", "key"].iter().any(|k| key.contains(k))
}

fn mask_query(mut url: url::Url) -> String {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if is_secret_query_key(&k) { MASK.to_string() } else { v.into_owned() };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url.to_string()
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.masked())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(ScalarAsString).map(SecretUrl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2hunter2");
        assert_eq!(format!("{s} {s:?}"), "******** ********");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"********\"");
        assert_eq!(s.expose(), "hunter2hunter2");
    }

    #[test]
    fn url_password_is_masked() {
        let u = SecretUrl::new("mysql://root:pw@127.0.0.1:3306/test");
        assert_eq!(u.to_string(), "mysql://root:********@127.0.0.1:3306/test");
        let plain = SecretUrl::new("mysql://root@127.0.0.1:3306/test");
        assert_eq!(plain.to_string(), "mysql://root@127.0.0.1:3306/test");
        let q = SecretUrl::new("http://influx:8086/?db=x&token=abc");
        assert!(!q.to_string().contains("abc"), "{q}");
        assert_eq!(SecretUrl::new("::nonsense::").to_string(), MASK);
    }
}
