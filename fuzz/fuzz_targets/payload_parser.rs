#![no_main]

use factoryops_ingest::payload::{PayloadLimits, parse_payload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits =
        PayloadLimits { max_depth: 4, max_properties: 16, max_state_label_chars: 8, ..PayloadLimits::default() };
    if let Ok(parsed) = parse_payload(data, 1_795_000_000_000, &limits) {
        assert!(parsed.values.len() + parsed.states.len() <= limits.max_properties);
        for (_, value) in &parsed.values {
            assert!(value.as_f64().is_finite());
        }
        // State labels are within their bound, and no name is both a value and a state.
        for (name, label) in &parsed.states {
            assert!(!label.is_empty() && label.chars().count() <= limits.max_state_label_chars);
            assert!(parsed.values.iter().all(|(n, _)| n != name));
        }
    }
});
