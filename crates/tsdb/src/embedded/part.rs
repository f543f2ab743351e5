//! Immutable part files: the flushed data of one time partition (block) from one flush,
//! compaction or retention rewrite.
//!
//! Layout: `[sections…][footer][footer_len: u32 LE][footer_crc: u32 LE][MAGIC]`.
//! Each series has up to three sections (raw chunk, 1-minute rollups, 1-hour rollups),
//! each with its own CRC32, located through the footer's fixed-width entries.
//!
//! In memory a part keeps only its part-wide footer fields, a few totals and a compact
//! series directory (see [`Directory`]); a series' entry is read from the file when needed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::agg::{Acc, Buckets, ExactSum};
use super::codec;
use super::intern::{IdInterner, SharedIds};
use super::log::{Cursor, put_varint, sync_dir};
use crate::{TsdbError, Value};

pub const MAGIC: &[u8; 8] = b"FOTSDBP1";
const VERSION: u32 = 1;
pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;

pub const RAW: usize = 0;
pub const MINUTE: usize = 1;
pub const HOUR: usize = 2;

/// Encoded size of one footer entry: series u32, min_ts i64, max_ts i64, count u64 and
/// three sections of (off u64, len u32, crc32 u32). Fixed width, so the entry at file
/// position `i` starts at a computable offset.
pub const ENTRY_LEN: usize = 4 + 8 + 8 + 8 + 3 * (8 + 4 + 4);
/// Entries fetched per read by [`EntryReader`] (~76 KiB): bulk scans read footers in
/// blocks instead of one `pread` per series.
const READ_AHEAD: usize = 1024;

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

/// The part-wide fields of a footer. The per-series entries stay on disk.
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
}

/// Totals over a part's entries, computed once when the footer is decoded (open or write),
/// so `stats()` (polled by the metrics exporter), compaction and retention planning never
/// read entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Points of the entries that have a raw section.
    pub raw_points: u64,
    /// Section bytes per resolution (raw, 1 min, 1 h).
    pub section_bytes: [u64; 3],
    /// Entries with a section of each resolution.
    pub with_section: [u64; 3],
}

impl Summary {
    fn add(&mut self, e: &Entry) {
        for (res, s) in e.sections.iter().enumerate() {
            self.section_bytes[res] += u64::from(s.len);
            if s.present() {
                self.with_section[res] += 1;
            }
        }
        if e.sections[RAW].present() {
            self.raw_points += e.count;
        }
    }
}

/// Which series a part holds and where their footer entries are: all a part keeps in
/// memory per series.
///
/// Footer entries have a fixed width ([`ENTRY_LEN`]), so the entry at file position `i`
/// lives at `entries_at + i × ENTRY_LEN`, and every writer of this engine emits entries in
/// ascending series order. The sorted id array alone is therefore the directory:
/// **4 bytes per series per part**, down from ~100 (decoded 72-byte entries plus a hash
/// index), which is what made 150 parts × 200k series cost GBs. A lookup is a binary
/// search plus one 76-byte `pread` (page-cache hot for parts in use), negligible next to
/// the chunk read that follows it. Alternatives: keeping `min_ts`/`max_ts` in memory too
/// would prune without the `pread` but quadruples the size, and a packed copy of whole
/// entries is the 76 bytes we are avoiding. No on-disk change was needed, so every
/// existing part file opens as before.
///
/// The id array itself is interned store-wide ([`IdInterner`]): parts holding the same
/// series set (consecutive flushes and partitions, almost always) share one array, so the
/// 4 bytes per series are paid once per distinct set rather than once per part.
///
/// A file whose entries are not in ascending order (never written by this engine, but
/// accepted) also keeps each id's file position: 4 more bytes per series, per part.
#[derive(Debug)]
struct Directory {
    ids: Arc<SharedIds>,
    /// File position of `ids[k]`; empty when it is `k` (entries in ascending order).
    positions: Box<[u32]>,
    /// Absolute file offset of the first entry.
    entries_at: u64,
}

