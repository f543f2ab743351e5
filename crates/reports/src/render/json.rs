//! JSON: the report document itself (schema `Report` in the OpenAPI). Field order is the
//! structs' and maps are not used, so the bytes are deterministic.

use crate::model::Report;

pub fn render(report: &Report) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = serde_json::to_vec_pretty(report)?;
    out.push(b'\n');
    Ok(out)
}
