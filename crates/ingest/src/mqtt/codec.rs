//! A small, strict MQTT 3.1.1 / 5.0 codec for exactly the packets a publishing device
//! exchanges with this endpoint. Decoding checks the remaining length against the
//! configured maximum before anything is buffered or allocated, never panics on any
//! input (fuzzed: `fuzz/fuzz_targets/mqtt_decoder.rs`), and copies nothing but the
//! small strings: payloads are slices of the read buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V311,
    V5,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    Publish(Publish),
    PubAck {
        pkid: u16,
    },
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    PingReq,
    Disconnect(Disconnect),
    /// A well-formed packet this endpoint does not support (the QoS 2 flow, AUTH).
    Unsupported {
        packet_type: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: Protocol,
    /// 3.1.1 "clean session", 5.0 "clean start".
    pub clean_start: bool,
    pub keep_alive_secs: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// 5.0 session expiry interval; `None` when absent (0 = ends with the connection).
    pub session_expiry_secs: Option<u32>,
    pub has_will: bool,
    /// 5.0 enhanced authentication was requested (not supported).
    pub auth_method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    /// Present for QoS 1 and 2.
    pub pkid: Option<u16>,
    pub topic_alias: Option<u16>,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub pkid: u16,
    pub filters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub pkid: u16,
    pub filters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// 5.0 reason code (0 = normal); always 0 for 3.1.1.
    pub reason: u8,
    pub session_expiry_secs: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("unsupported protocol level {level}")]
    UnsupportedProtocol { level: u8 },
}

pub mod packet_type {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    pub const AUTH: u8 = 15;
}

/// The largest remaining length MQTT can express.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Decodes one packet from the front of `buf`. `Ok(None)` means "need more bytes";
/// `protocol` is `None` until CONNECT was decoded (only CONNECT is accepted then).
/// `max_packet` bounds the whole packet; it is checked as soon as the length is known.
pub fn decode(buf: &mut BytesMut, protocol: Option<Protocol>, max_packet: usize) -> Result<Option<Packet>, CodecError> {
    let Some((remaining, header_len)) = remaining_length(buf)? else {
        return Ok(None);
    };
    let total = header_len + remaining;
    if total > max_packet {
        return Err(CodecError::TooLarge { size: total, max: max_packet });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    let first = frame.get_u8();
    frame.advance(header_len - 1);
    let (kind, flags) = (first >> 4, first & 0x0f);
    let Some(protocol) = protocol else {
        if kind != packet_type::CONNECT {
            return Err(CodecError::Protocol("the first packet must be CONNECT"));
        }
        expect_flags(flags, 0)?;
        return decode_connect(frame).map(|c| Some(Packet::Connect(c)));
    };
    let mut r = Reader(frame);
    let packet = match kind {
        packet_type::CONNECT => return Err(CodecError::Protocol("second CONNECT")),
        packet_type::PUBLISH => return decode_publish(r, flags, protocol).map(|p| Some(Packet::Publish(p))),
        packet_type::PUBACK => {
            expect_flags(flags, 0)?;
            Packet::PubAck { pkid: r.u16()? }
        }
        packet_type::PUBREC | packet_type::PUBCOMP => {
            expect_flags(flags, 0)?;
            Packet::Unsupported { packet_type: kind }
        }
        packet_type::PUBREL => {
            expect_flags(flags, 2)?;
            Packet::Unsupported { packet_type: kind }
        }
        packet_type::SUBSCRIBE => {
            expect_flags(flags, 2)?;
            let pkid = r.pkid()?;
            if protocol == Protocol::V5 {
                r.properties()?;
            }
            let mut filters = Vec::new();
            while r.has_remaining() {
                filters.push(r.string()?);
                let options = r.u8()?;
                if options & 0b1100_0000 != 0 || options & 0b11 == 3 {
                    return Err(CodecError::Malformed("subscription options"));
                }
            }
            if filters.is_empty() {
                return Err(CodecError::Protocol("SUBSCRIBE without a topic filter"));
            }
            Packet::Subscribe(Subscribe { pkid, filters })
        }
        packet_type::UNSUBSCRIBE => {
            expect_flags(flags, 2)?;
            let pkid = r.pkid()?;
            if protocol == Protocol::V5 {
                r.properties()?;
            }
            let mut filters = Vec::new();
            while r.has_remaining() {
                filters.push(r.string()?);
            }
            if filters.is_empty() {
                return Err(CodecError::Protocol("UNSUBSCRIBE without a topic filter"));
            }
            Packet::Unsubscribe(Unsubscribe { pkid, filters })
        }
        packet_type::PINGREQ => {
            expect_flags(flags, 0)?;
            Packet::PingReq
        }
        packet_type::DISCONNECT => {
            expect_flags(flags, 0)?;
            let mut d = Disconnect { reason: 0, session_expiry_secs: None };
            if protocol == Protocol::V5 && r.has_remaining() {
                d.reason = r.u8()?;
                if r.has_remaining() {
                    d.session_expiry_secs = r.properties()?.session_expiry;
                }
            }
            Packet::Disconnect(d)
        }
        packet_type::AUTH if protocol == Protocol::V5 => Packet::Unsupported { packet_type: kind },
        _ => return Err(CodecError::Protocol("packet type not sent by clients")),
    };
    if r.has_remaining() && !matches!(packet, Packet::Unsupported { .. }) {
        return Err(CodecError::Malformed("trailing bytes"));
    }
    Ok(Some(packet))
}

fn expect_flags(flags: u8, expected: u8) -> Result<(), CodecError> {
    if flags == expected { Ok(()) } else { Err(CodecError::Malformed("fixed header flags")) }
}

/// `(remaining length, fixed header length)`, or `None` when incomplete.
fn remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, CodecError> {
    let mut value = 0usize;
    for (i, byte) in buf.iter().skip(1).take(4).enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 2)));
        }
    }
    if buf.len() >= 5 {
        return Err(CodecError::Malformed("remaining length longer than 4 bytes"));
    }
    Ok(None)
}