impl Directory {
    fn new(ids_in_file_order: Vec<u32>, entries_at: u64, interner: &IdInterner) -> Result<Self, String> {
        if ids_in_file_order.windows(2).all(|w| w[0] < w[1]) {
            return Ok(Self { ids: interner.intern(ids_in_file_order), positions: Box::default(), entries_at });
        }
        let mut pairs: Vec<(u32, u32)> = ids_in_file_order.iter().zip(0u32..).map(|(&id, pos)| (id, pos)).collect();
        pairs.sort_unstable();
        if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err("duplicate series in footer".into());
        }
        Ok(Self {
            ids: interner.intern(pairs.iter().map(|p| p.0).collect()),
            positions: pairs.iter().map(|p| p.1).collect(),
            entries_at,
        })
    }

    /// File position of `series`' entry.
    fn position(&self, series: u32) -> Option<usize> {
        let k = self.ids.ids().binary_search(&series).ok()?;
        Some(self.positions.get(k).map_or(k, |&p| p as usize))
    }
}

#[derive(Debug)]
pub struct Part {
    pub path: PathBuf,
    pub file: File,
    pub size: u64,
    pub footer: Footer,
    pub summary: Summary,
    dir: Directory,
    /// Start of the footer = end of the section area.
    data_end: u64,
}

impl Part {
    pub fn series_count(&self) -> usize {
        self.dir.ids.ids().len()
    }

    /// The series of this part, ascending.
    pub fn series_ids(&self) -> &[u32] {
        self.dir.ids.ids()
    }

    pub fn contains(&self, series: u32) -> bool {
        self.series_ids().binary_search(&series).is_ok()
    }

    /// The interned id array, possibly shared with other parts: count its
    /// `heap_bytes()` once per distinct array (`Arc::as_ptr`).
    pub fn shared_ids(&self) -> &Arc<SharedIds> {
        &self.dir.ids
    }

    /// Heap bytes of the directory that belong to this part alone (the file positions of a
    /// footer whose entries are not ascending; 0 for every file this engine writes).
    pub fn own_directory_bytes(&self) -> usize {
        self.dir.positions.len() * std::mem::size_of::<u32>()
    }

    /// Heap bytes of the directory if nothing were shared: the per-series cost of this part
    /// alone. What a store pays is in `StoreStats::directory_bytes`.
    #[cfg(test)]
    pub fn directory_bytes(&self) -> usize {
        self.dir.ids.heap_bytes() + self.own_directory_bytes()
    }

    /// Whether every entry still has its raw section (retention has dropped none).
    pub fn has_all_raw(&self) -> bool {
        self.summary.with_section[RAW] == self.series_count() as u64
    }

    /// The entry of `series`: a binary search and one small `pread`.
    pub fn entry(&self, series: u32) -> Result<Option<Entry>, TsdbError> {
        let Some(pos) = self.dir.position(series) else {
            return Ok(None);
        };
        let mut buf = [0u8; ENTRY_LEN];
        self.file.read_exact_at(&mut buf, self.entry_offset(pos))?;
        self.checked_entry(&buf, pos).map(|(_, e)| Some(e))
    }

