#![no_main]

use bytes::BytesMut;
use factoryops_ingest::mqtt::codec::{Protocol, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else { return };
    let protocol = match selector % 3 {
        0 => None,
        1 => Some(Protocol::V311),
        _ => Some(Protocol::V5),
    };
    let mut buf = BytesMut::from(input);
    // Decode until the input runs out or is rejected; the decoder must never panic
    // nor accept a packet larger than the bound.
    while let Ok(Some(_)) = decode(&mut buf, protocol, 4096) {}
});
