//! The embedded time-series engine: WAL with group commit, in-memory head, immutable
//! compressed part files with 1-minute/1-hour rollups, retention and compaction.
//! See the crate README for the on-disk formats and the recovery algorithm.

mod agg;
mod codec;
mod head;
mod index;
mod intern;
mod log;
mod part;
mod wal;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use factoryops_types::{Clock, DeviceId, FactoryId, PropertyName};
use parking_lot::{Condvar, Mutex, RwLock};

use self::agg::{Acc, Buckets};
pub use self::codec::{decode_chunk, encode_chunk};
use self::head::{Head, HeadState};
use self::index::SeriesIndex;
use self::intern::IdInterner;
use self::part::{Entry, Footer, HOUR, HOUR_MS, MINUTE, MINUTE_MS, Part, RAW};
use self::wal::{WalHandle, WalMsg};
use crate::{
    BulkBatch, BulkQuery, BulkStream, Point, Sample, SeriesQuery, StoreHealth, TelemetryStore, TsdbError, Value,
    WindowPlanner,
};
use futures::StreamExt as _;

/// When `write` returns relative to `fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every batch is fsynced on its own before `write` returns.
    Always,
    /// Group commit: the batches queued together share one fsync before their `write`s return.
    Batch,
    /// `write` returns after the append; a timer fsyncs every this many milliseconds
    /// (a machine crash can lose up to that window; a process crash loses nothing).
    Interval(u64),
}

/// How long each resolution is kept; `None` = forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub raw: Option<Duration>,
    pub minute: Option<Duration>,
    pub hour: Option<Duration>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Self { raw: Some(Duration::from_secs(30 * DAY)), minute: Some(Duration::from_secs(365 * DAY)), hour: None }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetentionConfig {
    pub default: RetentionPolicy,
    pub per_factory: HashMap<FactoryId, RetentionPolicy>,
}

/// The head holds at most this many points and (estimated) bytes; the smaller bound applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimit {
    pub points: usize,
    pub bytes: usize,
}

impl Default for HeadLimit {
    fn default() -> Self {
        Self { points: 2_000_000, bytes: 512 << 20 }
    }
}

#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub dir: PathBuf,
    pub sync: SyncMode,
    /// Bound on the in-memory head; above it writers wait for the flusher (back-pressure).
    pub head_limit: HeadLimit,
    /// The background flusher flushes at least this often (and whenever the head is half full).
    pub flush_interval: Duration,
    /// Time-partition length of part files; a whole number of hours.
    pub block_duration: Duration,
    pub retention: RetentionConfig,
    /// How often the background task applies retention and merges the parts of partitions
    /// closed for at least a block's length (late data).
    pub maintenance_interval: Duration,
    /// Merge parts in the background after every flush, so part counts stay bounded while a
    /// partition is open: the newest run of [`MERGE_FANOUT`] similar-sized parts of a
    /// partition is merged (size-tiered), at most `max_parts_per_partition` parts are kept,
    /// and a partition is merged into one part at the first flush after it closes. Off:
    /// parts are merged only by `compact()` and the periodic maintenance.
    pub background_compaction: bool,
    /// Upper bound on the parts of one partition kept by background compaction (min 2).
    /// The tiers alone keep ≤ 3 parts per size class (≤ 10 for the ~150 flushes of a 2-h
    /// partition at one flush per 50 s); above the bound the newest parts are merged early.
    pub max_parts_per_partition: usize,
    /// A WAL segment is closed and a new one started past this size, which bounds how much
    /// a replay reads before it may flush.
    pub wal_segment_bytes: u64,
    /// Rollups serve aggregations whose bucket is a multiple of 1 min / 1 h; off = always raw.
    pub use_rollups: bool,
    /// Flushes and background merges write at most this fast while the head is less than
    /// ¾ full (0: unpaced), in 1-MiB steps, so the WAL's `fdatasync` never queues behind
    /// tens of MB on the same disk ([`part::Pacing`]).
    pub background_write_bytes_per_sec: u64,
    /// Makes the engine's own I/O fail on demand (tests of readiness and recovery); the
    /// default never fails.
    pub faults: Arc<FaultInjection>,
}

/// Fault injection, a seam for tests: a failed WAL fsync, a WAL append that writes half a
/// record and fails (a full disk), a failed flush. It travels in the config, so each store
/// has its own (no global state), and costs an atomic load per fsync, append and flush.
#[derive(Debug, Default)]
pub struct FaultInjection {
    wal_sync: AtomicBool,
    wal_append: AtomicBool,
    flush: AtomicBool,
}

impl FaultInjection {
    /// While on, every WAL fsync fails.
    pub fn fail_wal_sync(&self, on: bool) {
        self.wal_sync.store(on, Ordering::SeqCst);
    }

    /// While on, every WAL append writes the first half of its records, then fails.
    pub fn fail_wal_append(&self, on: bool) {
        self.wal_append.store(on, Ordering::SeqCst);
    }

    /// While on, every flush of the head to part files fails before it writes.
    pub fn fail_flush(&self, on: bool) {
        self.flush.store(on, Ordering::SeqCst);
    }

    fn check(flag: &AtomicBool, what: &str) -> std::io::Result<()> {
        if flag.load(Ordering::Relaxed) {
            return Err(std::io::Error::other(format!("injected {what} failure")));
        }
        Ok(())
    }
}

/// What makes the store not ready, by source; each clears on that source's next success.
#[derive(Debug, Default)]
struct Faults {
    wal: Option<String>,
    flush: Option<String>,
}

impl EmbeddedConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            sync: SyncMode::Batch,
            head_limit: HeadLimit::default(),
            flush_interval: Duration::from_secs(600),
            block_duration: Duration::from_secs(2 * 3600),
            retention: RetentionConfig::default(),
            maintenance_interval: Duration::from_secs(3600),
            background_compaction: true,
            max_parts_per_partition: 8,
            wal_segment_bytes: 64 << 20,
            use_rollups: true,
            background_write_bytes_per_sec: 24 << 20,
            faults: Arc::new(FaultInjection::default()),
        }
    }

    fn effective_head_limit(&self) -> usize {
        let HeadLimit { points, bytes } = self.head_limit;
        points.min(bytes / head::BYTES_PER_POINT).max(1)
    }

    fn block_ms(&self) -> i64 {
        let hours = (self.block_duration.as_millis() as i64 / HOUR_MS).max(1);
        hours * HOUR_MS
    }
}