    /// Sequential access to many entries (compaction, retention, check), read in blocks.
    pub fn reader(&self) -> EntryReader<'_> {
        EntryReader { part: self, buf: Vec::new(), first: 0 }
    }

    /// Every entry in file order (ascending series for every file this engine writes).
    pub fn entries(&self) -> impl Iterator<Item = Result<(u32, Entry), TsdbError>> + '_ {
        let mut reader = self.reader();
        (0..self.series_count()).map(move |pos| reader.at(pos))
    }

    fn entry_offset(&self, pos: usize) -> u64 {
        self.dir.entries_at + (pos as u64) * ENTRY_LEN as u64
    }

    /// Decodes the entry read from file position `pos` and re-checks what `open` checked
    /// (the footer CRC is verified only at open): the id belongs at that position and the
    /// sections lie inside the data area. Section CRCs cover the rest.
    fn checked_entry(&self, b: &[u8], pos: usize) -> Result<(u32, Entry), TsdbError> {
        let (id, e) = decode_entry(b).map_err(|err| self.corrupt(&err))?;
        if self.dir.position(id) != Some(pos) {
            return Err(self.corrupt("footer entry does not match the directory"));
        }
        check_sections(&e, self.data_end).map_err(|err| self.corrupt(err))?;
        Ok((id, e))
    }

    pub fn partition_end(&self) -> i64 {
        self.footer.partition_start.saturating_add(self.footer.partition_len)
    }

    pub fn read_section(&self, s: Section) -> Result<Vec<u8>, TsdbError> {
        self.section_end(s)?;
        let mut buf = vec![0u8; s.len as usize];
        self.file.read_exact_at(&mut buf, s.off)?;
        self.check_section(s, &buf)?;
        Ok(buf)
    }

    /// Where section `s` ends; an error unless it lies inside the file.
    fn section_end(&self, s: Section) -> Result<u64, TsdbError> {
        let end = s.off.saturating_add(u64::from(s.len));
        if end > self.size {
            return Err(self.corrupt("section outside file"));
        }
        Ok(end)
    }

    /// Whether `bytes`, read for section `s`, match its checksum.
    fn check_section(&self, s: Section, bytes: &[u8]) -> Result<(), TsdbError> {
        if crc32fast::hash(bytes) != s.crc {
            return Err(self.corrupt("section checksum mismatch"));
        }
        Ok(())
    }

    pub fn read_raw(&self, e: &Entry) -> Result<Vec<(i64, Value)>, TsdbError> {
        self.decode_raw(&self.read_section(e.sections[RAW])?)
    }

    fn decode_raw(&self, bytes: &[u8]) -> Result<Vec<(i64, Value)>, TsdbError> {
        codec::decode_chunk(bytes).map_err(|err| self.corrupt(&err.to_string()))
    }

    /// A reader for visiting many series in file order (merges): sections come from a
    /// read-ahead buffer instead of one `pread` each.
    pub fn section_reader(&self) -> SectionReader<'_> {
        SectionReader { part: self, buf: Vec::new(), start: 0 }
    }

    pub fn read_rollup(&self, e: &Entry, res: usize) -> Result<Vec<(i64, Acc)>, TsdbError> {
        let buf = self.read_section(e.sections[res])?;
        decode_rollups(&buf).map_err(|err| self.corrupt(&err))
    }

    pub fn corrupt(&self, what: &str) -> TsdbError {
        TsdbError::Corrupt(format!("{}: {what}", self.path.display()))
    }

    pub fn open(path: &Path, interner: &IdInterner) -> Result<Part, TsdbError> {
        Self::from_file(path, File::open(path)?, interner)
    }

    /// Reads and verifies the whole footer once (CRC, every section's bounds), keeps the
    /// directory (its id array interned) and totals, and drops the decoded entries.
    pub fn from_file(path: &Path, file: File, interner: &IdInterner) -> Result<Part, TsdbError> {
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
        let data_end = size - 16 - flen;
        file.read_exact_at(&mut fbuf, data_end)?;
        if crc32fast::hash(&fbuf) != fcrc {
            return Err(corrupt("footer checksum mismatch"));
        }
        let (footer, entries_at) = decode_footer(&fbuf).map_err(|e| corrupt(&e))?;
        let mut summary = Summary::default();
        let mut ids = Vec::with_capacity((fbuf.len() - entries_at) / ENTRY_LEN);
        for b in fbuf[entries_at..].chunks_exact(ENTRY_LEN) {
            let (id, e) = decode_entry(b).map_err(|e| corrupt(&e))?;
            check_sections(&e, data_end).map_err(corrupt)?;
            summary.add(&e);
            ids.push(id);
        }
        let dir = Directory::new(ids, data_end + entries_at as u64, interner).map_err(|e| corrupt(&e))?;
        Ok(Part { path: path.to_path_buf(), file, size, footer, summary, dir, data_end })
    }
}

/// Buffered access to one part's entries; efficient for ascending positions (bulk scans,
/// merges walking series in order), correct for any.
pub struct EntryReader<'a> {
    part: &'a Part,
    buf: Vec<u8>,
    /// File position of the first entry in `buf`.
    first: usize,
}

impl EntryReader<'_> {
    pub fn get(&mut self, series: u32) -> Result<Option<Entry>, TsdbError> {
        match self.part.dir.position(series) {
            Some(pos) => self.at(pos).map(|(_, e)| Some(e)),
            None => Ok(None),
        }
    }

    /// The entry at file position `pos` (< `series_count()`).
    pub fn at(&mut self, pos: usize) -> Result<(u32, Entry), TsdbError> {
        let n = self.part.series_count();
        if pos >= n {
            return Err(self.part.corrupt("entry position out of range"));
        }
        if pos < self.first || pos >= self.first + self.buf.len() / ENTRY_LEN {
            self.buf.resize(READ_AHEAD.min(n - pos) * ENTRY_LEN, 0);
            self.part.file.read_exact_at(&mut self.buf, self.part.entry_offset(pos))?;
            self.first = pos;
        }
        let at = (pos - self.first) * ENTRY_LEN;
        self.part.checked_entry(&self.buf[at..at + ENTRY_LEN], pos)
    }
}

