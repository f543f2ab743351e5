//! Immutable part files: the flushed data of one time partition (block) from one flush,
//! compaction or retention rewrite.
//!
//! Layout: `[sections…][footer][footer_len: u32 LE][footer_crc: u32 LE][MAGIC]`.
//! Each series has up to three sections (raw chunk, 1-minute rollups, 1-hour rollups),
//! each with its own CRC32, located through the footer.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::agg::{Acc, Buckets, ExactSum};
use super::codec;
use super::log::{Cursor, put_varint, sync_dir};
use crate::{TsdbError, Value};

pub const MAGIC: &[u8; 8] = b"FOTSDBP1";
const VERSION: u32 = 1;
pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;

pub const RAW: usize = 0;
pub const MINUTE: usize = 1;
pub const HOUR: usize = 2;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Section {
    pub off: u64,
    pub len: u32,
    pub crc: u32,
}

impl Section {
    pub fn present(&self) -> bool {
        self.len > 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub min_ts: i64,
    pub max_ts: i64,
    pub count: u64,
    pub sections: [Section; 3],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    pub partition_start: i64,
    pub partition_len: i64,
    pub seq: u64,
    /// WAL segments numbered up to this are fully contained in parts once the group is complete.
    pub wal_covered: u64,
    /// Files written together (one flush); a group with a missing member is discarded on open.
    pub group: u64,
    pub group_size: u32,
    /// Parts this one supersedes (compaction, retention rewrites).
    pub replaces: Vec<u64>,
    pub entries: Vec<(u32, Entry)>,
}

#[derive(Debug)]
pub struct Part {
    pub path: PathBuf,
    pub file: File,
    pub size: u64,
    pub footer: Footer,
    pub index: HashMap<u32, usize>,
}

impl Part {
    pub fn entry(&self, series: u32) -> Option<&Entry> {
        self.index.get(&series).and_then(|&i| self.footer.entries.get(i)).map(|(_, e)| e)
    }

    pub fn partition_end(&self) -> i64 {
        self.footer.partition_start.saturating_add(self.footer.partition_len)
    }

    pub fn read_section(&self, s: Section) -> Result<Vec<u8>, TsdbError> {
        if s.off.saturating_add(u64::from(s.len)) > self.size {
            return Err(self.corrupt("section outside file"));
        }
        let mut buf = vec![0u8; s.len as usize];
        self.file.read_exact_at(&mut buf, s.off)?;
        if crc32fast::hash(&buf) != s.crc {
            return Err(self.corrupt("section checksum mismatch"));
        }
        Ok(buf)
    }

    pub fn read_raw(&self, e: &Entry) -> Result<Vec<(i64, Value)>, TsdbError> {
        let buf = self.read_section(e.sections[RAW])?;
        codec::decode_chunk(&buf).map_err(|err| self.corrupt(&err.to_string()))
    }

    pub fn read_rollup(&self, e: &Entry, res: usize) -> Result<Vec<(i64, Acc)>, TsdbError> {
        let buf = self.read_section(e.sections[res])?;
        decode_rollups(&buf).map_err(|err| self.corrupt(&err))
    }

    pub fn corrupt(&self, what: &str) -> TsdbError {
        TsdbError::Corrupt(format!("{}: {what}", self.path.display()))
    }

    pub fn open(path: &Path) -> Result<Part, TsdbError> {
        Self::from_file(path, File::open(path)?)
    }

