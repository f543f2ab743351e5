//! The on-disk buffer ("spool") for batches InfluxDB could not take.
//!
//! ```text
//! <dir>/LOCK               advisory lock held while a store uses the directory
//! <dir>/<seq>.buf          append-only segment files, 16-digit zero-padded sequence numbers
//! <dir>/rejected/<seq>-<offset>.lp  batches InfluxDB refused with a 4xx during replay
//! record: [len u32 LE][crc32(len bytes ++ payload) u32 LE][payload]
//! payload: [points u32 LE][line protocol, uncompressed UTF-8]
//! ```
//!
//! Every append is fsynced (and the directory when a file is created) before it returns.
//! Records are replayed oldest first; a file is deleted once all its records were
//! accepted by InfluxDB. The replay position is not persisted: after a restart the
//! oldest file is replayed from its start, which re-sends identical points (same
//! series, timestamp and value), so InfluxDB's result is unchanged.
//!
//! On open, each file is read up to its first damaged record (torn header, bad length,
//! CRC mismatch) and truncated there; earlier records are kept.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::TsdbError;

const MAX_RECORD: usize = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecordPos {
    offset: u64,
    len: u64,
    points: u64,
}

#[derive(Debug)]
struct SpoolFile {
    seq: u64,
    path: PathBuf,
    len: u64,
    records: VecDeque<RecordPos>,
}

/// One buffered batch, oldest first.
#[derive(Debug, Clone)]
pub struct Buffered {
    pub seq: u64,
    pub offset: u64,
    pub points: u64,
    pub lines: Vec<u8>,
}

/// What `open` found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub files: usize,
    pub records: u64,
    pub points: u64,
    /// One entry per file cut at a damaged record.
    pub damage: Vec<String>,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    _lock: File,
    files: VecDeque<SpoolFile>,
    /// Append handle of `files.back()`, if that file still takes appends.
    active: Option<File>,
    file_limit: u64,
    next_seq: u64,
    bytes: u64,
    points: u64,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> TsdbError {
    TsdbError::Io(std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display())))
}

fn crc(len: &[u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(payload);
    h.finalize()
}

fn sync_dir(dir: &Path) -> Result<(), TsdbError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err("fsync directory", dir, e))
}

/// Reads the records of one file up to the first damaged one.
fn scan(bytes: &[u8]) -> (VecDeque<RecordPos>, u64, Option<String>) {
    let mut records = VecDeque::new();
    let mut at = 0usize;
    let damage = loop {
        if at == bytes.len() {
            break None;
        }
        let Some(header) = bytes.get(at..at + 8) else {
            break Some(format!("torn record header at byte {at}"));
        };
        let len_bytes = [header[0], header[1], header[2], header[3]];
        let len = u32::from_le_bytes(len_bytes) as usize;
        let want = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if !(4..=MAX_RECORD).contains(&len) || at + 8 + len > bytes.len() {
            break Some(format!("bad or torn record length {len} at byte {at}"));
        }
        let payload = &bytes[at + 8..at + 8 + len];
        if crc(&len_bytes, payload) != want {
            break Some(format!("checksum mismatch at byte {at}"));
        }
        let points = u64::from(u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]));
        records.push_back(RecordPos { offset: at as u64, len: 8 + len as u64, points });
        at += 8 + len;
    };
    (records, at as u64, damage)
}