/// Per-resolution and WAL sizes, as `factoryops tsdb stats` prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    pub series: usize,
    /// Points in part files (raw resolution) plus points in the head.
    pub points: u64,
    pub head_points: u64,
    pub part_files: usize,
    pub raw_bytes: u64,
    pub minute_bytes: u64,
    pub hour_bytes: u64,
    /// Part-file footers (per-series metadata).
    pub footer_bytes: u64,
    /// Heap bytes of the part directories (series ids) kept in memory, each distinct id
    /// array counted once however many parts share it; the entries themselves are read from
    /// the footers on demand.
    pub directory_bytes: u64,
    /// Distinct id arrays behind the part directories (parts with the same series set share one).
    pub directory_arrays: usize,
    /// Bytes written to WAL segments (a preallocated segment is larger on disk).
    pub wal_bytes: u64,
    pub wal_segments: usize,
    /// Since open: batches appended to the WAL and fsyncs issued (group commit ratio).
    pub wal_batches: u64,
    pub wal_fsyncs: u64,
    pub index_bytes: u64,
}

/// Result of `check()`: every checksum of every file verified.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckReport {
    pub files_checked: usize,
    pub sections_checked: usize,
    pub wal_records_checked: u64,
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Latest timestamp accepted: year 9999. Keeps bucket arithmetic far from overflow.
const MAX_TS: i64 = 253_402_300_799_999;

/// Background compaction merges the newest run of at least this many similar-sized parts
/// of a partition: with equal flushes the parts form a base-4 counter (≤ 3 per size
/// class), so each point is rewritten about log₄(flushes per partition) times (≈ 3.6 for
/// 150 flushes) and a partition keeps O(log) parts.
pub const MERGE_FANOUT: usize = 4;
/// An older part joins the run while it is at most this many times the run's largest part,
/// so a part that already absorbed a run (≈ 4× larger) waits for three peers.
const MERGE_SIZE_RATIO: u64 = 2;

/// Where the suffix of a partition's parts (sizes in sequence order, oldest first) that
/// background compaction merges next starts, if anything is due: the newest run of
/// ≥ `MERGE_FANOUT` similar parts, or else, above `max_parts`, the newest parts needed to
/// get back to `max_parts`. Always a suffix: the merged part gets a new, larger sequence
/// number, which ranks it correctly (newest wins) only if no part of the partition outside
/// the merge is newer than one inside it.
fn tiered_suffix(sizes: &[u64], max_parts: usize) -> Option<usize> {
    let n = sizes.len();
    if n < 2 {
        return None;
    }
    let mut start = n - 1;
    let mut largest = sizes[start];
    while start > 0 && sizes[start - 1] <= largest.saturating_mul(MERGE_SIZE_RATIO) {
        start -= 1;
        largest = largest.max(sizes[start]);
    }
    if n - start >= MERGE_FANOUT {
        return Some(start);
    }
    let max_parts = max_parts.max(2);
    (n > max_parts).then_some(max_parts - 1)
}

pub(crate) struct Inner {
    config: EmbeddedConfig,
    block_ms: i64,
    head_limit: usize,
    clock: Arc<dyn Clock>,
    parts_dir: PathBuf,
    wal_dir: PathBuf,
    index: RwLock<SeriesIndex>,
    /// Lock order: `parts` before `head`.
    parts: RwLock<Vec<Arc<Part>>>,
    /// Every part's id array goes through it (open, flush, merge, retention, check), so
    /// parts with the same series set share one array.
    ids: IdInterner,
    head: RwLock<HeadState>,
    head_points: Arc<AtomicUsize>,
    wal_batches: AtomicU64,
    wal_fsyncs: AtomicU64,
    /// The segment the WAL thread writes and how many bytes it wrote there: a preallocated
    /// segment's file size says nothing about that.
    wal_active: Mutex<(u64, u64)>,
    next_seq: AtomicU64,
    /// Held by a flush from allocating its sequence numbers to publishing its parts (and
    /// deleting its WAL), by retention throughout, and by a merge only while it picks its
    /// inputs and allocates its sequence number. So a flush either published before a merge
    /// chose its inputs, or gets a larger sequence number than the merged part: its newer
    /// data always ranks after the merged part, and merges never block flushes for long.
    maintenance: Mutex<()>,
    /// Serialises the part rewriters (merges, retention) so a merge's inputs are still in the
    /// catalogue when it publishes. Guards the partitions background compaction has merged
    /// once after they closed (late parts are left to the periodic maintenance).
    rewrite: Mutex<HashSet<(i64, i64)>>,
    /// Clock time of the last head freeze: partitions ending before it are complete in parts
    /// (bar late data).
    last_freeze_ms: AtomicI64,
    compact_wanted: Wakeup,
    wal: WalHandle,
    faults: Mutex<Faults>,
    space: tokio::sync::Notify,
    flush_wanted: Wakeup,
    shutdown: AtomicBool,
    _lock: File,
}