    pub fn from_file(path: &Path, file: File) -> Result<Part, TsdbError> {
        let size = file.metadata()?.len();
        let corrupt = |what: &str| TsdbError::Corrupt(format!("{}: {what}", path.display()));
        if size < 16 {
            return Err(corrupt("file too short"));
        }
        let mut tail = [0u8; 16];
        file.read_exact_at(&mut tail, size - 16)?;
        if &tail[8..] != MAGIC {
            return Err(corrupt("bad magic"));
        }
        let flen = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        let fcrc = u32::from_le_bytes([tail[4], tail[5], tail[6], tail[7]]);
        if flen > size - 16 {
            return Err(corrupt("bad footer length"));
        }
        let mut fbuf = vec![0u8; flen as usize];
        file.read_exact_at(&mut fbuf, size - 16 - flen)?;
        if crc32fast::hash(&fbuf) != fcrc {
            return Err(corrupt("footer checksum mismatch"));
        }
        let footer = decode_footer(&fbuf).map_err(|e| corrupt(&e))?;
        let data_end = size - 16 - flen;
        for (_, e) in &footer.entries {
            for s in &e.sections {
                if s.off.saturating_add(u64::from(s.len)) > data_end {
                    return Err(corrupt("section outside data area"));
                }
            }
        }
        let index = footer.entries.iter().enumerate().map(|(i, (id, _))| (*id, i)).collect();
        Ok(Part { path: path.to_path_buf(), file, size, footer, index })
    }
}

/// One series' sections, ready to be written.
pub struct SeriesSections {
    pub series: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    pub count: u64,
    pub bytes: [Vec<u8>; 3],
}

/// Encodes one series' sorted, de-duplicated points of one partition with its rollups.
pub fn build_series(series: u32, points: &[(i64, Value)]) -> Option<SeriesSections> {
    let (first, last) = (points.first()?.0, points.last()?.0);
    let mut minute = Buckets::default();
    for &(ts, v) in points {
        minute.push(MINUTE_MS, ts, v);
    }
    // Hour rollups fold the minute rollups; exact sums make the grouping irrelevant.
    let mut hour = Buckets::default();
    for (start, acc) in &minute.map {
        hour.merge_acc(HOUR_MS, *start, acc.clone());
    }
    Some(SeriesSections {
        series,
        min_ts: first,
        max_ts: last,
        count: points.len() as u64,
        bytes: [codec::encode_chunk(points), encode_rollups(minute.map.iter()), encode_rollups(hour.map.iter())],
    })
}

pub struct PartSpec {
    pub partition_start: i64,
    pub partition_len: i64,
    pub seq: u64,
    pub wal_covered: u64,
    pub group: u64,
    pub group_size: u32,
    pub replaces: Vec<u64>,
}

pub fn file_name(seq: u64) -> String {
    format!("{seq:016}.part")
}

/// Writes a part durably: temp file, fsync, rename, fsync directory.
pub fn write_part(dir: &Path, spec: PartSpec, series: Vec<SeriesSections>) -> Result<Part, TsdbError> {
    let final_path = dir.join(file_name(spec.seq));
    let tmp_path = dir.join(format!("{}.tmp", file_name(spec.seq)));
    let mut data = Vec::new();
    let mut entries = Vec::with_capacity(series.len());
    for s in series {
        let mut sections = [Section::default(); 3];
        for (i, b) in s.bytes.iter().enumerate() {
            sections[i] = Section { off: data.len() as u64, len: b.len() as u32, crc: crc32fast::hash(b) };
            data.extend_from_slice(b);
        }
        entries.push((s.series, Entry { min_ts: s.min_ts, max_ts: s.max_ts, count: s.count, sections }));
    }
    let footer = Footer {
        partition_start: spec.partition_start,
        partition_len: spec.partition_len,
        seq: spec.seq,
        wal_covered: spec.wal_covered,
        group: spec.group,
        group_size: spec.group_size,
        replaces: spec.replaces,
        entries,
    };
    let fbytes = encode_footer(&footer);
    data.extend_from_slice(&fbytes);
    data.extend_from_slice(&(fbytes.len() as u32).to_le_bytes());
    data.extend_from_slice(&crc32fast::hash(&fbytes).to_le_bytes());
    data.extend_from_slice(MAGIC);
    {
        let mut f = File::create(&tmp_path)?;
        f.write_all(&data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp_path, &final_path)?;
    sync_dir(dir)?;
    let file = File::open(&final_path)?;
    let index = footer.entries.iter().enumerate().map(|(i, (id, _))| (*id, i)).collect();
    Ok(Part { path: final_path, file, size: data.len() as u64, footer, index })
}

/// Writes a copy of `part` keeping, per series, only the sections `keep` allows.
/// Returns `None` when nothing would remain.
pub fn rewrite_part(
    dir: &Path,
    part: &Part,
    seq: u64,
    keep: impl Fn(u32) -> [bool; 3],
) -> Result<Option<Part>, TsdbError> {
    let mut series = Vec::new();
    for (id, e) in &part.footer.entries {
        let k = keep(*id);
        let mut bytes: [Vec<u8>; 3] = Default::default();
        for res in [RAW, MINUTE, HOUR] {
            if k[res] && e.sections[res].present() {
                bytes[res] = part.read_section(e.sections[res])?;
            }
        }
        if bytes.iter().all(|b| b.is_empty()) {
            continue;
        }
        series.push(SeriesSections { series: *id, min_ts: e.min_ts, max_ts: e.max_ts, count: e.count, bytes });
    }
    if series.is_empty() {
        return Ok(None);
    }
    let spec = PartSpec {
        partition_start: part.footer.partition_start,
        partition_len: part.footer.partition_len,
        seq,
        wal_covered: part.footer.wal_covered,
        group: seq,
        group_size: 1,
        replaces: vec![part.footer.seq],
    };
    write_part(dir, spec, series).map(Some)
}

fn encode_footer(f: &Footer) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + f.entries.len() * 80);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&f.partition_start.to_le_bytes());
    out.extend_from_slice(&f.partition_len.to_le_bytes());
    out.extend_from_slice(&f.seq.to_le_bytes());
    out.extend_from_slice(&f.wal_covered.to_le_bytes());
    out.extend_from_slice(&f.group.to_le_bytes());
    out.extend_from_slice(&f.group_size.to_le_bytes());
    put_varint(&mut out, f.replaces.len() as u64);
    for r in &f.replaces {
        out.extend_from_slice(&r.to_le_bytes());
    }
    put_varint(&mut out, f.entries.len() as u64);
    for (id, e) in &f.entries {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&e.min_ts.to_le_bytes());
        out.extend_from_slice(&e.max_ts.to_le_bytes());
        out.extend_from_slice(&e.count.to_le_bytes());
        for s in &e.sections {
            out.extend_from_slice(&s.off.to_le_bytes());
            out.extend_from_slice(&s.len.to_le_bytes());
            out.extend_from_slice(&s.crc.to_le_bytes());
        }
    }
    out
}