/// Bytes read at once by a [`SectionReader`]: a merge of a 100k-series part read each
/// raw section with its own `pread` (3 % of the server's CPU under load).
const SECTION_READ_AHEAD: u64 = 1 << 20;

pub struct SectionReader<'a> {
    part: &'a Part,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
}

impl SectionReader<'_> {
    /// The checksummed bytes of section `s`, from the read-ahead buffer.
    fn bytes(&mut self, s: Section) -> Result<&[u8], TsdbError> {
        let part = self.part;
        let end = part.section_end(s)?;
        if s.off < self.start || end > self.start + self.buf.len() as u64 {
            let len = SECTION_READ_AHEAD.max(u64::from(s.len)).min(part.size - s.off);
            self.buf.resize(len as usize, 0);
            part.file.read_exact_at(&mut self.buf, s.off)?;
            self.start = s.off;
        }
        let at = (s.off - self.start) as usize;
        let bytes = &self.buf[at..at + s.len as usize];
        part.check_section(s, bytes)?;
        Ok(bytes)
    }

    /// The raw points of `e`, like [`Part::read_raw`].
    pub fn read_raw(&mut self, e: &Entry) -> Result<Vec<(i64, Value)>, TsdbError> {
        let part = self.part;
        part.decode_raw(self.bytes(e.sections[RAW])?)
    }

    /// Series `series` as stored (every section's bytes, checksums verified), for a merge
    /// in which no other part has it: copied, not decoded and encoded again.
    pub fn copy_series(&mut self, series: u32, e: &Entry) -> Result<SeriesSections, TsdbError> {
        let mut bytes: [Vec<u8>; 3] = Default::default();
        for (out, s) in bytes.iter_mut().zip(e.sections) {
            *out = self.bytes(s)?.to_vec();
        }
        Ok(SeriesSections { series, min_ts: e.min_ts, max_ts: e.max_ts, count: e.count, bytes })
    }
}

fn check_sections(e: &Entry, data_end: u64) -> Result<(), &'static str> {
    if e.sections.iter().any(|s| s.off.saturating_add(u64::from(s.len)) > data_end) {
        return Err("section outside data area");
    }
    Ok(())
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

pub fn file_name(seq: u64) -> String {
    format!("{seq:016}.part")
}

/// A part being written is forced to disk in steps of this many bytes.
const WRITEBACK_BYTES: u64 = 4 << 20;

/// The step while paced: what the device has queued when the WAL's `fdatasync` arrives.
const PACED_WRITEBACK_BYTES: u64 = 1 << 20;

/// How fast background part writes (flushes, merges) go to disk. The WAL's small
/// `fdatasync` (the PUBACK path) waits behind whatever the device has queued, so a part
/// written at full speed shows up as PUBACK stalls; paced, it goes in 1-MiB steps at
/// `bytes_per_sec` — unless the head is filling up (`hurry`), when getting it out of
/// memory matters more than the WAL's latency.
#[derive(Debug, Clone)]
pub struct Pacing {
    pub bytes_per_sec: u64,
    /// The store's head size, and the size from which it is in a hurry.
    pub head_points: Arc<AtomicUsize>,
    pub hurry_at: usize,
}

impl Pacing {
    fn hurry(&self) -> bool {
        self.head_points.load(Ordering::Relaxed) >= self.hurry_at
    }
}

/// Writes a part as a stream (sections go to the file as they are added; only the 76-byte
/// entries are buffered for the footer), so merging a whole partition never holds its data
/// in memory. `finish` makes it durable: fsync, rename, fsync directory. Dropped
/// unfinished, it removes its temp file.
pub struct PartWriter {
    dir: PathBuf,
    footer: Footer,
    tmp_path: PathBuf,
    out: BufWriter<File>,
    written: u64,
    /// Bytes already forced to disk (see [`WRITEBACK_BYTES`]).
    synced: u64,
    pacing: Option<(Pacing, std::time::Instant)>,
    entries: Vec<u8>,
    ids: Vec<u32>,
    summary: Summary,
    finished: bool,
}

