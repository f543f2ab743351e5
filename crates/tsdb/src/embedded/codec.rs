//! Chunk codec: one series' sorted, de-duplicated points in a compact bit stream.
//!
//! Timestamps: first value, then deltas packed with a per-block frame of reference
//! (block minimum + fixed width). Deltas beat delta-of-delta here because 1 Hz sensor
//! jitter is independent per sample: delta-of-delta doubles its spread.
//! Floats: if every value is a decimal with at most [`MAX_SCALE`] digits after the point,
//! they are stored as scaled integers (delta + frame of reference), otherwise as
//! Gorilla-style XOR. Booleans: one bit each.

use crate::Value;

/// Hard cap on points in one chunk, so a corrupt count can never drive a huge allocation.
pub const MAX_CHUNK_POINTS: usize = 1 << 26;
const MAX_SCALE: u32 = 9;
/// Counts come from (checksummed) data; still, never pre-allocate more than this.
const PREALLOC: usize = 1 << 16;
const BLOCK: usize = 128;

const KIND_SCALED: u64 = 1;
const KIND_XOR: u64 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("corrupt chunk: {0}")]
pub struct CodecError(pub &'static str);

const POW10: [f64; 10] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// Bits packed least significant first. Whole 64-bit words go to the buffer at once:
/// flushes encode ~100k small series, and a byte-at-a-time loop was a visible share of
/// the server's CPU under load.
pub struct BitWriter {
    buf: Vec<u8>,
    /// Pending bits (`nbits` < 64 of them), low bits first.
    acc: u64,
    nbits: u32,
}

impl BitWriter {
    #[cfg(test)]
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    pub fn with_capacity(bytes: usize) -> Self {
        Self { buf: Vec::with_capacity(bytes), acc: 0, nbits: 0 }
    }

    pub fn write(&mut self, value: u64, bits: u32) {
        if bits == 0 {
            return;
        }
        debug_assert!(bits <= 64);
        let masked = if bits >= 64 { value } else { value & ((1u64 << bits) - 1) };
        self.acc |= masked << self.nbits;
        let total = self.nbits + bits;
        if total >= 64 {
            self.buf.extend_from_slice(&self.acc.to_le_bytes());
            // The bits of `masked` that did not fit above the pending ones.
            self.acc = if self.nbits == 0 { 0 } else { masked >> (64 - self.nbits) };
            self.nbits = total - 64;
        } else {
            self.nbits = total;
        }
    }

    #[cfg(test)]
    pub fn bit_len(&self) -> usize {
        self.buf.len() * 8 + self.nbits as usize
    }

    pub fn finish(mut self) -> Vec<u8> {
        let bytes = self.nbits.div_ceil(8) as usize;
        self.buf.extend_from_slice(&self.acc.to_le_bytes()[..bytes]);
        self.buf
    }
}

pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn remaining_bits(&self) -> usize {
        self.data.len() * 8 - self.pos
    }

    pub fn read(&mut self, bits: u32) -> Result<u64, CodecError> {
        if bits == 0 {
            return Ok(0);
        }
        if bits > 64 {
            return Err(CodecError("bit width over 64"));
        }
        if bits as usize > self.remaining_bits() {
            return Err(CodecError("truncated bit stream"));
        }
        let byte = self.pos / 8;
        let off = (self.pos % 8) as u32;
        let mask = |v: u64| if bits == 64 { v } else { v & ((1u64 << bits) - 1) };
        if let Some(nine) = self.data.get(byte..byte + 9) {
            // Fast path: one unaligned 64-bit load plus at most one extra byte.
            let mut word = [0u8; 8];
            word.copy_from_slice(&nine[..8]);
            let mut v = u64::from_le_bytes(word) >> off;
            if off + bits > 64 {
                v |= u64::from(nine[8]) << (64 - off);
            }
            self.pos += bits as usize;
            return Ok(mask(v));
        }
        let need = (off + bits).div_ceil(8) as usize;
        let mut acc: u128 = 0;
        for (i, b) in self.data[byte..byte + need].iter().enumerate() {
            acc |= u128::from(*b) << (8 * i);
        }
        acc >>= off;
        self.pos += bits as usize;
        Ok(mask(acc as u64))
    }
}

fn width(v: u64) -> u32 {
    64 - v.leading_zeros()
}