fn decode_footer(b: &[u8]) -> Result<Footer, String> {
    let mut c = Cursor::new(b);
    let version = c.u32()?;
    if version != VERSION {
        return Err(format!("unsupported part version {version}"));
    }
    let partition_start = c.i64()?;
    let partition_len = c.i64()?;
    let seq = c.u64()?;
    let wal_covered = c.u64()?;
    let group = c.u64()?;
    let group_size = c.u32()?;
    let nrep = c.varint()? as usize;
    if nrep > b.len() / 8 {
        return Err("bad replaces count".into());
    }
    let mut replaces = Vec::with_capacity(nrep);
    for _ in 0..nrep {
        replaces.push(c.u64()?);
    }
    let n = c.varint()? as usize;
    if n > b.len() / 40 {
        return Err("bad entry count".into());
    }
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let id = c.u32()?;
        let min_ts = c.i64()?;
        let max_ts = c.i64()?;
        let count = c.u64()?;
        let mut sections = [Section::default(); 3];
        for s in &mut sections {
            *s = Section { off: c.u64()?, len: c.u32()?, crc: c.u32()? };
        }
        entries.push((id, Entry { min_ts, max_ts, count, sections }));
    }
    if !c.done() {
        return Err("trailing bytes in footer".into());
    }
    Ok(Footer { partition_start, partition_len, seq, wal_covered, group, group_size, replaces, entries })
}

