//! Append-only record logs (the WAL segments and the series index share the framing):
//! `[len: u32 LE][crc32(len bytes ++ payload): u32 LE][payload]`.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::path::Path;

use crate::{TsdbError, Value};

/// A record larger than this is treated as corruption rather than allocated.
pub const MAX_RECORD: usize = 256 << 20;

pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Bytes up to the end of the last good record.
    pub valid_len: u64,
    pub file_len: u64,
    pub records: u64,
    /// Why scanning stopped before the end of the file, if it did.
    pub damage: Option<String>,
}

/// Reads records in order until the end or the first damaged one. `on_record` returning
/// an error marks that record as damaged too (a payload that passes the CRC but does not
/// decode is still not trustworthy).
pub fn scan(path: &Path, on_record: impl FnMut(&[u8]) -> Result<(), String>) -> Result<ScanOutcome, TsdbError> {
    scan_log(path, Tail::Strict, on_record)
}

/// [`scan`] for a WAL segment, which may be preallocated: an all-zero record header marks
/// the end of what was written (a real record never has length 0 with checksum 0). Only
/// for logs that are never appended to after a reopen — a zero run left by a crash in the
/// middle of an appended log would otherwise hide the records written after it.
pub fn scan_segment(path: &Path, on_record: impl FnMut(&[u8]) -> Result<(), String>) -> Result<ScanOutcome, TsdbError> {
    scan_log(path, Tail::ZeroedIsEnd, on_record)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tail {
    Strict,
    ZeroedIsEnd,
}

fn scan_log(
    path: &Path,
    tail: Tail,
    mut on_record: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<ScanOutcome, TsdbError> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut out = ScanOutcome { file_len, ..ScanOutcome::default() };
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; 8];
        match read_full(&mut r, &mut header)? {
            0 => break,
            8 => {}
            _ => {
                out.damage = Some(format!("torn record header at byte {}", out.valid_len));
                break;
            }
        }
        if tail == Tail::ZeroedIsEnd && header == [0u8; 8] {
            break;
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD || out.valid_len + 8 + len as u64 > file_len {
            out.damage = Some(format!("bad or torn record length {len} at byte {}", out.valid_len));
            break;
        }
        payload.resize(len, 0);
        if read_full(&mut r, &mut payload)? != len {
            out.damage = Some(format!("torn record at byte {}", out.valid_len));
            break;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&header[..4]);
        h.update(&payload);
        if h.finalize() != crc {
            out.damage = Some(format!("checksum mismatch at byte {}", out.valid_len));
            break;
        }
        if let Err(e) = on_record(&payload) {
            out.damage = Some(format!("undecodable record at byte {}: {e}", out.valid_len));
            break;
        }
        out.valid_len += 8 + len as u64;
        out.records += 1;
    }
    Ok(out)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, TsdbError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

/// Cuts a damaged tail so later appends follow the last good record.
pub fn truncate(path: &Path, len: u64) -> Result<(), TsdbError> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_all()?;
    Ok(())
}

pub fn sync_dir(path: &Path) -> Result<(), TsdbError> {
    File::open(path)?.sync_all()?;
    Ok(())
}

// ---- little byte codec used by WAL and index payloads ----

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub struct Cursor<'a> {
    pub data: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        let b = *self.data.get(self.pos).ok_or("unexpected end")?;
        self.pos += 1;
        Ok(b)
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let s = self.data.get(self.pos..end).ok_or("unexpected end")?;
        self.pos = end;
        Ok(s)
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub fn i64(&mut self) -> Result<i64, String> {
        Ok(self.u64()? as i64)
    }

    pub fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_bits(self.u64()?))
    }

    pub fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    pub fn str(&mut self) -> Result<&'a str, String> {
        let n = self.u8()? as usize;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| "invalid utf-8".to_string())
    }

    pub fn value(&mut self) -> Result<Value, String> {
        match self.u8()? {
            0 => Ok(Value::Float(self.f64()?)),
            1 => Ok(Value::Bool(false)),
            2 => Ok(Value::Bool(true)),
            t => Err(format!("unknown value tag {t}")),
        }
    }
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    // Ids are validated to at most 128 bytes, so one length byte suffices.
    out.push(s.len().min(255) as u8);
    out.extend_from_slice(&s.as_bytes()[..s.len().min(255)]);
}

pub fn put_value(out: &mut Vec<u8>, v: Value) {
    match v {
        Value::Float(f) => {
            out.push(0);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::Bool(false) => out.push(1),
        Value::Bool(true) => out.push(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn torn_tails_stop_at_last_good_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut buf = Vec::new();
        for i in 0..10u8 {
            frame(&vec![i; 10 + i as usize], &mut buf);
        }
        let full = buf.len();
        for cut in 0..full {
            std::fs::File::create(&path).unwrap().write_all(&buf[..cut]).unwrap();
            let mut seen = Vec::new();
            let out = scan(&path, |p| {
                seen.push(p.to_vec());
                Ok(())
            })
            .unwrap();
            assert!(out.valid_len <= cut as u64);
            for (i, p) in seen.iter().enumerate() {
                assert_eq!(p, &vec![i as u8; 10 + i]);
            }
        }
        for flip in 0..full {
            let mut bad = buf.clone();
            bad[flip] ^= 0x5a;
            std::fs::File::create(&path).unwrap().write_all(&bad).unwrap();
            let mut seen = 0usize;
            let out = scan(&path, |p| {
                assert_eq!(p, &vec![seen as u8; 10 + seen][..]);
                seen += 1;
                Ok(())
            })
            .unwrap();
            assert!(out.damage.is_some());
        }
    }

    #[test]
    fn a_zeroed_tail_ends_a_segment_cleanly_but_is_damage_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut buf = Vec::new();
        frame(b"one", &mut buf);
        frame(b"two", &mut buf);
        let written = buf.len() as u64;
        buf.resize(buf.len() + 4096, 0);
        std::fs::File::create(&path).unwrap().write_all(&buf).unwrap();

        let mut seen = Vec::new();
        let out = scan_segment(&path, |p| {
            seen.push(p.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!((out.valid_len, out.records, out.damage), (written, 2, None));

        let strict = scan(&path, |_| Ok(())).unwrap();
        assert_eq!(strict.valid_len, written);
        assert!(strict.damage.is_some(), "an appended log must not stop silently at zeros");

        // A torn record in front of the zeros is still damage.
        let mut torn = buf.clone();
        torn[written as usize] = 9;
        std::fs::File::create(&path).unwrap().write_all(&torn).unwrap();
        assert!(scan_segment(&path, |_| Ok(())).unwrap().damage.is_some());
    }
}