impl Spool {
    /// Opens (creating) the buffer directory, takes its lock and repairs torn tails.
    pub fn open(dir: &Path, file_limit: u64) -> Result<(Self, OpenReport), TsdbError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err("open", &lock_path, e))?;
        // A store dropped a moment ago may still be releasing the lock (its background
        // task ends asynchronously): allow it a short grace period.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while lock.try_lock().is_err() {
            if std::time::Instant::now() >= deadline {
                return Err(TsdbError::Unavailable(format!(
                    "influxdb buffer {} is in use by another store",
                    dir.display()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_err("list", dir, e))? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(seq) = name.strip_suffix(".buf").and_then(|s| s.parse::<u64>().ok()) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut report = OpenReport::default();
        let mut files = VecDeque::new();
        let (mut bytes_total, mut points_total) = (0, 0);
        for &seq in &seqs {
            let path = dir.join(format!("{seq:016}.buf"));
            let mut data = Vec::new();
            File::open(&path).and_then(|mut f| f.read_to_end(&mut data)).map_err(|e| io_err("read", &path, e))?;
            let (records, valid, damage) = scan(&data);
            if let Some(d) = damage {
                tracing::warn!(file = %path.display(), "influxdb buffer damaged ({d}); cutting the file there");
                let f = OpenOptions::new().write(true).open(&path).map_err(|e| io_err("open", &path, e))?;
                f.set_len(valid).and_then(|()| f.sync_all()).map_err(|e| io_err("truncate", &path, e))?;
                report.damage.push(format!("{}: {d}", path.display()));
            }
            if records.is_empty() {
                std::fs::remove_file(&path).map_err(|e| io_err("remove", &path, e))?;
                continue;
            }
            let points: u64 = records.iter().map(|r| r.points).sum();
            report.files += 1;
            report.records += records.len() as u64;
            report.points += points;
            bytes_total += valid;
            points_total += points;
            files.push_back(SpoolFile { seq, path, len: valid, records });
        }
        let next_seq = seqs.last().map_or(1, |s| s + 1);
        let spool = Spool {
            dir: dir.to_path_buf(),
            _lock: lock,
            files,
            active: None,
            file_limit,
            next_seq,
            bytes: bytes_total,
            points: points_total,
        };
        Ok((spool, report))
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Buffered points not yet accepted by InfluxDB.
    pub fn points(&self) -> u64 {
        self.points
    }

    /// Bytes of the buffer files on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends one batch and fsyncs it.
    pub fn append(&mut self, points: u32, lines: &[u8]) -> Result<(), TsdbError> {
        let payload_len = 4 + lines.len();
        if payload_len > MAX_RECORD {
            return Err(TsdbError::InvalidQuery(format!("batch of {payload_len} bytes is too large to buffer")));
        }
        let needs_new = match (&self.active, self.files.back()) {
            (Some(_), Some(f)) => f.len >= self.file_limit,
            _ => true,
        };
        if needs_new {
            let seq = self.next_seq;
            self.next_seq += 1;
            let path = self.dir.join(format!("{seq:016}.buf"));
            let f =
                OpenOptions::new().create_new(true).append(true).open(&path).map_err(|e| io_err("create", &path, e))?;
            sync_dir(&self.dir)?;
            self.active = Some(f);
            self.files.push_back(SpoolFile { seq, path, len: 0, records: VecDeque::new() });
        }
        let (Some(f), Some(meta)) = (self.active.as_mut(), self.files.back_mut()) else {
            return Err(TsdbError::Unavailable("influxdb buffer has no active file".into()));
        };
        let len_bytes = (payload_len as u32).to_le_bytes();
        let points_bytes = points.to_le_bytes();
        let mut h = crc32fast::Hasher::new();
        h.update(&len_bytes);
        h.update(&points_bytes);
        h.update(lines);
        let mut rec = Vec::with_capacity(8 + payload_len);
        rec.extend_from_slice(&len_bytes);
        rec.extend_from_slice(&h.finalize().to_le_bytes());
        rec.extend_from_slice(&points_bytes);
        rec.extend_from_slice(lines);
        let written = f.write_all(&rec).and_then(|()| f.sync_data());
        if let Err(e) = written {
            // The file may now end in a partial record: stop appending to it (the next
            // open cuts the tail) so later records never follow garbage.
            self.active = None;
            return Err(io_err("append to", &meta.path, e));
        }
        meta.records.push_back(RecordPos { offset: meta.len, len: rec.len() as u64, points: u64::from(points) });
        meta.len += rec.len() as u64;
        self.bytes += rec.len() as u64;
        self.points += u64::from(points);
        Ok(())
    }

    /// The oldest buffered batch, if any.
    pub fn peek(&self) -> Result<Option<Buffered>, TsdbError> {
        let Some(file) = self.files.front() else { return Ok(None) };
        let Some(rec) = file.records.front() else { return Ok(None) };
        let mut f = File::open(&file.path).map_err(|e| io_err("open", &file.path, e))?;
        let mut buf = vec![0u8; rec.len as usize];
        f.seek(SeekFrom::Start(rec.offset))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| io_err("read", &file.path, e))?;
        let len_bytes = [buf[0], buf[1], buf[2], buf[3]];
        let want = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if crc(&len_bytes, &buf[8..]) != want {
            return Err(TsdbError::Corrupt(format!(
                "influxdb buffer {} changed on disk at byte {}",
                file.path.display(),
                rec.offset
            )));
        }
        Ok(Some(Buffered { seq: file.seq, offset: rec.offset, points: rec.points, lines: buf.split_off(12) }))
    }

    /// Drops the oldest batch (InfluxDB accepted it); deletes its file when it was the last.
    pub fn pop(&mut self, seq: u64, offset: u64) -> Result<(), TsdbError> {
        let Some(file) = self.files.front_mut() else { return Ok(()) };
        match file.records.front() {
            Some(r) if file.seq == seq && r.offset == offset => {
                self.points -= r.points;
                file.records.pop_front();
            }
            _ => return Ok(()),
        }
        if file.records.is_empty() {
            let is_active = self.files.len() == 1;
            if is_active {
                self.active = None;
            }
            if let Some(done) = self.files.pop_front() {
                std::fs::remove_file(&done.path).map_err(|e| io_err("remove", &done.path, e))?;
                self.bytes -= done.len;
            }
        }
        Ok(())
    }

    /// Keeps a batch InfluxDB refused (4xx) next to the buffer, then drops it from the queue.
    pub fn reject(&mut self, batch: &Buffered) -> Result<PathBuf, TsdbError> {
        let dir = self.dir.join("rejected");
        std::fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))?;
        let path = dir.join(format!("{:016}-{}.lp", batch.seq, batch.offset));
        std::fs::write(&path, &batch.lines)
            .and_then(|()| File::open(&path)?.sync_all())
            .map_err(|e| io_err("write", &path, e))?;
        self.pop(batch.seq, batch.offset)?;
        Ok(path)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn drain(spool: &mut Spool) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(b) = spool.peek().unwrap() {
            out.push(String::from_utf8(b.lines.clone()).unwrap());
            spool.pop(b.seq, b.offset).unwrap();
        }
        out
    }

    #[test]
    fn append_peek_pop_in_order_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, rep) = Spool::open(dir.path(), 64).unwrap();
        assert_eq!(rep, OpenReport::default());
        for i in 0..10 {
            s.append(1, format!("line {i} padding padding padding padding\n").as_bytes()).unwrap();
        }
        assert_eq!(s.points(), 10);
        assert!(std::fs::read_dir(dir.path()).unwrap().count() > 3, "rotated into several files");
        drop(s);
        let (mut s, rep) = Spool::open(dir.path(), 64).unwrap();
        assert_eq!(rep.records, 10);
        let got = drain(&mut s);
        assert_eq!(got.len(), 10);
        for (i, l) in got.iter().enumerate() {
            assert!(l.starts_with(&format!("line {i} ")));
        }
        assert!(s.is_empty());
        assert_eq!((s.points(), s.bytes()), (0, 0));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("LOCK")], "files deleted once replayed");
        // Appending after draining starts a fresh file.
        s.append(2, b"again\n").unwrap();
        assert_eq!(drain(&mut s), vec!["again\n".to_string()]);
    }

    #[test]
    fn second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(matches!(Spool::open(dir.path(), 1 << 20), Err(TsdbError::Unavailable(_))));
    }

    #[test]
    fn torn_and_corrupt_tails_are_cut_keeping_earlier_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
            for i in 0..3 {
                s.append(1, format!("rec {i}\n").as_bytes()).unwrap();
            }
            s.files.back().unwrap().path.clone()
        };
        let full = std::fs::read(&path).unwrap();
        // Torn tail: the last record lost its last 3 bytes.
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let (mut s, rep) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(rep.records, 2);
        assert_eq!(rep.damage.len(), 1, "{rep:?}");
        // Appends continue in a new file after the cut one; order is kept.
        s.append(1, b"rec 3\n").unwrap();
        drop(s);
        // Garbage after the good records and a flipped payload byte in another copy.
        let mut data = std::fs::read(&path).unwrap();
        data.extend_from_slice(&[0xff; 5]);
        std::fs::write(&path, &data).unwrap();
        let (mut s, rep) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(rep.records, 3);
        assert_eq!(drain(&mut s), vec!["rec 0\n", "rec 1\n", "rec 3\n"]);
        drop(s);

        let dir = tempfile::tempdir().unwrap();
        let path = {
            let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
            for i in 0..3 {
                s.append(1, format!("rec {i}\n").as_bytes()).unwrap();
            }
            s.files.back().unwrap().path.clone()
        };
        let mut data = std::fs::read(&path).unwrap();
        let n = data.len();
        data[n - 2] ^= 0x01; // CRC mismatch in the last record
        std::fs::write(&path, &data).unwrap();
        let (mut s, rep) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(rep.damage[0].contains("checksum"), "{rep:?}");
        assert_eq!(drain(&mut s), vec!["rec 0\n", "rec 1\n"]);
        drop(s);
        // A bogus huge length is not trusted either.
        let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(1, b"ok\n").unwrap();
        let path = s.files.back().unwrap().path.clone();
        drop(s);
        let mut data = std::fs::read(&path).unwrap();
        data.extend_from_slice(&u32::MAX.to_le_bytes());
        data.extend_from_slice(&[0; 20]);
        std::fs::write(&path, &data).unwrap();
        let (mut s, rep) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(rep.damage[0].contains("length"), "{rep:?}");
        assert_eq!(drain(&mut s), vec!["ok\n"]);
    }

    #[test]
    fn rejected_batches_are_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(1, b"bad\n").unwrap();
        s.append(1, b"good\n").unwrap();
        let b = s.peek().unwrap().unwrap();
        let kept = s.reject(&b).unwrap();
        assert_eq!(std::fs::read(kept).unwrap(), b"bad\n");
        assert_eq!(drain(&mut s), vec!["good\n"]);
    }
}