impl PartWriter {
    pub fn create(dir: &Path, footer: Footer) -> Result<Self, TsdbError> {
        let tmp_path = dir.join(format!("{}.tmp", file_name(footer.seq)));
        let out = BufWriter::with_capacity(1 << 20, File::create(&tmp_path)?);
        Ok(Self {
            dir: dir.to_path_buf(),
            footer,
            tmp_path,
            out,
            synced: 0,
            pacing: None,
            written: 0,
            entries: Vec::new(),
            ids: Vec::new(),
            summary: Summary::default(),
            finished: false,
        })
    }

    /// Appends one series; callers add series in ascending id order.
    pub fn add(&mut self, s: SeriesSections) -> Result<(), TsdbError> {
        let mut sections = [Section::default(); 3];
        for (i, b) in s.bytes.iter().enumerate() {
            sections[i] = Section { off: self.written, len: b.len() as u32, crc: crc32fast::hash(b) };
            self.out.write_all(b)?;
            self.written += b.len() as u64;
        }
        self.pace_writeback(self.written)?;
        let e = Entry { min_ts: s.min_ts, max_ts: s.max_ts, count: s.count, sections };
        encode_entry(&mut self.entries, s.series, &e);
        self.summary.add(&e);
        self.ids.push(s.series);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Writes at the pace of `pacing` (`None`: as fast as the disk takes it).
    pub fn paced(mut self, pacing: Option<Pacing>) -> Self {
        self.pacing = pacing.filter(|p| p.bytes_per_sec > 0).map(|p| (p, std::time::Instant::now()));
        self
    }

    /// Forces what was written to disk every [`WRITEBACK_BYTES`] (paced: every
    /// [`PACED_WRITEBACK_BYTES`], then waits for the pace): one fsync of a whole part (tens
    /// of MB with 200k series and their rollups) queued the WAL's small `fdatasync` behind
    /// it on the same disk — PUBACK stalls of up to 250 ms during flushes.
    fn pace_writeback(&mut self, at: u64) -> Result<(), TsdbError> {
        let step = if self.pacing.is_some() { PACED_WRITEBACK_BYTES } else { WRITEBACK_BYTES };
        if at - self.synced >= step {
            self.out.flush()?;
            self.out.get_ref().sync_data()?;
            self.synced = at;
            if let Some((pacing, started)) = &self.pacing
                && !pacing.hurry()
            {
                let due = std::time::Duration::from_secs_f64(at as f64 / pacing.bytes_per_sec as f64);
                if let Some(ahead) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(ahead);
                }
            }
        }
        Ok(())
    }