fn decode_connect(frame: Bytes) -> Result<Connect, CodecError> {
    let mut r = Reader(frame);
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => Protocol::V311,
        (b"MQTT", 5) => Protocol::V5,
        (b"MQTT" | b"MQIsdp", level) => return Err(CodecError::UnsupportedProtocol { level }),
        _ => return Err(CodecError::Malformed("protocol name")),
    };
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(CodecError::Malformed("reserved connect flag"));
    }
    let clean_start = flags & 0x02 != 0;
    let has_will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if will_qos == 3 || (!has_will && (will_qos != 0 || will_retain)) {
        return Err(CodecError::Malformed("will flags"));
    }
    if protocol == Protocol::V311 && has_password && !has_username {
        return Err(CodecError::Malformed("password without username"));
    }
    let keep_alive_secs = r.u16()?;
    let props = if protocol == Protocol::V5 { r.properties()? } else { Properties::default() };
    let client_id = r.string()?;
    if has_will {
        if protocol == Protocol::V5 {
            r.properties()?;
        }
        r.string()?;
        r.binary()?;
    }
    let username = if has_username { Some(r.string()?) } else { None };
    let password = if has_password { Some(r.binary()?) } else { None };
    if r.has_remaining() {
        return Err(CodecError::Malformed("trailing bytes"));
    }
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive_secs,
        client_id,
        username,
        password,
        session_expiry_secs: props.session_expiry,
        has_will,
        auth_method: props.auth_method,
    })
}