/// The embedded engine. Dropping it stops the background threads (WAL is already durable
/// per the sync mode; call `flush` first to also persist the head as parts).
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl EmbeddedStore {
    pub fn open(config: EmbeddedConfig, clock: Arc<dyn Clock>) -> Result<Self, TsdbError> {
        let dir = config.dir.clone();
        let parts_dir = dir.join("parts");
        let wal_dir = dir.join("wal");
        std::fs::create_dir_all(&parts_dir)?;
        std::fs::create_dir_all(&wal_dir)?;
        let lock = File::options().create(true).truncate(false).write(true).open(dir.join("LOCK"))?;
        lock.try_lock()
            .map_err(|_| TsdbError::Unavailable(format!("{} is in use by another process", dir.display())))?;

        let index = SeriesIndex::open(&dir.join("series.idx"))?;
        let segments = wal::list_segments(&wal_dir)?;
        let ids = IdInterner::new();
        let (parts, max_seq, wal_covered) = load_parts(&parts_dir, &segments, &ids)?;
        let max_segment = segments.iter().copied().max().unwrap_or(0).max(wal_covered);
        let next_seq = max_seq.max(max_segment) + 1;

        let head_limit = config.effective_head_limit();
        let block_ms = config.block_ms();
        let (wal, wal_rx) = WalHandle::channel();
        let inner = Arc::new(Inner {
            block_ms,
            head_limit,
            clock,
            parts_dir,
            wal_dir: wal_dir.clone(),
            index: RwLock::new(index),
            parts: RwLock::new(parts),
            ids,
            head: RwLock::new(HeadState::default()),
            head_points: Arc::new(AtomicUsize::new(0)),
            wal_batches: AtomicU64::new(0),
            wal_fsyncs: AtomicU64::new(0),
            wal_active: Mutex::new((0, 0)),
            next_seq: AtomicU64::new(next_seq),
            maintenance: Mutex::new(()),
            rewrite: Mutex::new(HashSet::new()),
            last_freeze_ms: AtomicI64::new(i64::MIN),
            compact_wanted: Wakeup::default(),
            wal,
            faults: Mutex::new(Faults::default()),
            space: tokio::sync::Notify::new(),
            flush_wanted: Wakeup::default(),
            shutdown: AtomicBool::new(false),
            _lock: lock,
            config,
        });

        // Replay: segments already covered by parts are garbage from an interrupted cleanup.
        for seg in &segments {
            let path = wal::segment_path(&wal_dir, *seg);
            if *seg <= wal_covered {
                std::fs::remove_file(&path)?;
                continue;
            }
            let index = inner.index.read();
            let mut head = inner.head.write();
            let mut points = 0usize;
            let outcome = log::scan_segment(&path, |payload| {
                wal::decode_batch(payload, |series, ts, v| {
                    if index.contains(series) {
                        head.active.push(series, ts, v);
                        points += 1;
                    } else {
                        tracing::warn!(series, "WAL point for unknown series skipped");
                    }
                })
            })?;
            drop(head);
            drop(index);
            inner.head_points.fetch_add(points, Ordering::SeqCst);
            if let Some(damage) = &outcome.damage {
                tracing::warn!(segment = %path.display(), %damage, valid = outcome.valid_len, "cutting damaged WAL tail");
                log::truncate(&path, outcome.valid_len)?;
            }
            // Bounded memory during a long replay: flush whole replayed segments.
            if inner.head_points.load(Ordering::SeqCst) >= head_limit {
                let mut h = inner.head.write();
                let frozen = std::mem::take(&mut h.active);
                h.frozen = Some((Arc::new(frozen), *seg));
                drop(h);
                inner.flush_frozen()?;
            }
        }

        let writer_seq = inner.next_seq.fetch_add(1, Ordering::SeqCst);
        let wal_thread = wal::spawn(Arc::clone(&inner), wal_rx, writer_seq)?;
        let flusher = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new().name("tsdb-flusher".into()).spawn(move || inner.flusher_loop())?
        };
        let compactor = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new().name("tsdb-compactor".into()).spawn(move || inner.compactor_loop())?
        };
        Ok(Self { inner, threads: Mutex::new(vec![wal_thread, flusher, compactor]) })
    }

    /// Flushes the head and stops the background threads.
    pub async fn close(self) -> Result<(), TsdbError> {
        self.flush().await
    }

    pub fn stats(&self) -> Result<StoreStats, TsdbError> {
        self.inner.stats()
    }

    pub fn check(&self) -> Result<CheckReport, TsdbError> {
        self.inner.check()
    }

    /// Merges all parts of each partition into one (removes overlaps so rollups serve again).
    pub fn compact(&self) -> Result<usize, TsdbError> {
        self.inner.compact(i64::MAX)
    }

    /// Runs the background compaction policy now (what the compactor thread does after
    /// every flush, see [`EmbeddedConfig::background_compaction`]); returns the number of
    /// parts merged away.
    pub fn compact_tiered(&self) -> Result<usize, TsdbError> {
        self.inner.compact_tiered()
    }

    /// Drops data past its retention (per resolution, per factory) relative to the clock.
    pub fn apply_retention(&self) -> Result<usize, TsdbError> {
        self.inner.apply_retention()
    }

    pub fn config(&self) -> &EmbeddedConfig {
        &self.inner.config
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        self.inner.request_flush();
        self.inner.request_compaction();
        self.inner.wal.send(WalMsg::Shutdown);
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

fn load_parts(dir: &Path, segments: &[u64], ids: &IdInterner) -> Result<(Vec<Arc<Part>>, u64, u64), TsdbError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if name.ends_with(".tmp") {
            // An interrupted write: its data is still in the WAL.
            std::fs::remove_file(&path)?;
        } else if name.ends_with(".part") {
            found.push(Part::open(&path, ids)?);
        }
    }
    let mut group_counts: HashMap<u64, u32> = HashMap::new();
    for p in &found {
        *group_counts.entry(p.footer.group).or_default() += 1;
    }
    // A group with missing members is an interrupted flush only while the WAL segment it
    // covers still exists (a flush deletes it last). Otherwise the flush completed and
    // compaction or retention replaced the missing members since.
    let (complete, incomplete): (Vec<Part>, Vec<Part>) = found.into_iter().partition(|p| {
        group_counts.get(&p.footer.group).copied().unwrap_or(0) >= p.footer.group_size
            || segments.binary_search(&p.footer.wal_covered).is_err()
    });
    let mut max_seq = 0;
    let mut replay_from = u64::MAX;
    for p in &incomplete {
        // Its WAL segments were not deleted: replay redoes the flush.
        max_seq = max_seq.max(p.footer.seq);
        replay_from = replay_from.min(p.footer.wal_covered);
        std::fs::remove_file(&p.path)?;
    }
    let replaced: std::collections::HashSet<u64> =
        complete.iter().flat_map(|p| p.footer.replaces.iter().copied()).collect();
    let mut parts = Vec::new();
    let mut wal_covered = 0;
    for p in complete {
        max_seq = max_seq.max(p.footer.seq);
        wal_covered = wal_covered.max(p.footer.wal_covered);
        if replaced.contains(&p.footer.seq) {
            std::fs::remove_file(&p.path)?;
        } else {
            parts.push(Arc::new(p));
        }
    }
    parts.sort_by_key(|p| p.footer.seq);
    if replay_from != u64::MAX {
        // Segments the discarded flush covered must be replayed even if a later part claims
        // them; points replayed twice resolve to the same value (newest source wins).
        wal_covered = wal_covered.min(replay_from.saturating_sub(1));
    }
    Ok((parts, max_seq, wal_covered))
}

/// Verifies a store directory without opening it (no lock taken, nothing repaired), so
/// `factoryops tsdb check` also works beside a running server.
pub fn check_dir(dir: &Path) -> Result<CheckReport, TsdbError> {
    let mut r = CheckReport::default();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join("parts"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "part"))
        .collect();
    paths.sort();
    // Only one part is open at a time here; the interner is just what `open` needs.
    let ids = IdInterner::new();
    for path in paths {
        match Part::open(&path, &ids) {
            Ok(part) => check_part(&part, &mut r),
            Err(TsdbError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                r.files_checked += 1;
                r.problems.push(e.to_string());
            }
        }
    }
    check_logs(dir, &mut r)?;
    Ok(r)
}

fn check_part(part: &Part, r: &mut CheckReport) {
    r.files_checked += 1;
    for entry in part.entries() {
        let (id, e) = match entry {
            Ok(x) => x,
            Err(err) => {
                r.problems.push(err.to_string());
                return;
            }
        };
        for res in [RAW, MINUTE, HOUR] {
            if !e.sections[res].present() {
                continue;
            }
            r.sections_checked += 1;
            let result = if res == RAW {
                part.read_raw(&e).and_then(|pts| {
                    if pts.len() as u64 == e.count {
                        Ok(())
                    } else {
                        Err(part.corrupt(&format!("series {id}: point count mismatch")))
                    }
                })
            } else {
                part.read_rollup(&e, res).map(|_| ())
            };
            if let Err(err) = result {
                r.problems.push(err.to_string());
            }
        }
    }
}

