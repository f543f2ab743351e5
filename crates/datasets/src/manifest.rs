//! The manifest of a dataset: what was exported, by whom and when, and the sha256 that
//! names its file.

use factoryops_types::{FactoryId, ser_time};
use serde::{Deserialize, Serialize};

use crate::export::ExportSummary;
use crate::query::DatasetQuery;

/// Describes one immutable dataset file. The file is addressed by `sha256` alone
/// ([`object_path`]); two exports with the same bytes share it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub factory_id: FactoryId,
    pub query: DatasetQuery,
    /// `parquet`.
    pub format: String,
    /// Timestamps in the file.
    pub rows: u64,
    /// Columns including `ts`.
    pub columns: u64,
    /// Non-null value cells.
    pub values: u64,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
    pub bytes: u64,
    /// The user (or API key) id that asked for the dataset.
    pub created_by: String,
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub created_at: i64,
}

fn de_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let s = String::deserialize(d)?;
    factoryops_types::parse_rfc3339_ms(&s).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time"))
}

impl Manifest {
    pub fn new(
        factory_id: FactoryId,
        query: DatasetQuery,
        summary: &ExportSummary,
        created_by: String,
        created_at: i64,
    ) -> Self {
        Manifest {
            factory_id,
            query,
            format: "parquet".into(),
            rows: summary.rows,
            columns: summary.columns,
            values: summary.values,
            sha256: summary.sha256.clone(),
            bytes: summary.bytes,
            created_by,
            created_at,
        }
    }
}

/// Where a dataset file lives in the object store: `{factory_id}/datasets/{sha256}.parquet`.
pub fn object_path(factory: &FactoryId, sha256: &str) -> String {
    format!("{factory}/datasets/{sha256}.parquet")
}

/// The file name offered on download.
pub fn download_name(dataset_id: &str) -> String {
    format!("dataset-{dataset_id}.parquet")
}