/// Frame-of-reference packing: per block, the minimum then each value minus it.
fn write_for(w: &mut BitWriter, values: &[i64]) {
    for block in values.chunks(BLOCK) {
        let (min, bw) = block_frame(block);
        let zz = zigzag(min);
        let mw = width(zz);
        w.write(u64::from(mw), 7);
        w.write(zz, mw);
        w.write(u64::from(bw), 7);
        for &v in block {
            w.write((v as u64).wrapping_sub(min as u64), bw);
        }
    }
}

/// A block's minimum and the bit width of its largest offset from it.
fn block_frame(block: &[i64]) -> (i64, u32) {
    let min = block.iter().copied().min().unwrap_or(0);
    let max_off = block.iter().map(|&v| (v as u64).wrapping_sub(min as u64)).max().unwrap_or(0);
    (min, width(max_off))
}

/// The bits [`write_for`] would write, without writing them.
fn for_bits(values: &[i64]) -> usize {
    values
        .chunks(BLOCK)
        .map(|block| {
            let (min, bw) = block_frame(block);
            14 + width(zigzag(min)) as usize + bw as usize * block.len()
        })
        .sum()
}

fn read_for(r: &mut BitReader<'_>, n: usize, out: &mut Vec<i64>) -> Result<(), CodecError> {
    let mut left = n;
    while left > 0 {
        let take = left.min(BLOCK);
        let mw = r.read(7)? as u32;
        let min = unzigzag(r.read(mw)?);
        let bw = r.read(7)? as u32;
        if bw as usize * take > r.remaining_bits() {
            return Err(CodecError("truncated block"));
        }
        for _ in 0..take {
            out.push((min as u64).wrapping_add(r.read(bw)?) as i64);
        }
        left -= take;
    }
    Ok(())
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The smallest decimal scale at which every value is exactly `int / 10^scale`.
fn decimal_scale(values: &[f64]) -> Option<u32> {
    'scale: for s in 0..=MAX_SCALE {
        let p = POW10[s as usize];
        for &v in values {
            let m = (v * p).round();
            if !m.is_finite() || m.abs() >= 9_007_199_254_740_992.0 {
                continue 'scale;
            }
            // Compare through the decoder's exact expression so decoding is bit-identical.
            if ((m as i64) as f64 / p).to_bits() != v.to_bits() {
                continue 'scale;
            }
        }
        return Some(s);
    }
    None
}

fn write_floats(w: &mut BitWriter, values: &[f64]) {
    if let Some(scale) = decimal_scale(values) {
        w.write(KIND_SCALED, 2);
        w.write(u64::from(scale), 4);
        let p = POW10[scale as usize];
        let ints: Vec<i64> = values.iter().map(|v| (v * p).round() as i64).collect();
        w.write(zigzag(ints[0]), 64);
        let deltas: Vec<i64> = ints.windows(2).map(|p| p[1].wrapping_sub(p[0])).collect();
        write_for(w, &deltas);
    } else {
        w.write(KIND_XOR, 2);
        let mut prev = 0u64;
        for &v in values {
            let bits = v.to_bits();
            let x = bits ^ prev;
            prev = bits;
            if x == 0 {
                w.write(0, 1);
            } else {
                let lz = x.leading_zeros().min(63);
                let tz = x.trailing_zeros();
                let len = 64 - lz - tz;
                w.write(1, 1);
                w.write(u64::from(lz), 6);
                w.write(u64::from(len - 1), 6);
                w.write(x >> tz, len);
            }
        }
    }
}

fn read_floats(r: &mut BitReader<'_>, n: usize) -> Result<Vec<f64>, CodecError> {
    let kind = r.read(2)?;
    let mut out = Vec::with_capacity(n.min(PREALLOC));
    match kind {
        KIND_SCALED => {
            let scale = r.read(4)? as usize;
            let p = *POW10.get(scale).ok_or(CodecError("bad decimal scale"))?;
            let mut cur = unzigzag(r.read(64)?);
            let mut deltas = Vec::with_capacity(n.min(PREALLOC));
            read_for(r, n.saturating_sub(1), &mut deltas)?;
            out.push(cur as f64 / p);
            for d in deltas {
                cur = cur.wrapping_add(d);
                out.push(cur as f64 / p);
            }
        }
        KIND_XOR => {
            let mut prev = 0u64;
            for _ in 0..n {
                if r.read(1)? == 1 {
                    let lz = r.read(6)? as u32;
                    let len = r.read(6)? as u32 + 1;
                    if lz + len > 64 {
                        return Err(CodecError("bad xor window"));
                    }
                    let tz = 64 - lz - len;
                    prev ^= r.read(len)? << tz;
                }
                out.push(f64::from_bits(prev));
            }
        }
        _ => return Err(CodecError("unknown float encoding")),
    }
    Ok(out)
}