fn check_logs(dir: &Path, r: &mut CheckReport) -> Result<(), TsdbError> {
    let wal_dir = dir.join("wal");
    let segments = wal::list_segments(&wal_dir)?;
    let newest = segments.last().copied();
    let logs = segments
        .into_iter()
        .map(|s| (wal::segment_path(&wal_dir, s), Some(s) == newest, true))
        .chain(std::iter::once((dir.join("series.idx"), false, false)));
    for (path, active, segment) in logs {
        let scanned = if segment { log::scan_segment(&path, |_| Ok(())) } else { log::scan(&path, |_| Ok(())) };
        let out = match scanned {
            Ok(out) => out,
            // A flush deleted the segment after we listed it.
            Err(TsdbError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        r.files_checked += 1;
        r.wal_records_checked += out.records;
        // The active segment may legitimately end mid-append while writers are running.
        if let Some(d) = out.damage
            && !active
        {
            r.problems.push(format!("{}: {d}", path.display()));
        }
    }
    Ok(())
}

fn validate(points: &[Point]) -> Result<(), TsdbError> {
    for (index, p) in points.iter().enumerate() {
        if let Value::Float(f) = p.value
            && !f.is_finite()
        {
            return Err(TsdbError::InvalidPoint { index, reason: format!("value {f} is not a finite number") });
        }
        if !(-MAX_TS..=MAX_TS).contains(&p.ts_ms) {
            return Err(TsdbError::InvalidPoint { index, reason: format!("timestamp {} out of range", p.ts_ms) });
        }
    }
    Ok(())
}

/// Merges sources given oldest first; for equal timestamps the newest source wins.
fn merge_newest_wins(mut sources: Vec<Vec<(i64, Value)>>) -> Vec<(i64, Value)> {
    sources.retain(|s| !s.is_empty());
    if sources.len() <= 1 {
        return sources.pop().unwrap_or_default();
    }
    // Common case: sources cover disjoint time spans, so ordering them is enough.
    let mut order: Vec<usize> = (0..sources.len()).collect();
    order.sort_by_key(|&i| sources[i].first().map(|p| p.0));
    let disjoint = order.windows(2).all(|w| match (sources[w[0]].last(), sources[w[1]].first()) {
        (Some(a), Some(b)) => a.0 < b.0,
        _ => true,
    });
    if disjoint {
        let mut out = Vec::with_capacity(sources.iter().map(Vec::len).sum());
        for i in order {
            out.append(&mut sources[i]);
        }
        return out;
    }
    let mut all: Vec<(i64, usize, Value)> = Vec::with_capacity(sources.iter().map(Vec::len).sum());
    for (prio, s) in sources.into_iter().enumerate() {
        all.extend(s.into_iter().map(|(t, v)| (t, prio, v)));
    }
    all.sort_by_key(|&(t, p, _)| (t, p));
    let mut out: Vec<(i64, Value)> = Vec::with_capacity(all.len());
    for (t, _, v) in all {
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 = v,
            _ => out.push((t, v)),
        }
    }
    out
}

/// A consistent view of one series: the parts that hold it (with its entry in each, oldest
/// part first) and its head points.
struct SeriesView {
    parts: Vec<(Arc<Part>, Entry)>,
    head: Vec<(i64, Value)>,
}

/// Wakes a background thread early: a request is remembered until the thread takes it.
#[derive(Default)]
struct Wakeup {
    wanted: Mutex<bool>,
    cv: Condvar,
}

impl Wakeup {
    fn request(&self) {
        *self.wanted.lock() = true;
        self.cv.notify_all();
    }

    /// Returns at the next request (or one already made) or after `timeout`.
    fn wait(&self, timeout: Duration) {
        let mut wanted = self.wanted.lock();
        if !*wanted {
            self.cv.wait_for(&mut wanted, timeout);
        }
        *wanted = false;
    }
}

impl Inner {
    /// The WAL failed (append, fsync or segment roll): not ready until a WAL fsync succeeds.
    fn fail_wal(&self, why: String) {
        tracing::error!(%why, "tsdb WAL failure");
        self.faults.lock().wal = Some(why);
    }

    /// A flush of the head failed: not ready until a flush succeeds.
    fn fail_flush(&self, why: String) {
        tracing::error!(%why, "tsdb flush failure");
        self.faults.lock().flush = Some(why);
    }

    fn wal_recovered(&self) {
        if let Some(why) = self.faults.lock().wal.take() {
            tracing::info!(%why, "tsdb WAL recovered");
        }
    }

    fn flush_recovered(&self) {
        if let Some(why) = self.faults.lock().flush.take() {
            tracing::info!(%why, "tsdb flush recovered");
        }
    }

    fn request_flush(&self) {
        self.flush_wanted.request();
    }

    fn request_compaction(&self) {
        self.compact_wanted.request();
    }

    /// The pace of background part writes: paced while the head is under ¾ of its bound.
    fn pacing(&self) -> Option<part::Pacing> {
        let bytes_per_sec = self.config.background_write_bytes_per_sec;
        if bytes_per_sec == 0 {
            return None;
        }
        Some(part::Pacing { bytes_per_sec, head_points: self.head_points.clone(), hurry_at: self.head_limit / 4 * 3 })
    }

    fn flusher_loop(self: Arc<Self>) {
        loop {
            self.flush_wanted.wait(self.config.flush_interval);
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            match self.flush_all() {
                Ok(()) => self.flush_recovered(),
                Err(e) => {
                    self.fail_flush(format!("flush failed: {e}"));
                    std::thread::sleep(Duration::from_millis(200));
                    self.request_flush();
                }
            }
        }
    }

    /// Merges and retention run on their own thread so they never delay a flush (writers
    /// wait only for flushes, when the head is full).
    fn compactor_loop(self: Arc<Self>) {
        let mut last_maintenance = std::time::Instant::now();
        loop {
            self.compact_wanted.wait(self.config.maintenance_interval);
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            if self.config.background_compaction
                && let Err(e) = self.compact_tiered()
            {
                tracing::warn!(error = %e, "background compaction failed");
            }
            if last_maintenance.elapsed() >= self.config.maintenance_interval {
                last_maintenance = std::time::Instant::now();
                let now = self.clock.now_ms();
                if let Err(e) = self.apply_retention().and_then(|_| self.compact(now - self.block_ms)) {
                    tracing::warn!(error = %e, "maintenance failed");
                }
            }
        }
    }

    /// Rotates the WAL, freezes the head and writes it as parts.
    fn flush_all(&self) -> Result<(), TsdbError> {
        let _m = self.maintenance.lock();
        let needs_rotate = {
            let h = self.head.read();
            h.frozen.is_none() && !h.active.is_empty()
        };
        if needs_rotate {
            self.last_freeze_ms.store(self.clock.now_ms(), Ordering::SeqCst);
            self.wal.rotate()?;
        }
        self.flush_frozen_locked()
    }

    fn flush_frozen(&self) -> Result<(), TsdbError> {
        let _m = self.maintenance.lock();
        self.flush_frozen_locked()
    }

    fn flush_frozen_locked(&self) -> Result<(), TsdbError> {
        let Some((frozen, covered)) = self.head.read().frozen.clone() else {
            return Ok(());
        };
        FaultInjection::check(&self.config.faults.flush, "flush")?;
        // Parts reference series ids: the index must be durable before them.
        self.index.write().sync()?;
        let mut by_partition: HashMap<i64, Vec<part::SeriesSections>> = HashMap::new();
        for series in frozen.series_ids() {
            let points = frozen.sorted_points(series);
            let mut start = 0;
            while start < points.len() {
                let p = agg::bucket_start(points[start].0, self.block_ms);
                let end = start + points[start..].partition_point(|(t, _)| *t < p.saturating_add(self.block_ms));
                if let Some(s) = part::build_series(series, &points[start..end]) {
                    by_partition.entry(p).or_default().push(s);
                }
                start = end;
            }
        }
        let group = self.next_seq.fetch_add(by_partition.len() as u64 + 1, Ordering::SeqCst);
        let group_size = by_partition.len() as u32;
        let mut new_parts = Vec::new();
        let mut partitions: Vec<_> = by_partition.into_iter().collect();
        partitions.sort_by_key(|(p, _)| *p);
        for (i, (p, series)) in partitions.into_iter().enumerate() {
            let spec = Footer {
                partition_start: p,
                partition_len: self.block_ms,
                seq: group + 1 + i as u64,
                wal_covered: covered,
                group,
                group_size,
                replaces: Vec::new(),
            };
            new_parts.push(Arc::new(part::write_part(&self.parts_dir, spec, series, &self.ids, self.pacing())?));
        }
        let flushed = !new_parts.is_empty();
        {
            let mut parts = self.parts.write();
            let mut head = self.head.write();
            parts.extend(new_parts);
            parts.sort_by_key(|p| p.footer.seq);
            head.frozen = None;
            self.head_points.fetch_sub(frozen.len().min(self.head_points.load(Ordering::SeqCst)), Ordering::SeqCst);
        }
        self.space.notify_waiters();
        for seg in wal::list_segments(&self.wal_dir)? {
            if seg <= covered {
                std::fs::remove_file(wal::segment_path(&self.wal_dir, seg))?;
            }
        }
        if flushed {
            self.request_compaction();
        }
        Ok(())
    }

    fn view(&self, series: u32, from: i64, to: i64) -> Result<SeriesView, TsdbError> {
        let (candidates, head) = {
            let parts = self.parts.read();
            let head = self.head.read();
            let candidates: Vec<Arc<Part>> = parts
                .iter()
                .filter(|p| p.footer.partition_start < to && p.partition_end() > from && p.contains(series))
                .cloned()
                .collect();
            let mut sources = Vec::new();
            if let Some((f, _)) = &head.frozen {
                sources.push(f.range(series, from, to));
            }
            sources.push(head.active.range(series, from, to));
            (candidates, sources)
        };
        // Entries are read outside the locks; the `Arc`s keep the files open even if a
        // merge replaces them meanwhile, so the view stays consistent.
        let mut parts = Vec::with_capacity(candidates.len());
        for p in candidates {
            if let Some(e) = p.entry(series)?
                && e.min_ts < to
                && e.max_ts >= from
            {
                parts.push((p, e));
            }
        }
        Ok(SeriesView { parts, head: merge_newest_wins(head) })
    }

    fn raw(&self, view: &SeriesView, from: i64, to: i64) -> Result<Vec<(i64, Value)>, TsdbError> {
        let mut sources = Vec::with_capacity(view.parts.len() + 1);
        for (p, e) in &view.parts {
            if e.sections[RAW].present() {
                let pts = p.read_raw(e)?;
                let a = pts.partition_point(|(t, _)| *t < from);
                let b = pts.partition_point(|(t, _)| *t < to);
                sources.push(pts[a..b].to_vec());
            }
        }
        sources.push(view.head.clone());
        Ok(merge_newest_wins(sources))
    }

    fn query_series(&self, series: u32, q: &SeriesQuery) -> Result<Vec<Sample>, TsdbError> {
        let (from, to) = (q.from_ms, q.to_ms);
        let view = self.view(series, from, to)?;
        let Some((every, agg)) = q.aggregation else {
            let pts = self.raw(&view, from, to)?;
            let n = q.limit.unwrap_or(usize::MAX);
            return Ok(pts.into_iter().take(n).map(|(ts_ms, value)| Sample { ts_ms, value }).collect());
        };
        let res = if !self.config.use_rollups {
            None
        } else if every % HOUR_MS == 0 {
            Some((HOUR, HOUR_MS))
        } else if every % MINUTE_MS == 0 {
            Some((MINUTE, MINUTE_MS))
        } else {
            None
        };
        let mut buckets = Buckets::default();
        let mut raw_parts = Vec::new();
        if let Some((res, res_ms)) = res {
            // A part's rollups are exact for its points, so they serve only when every
            // point of the entry is in range and no newer source overlaps its time span.
            let mut spans: Vec<(i64, i64)> = view.parts.iter().map(|(_, e)| (e.min_ts, e.max_ts)).collect();
            if let (Some(a), Some(b)) = (view.head.first(), view.head.last()) {
                spans.push((a.0, b.0));
            }
            for (p, e) in &view.parts {
                let overlaps =
                    spans.iter().filter(|s| **s != (e.min_ts, e.max_ts)).any(|&(a, b)| a <= e.max_ts && b >= e.min_ts)
                        || spans.iter().filter(|s| **s == (e.min_ts, e.max_ts)).count() > 1;
                let inside = e.min_ts >= from && e.max_ts < to;
                if e.sections[res].present() && ((inside && !overlaps) || !e.sections[RAW].present()) {
                    for (start, acc) in p.read_rollup(e, res)? {
                        // Without raw data, only whole rollup buckets inside the range can count.
                        if inside || (start >= from && start.saturating_add(res_ms) <= to) {
                            buckets.merge_acc(every, start, acc);
                        }
                    }
                } else {
                    raw_parts.push((Arc::clone(p), e.clone()));
                }
            }
        } else {
            raw_parts = view.parts.clone();
        }
        let rest = SeriesView { parts: raw_parts, head: view.head };
        for (ts, v) in self.raw(&rest, from, to)? {
            buckets.push(every, ts, v);
        }
        Ok(buckets.into_samples(agg))
    }

    fn latest_of(&self, series: u32) -> Result<Option<Sample>, TsdbError> {
        let (mut candidates, mut max_ts) = {
            let parts = self.parts.read();
            let head = self.head.read();
            let candidates: Vec<Arc<Part>> = parts.iter().filter(|p| p.contains(series)).cloned().collect();
            let frozen = head.frozen.as_ref().and_then(|(f, _)| f.max_ts(series));
            (candidates, frozen.max(head.active.max_ts(series)))
        };
        // Newest partitions first: a part's points lie before its partition end, so once a
        // maximum is known, parts of partitions ending at or before it are skipped without
        // reading their entries (usually only the newest partition is read).
        candidates.sort_by_key(|p| std::cmp::Reverse(p.partition_end()));
        for p in candidates {
            if max_ts.is_some_and(|m| p.partition_end() <= m) {
                continue;
            }
            if let Some(e) = p.entry(series)?
                && e.sections[RAW].present()
            {
                max_ts = max_ts.max(Some(e.max_ts));
            }
        }
        let Some(t) = max_ts else { return Ok(None) };
        let view = self.view(series, t, t.saturating_add(1))?;
        Ok(self.raw(&view, t, t.saturating_add(1))?.last().map(|&(ts_ms, value)| Sample { ts_ms, value }))
    }

    fn stats(&self) -> Result<StoreStats, TsdbError> {
        let mut s = StoreStats { series: self.index.read().len(), ..StoreStats::default() };
        {
            let parts = self.parts.read();
            s.part_files = parts.len();
            let mut arrays: HashSet<*const intern::SharedIds> = HashSet::new();
            for p in parts.iter() {
                let bytes = p.summary.section_bytes;
                s.points += p.summary.raw_points;
                s.raw_bytes += bytes[RAW];
                s.minute_bytes += bytes[MINUTE];
                s.hour_bytes += bytes[HOUR];
                s.footer_bytes += p.size.saturating_sub(bytes.iter().sum::<u64>());
                // A shared id array is counted once, with the first part using it.
                if arrays.insert(Arc::as_ptr(p.shared_ids())) {
                    s.directory_bytes += p.shared_ids().heap_bytes() as u64;
                }
                s.directory_bytes += p.own_directory_bytes() as u64;
            }
            s.directory_arrays = arrays.len();
        }
        s.head_points = self.head_points.load(Ordering::SeqCst) as u64;
        s.wal_batches = self.wal_batches.load(Ordering::Relaxed);
        s.wal_fsyncs = self.wal_fsyncs.load(Ordering::Relaxed);
        s.points += s.head_points;
        let (active, active_bytes) = *self.wal_active.lock();
        for seg in wal::list_segments(&self.wal_dir)? {
            s.wal_segments += 1;
            s.wal_bytes += if seg == active {
                active_bytes
            } else {
                std::fs::metadata(wal::segment_path(&self.wal_dir, seg)).map(|m| m.len()).unwrap_or(0)
            };
        }
        s.index_bytes = std::fs::metadata(self.config.dir.join("series.idx")).map(|m| m.len()).unwrap_or(0);
        Ok(s)
    }

    fn check(&self) -> Result<CheckReport, TsdbError> {
        let mut r = CheckReport::default();
        let parts: Vec<Arc<Part>> = self.parts.read().clone();
        for p in parts {
            // The open handle stays valid even if compaction deletes the file meanwhile.
            match p.file.try_clone().map_err(TsdbError::from).and_then(|f| Part::from_file(&p.path, f, &self.ids)) {
                Ok(fresh) => check_part(&fresh, &mut r),
                Err(e) => {
                    r.files_checked += 1;
                    r.problems.push(e.to_string());
                }
            }
        }
        check_logs(&self.config.dir, &mut r)?;
        Ok(r)
    }

    /// Merges the parts of each partition ending before `closed_before` that has more than one.
    fn compact(&self, closed_before: i64) -> Result<usize, TsdbError> {
        self.run_merges(|parts, _| {
            partitions(parts)
                .into_iter()
                .find(|((start, len), group)| {
                    group.len() >= 2 && start.saturating_add(*len) <= closed_before && all_raw(group)
                })
                .map(|(_, group)| group)
        })
    }

    /// The background policy: a closed partition is merged into one part once, open ones
    /// are kept to a few parts by `tiered_suffix`.
    fn compact_tiered(&self) -> Result<usize, TsdbError> {
        let closed_before = self.last_freeze_ms.load(Ordering::SeqCst);
        let max_parts = self.config.max_parts_per_partition;
        self.run_merges(|parts, finalized| {
            let by_partition = partitions(parts);
            finalized.retain(|key| by_partition.contains_key(key));
            for ((start, len), group) in by_partition {
                // Parts whose raw data retention removed cannot be re-derived; leave them be.
                if !all_raw(&group) {
                    continue;
                }
                if start.saturating_add(len) <= closed_before && finalized.insert((start, len)) && group.len() >= 2 {
                    return Some(group);
                }
                let sizes: Vec<u64> = group.iter().map(|p| p.size).collect();
                if let Some(from) = tiered_suffix(&sizes, max_parts) {
                    return Some(group[from..].to_vec());
                }
            }
            None
        })
    }

    /// Merges the groups `plan` picks from the current catalogue until it picks none.
    /// `plan` must pick a suffix (in sequence order) of one partition's parts, all with raw
    /// data; it runs under the flush lock together with the allocation of the merged part's
    /// sequence number, and the merge itself runs without it (see `maintenance`).
    fn run_merges(
        &self,
        mut plan: impl FnMut(&[Arc<Part>], &mut HashSet<(i64, i64)>) -> Option<Vec<Arc<Part>>>,
    ) -> Result<usize, TsdbError> {
        let mut finalized = self.rewrite.lock();
        let mut merged = 0;
        loop {
            let (group, seq) = {
                let _flush = self.maintenance.lock();
                let parts = self.parts.read().clone();
                let Some(group) = plan(&parts, &mut finalized) else {
                    return Ok(merged);
                };
                (group, self.next_seq.fetch_add(1, Ordering::SeqCst))
            };
            let Some(new_part) = self.merge(&group, seq)? else {
                return Ok(merged); // shutting down
            };
            self.swap_parts(&group, Some(Arc::new(new_part)))?;
            merged += group.len();
        }
    }

    /// Writes the newest-wins merge of `group` (parts of one partition, oldest first) as one
    /// part numbered `seq` that replaces them, with recomputed rollups (a series found in
    /// one part only is copied as it is). Streams series by
    /// series: memory is one series' points plus the new part's footer entries. `None` if
    /// the store is shutting down (the temp file is removed).
    fn merge(&self, group: &[Arc<Part>], seq: u64) -> Result<Option<Part>, TsdbError> {
        let mut ids: Vec<u32> = group.iter().flat_map(|p| p.series_ids().iter().copied()).collect();
        ids.sort_unstable();
        ids.dedup();
        let footer = Footer {
            partition_start: group[0].footer.partition_start,
            partition_len: group[0].footer.partition_len,
            seq,
            wal_covered: group.iter().map(|p| p.footer.wal_covered).max().unwrap_or(0),
            group: seq,
            group_size: 1,
            replaces: group.iter().map(|p| p.footer.seq).collect(),
        };
        let mut writer = part::PartWriter::create(&self.parts_dir, footer)?.paced(self.pacing());
        let mut readers: Vec<_> = group.iter().map(|p| (p.reader(), p.section_reader())).collect();
        for (i, id) in ids.into_iter().enumerate() {
            if i % 1024 == 0 && self.shutdown.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let mut found = Vec::with_capacity(group.len());
            for (i, (entries, _)) in readers.iter_mut().enumerate() {
                if let Some(e) = entries.get(id)? {
                    found.push((i, e));
                }
            }
            if let [(i, e)] = &found[..] {
                // In one part only (a device silent since): nothing to merge, copy it.
                writer.add(readers[*i].1.copy_series(id, e)?)?;
                continue;
            }
            let mut sources = Vec::with_capacity(found.len());
            for (i, e) in found {
                sources.push(readers[i].1.read_raw(&e)?);
            }
            if let Some(s) = part::build_series(id, &merge_newest_wins(sources)) {
                writer.add(s)?;
            }
        }
        writer.finish(&self.ids).map(Some)
    }

    /// Replaces `old` parts with `new` in the catalogue, then deletes the old files.
    fn swap_parts(&self, old: &[Arc<Part>], new: Option<Arc<Part>>) -> Result<(), TsdbError> {
        let gone: std::collections::HashSet<u64> = old.iter().map(|p| p.footer.seq).collect();
        {
            let mut parts = self.parts.write();
            parts.retain(|p| !gone.contains(&p.footer.seq));
            if let Some(n) = new {
                parts.push(n);
            }
            parts.sort_by_key(|p| p.footer.seq);
        }
        for p in old {
            std::fs::remove_file(&p.path)?;
        }
        sync_dir_quiet(&self.parts_dir);
        Ok(())
    }

    /// Drops expired sections. Within a partition, rewriting a part gives it a new, larger
    /// sequence number, i.e. ranks its data after every other part of the partition (newest
    /// wins on equal timestamps). So from the oldest part that needs a rewrite on, every
    /// newer part of the partition is rewritten too, with new numbers in their old order:
    /// the partition's parts keep their relative order. They are written newest first, each
    /// replacing its input (`replaces`) as a group of one, so a crash part-way leaves a
    /// rewritten suffix above the not yet rewritten parts, still in the old order, and the
    /// next run finishes the job.
    fn apply_retention(&self) -> Result<usize, TsdbError> {
        let _r = self.rewrite.lock();
        let _m = self.maintenance.lock();
        let now = self.clock.now_ms();
        let cfg = &self.config.retention;
        let policy_of =
            |factory: Option<&FactoryId>| factory.and_then(|f| cfg.per_factory.get(f)).copied().unwrap_or(cfg.default);
        let expired =
            |keep: Option<Duration>, end: i64| keep.is_some_and(|d| end <= now.saturating_sub(d.as_millis() as i64));
        let parts: Vec<Arc<Part>> = self.parts.read().clone();
        let mut rewritten = 0;
        for ((start, len), group) in partitions(&parts) {
            let end = start.saturating_add(len);
            let index = self.index.read();
            let keep = |id: u32| {
                let pol = policy_of(index.factory(id));
                [!expired(pol.raw, end), !expired(pol.minute, end), !expired(pol.hour, end)]
            };
            // Cheap test first: does any policy expire a resolution this part has?
            let maybe = |p: &Part| {
                let policies = std::iter::once(&cfg.default).chain(cfg.per_factory.values());
                policies.into_iter().any(|pol| {
                    [pol.raw, pol.minute, pol.hour]
                        .into_iter()
                        .enumerate()
                        .any(|(r, d)| p.summary.with_section[r] > 0 && expired(d, end))
                })
            };
            let mut first = None;
            for (i, p) in group.iter().enumerate() {
                if maybe(p) && drops_a_section(p, keep)? {
                    first = Some(i);
                    break;
                }
            }
            let Some(first) = first else {
                continue;
            };
            let suffix = &group[first..];
            let base = self.next_seq.fetch_add(suffix.len() as u64, Ordering::SeqCst);
            for (i, p) in suffix.iter().enumerate().rev() {
                let new = part::rewrite_part(&self.parts_dir, p, base + i as u64, keep, &self.ids)?;
                self.swap_parts(&[Arc::clone(p)], new.map(Arc::new))?;
                rewritten += 1;
            }
        }
        Ok(rewritten)
    }
}

/// Whether `keep` drops a section `p` has.
fn drops_a_section(p: &Part, keep: impl Fn(u32) -> [bool; 3]) -> Result<bool, TsdbError> {
    for entry in p.entries() {
        let (id, e) = entry?;
        let k = keep(id);
        if (0..3).any(|r| e.sections[r].present() && !k[r]) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Parts grouped by partition `(start, len)`, each group in sequence order (as `parts` is).
fn partitions(parts: &[Arc<Part>]) -> BTreeMap<(i64, i64), Vec<Arc<Part>>> {
    let mut by_partition: BTreeMap<(i64, i64), Vec<Arc<Part>>> = BTreeMap::new();
    for p in parts {
        by_partition.entry((p.footer.partition_start, p.footer.partition_len)).or_default().push(Arc::clone(p));
    }
    by_partition
}

fn all_raw(group: &[Arc<Part>]) -> bool {
    group.iter().all(|p| p.has_all_raw())
}

fn sync_dir_quiet(dir: &Path) {
    if let Err(e) = log::sync_dir(dir) {
        tracing::warn!(error = %e, "directory fsync failed");
    }
}

#[async_trait]
impl TelemetryStore for EmbeddedStore {
    async fn write(&self, factory: &FactoryId, points: &[Point]) -> Result<(), TsdbError> {
        validate(points)?;
        if points.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        // Back-pressure: wait (never drop, never fail) while the head is over its bound.
        loop {
            let notified = inner.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if inner.head_points.load(Ordering::SeqCst) < inner.head_limit {
                break;
            }
            inner.request_flush();
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
        if inner.head_points.load(Ordering::SeqCst) >= inner.head_limit / 2 {
            inner.request_flush();
        }
        let ids = index::resolve(&inner.index, factory, points)?;
        let (payload, batch) = wal::encode_batch(&ids, points);
        inner.wal.write(payload, batch).await
    }

    async fn query(&self, factory: &FactoryId, query: &SeriesQuery) -> Result<Vec<Sample>, TsdbError> {
        if query.from_ms >= query.to_ms {
            return Ok(Vec::new());
        }
        if let Some((every, _)) = query.aggregation
            && every <= 0
        {
            return Err(TsdbError::InvalidQuery("aggregation interval must be positive".into()));
        }
        let Some(series) = self.inner.index.read().lookup(factory, &query.device, &query.property) else {
            return Ok(Vec::new());
        };
        let inner = Arc::clone(&self.inner);
        let q = query.clone();
        tokio::task::spawn_blocking(move || inner.query_series(series, &q))
            .await
            .map_err(|e| TsdbError::Unavailable(format!("query task failed: {e}")))?
    }

    async fn latest(&self, factory: &FactoryId, device: &DeviceId) -> Result<Vec<(PropertyName, Sample)>, TsdbError> {
        let props = self.inner.index.read().properties(factory, device);
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for (name, id) in props {
                if let Some(s) = inner.latest_of(id)? {
                    out.push((name, s));
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })
        .await
        .map_err(|e| TsdbError::Unavailable(format!("query task failed: {e}")))?
    }

    async fn health(&self) -> StoreHealth {
        let faults = self.inner.faults.lock();
        let why: Vec<&str> = [&faults.wal, &faults.flush].into_iter().flatten().map(String::as_str).collect();
        if why.is_empty() {
            StoreHealth { ready: true, detail: "ok".into() }
        } else {
            StoreHealth { ready: false, detail: why.join("; ") }
        }
    }

    async fn flush(&self) -> Result<(), TsdbError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            inner.wal.sync()?;
            match inner.flush_all() {
                Ok(()) => {
                    inner.flush_recovered();
                    Ok(())
                }
                Err(e) => {
                    inner.fail_flush(format!("flush failed: {e}"));
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| TsdbError::Unavailable(format!("flush task failed: {e}")))?
    }

    /// One blocking task per window reads every series of it, so a window costs one
    /// hop to the blocking pool instead of one per series.
    fn bulk_read<'a>(&'a self, factory: &FactoryId, query: BulkQuery) -> BulkStream<'a> {
        let planner = match WindowPlanner::new(&query) {
            Ok(p) => p,
            Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
        };
        let factory = factory.clone();
        let query = Arc::new(query);
        futures::stream::try_unfold(planner, move |mut planner| {
            let inner = Arc::clone(&self.inner);
            let factory = factory.clone();
            let query = Arc::clone(&query);
            async move {
                let Some((from_ms, to_ms)) = planner.next_window() else { return Ok::<_, TsdbError>(None) };
                let series = tokio::task::spawn_blocking(move || {
                    let mut out = Vec::with_capacity(query.series.len());
                    for (device, property) in &query.series {
                        // Looked up per window: a series first written during the export
                        // is read from the window it appears in.
                        let Some(id) = inner.index.read().lookup(&factory, device, property) else {
                            out.push(Vec::new());
                            continue;
                        };
                        let q = SeriesQuery {
                            device: device.clone(),
                            property: property.clone(),
                            from_ms,
                            to_ms,
                            aggregation: query.aggregation,
                            limit: None,
                        };
                        out.push(inner.query_series(id, &q)?);
                    }
                    Ok::<_, TsdbError>(out)
                })
                .await
                .map_err(|e| TsdbError::Unavailable(format!("query task failed: {e}")))??;
                let batch = BulkBatch { from_ms, to_ms, series };
                planner.observe(batch.values());
                Ok(Some((batch, planner)))
            }
        })
        .boxed()
    }

    /// The raw retention less one partition: a point accepted now lands in a partition
    /// whose raw data is kept for at least another block, long after the head flushed it.
    /// Right at the retention edge, retention could drop the partition's raw data while
    /// the point is still in the head, and the flush would then add raw data to a
    /// rollup-only partition.
    fn backfill_horizon(&self, factory: &FactoryId) -> Option<Duration> {
        let retention = &self.inner.config.retention;
        let raw = retention.per_factory.get(factory).unwrap_or(&retention.default).raw?;
        Some(raw.saturating_sub(self.inner.config.block_duration))
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<EmbeddedStore>();
    let _ = Acc::new;
    let _ = Head::default;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays 150 flushes into one partition (a 2-h partition at one flush per 50 s) for
    /// equal, random and shrinking flush sizes, applying `tiered_suffix` after each the
    /// way the compactor does: the part count never exceeds the bound, and each flushed
    /// byte is rewritten only a few times.
    #[test]
    fn tiered_policy_bounds_parts_and_rewrites() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for pattern in 0..3 {
            let mut parts: Vec<u64> = Vec::new();
            let (mut flushed, mut rewritten, mut most) = (0u64, 0u64, 0usize);
            for i in 0..150u64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let size = match pattern {
                    0 => 1000,
                    1 => 100 + seed % 3000,
                    _ => (1u64 << 20) >> (i % 16),
                };
                parts.push(size);
                flushed += size;
                while let Some(from) = tiered_suffix(&parts, 8) {
                    assert!(parts.len() - from >= 2);
                    let merged: u64 = parts[from..].iter().sum();
                    rewritten += merged;
                    parts.truncate(from);
                    parts.push(merged);
                }
                most = most.max(parts.len());
            }
            let amplification = rewritten as f64 / flushed as f64;
            eprintln!(
                "pattern {pattern}: at most {most} parts, {} at the end, rewrite factor {amplification:.2}",
                parts.len()
            );
            assert!(most <= 8, "pattern {pattern}: {most} parts");
            assert!(amplification <= 5.0, "pattern {pattern}: rewrite factor {amplification:.2}");
        }
        assert_eq!(tiered_suffix(&[5], 8), None);
        assert_eq!(tiered_suffix(&[40, 10, 10, 10], 8), None, "a big part waits for peers");
        assert_eq!(tiered_suffix(&[40, 10, 10, 10, 10], 8), Some(1));
        assert_eq!(tiered_suffix(&[9, 8, 7, 6, 5, 4], 8), Some(0), "similar sizes form one run");
        assert_eq!(tiered_suffix(&[256, 64, 16, 4, 1], 3), Some(2), "newest parts merged down to the bound");
    }
}