fn decode_publish(mut r: Reader, flags: u8, protocol: Protocol) -> Result<Publish, CodecError> {
    let dup = flags & 0x08 != 0;
    let qos = (flags >> 1) & 0x03;
    let retain = flags & 0x01 != 0;
    if qos == 3 {
        return Err(CodecError::Malformed("QoS 3"));
    }
    if qos == 0 && dup {
        return Err(CodecError::Malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let topic = r.string()?;
    if topic.contains(['+', '#']) {
        return Err(CodecError::Malformed("wildcard in a PUBLISH topic"));
    }
    let pkid = if qos > 0 { Some(r.pkid()?) } else { None };
    let topic_alias = if protocol == Protocol::V5 { r.properties()?.topic_alias } else { None };
    if topic.is_empty() && topic_alias.is_none() {
        return Err(CodecError::Malformed("empty topic"));
    }
    Ok(Publish { dup, qos, retain, topic, pkid, topic_alias, payload: r.0 })
}

/// The few v5 properties this endpoint reads; the rest are validated and skipped.
#[derive(Debug, Default)]
struct Properties {
    session_expiry: Option<u32>,
    topic_alias: Option<u16>,
    auth_method: Option<String>,
}

struct Reader(Bytes);

impl Reader {
    fn has_remaining(&self) -> bool {
        !self.0.is_empty()
    }

    fn need(&self, n: usize) -> Result<(), CodecError> {
        if self.0.len() < n { Err(CodecError::Malformed("packet shorter than its content")) } else { Ok(()) }
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        self.need(2)?;
        Ok(self.0.get_u16())
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }

    fn pkid(&mut self) -> Result<u16, CodecError> {
        match self.u16()? {
            0 => Err(CodecError::Malformed("packet identifier 0")),
            id => Ok(id),
        }
    }

    fn varint(&mut self) -> Result<usize, CodecError> {
        let mut value = 0usize;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= usize::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::Malformed("variable byte integer longer than 4 bytes"))
    }

    fn binary(&mut self) -> Result<Bytes, CodecError> {
        let len = usize::from(self.u16()?);
        self.need(len)?;
        Ok(self.0.split_to(len))
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let raw = self.binary()?;
        let text = std::str::from_utf8(&raw).map_err(|_| CodecError::Malformed("string is not UTF-8"))?;
        if text.contains('\0') {
            return Err(CodecError::Malformed("string contains U+0000"));
        }
        Ok(text.to_string())
    }

    fn properties(&mut self) -> Result<Properties, CodecError> {
        let len = self.varint()?;
        self.need(len)?;
        let mut r = Reader(self.0.split_to(len));
        let mut props = Properties::default();
        while r.has_remaining() {
            match r.varint()? {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a => {
                    r.u8()?;
                }
                0x13 | 0x21 | 0x22 => {
                    r.u16()?;
                }
                0x23 => props.topic_alias = Some(r.u16()?),
                0x11 => props.session_expiry = Some(r.u32()?),
                0x02 | 0x18 | 0x27 => {
                    r.u32()?;
                }
                0x0b => {
                    r.varint()?;
                }
                0x15 => props.auth_method = Some(r.string()?),
                0x03 | 0x08 | 0x12 | 0x1a | 0x1c | 0x1f => {
                    r.string()?;
                }
                0x09 | 0x16 => {
                    r.binary()?;
                }
                0x26 => {
                    r.string()?;
                    r.string()?;
                }
                _ => return Err(CodecError::Malformed("unknown property")),
            }
        }
        Ok(props)
    }
}

// ---- encoding (server → client) ----

/// 3.1.1 CONNACK return codes.
pub mod connack_v3 {
    pub const ACCEPTED: u8 = 0;
    pub const UNACCEPTABLE_PROTOCOL: u8 = 1;
    pub const IDENTIFIER_REJECTED: u8 = 2;
    pub const SERVER_UNAVAILABLE: u8 = 3;
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 4;
    pub const NOT_AUTHORIZED: u8 = 5;
}

/// 5.0 reason codes used here.
pub mod reason {
    pub const SUCCESS: u8 = 0x00;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const SERVER_BUSY: u8 = 0x89;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8b;
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8c;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8d;
    pub const SESSION_TAKEN_OVER: u8 = 0x8e;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    pub const QOS_NOT_SUPPORTED: u8 = 0x9b;
    pub const CONNECTION_RATE_EXCEEDED: u8 = 0x9f;
}

/// What the server announces in a 5.0 CONNACK.
#[derive(Debug, Clone, Default)]
pub struct ConnAckProperties {
    pub receive_maximum: u16,
    pub maximum_packet_size: u32,
    pub assigned_client_id: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub session_expiry: Option<u32>,
}

fn put_remaining_length(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

fn frame(kind_and_flags: u8, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(kind_and_flags);
    put_remaining_length(&mut out, body.len());
    out.put_slice(body);
    out.freeze()
}

fn put_string(out: &mut BytesMut, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(usize::from(u16::MAX))];
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

/// `code` is a 3.1.1 return code or a 5.0 reason code, matching `protocol`.
pub fn connack(protocol: Protocol, session_present: bool, code: u8, props: &ConnAckProperties) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u8(u8::from(session_present));
    body.put_u8(code);
    if protocol == Protocol::V5 {
        let mut p = BytesMut::new();
        if code == reason::SUCCESS {
            p.put_u8(0x21);
            p.put_u16(props.receive_maximum);
            p.put_u8(0x24); // maximum QoS
            p.put_u8(1);
            p.put_u8(0x27);
            p.put_u32(props.maximum_packet_size);
            p.put_u8(0x28); // wildcard subscriptions
            p.put_u8(0);
            p.put_u8(0x29); // subscription identifiers
            p.put_u8(0);
            p.put_u8(0x2a); // shared subscriptions
            p.put_u8(0);
            if let Some(id) = &props.assigned_client_id {
                p.put_u8(0x12);
                put_string(&mut p, id);
            }
            if let Some(keep_alive) = props.server_keep_alive {
                p.put_u8(0x13);
                p.put_u16(keep_alive);
            }
            if let Some(expiry) = props.session_expiry {
                p.put_u8(0x11);
                p.put_u32(expiry);
            }
        }
        put_remaining_length(&mut body, p.len());
        body.put_slice(&p);
    }
    frame(packet_type::CONNACK << 4, &body)
}

/// A 3.1.1 PUBACK ignores `reason`.
pub fn puback(protocol: Protocol, pkid: u16, reason: u8) -> Bytes {
    let mut body = BytesMut::with_capacity(4);
    body.put_u16(pkid);
    if protocol == Protocol::V5 && reason != reason::SUCCESS {
        body.put_u8(reason);
        body.put_u8(0);
    }
    frame(packet_type::PUBACK << 4, &body)
}

/// One return/reason code per requested filter.
pub fn suback(protocol: Protocol, pkid: u16, codes: &[u8]) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u16(pkid);
    if protocol == Protocol::V5 {
        body.put_u8(0);
    }
    body.put_slice(codes);
    frame(packet_type::SUBACK << 4, &body)
}

