#![no_main]

use bytes::BytesMut;
use factoryops_ingest::mqtt::codec::{CodecError, Protocol, decode};
use libfuzzer_sys::fuzz_target;

/// The bound the decoder is given; every packet it returns must fit in it.
const MAX_PACKET: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else { return };
    let protocol = match selector % 3 {
        0 => None,
        1 => Some(Protocol::V311),
        _ => Some(Protocol::V5),
    };
    let mut buf = BytesMut::from(input);
    // Decode until the input runs out or is rejected. Besides never panicking, the
    // decoder must refuse oversized packets as soon as their length is known:
    loop {
        let before = buf.len();
        match decode(&mut buf, protocol, MAX_PACKET) {
            // A returned packet consumed between 1 byte and the bound.
            Ok(Some(_)) => {
                let consumed = before - buf.len();
                assert!(
                    (1..=MAX_PACKET).contains(&consumed),
                    "a packet of {consumed} bytes passed a bound of {MAX_PACKET}"
                );
            }
            // "Need more bytes" never holds a bound's worth or more: with the length known
            // the packet is either complete (returned) or too large (refused), so a peer
            // cannot make the server buffer past the bound.
            Ok(None) => {
                assert!(before < MAX_PACKET, "waiting for more with {before} bytes buffered");
                assert_eq!(buf.len(), before, "nothing consumed while waiting");
                break;
            }
            Err(CodecError::TooLarge { size, max }) => {
                assert!(size > max && max == MAX_PACKET, "refused {size} bytes as too large for {max}");
                break;
            }
            Err(_) => break,
        }
    }
});