/// Rollup rows, column by column, with the chunk codec's primitives: bucket starts
/// (deltas), counts, min, max, the largest sum partial, the remaining partials, and
/// first/last as (offset from bucket start, value).
fn encode_rollups<'a>(rows: impl Iterator<Item = (&'a i64, &'a Acc)>) -> Vec<u8> {
    let rows: Vec<(i64, &Acc)> = rows.map(|(s, a)| (*s, a)).collect();
    let mut w = codec::BitWriter::new();
    w.write(rows.len() as u64, 32);
    let col_i = |f: &dyn Fn(i64, &Acc) -> i64| rows.iter().map(|(s, a)| f(*s, a)).collect::<Vec<i64>>();
    let col_f = |f: &dyn Fn(&Acc) -> f64| rows.iter().map(|(_, a)| f(a)).collect::<Vec<f64>>();
    let col_v = |f: &dyn Fn(&Acc) -> Value| rows.iter().map(|(_, a)| f(a)).collect::<Vec<Value>>();
    codec::write_deltas(&mut w, &col_i(&|s, _| s));
    codec::write_ints(&mut w, &col_i(&|_, a| a.count as i64));
    codec::write_f64s(&mut w, &col_f(&|a| a.min));
    codec::write_f64s(&mut w, &col_f(&|a| a.max));
    codec::write_ints(&mut w, &col_i(&|_, a| a.sum.partials().len() as i64));
    codec::write_f64s(&mut w, &col_f(&|a| a.sum.partials().last().copied().unwrap_or(0.0)));
    let rest: Vec<f64> = rows
        .iter()
        .flat_map(|(_, a)| {
            let p = a.sum.partials();
            p[..p.len().saturating_sub(1)].iter().copied()
        })
        .collect();
    w.write(rest.len() as u64, 32);
    codec::write_f64s(&mut w, &rest);
    codec::write_ints(&mut w, &col_i(&|s, a| a.first.0.wrapping_sub(s)));
    codec::write_values(&mut w, &col_v(&|a| a.first.1));
    codec::write_ints(&mut w, &col_i(&|s, a| a.last.0.wrapping_sub(s)));
    codec::write_values(&mut w, &col_v(&|a| a.last.1));
    w.finish()
}

fn decode_rollups(b: &[u8]) -> Result<Vec<(i64, Acc)>, String> {
    let e = |err: codec::CodecError| err.to_string();
    let mut r = codec::BitReader::new(b);
    let n = codec::read_count(&mut r).map_err(e)?;
    let starts = codec::read_deltas(&mut r, n).map_err(e)?;
    let counts = codec::read_ints(&mut r, n).map_err(e)?;
    let mins = codec::read_f64s(&mut r, n).map_err(e)?;
    let maxs = codec::read_f64s(&mut r, n).map_err(e)?;
    let nparts = codec::read_ints(&mut r, n).map_err(e)?;
    let his = codec::read_f64s(&mut r, n).map_err(e)?;
    let nrest = r.read(32).map_err(e)? as usize;
    let expected = nparts.iter().fold(0usize, |acc, &k| acc.saturating_add((k.max(1) as usize).saturating_sub(1)));
    if nrest != expected {
        return Err("rollup partial count mismatch".into());
    }
    let rest = codec::read_f64s(&mut r, nrest).map_err(e)?;
    let first_off = codec::read_ints(&mut r, n).map_err(e)?;
    let first_v = codec::read_values(&mut r, n).map_err(e)?;
    let last_off = codec::read_ints(&mut r, n).map_err(e)?;
    let last_v = codec::read_values(&mut r, n).map_err(e)?;
    let mut rest = rest.into_iter();
    let mut out = Vec::with_capacity(n.min(1 << 16));
    for i in 0..n {
        let k = (nparts[i].max(1) as usize).saturating_sub(1);
        let mut partials: Vec<f64> = rest.by_ref().take(k).collect();
        partials.push(his[i]);
        out.push((
            starts[i],
            Acc {
                count: counts[i] as u64,
                min: mins[i],
                max: maxs[i],
                sum: ExactSum::from_partials(partials),
                first: (starts[i].wrapping_add(first_off[i]), first_v[i]),
                last: (starts[i].wrapping_add(last_off[i]), last_v[i]),
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollups_round_trip_and_garbage_never_panics() {
        let pts: Vec<(i64, Value)> = (0..500)
            .map(|i| (i * 7_001, if i % 3 == 0 { Value::Bool(i % 2 == 0) } else { Value::Float(i as f64 * 0.1) }))
            .collect();
        let s = build_series(1, &pts).unwrap();
        for res in [MINUTE, HOUR] {
            let rows = decode_rollups(&s.bytes[res]).unwrap();
            let bucket = if res == MINUTE { MINUTE_MS } else { HOUR_MS };
            assert_eq!(rows.iter().map(|(_, a)| a.count).sum::<u64>(), 500);
            assert!(rows.iter().all(|(start, a)| a.first.0 >= *start && a.last.0 < start + bucket));
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..3000usize {
            let mut data = s.bytes[MINUTE].clone();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x as usize) % data.len();
            data[at] ^= (x >> 32) as u8 | 1;
            data.truncate(data.len() - len % 7);
            let _ = decode_rollups(&data);
            let _ = decode_footer(&data);
            let _ = codec::decode_chunk(&data);
        }
    }
}
