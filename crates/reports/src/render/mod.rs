//! Renderers: a [`Report`] to the bytes of one format. Pure and deterministic: the same
//! report gives the same bytes (ADR 0021), so artifacts can be content-addressed.

pub mod json;
pub mod pdf;
pub mod xlsx;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pdf,
    Xlsx,
    Json,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Pdf => "application/pdf",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Format::Json => "application/json",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Pdf => "pdf",
            Format::Xlsx => "xlsx",
            Format::Json => "json",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Pdf(#[from] pdf::PdfError),
    #[error("xlsx: {0}")]
    Xlsx(#[from] rust_xlsxwriter::XlsxError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

pub fn render(report: &Report, format: Format) -> Result<Vec<u8>, RenderError> {
    Ok(match format {
        Format::Pdf => pdf::render(report)?,
        Format::Xlsx => xlsx::render(report)?,
        Format::Json => json::render(report)?,
    })
}

/// A download's file name: `energy-report_plant-a_2026-03-01_2026-04-01.pdf` (local dates,
/// the end exclusive as in the report), ASCII only so every mail client keeps it.
pub fn file_name(report: &Report, format: Format) -> String {
    let tz = report.tz();
    let slug: String = report
        .factory_name
        .to_lowercase()
        .chars()
        .flat_map(|c| {
            let s: &str = match c {
                'ä' | 'æ' => "ae",
                'ö' | 'ø' | 'œ' => "oe",
                'ü' => "ue",
                'ß' => "ss",
                'á' | 'à' | 'â' | 'å' | 'ã' => "a",
                'é' | 'è' | 'ê' | 'ë' => "e",
                'í' | 'ì' | 'î' | 'ï' => "i",
                'ó' | 'ò' | 'ô' | 'õ' => "o",
                'ú' | 'ù' | 'û' => "u",
                'ç' => "c",
                'ñ' => "n",
                c if c.is_ascii_alphanumeric() => return vec![c],
                _ => "-",
            };
            s.chars().collect()
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let slug = if slug.is_empty() { "factory".to_owned() } else { slug };
    format!(
        "{}-report_{}_{}_{}.{}",
        report.kind.as_str().replace('_', "-"),
        slug,
        report.from.with_timezone(&tz).format("%Y-%m-%d"),
        report.to.with_timezone(&tz).format("%Y-%m-%d"),
        format.extension()
    )
}