pub fn unsuback(protocol: Protocol, pkid: u16, filters: usize) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u16(pkid);
    if protocol == Protocol::V5 {
        body.put_u8(0);
        for _ in 0..filters {
            body.put_u8(reason::NO_SUBSCRIPTION_EXISTED);
        }
    }
    frame(packet_type::UNSUBACK << 4, &body)
}

pub fn pingresp() -> Bytes {
    frame(packet_type::PINGRESP << 4, &[])
}

/// 5.0 only: a server-initiated DISCONNECT with a reason.
pub fn disconnect_v5(reason: u8) -> Bytes {
    frame(packet_type::DISCONNECT << 4, &[reason, 0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A CONNECT as a client would encode it.
    pub(crate) fn connect_bytes(
        protocol: Protocol,
        client_id: &str,
        user: Option<&str>,
        pass: Option<&[u8]>,
        keep_alive: u16,
    ) -> BytesMut {
        let mut body = BytesMut::new();
        put_string(&mut body, "MQTT");
        body.put_u8(if protocol == Protocol::V5 { 5 } else { 4 });
        let mut flags = 0x02;
        if user.is_some() {
            flags |= 0x80;
        }
        if pass.is_some() {
            flags |= 0x40;
        }
        body.put_u8(flags);
        body.put_u16(keep_alive);
        if protocol == Protocol::V5 {
            body.put_u8(5);
            body.put_u8(0x11);
            body.put_u32(60);
        }
        put_string(&mut body, client_id);
        if let Some(u) = user {
            put_string(&mut body, u);
        }
        if let Some(p) = pass {
            body.put_u16(p.len() as u16);
            body.put_slice(p);
        }
        BytesMut::from(&frame(0x10, &body)[..])
    }

    fn publish_bytes(protocol: Protocol, qos: u8, topic: &str, pkid: u16, payload: &[u8]) -> BytesMut {
        let mut body = BytesMut::new();
        put_string(&mut body, topic);
        if qos > 0 {
            body.put_u16(pkid);
        }
        if protocol == Protocol::V5 {
            body.put_u8(0);
        }
        body.put_slice(payload);
        BytesMut::from(&frame(0x30 | (qos << 1), &body)[..])
    }

    #[test]
    fn decodes_connect_both_versions() {
        for protocol in [Protocol::V311, Protocol::V5] {
            let mut buf = connect_bytes(protocol, "c1", Some("f/d"), Some(b"secret"), 30);
            let Packet::Connect(c) = decode(&mut buf, None, 1024).unwrap().unwrap() else { panic!("not a connect") };
            assert_eq!(c.protocol, protocol);
            assert_eq!(c.client_id, "c1");
            assert_eq!(c.username.as_deref(), Some("f/d"));
            assert_eq!(c.password.as_deref(), Some(&b"secret"[..]));
            assert_eq!(c.keep_alive_secs, 30);
            assert!(c.clean_start);
            assert_eq!(c.session_expiry_secs, (protocol == Protocol::V5).then_some(60));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn incomplete_input_waits_for_more() {
        let full = publish_bytes(Protocol::V311, 1, "a/b", 7, b"{}");
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut part, Some(Protocol::V311), 1024).unwrap(), None, "cut at {cut}");
        }
        let mut buf = full.clone();
        let Packet::Publish(p) = decode(&mut buf, Some(Protocol::V311), 1024).unwrap().unwrap() else { panic!() };
        assert_eq!((p.qos, p.pkid, p.topic.as_str(), &p.payload[..]), (1, Some(7), "a/b", &b"{}"[..]));
    }

    #[test]
    fn oversized_packets_are_refused_from_the_header() {
        // Only the fixed header has arrived; the length alone is enough to refuse.
        let mut buf = BytesMut::from(&[0x30u8, 0xff, 0xff, 0xff, 0x7f][..]);
        assert!(matches!(decode(&mut buf, Some(Protocol::V5), 1024), Err(CodecError::TooLarge { .. })));
        let mut buf = BytesMut::from(&[0x30u8, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert!(matches!(decode(&mut buf, Some(Protocol::V5), 1024), Err(CodecError::Malformed(_))));
    }

    #[test]
    fn first_packet_must_be_connect_and_only_once() {
        let mut buf = publish_bytes(Protocol::V311, 0, "a", 0, b"");
        assert!(matches!(decode(&mut buf, None, 1024), Err(CodecError::Protocol(_))));
        let mut buf = connect_bytes(Protocol::V311, "c", None, None, 0);
        assert!(matches!(decode(&mut buf, Some(Protocol::V311), 1024), Err(CodecError::Protocol(_))));
    }

    #[test]
    fn unsupported_protocol_level() {
        let mut buf = connect_bytes(Protocol::V311, "c", None, None, 0);
        buf[8] = 3;
        assert_eq!(decode(&mut buf, None, 1024), Err(CodecError::UnsupportedProtocol { level: 3 }));
    }

    #[test]
    fn publish_validation() {
        let mut buf = publish_bytes(Protocol::V5, 1, "a/+", 1, b"");
        assert!(decode(&mut buf, Some(Protocol::V5), 1024).is_err());
        let mut buf = publish_bytes(Protocol::V5, 1, "a", 0, b"");
        assert!(decode(&mut buf, Some(Protocol::V5), 1024).is_err());
        let mut buf = publish_bytes(Protocol::V5, 2, "a", 5, b"x");
        let Packet::Publish(p) = decode(&mut buf, Some(Protocol::V5), 1024).unwrap().unwrap() else { panic!() };
        assert_eq!(p.qos, 2);
    }

    #[test]
    fn encodes_acks() {
        assert_eq!(&puback(Protocol::V311, 0x0102, reason::PAYLOAD_FORMAT_INVALID)[..], &[0x40, 2, 1, 2]);
        assert_eq!(&puback(Protocol::V5, 0x0102, reason::SUCCESS)[..], &[0x40, 2, 1, 2]);
        assert_eq!(&puback(Protocol::V5, 0x0102, reason::NOT_AUTHORIZED)[..], &[0x40, 4, 1, 2, 0x87, 0]);
        assert_eq!(
            &connack(Protocol::V311, false, connack_v3::NOT_AUTHORIZED, &ConnAckProperties::default())[..],
            &[0x20, 2, 0, 5]
        );
        assert_eq!(
            &connack(Protocol::V5, false, reason::BAD_USERNAME_OR_PASSWORD, &ConnAckProperties::default())[..],
            &[0x20, 3, 0, 0x86, 0]
        );
        assert_eq!(&suback(Protocol::V311, 9, &[0x80])[..], &[0x90, 3, 0, 9, 0x80]);
        assert_eq!(&pingresp()[..], &[0xd0, 0]);
        let mut long = BytesMut::new();
        put_remaining_length(&mut long, 321);
        assert_eq!(&long[..], &[0xc1, 0x02]);
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512), state in 0u8..3) {
            let protocol = match state { 0 => None, 1 => Some(Protocol::V311), _ => Some(Protocol::V5) };
            let mut buf = BytesMut::from(&bytes[..]);
            // Keep decoding until the input is exhausted or rejected.
            while let Ok(Some(_)) = decode(&mut buf, protocol, 256) {}
        }

        #[test]
        fn publish_round_trips(topic in "[a-z/]{1,40}", payload in prop::collection::vec(any::<u8>(), 0..300), pkid in 1u16.., v5 in any::<bool>()) {
            let protocol = if v5 { Protocol::V5 } else { Protocol::V311 };
            let mut buf = publish_bytes(protocol, 1, &topic, pkid, &payload);
            let Some(Packet::Publish(p)) = decode(&mut buf, Some(protocol), 1 << 20).unwrap() else { panic!() };
            prop_assert_eq!(p.topic, topic);
            prop_assert_eq!(p.pkid, Some(pkid));
            prop_assert_eq!(&p.payload[..], &payload[..]);
        }
    }
}