    /// Makes the part durable and returns it, its id array interned.
    pub fn finish(mut self, interner: &IdInterner) -> Result<Part, TsdbError> {
        let head = encode_footer_head(&self.footer, self.ids.len());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(&self.entries);
        let flen = head.len() + self.entries.len();
        self.out.write_all(&head)?;
        let entries = std::mem::take(&mut self.entries);
        let mut at = self.written + head.len() as u64;
        for chunk in entries.chunks(WRITEBACK_BYTES as usize) {
            self.out.write_all(chunk)?;
            at += chunk.len() as u64;
            self.pace_writeback(at)?;
        }
        self.out.write_all(&(flen as u32).to_le_bytes())?;
        self.out.write_all(&crc.finalize().to_le_bytes())?;
        self.out.write_all(MAGIC)?;
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        let final_path = self.dir.join(file_name(self.footer.seq));
        std::fs::rename(&self.tmp_path, &final_path)?;
        self.finished = true;
        sync_dir(&self.dir)?;
        let file = File::open(&final_path)?;
        let data_end = self.written;
        let dir = Directory::new(std::mem::take(&mut self.ids), data_end + head.len() as u64, interner)
            .map_err(|e| TsdbError::Corrupt(format!("{}: {e}", final_path.display())))?;
        Ok(Part {
            path: final_path,
            file,
            size: data_end + flen as u64 + 16,
            footer: self.footer.clone(),
            summary: self.summary,
            dir,
            data_end,
        })
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// Writes a part durably: temp file, fsync, rename, fsync directory.
pub fn write_part(
    dir: &Path,
    footer: Footer,
    series: Vec<SeriesSections>,
    interner: &IdInterner,
    pacing: Option<Pacing>,
) -> Result<Part, TsdbError> {
    let mut w = PartWriter::create(dir, footer)?.paced(pacing);
    for s in series {
        w.add(s)?;
    }
    w.finish(interner)
}

/// Writes a copy of `part` keeping, per series, only the sections `keep` allows.
/// Returns `None` when nothing would remain.
pub fn rewrite_part(
    dir: &Path,
    part: &Part,
    seq: u64,
    keep: impl Fn(u32) -> [bool; 3],
    interner: &IdInterner,
) -> Result<Option<Part>, TsdbError> {
    let footer = Footer {
        partition_start: part.footer.partition_start,
        partition_len: part.footer.partition_len,
        seq,
        wal_covered: part.footer.wal_covered,
        group: seq,
        group_size: 1,
        replaces: vec![part.footer.seq],
    };
    let mut w = PartWriter::create(dir, footer)?;
    for entry in part.entries() {
        let (id, e) = entry?;
        let k = keep(id);
        let mut bytes: [Vec<u8>; 3] = Default::default();
        for res in [RAW, MINUTE, HOUR] {
            if k[res] && e.sections[res].present() {
                bytes[res] = part.read_section(e.sections[res])?;
            }
        }
        if bytes.iter().all(|b| b.is_empty()) {
            continue;
        }
        w.add(SeriesSections { series: id, min_ts: e.min_ts, max_ts: e.max_ts, count: e.count, bytes })?;
    }
    if w.is_empty() {
        return Ok(None);
    }
    w.finish(interner).map(Some)
}

/// The footer up to and including the entry count; the entries follow.
fn encode_footer_head(f: &Footer, entries: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + f.replaces.len() * 8);
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
    put_varint(&mut out, entries as u64);
    out
}

fn encode_entry(out: &mut Vec<u8>, id: u32, e: &Entry) {
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

fn decode_entry(b: &[u8]) -> Result<(u32, Entry), String> {
    let mut c = Cursor::new(b);
    let id = c.u32()?;
    let min_ts = c.i64()?;
    let max_ts = c.i64()?;
    let count = c.u64()?;
    let mut sections = [Section::default(); 3];
    for s in &mut sections {
        *s = Section { off: c.u64()?, len: c.u32()?, crc: c.u32()? };
    }
    Ok((id, Entry { min_ts, max_ts, count, sections }))
}

/// Decodes the part-wide fields; returns them and where the entries start in `b`, having
/// checked that exactly the announced number of entries follows.
fn decode_footer(b: &[u8]) -> Result<(Footer, usize), String> {
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
    let n = c.varint()?;
    let rest = (b.len() - c.pos) as u64;
    if n.checked_mul(ENTRY_LEN as u64) != Some(rest) {
        return Err(if n.saturating_mul(ENTRY_LEN as u64) > rest {
            "bad entry count".into()
        } else {
            "trailing bytes in footer".into()
        });
    }
    Ok((Footer { partition_start, partition_len, seq, wal_covered, group, group_size, replaces }, c.pos))
}

/// Rollup rows, column by column, with the chunk codec's primitives: bucket starts
/// (deltas), counts, min, max, the largest sum partial, the remaining partials, and
/// first/last as (offset from bucket start, value).
fn encode_rollups<'a>(rows: impl Iterator<Item = (&'a i64, &'a Acc)>) -> Vec<u8> {
    let rows: Vec<(i64, &Acc)> = rows.map(|(s, a)| (*s, a)).collect();
    // A guess (most rows take a few dozen bytes) that saves regrowing the buffer.
    let mut w = codec::BitWriter::with_capacity(64 + rows.len() * 48);
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

    fn points(id: u32) -> Vec<(i64, Value)> {
        (0..50 + i64::from(id % 7))
            .map(|i| (i * 1000 + i64::from(id), Value::Float(f64::from(id) + i as f64)))
            .collect()
    }

    fn footer(seq: u64) -> Footer {
        Footer {
            partition_start: 0,
            partition_len: 7_200_000,
            seq,
            wal_covered: 3,
            group: seq,
            group_size: 1,
            replaces: vec![1, 2],
        }
    }

    fn write(dir: &Path, seq: u64, ids: &[u32]) -> Result<Part, TsdbError> {
        let mut w = PartWriter::create(dir, footer(seq))?;
        for &id in ids {
            w.add(build_series(id, &points(id)).unwrap())?;
        }
        w.finish(&IdInterner::new())
    }

    fn open(path: &Path) -> Result<Part, TsdbError> {
        Part::open(path, &IdInterner::new())
    }

    #[test]
    fn directory_lookup_hit_and_miss() {
        let dir = tempfile::tempdir().unwrap();
        let ids = [3u32, 7, 8, 1000, 70_000];
        let written = write(dir.path(), 5, &ids).unwrap();
        let opened = open(&written.path).unwrap();
        assert_eq!(written.summary, opened.summary);
        assert_eq!(opened.footer, footer(5));
        assert_eq!(opened.summary.raw_points, ids.iter().map(|&id| points(id).len() as u64).sum::<u64>());
        for part in [&written, &opened] {
            assert_eq!(part.directory_bytes(), 4 * ids.len(), "4 bytes per series");
            assert_eq!(part.series_ids(), &ids);
            let mut reader = part.reader();
            for &id in &ids {
                let e = part.entry(id).unwrap().unwrap();
                assert_eq!(part.read_raw(&e).unwrap(), points(id));
                assert_eq!((e.min_ts, e.count), (i64::from(id), points(id).len() as u64));
                assert_eq!(reader.get(id).unwrap(), Some(e));
            }
            for miss in [0, 4, 9, 999, 70_001, u32::MAX] {
                assert!(!part.contains(miss));
                assert_eq!(part.entry(miss).unwrap(), None);
                assert_eq!(reader.get(miss).unwrap(), None);
            }
            let listed: Vec<u32> = part.entries().map(|e| e.unwrap().0).collect();
            assert_eq!(listed, ids);
        }
    }

    /// The read-ahead reader of merges returns what `read_raw` does, across buffer refills
    /// (a part of several MiB), backwards, and catches a damaged section.
    #[test]
    fn section_reader_reads_what_read_raw_reads() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<u32> = (0..40_000).collect();
        let part = write(dir.path(), 1, &ids).unwrap();
        assert!(part.size > 3 * SECTION_READ_AHEAD, "{} bytes", part.size);
        let mut sections = part.section_reader();
        let mut entries = part.reader();
        for &id in ids.iter().chain([7, 39_999, 0].iter()) {
            let e = entries.get(id).unwrap().unwrap();
            assert_eq!(sections.read_raw(&e).unwrap(), points(id), "series {id}");
        }
        let e = part.entry(20_000).unwrap().unwrap();
        let file = File::options().write(true).open(&part.path).unwrap();
        file.write_all_at(&[0xff, 0xff], e.sections[RAW].off + 1).unwrap();
        assert!(matches!(part.section_reader().read_raw(&e), Err(TsdbError::Corrupt(_))));
    }

