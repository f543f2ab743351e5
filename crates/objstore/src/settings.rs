//! `object_store_url` (plus the `object_store.*` keys) → an adapter.
//!
//! - unset: a local directory, `data_dir/objects`;
//! - `file:///abs/path`: a local directory there;
//! - `s3://bucket?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true`:
//!   S3-compatible; `endpoint` absent = AWS; `path_style` defaults to true with an
//!   endpoint (self-hosted servers) and false without; an `http://` endpoint allows plain
//!   HTTP. Keys come from `object_store.access_key_id` / `object_store.secret_access_key`
//!   (secrets, masked by `factoryops config`), never from the URL.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use factoryops_platform::{Config, ConfigError};

use crate::ObjectStore;
use crate::local::LocalStore;
use crate::s3::{S3Options, S3Store};

pub type SettingsError = ConfigError;

const KEY: &str = "object_store_url";

#[derive(Debug, Clone)]
pub enum ObjectStoreSettings {
    Local { root: PathBuf },
    S3(S3Options),
}

impl ObjectStoreSettings {
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let Some(url) = &config.object_store_url else {
            return Ok(Self::Local { root: config.data_dir.join("objects") });
        };
        let parsed = url::Url::parse(url.expose()).map_err(|e| ConfigError::new(KEY, format!("not a URL ({e})")))?;
        match parsed.scheme() {
            "file" => {
                if parsed.query().is_some() || parsed.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(ConfigError::new(KEY, "file:// takes an absolute path only: file:///var/lib/objects"));
                }
                let root = parsed
                    .to_file_path()
                    .map_err(|()| ConfigError::new(KEY, "file:// needs an absolute path: file:///var/lib/objects"))?;
                Ok(Self::Local { root })
            }
            "s3" => s3_settings(&parsed, config).map(Self::S3),
            other => Err(ConfigError::new(KEY, format!("{other}:// is not an object store (use s3:// or file://)"))),
        }
    }
}

fn s3_settings(url: &url::Url, config: &Config) -> Result<S3Options, ConfigError> {
    let bucket = url.host_str().unwrap_or_default().to_string();
    if bucket.is_empty() {
        return Err(ConfigError::new(KEY, "name the bucket: s3://bucket?endpoint=…"));
    }
    if !matches!(url.path(), "" | "/") || url.password().is_some() || !url.username().is_empty() {
        return Err(ConfigError::new(
            KEY,
            "s3://bucket takes no path or credentials (keys go in object_store.access_key_id / secret_access_key)",
        ));
    }
    let (mut endpoint, mut region, mut path_style) = (None, "us-east-1".to_string(), None);
    for (name, value) in url.query_pairs() {
        match name.as_ref() {
            "endpoint" => {
                let parsed = url::Url::parse(&value)
                    .map_err(|e| ConfigError::new(KEY, format!("endpoint {value:?} is not a URL ({e})")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(ConfigError::new(KEY, "endpoint must be http:// or https://"));
                }
                endpoint = Some(value.trim_end_matches('/').to_string());
            }
            "region" => region = value.into_owned(),
            "path_style" => {
                path_style = Some(match value.as_ref() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ConfigError::new(KEY, "path_style must be true or false")),
                })
            }
            other => {
                return Err(ConfigError::new(
                    KEY,
                    format!("unknown parameter {other:?} (known: endpoint, region, path_style)"),
                ));
            }
        }
    }
    let o = &config.object_store;
    let credentials = match (&o.access_key_id, &o.secret_access_key) {
        (Some(id), Some(secret)) => Some((id.expose().to_string(), secret.expose().to_string())),
        (None, None) => None,
        _ => {
            return Err(ConfigError::new(
                "object_store.access_key_id",
                "set both object_store.access_key_id and object_store.secret_access_key, or neither",
            ));
        }
    };
    Ok(S3Options {
        bucket,
        allow_http: endpoint.as_deref().is_some_and(|e| e.starts_with("http://")),
        path_style: path_style.unwrap_or(endpoint.is_some()),
        endpoint,
        region,
        credentials,
        timeout: Duration::from_secs(o.timeout_secs.max(1)),
    })
}

/// The adapter the settings name (not yet wrapped with metrics).
pub fn open(settings: &ObjectStoreSettings) -> Result<Arc<dyn ObjectStore>, crate::StoreError> {
    Ok(match settings {
        ObjectStoreSettings::Local { root } => Arc::new(LocalStore::new(root.clone())),
        ObjectStoreSettings::S3(options) => Arc::new(S3Store::new(options.clone())?),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use factoryops_platform::secret::{Secret, SecretUrl};

    use super::*;

    fn with_url(url: &str) -> Config {
        Config { object_store_url: Some(SecretUrl::new(url)), ..Config::default() }
    }

    #[test]
    fn unset_is_the_data_dir_and_file_is_a_path() {
        let config = Config { data_dir: "/srv/fo".into(), ..Config::default() };
        match ObjectStoreSettings::from_config(&config).unwrap() {
            ObjectStoreSettings::Local { root } => assert_eq!(root, PathBuf::from("/srv/fo/objects")),
            other => panic!("{other:?}"),
        }
        match ObjectStoreSettings::from_config(&with_url("file:///var/lib/objects")).unwrap() {
            ObjectStoreSettings::Local { root } => assert_eq!(root, PathBuf::from("/var/lib/objects")),
            other => panic!("{other:?}"),
        }
        assert!(ObjectStoreSettings::from_config(&with_url("file://host/x")).is_err());
    }

    #[test]
    fn s3_urls_and_keys() {
        let mut config = with_url("s3://bucket-1?endpoint=http://127.0.0.1:9000&region=eu-central-1");
        config.object_store.access_key_id = Some(Secret::new("AK"));
        config.object_store.secret_access_key = Some(Secret::new("SK"));
        let ObjectStoreSettings::S3(s3) = ObjectStoreSettings::from_config(&config).unwrap() else { panic!() };
        assert_eq!((s3.bucket.as_str(), s3.region.as_str()), ("bucket-1", "eu-central-1"));
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(s3.allow_http && s3.path_style);
        assert_eq!(s3.credentials, Some(("AK".into(), "SK".into())));
        assert!(!format!("{s3:?}").contains("SK"));

        let ObjectStoreSettings::S3(aws) = ObjectStoreSettings::from_config(&with_url("s3://b")).unwrap() else {
            panic!()
        };
        assert!(!aws.path_style && !aws.allow_http && aws.credentials.is_none());

        for bad in ["s3://?region=x", "s3://b/path", "s3://u:p@b", "s3://b?colour=red", "s3://b?path_style=yes"] {
            let e = ObjectStoreSettings::from_config(&with_url(bad)).unwrap_err();
            assert_eq!(e.key, "object_store_url", "{bad}: {e}");
        }
        let mut half = with_url("s3://b");
        half.object_store.access_key_id = Some(Secret::new("AK"));
        assert_eq!(ObjectStoreSettings::from_config(&half).unwrap_err().key, "object_store.access_key_id");
    }
}