/// Encodes points sorted strictly ascending by timestamp (the caller de-duplicates).
pub fn encode_chunk(points: &[(i64, Value)]) -> Vec<u8> {
    // Typically a few bits per point; the guess only saves regrowing the buffer.
    let mut w = BitWriter::with_capacity(32 + points.len() * 4);
    w.write(points.len() as u64, 32);
    let ts: Vec<i64> = points.iter().map(|p| p.0).collect();
    write_timestamps(&mut w, &ts);
    let values: Vec<Value> = points.iter().map(|p| p.1).collect();
    write_values(&mut w, &values);
    w.finish()
}

pub fn decode_chunk(data: &[u8]) -> Result<Vec<(i64, Value)>, CodecError> {
    let mut r = BitReader::new(data);
    let n = read_count(&mut r)?;
    let ts = read_timestamps(&mut r, n)?;
    let values = read_values(&mut r, n)?;
    Ok(ts.into_iter().zip(values).collect())
}

/// A regular grid under jittered timestamps: period, tick index and residual per point.
struct Grid {
    period: i64,
    ticks: Vec<i64>,
    residuals: Vec<i64>,
}

fn grid(ts: &[i64], deltas: &[i64]) -> Option<Grid> {
    let t0 = *ts.first()?;
    if deltas.is_empty() {
        return None;
    }
    let mut sorted = deltas.to_vec();
    let mid = sorted.len() / 2;
    let period = *sorted.select_nth_unstable(mid).1;
    if period < 2 {
        return None;
    }
    let p = i128::from(period);
    let mut ticks = Vec::with_capacity(ts.len());
    let mut residuals = Vec::with_capacity(ts.len());
    for &t in ts {
        let d = i128::from(t) - i128::from(t0);
        let k = (d + p / 2).div_euclid(p);
        ticks.push(i64::try_from(k).ok()?);
        residuals.push(i64::try_from(d - k * p).ok()?);
    }
    Some(Grid { period, ticks, residuals })
}

/// Timestamps: plain deltas, or — when smaller, as for jittered periodic sampling — a
/// grid: tick-index deltas (mostly constant) plus the jitter itself, which is narrower
/// than the jitter's differences.
fn write_timestamps(w: &mut BitWriter, ts: &[i64]) {
    let Some(&t0) = ts.first() else { return };
    // Sizes are computed, not encoded twice: this runs for every series of every flush.
    let deltas: Vec<i64> = ts.windows(2).map(|p| p[1].wrapping_sub(p[0])).collect();
    if let Some(g) = grid(ts, &deltas) {
        let tick_deltas: Vec<i64> = g.ticks.windows(2).map(|p| p[1].wrapping_sub(p[0])).collect();
        let gridded = 128 + for_bits(&tick_deltas) + for_bits(&g.residuals);
        if gridded < 64 + for_bits(&deltas) {
            w.write(1, 1);
            w.write(g.period as u64, 64);
            w.write(t0 as u64, 64);
            write_for(w, &tick_deltas);
            write_for(w, &g.residuals);
            return;
        }
    }
    w.write(0, 1);
    w.write(t0 as u64, 64);
    write_for(w, &deltas);
}

fn read_timestamps(r: &mut BitReader<'_>, n: usize) -> Result<Vec<i64>, CodecError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if r.read(1)? == 0 {
        return read_deltas(r, n);
    }
    let period = r.read(64)? as i64;
    let t0 = r.read(64)? as i64;
    let mut tick_deltas = Vec::with_capacity(n.min(PREALLOC));
    read_for(r, n - 1, &mut tick_deltas)?;
    let mut residuals = Vec::with_capacity(n.min(PREALLOC));
    read_for(r, n, &mut residuals)?;
    let mut out = Vec::with_capacity(n.min(PREALLOC));
    let mut k = 0i64;
    for (i, res) in residuals.into_iter().enumerate() {
        if i > 0 {
            k = k.wrapping_add(tick_deltas[i - 1]);
        }
        out.push(t0.wrapping_add(k.wrapping_mul(period)).wrapping_add(res));
    }
    Ok(out)
}

pub fn read_count(r: &mut BitReader<'_>) -> Result<usize, CodecError> {
    let n = r.read(32)? as usize;
    if n > MAX_CHUNK_POINTS {
        return Err(CodecError("point count over limit"));
    }
    Ok(n)
}