    /// Every writer emits ascending ids; a file that does not is still read correctly.
    #[test]
    fn unsorted_footer_is_accepted_and_duplicates_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let ids = [9u32, 2, 5];
        let part = open(&write(dir.path(), 1, &ids).unwrap().path).unwrap();
        assert_eq!(part.directory_bytes(), 8 * ids.len(), "ids plus file positions");
        assert_eq!(part.series_ids(), &[2, 5, 9]);
        for id in ids {
            assert_eq!(part.read_raw(&part.entry(id).unwrap().unwrap()).unwrap(), points(id));
        }
        assert_eq!(part.entries().map(|e| e.unwrap().0).collect::<Vec<_>>(), ids, "file order");
        assert!(matches!(write(dir.path(), 2, &[4, 6, 4]), Err(TsdbError::Corrupt(_))));
        assert!(matches!(open(&dir.path().join(file_name(2))), Err(TsdbError::Corrupt(_))));
    }

    /// The footer CRC is checked at open only; an entry changed on disk afterwards is
    /// caught by the directory cross-check, without a panic.
    #[test]
    fn entry_damaged_after_open_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let part = write(dir.path(), 1, &[1, 2, 3]).unwrap();
        let at = part.entry_offset(1);
        let file = File::options().write(true).open(&part.path).unwrap();
        file.write_all_at(&77u32.to_le_bytes(), at).unwrap();
        assert!(matches!(part.entry(2), Err(TsdbError::Corrupt(_))));
        assert!(matches!(part.reader().get(2), Err(TsdbError::Corrupt(_))));
        assert!(part.entry(1).unwrap().is_some());
        // A section pointing past the data area.
        file.write_all_at(&2u32.to_le_bytes(), at).unwrap();
        file.write_all_at(&u64::MAX.to_le_bytes(), at + 28).unwrap();
        assert!(matches!(part.entry(2), Err(TsdbError::Corrupt(_))));
        assert!(matches!(open(&part.path), Err(TsdbError::Corrupt(_))));
    }

    /// The ingest benchmark's 200k series in one part: the directory is 4 B per series
    /// (0.8 MB per part); the decoded entries it replaces were 80 B per series plus a
    /// `HashMap<u32, usize>` index (262,144 buckets × 17 B ≈ 22 B per series), ≈ 102 B.
    #[test]
    fn directory_costs_four_bytes_per_series() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PartWriter::create(dir.path(), footer(1)).unwrap();
        for id in 0..200_000u32 {
            let bytes = [vec![id as u8], Vec::new(), Vec::new()];
            w.add(SeriesSections { series: id * 3, min_ts: 0, max_ts: 1, count: 1, bytes }).unwrap();
        }
        let written = w.finish(&IdInterner::new()).unwrap();
        let opened = open(&written.path).unwrap();
        for part in [&written, &opened] {
            assert_eq!(part.directory_bytes(), 800_000);
            assert_eq!(part.entry(3 * 123_456).unwrap().unwrap().sections[RAW].off, 123_456);
            assert_eq!(part.entry(3 * 123_456 + 1).unwrap(), None);
        }
        assert_eq!(std::mem::size_of::<(u32, Entry)>(), 80, "the element the old in-memory footer kept per series");
    }

    /// 12 parts (a day of 2-h partitions) of the same 200k series, written or opened through
    /// one interner, share one 0.8 MB id array; a part with a different set gets its own,
    /// and the array is freed with the last part using it.
    #[test]
    fn parts_with_the_same_series_share_one_id_array() {
        let dir = tempfile::tempdir().unwrap();
        let interner = IdInterner::new();
        let write_200k = |seq: u64, skip: Option<u32>| {
            let mut w = PartWriter::create(dir.path(), footer(seq)).unwrap();
            for id in (0..200_000u32).filter(|&id| Some(id) != skip) {
                let bytes = [vec![id as u8], Vec::new(), Vec::new()];
                w.add(SeriesSections { series: id, min_ts: 0, max_ts: 1, count: 1, bytes }).unwrap();
            }
            w.finish(&interner).unwrap()
        };
        let mut parts: Vec<Part> = (1..=6).map(|seq| write_200k(seq, None)).collect();
        for seq in 7..=12 {
            let written = write_200k(seq, None);
            parts.push(Part::open(&written.path, &interner).unwrap());
        }
        let distinct = |parts: &[Part]| {
            let mut arrays: Vec<*const SharedIds> = parts.iter().map(|p| Arc::as_ptr(p.shared_ids())).collect();
            arrays.sort();
            arrays.dedup();
            arrays.len()
        };
        assert_eq!(distinct(&parts), 1);
        assert_eq!(interner.arrays(), 1);
        assert_eq!(parts[0].shared_ids().heap_bytes(), 800_000, "one array for 12 parts");
        assert!(parts.iter().all(|p| p.directory_bytes() == 800_000 && p.own_directory_bytes() == 0));
        assert_eq!(parts[11].entry(123_456).unwrap().unwrap().sections[RAW].off, 123_456);
        // What each further part costs instead of 0.8 MB: its struct (the id array is a
        // pointer), plus its path and `replaces` on the heap (~60–100 B).
        assert!(std::mem::size_of::<Part>() <= 224, "{} B", std::mem::size_of::<Part>());
        let other = write_200k(13, Some(5));
        assert!(!Arc::ptr_eq(other.shared_ids(), parts[0].shared_ids()));
        assert_eq!(interner.arrays(), 2);
        drop(other);
        assert_eq!(interner.slots(), 1, "the array no part uses is gone from the table");
        parts.clear();
        assert_eq!(interner.slots(), 0);
    }

    #[test]
    fn unfinished_writer_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PartWriter::create(dir.path(), footer(1)).unwrap();
        w.add(build_series(1, &points(1)).unwrap()).unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

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