/// First value raw, then successive differences, frame-of-reference packed.
pub fn write_deltas(w: &mut BitWriter, values: &[i64]) {
    let Some(&first) = values.first() else { return };
    w.write(first as u64, 64);
    let deltas: Vec<i64> = values.windows(2).map(|p| p[1].wrapping_sub(p[0])).collect();
    write_for(w, &deltas);
}

pub fn read_deltas(r: &mut BitReader<'_>, n: usize) -> Result<Vec<i64>, CodecError> {
    let mut out = Vec::with_capacity(n.min(PREALLOC));
    if n == 0 {
        return Ok(out);
    }
    let mut cur = r.read(64)? as i64;
    out.push(cur);
    let mut deltas = Vec::with_capacity(n.min(PREALLOC));
    read_for(r, n - 1, &mut deltas)?;
    for d in deltas {
        cur = cur.wrapping_add(d);
        out.push(cur);
    }
    Ok(out)
}

/// Values as-is, frame-of-reference packed (small non-negative integers such as counts).
pub fn write_ints(w: &mut BitWriter, values: &[i64]) {
    write_for(w, values);
}

pub fn read_ints(r: &mut BitReader<'_>, n: usize) -> Result<Vec<i64>, CodecError> {
    let mut out = Vec::with_capacity(n.min(PREALLOC));
    read_for(r, n, &mut out)?;
    Ok(out)
}

pub fn write_values(w: &mut BitWriter, values: &[Value]) {
    if values.is_empty() {
        return;
    }
    let all_bool = values.iter().all(|v| matches!(v, Value::Bool(_)));
    let all_float = values.iter().all(|v| matches!(v, Value::Float(_)));
    if all_bool {
        w.write(1, 2);
        for v in values {
            w.write(u64::from(matches!(v, Value::Bool(true))), 1);
        }
        return;
    }
    if all_float {
        w.write(0, 2);
    } else {
        w.write(2, 2);
        for v in values {
            w.write(u64::from(matches!(v, Value::Bool(_))), 1);
        }
    }
    let floats: Vec<f64> = values.iter().map(|v| v.as_f64()).collect();
    write_floats(w, &floats);
}

pub fn read_values(r: &mut BitReader<'_>, n: usize) -> Result<Vec<Value>, CodecError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let values: Vec<Value> = match r.read(2)? {
        0 => read_floats(r, n)?.into_iter().map(Value::Float).collect(),
        1 => {
            if r.remaining_bits() < n {
                return Err(CodecError("truncated booleans"));
            }
            let mut out = Vec::with_capacity(n.min(PREALLOC));
            for _ in 0..n {
                out.push(Value::Bool(r.read(1)? == 1));
            }
            out
        }
        2 => {
            if r.remaining_bits() < n {
                return Err(CodecError("truncated type tags"));
            }
            let mut tags = Vec::with_capacity(n.min(PREALLOC));
            for _ in 0..n {
                tags.push(r.read(1)? == 1);
            }
            let floats = read_floats(r, n)?;
            tags.into_iter()
                .zip(floats)
                .map(|(is_bool, f)| if is_bool { Value::Bool(f != 0.0) } else { Value::Float(f) })
                .collect()
        }
        _ => return Err(CodecError("unknown value kind")),
    };
    Ok(values)
}

pub fn write_f64s(w: &mut BitWriter, values: &[f64]) {
    if !values.is_empty() {
        write_floats(w, values);
    }
}

pub fn read_f64s(r: &mut BitReader<'_>, n: usize) -> Result<Vec<f64>, CodecError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    read_floats(r, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(points: &[(i64, Value)]) {
        let enc = encode_chunk(points);
        let dec = decode_chunk(&enc).unwrap();
        assert_eq!(dec.len(), points.len());
        for (a, b) in dec.iter().zip(points) {
            assert_eq!(a.0, b.0);
            match (a.1, b.1) {
                (Value::Float(x), Value::Float(y)) => assert_eq!(x.to_bits(), y.to_bits()),
                (x, y) => assert_eq!(x, y),
            }
        }
    }

    fn sorted_unique(mut ts: Vec<i64>) -> Vec<i64> {
        ts.sort_unstable();
        ts.dedup();
        ts
    }

    #[test]
    fn special_values() {
        round_trip(&[]);
        round_trip(&[(0, Value::Float(-0.0))]);
        round_trip(&[(i64::MIN, Value::Float(f64::MAX)), (i64::MAX, Value::Float(f64::MIN_POSITIVE))]);
        round_trip(&[(1, Value::Float(0.1)), (2, Value::Float(0.30000000000000004))]);
        round_trip(&[(1, Value::Bool(true)), (5, Value::Float(2.5)), (9, Value::Bool(false))]);
    }

    #[test]
    fn two_decimal_signal_is_compact() {
        let pts: Vec<(i64, Value)> = (0..7200)
            .map(|i| {
                (
                    1_700_000_000_000 + i * 1000 + (i * 7919 % 11) - 5,
                    Value::Float(((4200 + (i * 31 % 97)) as f64) / 100.0),
                )
            })
            .collect();
        let enc = encode_chunk(&pts);
        assert!(enc.len() < 7200 * 2, "{} bytes", enc.len());
        round_trip(&pts);
    }

    #[test]
    fn garbage_never_panics() {
        for seed in 0u64..2000 {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let data: Vec<u8> = (0..(seed % 64))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode_chunk(&data);
        }
    }

    /// The plain definition: one bit at a time, least significant first.
    fn reference_bits(writes: &[(u64, u32)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut n = 0usize;
        for &(value, bits) in writes {
            for i in 0..bits {
                if n.is_multiple_of(8) {
                    out.push(0);
                }
                if (value >> i) & 1 == 1 {
                    *out.last_mut().unwrap() |= 1 << (n % 8);
                }
                n += 1;
            }
        }
        out
    }

    proptest! {
        #[test]
        fn bit_writer_matches_the_plain_definition(writes in proptest::collection::vec((any::<u64>(), 0u32..=64), 0..200)) {
            let mut w = BitWriter::new();
            for &(value, bits) in &writes {
                w.write(value, bits);
            }
            prop_assert_eq!(w.bit_len(), writes.iter().map(|w| w.1 as usize).sum::<usize>());
            prop_assert_eq!(w.finish(), reference_bits(&writes));
        }

        #[test]
        fn for_bits_is_what_write_for_writes(values in proptest::collection::vec(any::<i64>(), 0..600)) {
            let mut w = BitWriter::new();
            write_for(&mut w, &values);
            prop_assert_eq!(w.bit_len(), for_bits(&values));
        }

        #[test]
        fn floats_round_trip(ts in proptest::collection::vec(any::<i64>(), 0..400), vals in proptest::collection::vec(any::<f64>().prop_filter("finite", |v| v.is_finite()), 400)) {
            let ts = sorted_unique(ts);
            let pts: Vec<(i64, Value)> = ts.iter().zip(&vals).map(|(&t, &v)| (t, Value::Float(v))).collect();
            round_trip(&pts);
        }

        #[test]
        fn decimals_round_trip(start in -1_000_000_000_000i64..1_000_000_000_000, steps in proptest::collection::vec((1i64..5000, -1_000_000i64..1_000_000, 0usize..4), 0..400)) {
            let mut t = start;
            let pts: Vec<(i64, Value)> = steps.iter().map(|&(dt, v, s)| { t += dt; (t, Value::Float(v as f64 / POW10[s])) }).collect();
            round_trip(&pts);
        }

        #[test]
        fn bools_and_mixed_round_trip(steps in proptest::collection::vec((1i64..100_000, any::<bool>(), any::<Option<f64>>()), 0..400)) {
            let mut t = 0;
            let pts: Vec<(i64, Value)> = steps.iter().map(|&(dt, b, f)| {
                t += dt;
                (t, match f { Some(f) if f.is_finite() => Value::Float(f), _ => Value::Bool(b) })
            }).collect();
            round_trip(&pts);
            let bools: Vec<(i64, Value)> = pts.iter().map(|&(t, v)| (t, Value::Bool(v.as_f64() != 0.0))).collect();
            round_trip(&bools);
        }

        #[test]
        fn jittered_periodic_timestamps_round_trip(start in any::<i64>(), period in 1i64..100_000, steps in proptest::collection::vec((1i64..4, -50i64..50), 1..400)) {
            let mut tick = 0i64;
            let mut ts: Vec<i64> = steps.iter().map(|&(gap, jitter)| { tick += gap; start.wrapping_add(tick * period + jitter) }).collect();
            ts = sorted_unique(ts);
            let pts: Vec<(i64, Value)> = ts.iter().map(|&t| (t, Value::Float(1.5))).collect();
            round_trip(&pts);
        }

        #[test]
        fn huge_values_round_trip(vals in proptest::collection::vec(prop_oneof![Just(f64::MAX), Just(-f64::MAX), Just(1e300), Just(-5e-324), -1e18f64..1e18], 1..300)) {
            let pts: Vec<(i64, Value)> = vals.iter().enumerate().map(|(i, &v)| (i as i64 * 1000, Value::Float(v))).collect();
            round_trip(&pts);
        }
    }
}
