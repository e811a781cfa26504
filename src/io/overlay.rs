//! A copy-on-write overlay over a [`BlockSource`]: reads come from the overlay first and then,
//! lazily, from the source; writes stay in the overlay. libext2fs edits the guest through it
//! (see [`crate::ext2fs`]), so the source is never written and the result of the edits is
//! exactly the set of changed chunks.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use super::BlockSource;

/// Granularity of the overlay: one filesystem block on common ext4 volumes.
pub const CHUNK: u64 = 4096;

/// `len` bytes of a source starting at `base_offset`, with writes kept aside.
pub struct Overlay {
    base: Arc<dyn BlockSource>,
    base_offset: u64,
    len: u64,
    chunks: Mutex<BTreeMap<u64, Box<[u8]>>>,
}

impl Overlay {
    /// An overlay over `base[base_offset .. base_offset + len]`, addressed from 0.
    pub fn new(base: Arc<dyn BlockSource>, base_offset: u64, len: u64) -> Self {
        Overlay { base, base_offset, len, chunks: Mutex::new(BTreeMap::new()) }
    }

    fn check(&self, offset: u64, n: usize) -> io::Result<()> {
        if offset.checked_add(n as u64).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("access of {n} bytes at {offset} is past the end ({})", self.len),
            ));
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes of the base at `offset` (overlay coordinates); past the end
    /// of the base (a filesystem may end mid-chunk) reads as zeros.
    fn read_base(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let at = self.base_offset + offset;
        let avail = self.base.len().saturating_sub(at).min(buf.len() as u64) as usize;
        buf[avail..].fill(0);
        if avail > 0 { self.base.read_exact_at(at, &mut buf[..avail]) } else { Ok(()) }
    }

    /// Writes `buf` at `offset`; the source is untouched.
    pub fn write_all_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.check(offset, buf.len())?;
        let mut chunks = self.chunks.lock().unwrap_or_else(PoisonError::into_inner);
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = pos / CHUNK;
            let within = (pos % CHUNK) as usize;
            let n = (CHUNK as usize - within).min(buf.len() - done);
            let chunk = match chunks.entry(index) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let mut fresh = vec![0u8; CHUNK as usize].into_boxed_slice();
                    if n < CHUNK as usize {
                        // A partial write keeps the rest of the chunk as the source has it.
                        let start = index * CHUNK;
                        let keep = (self.len - start).min(CHUNK) as usize;
                        self.read_base(start, &mut fresh[..keep])?;
                    }
                    e.insert(fresh)
                }
            };
            chunk[within..within + n].copy_from_slice(&buf[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// The changed bytes as contiguous `(offset, bytes)` runs, in order.
    pub fn changed_runs(&self) -> Vec<(u64, Vec<u8>)> {
        let chunks = self.chunks.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for (&index, data) in chunks.iter() {
            let at = index * CHUNK;
            let keep = (self.len - at).min(CHUNK) as usize;
            match out.last_mut() {
                Some((off, run)) if *off + run.len() as u64 == at => run.extend_from_slice(&data[..keep]),
                _ => out.push((at, data[..keep].to_vec())),
            }
        }
        out
    }

    /// Bytes the overlay holds (whole chunks).
    pub fn changed_bytes(&self) -> u64 {
        self.chunks.lock().unwrap_or_else(PoisonError::into_inner).len() as u64 * CHUNK
    }
}

impl BlockSource for Overlay {
    fn describe(&self) -> String {
        format!("{} (with edits)", self.base.describe())
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check(offset, buf.len())?;
        let chunks = self.chunks.lock().unwrap_or_else(PoisonError::into_inner);
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = pos / CHUNK;
            let within = (pos % CHUNK) as usize;
            match chunks.get(&index) {
                Some(chunk) => {
                    let n = (CHUNK as usize - within).min(buf.len() - done);
                    buf[done..done + n].copy_from_slice(&chunk[within..within + n]);
                    done += n;
                }
                None => {
                    // Read up to the next changed chunk from the base in one request.
                    let next = chunks.range(index..).next().map_or(u64::MAX, |(&i, _)| i * CHUNK);
                    let n = ((next - pos) as usize).min(buf.len() - done);
                    self.read_base(pos, &mut buf[done..done + n])?;
                    done += n;
                }
            }
        }
        Ok(())
    }
    fn data_ranges(&self) -> io::Result<Vec<Range<u64>>> {
        Ok(std::iter::once(0..self.len).collect())
    }
    fn prefetch(&self, ranges: &[Range<u64>]) -> io::Result<()> {
        let base: Vec<Range<u64>> = ranges
            .iter()
            .map(|r| self.base_offset + r.start.min(self.len)..self.base_offset + r.end.min(self.len))
            .filter(|r| !r.is_empty())
            .collect();
        self.base.prefetch(&base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemorySource;

    fn mem(data: Vec<u8>) -> MemorySource {
        MemorySource::new("mem", data)
    }

    #[test]
    fn writes_shadow_the_source_and_partial_chunks_keep_the_rest() {
        let base: Vec<u8> = (0..5 * CHUNK as usize + 100).map(|i| (i % 251) as u8).collect();
        let src = Arc::new(mem(base.clone()));
        let ov = Overlay::new(src.clone(), 100, base.len() as u64 - 100);
        ov.write_all_at(CHUNK - 10, &[0xAA; 20]).unwrap();
        let mut expect = base[100..].to_vec();
        expect[CHUNK as usize - 10..CHUNK as usize + 10].fill(0xAA);
        let mut got = vec![0u8; expect.len()];
        ov.read_exact_at(0, &mut got).unwrap();
        assert_eq!(got, expect);
        assert_eq!(src.bytes(), &base[..], "the source is never written");
        let runs = ov.changed_runs();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].0, 0);
        assert_eq!(runs[0].1, expect[..2 * CHUNK as usize]);
        assert_eq!(ov.changed_bytes(), 2 * CHUNK);
    }

    #[test]
    fn the_last_partial_chunk_and_bounds() {
        let src = Arc::new(mem(vec![1u8; 10_000]));
        let ov = Overlay::new(src, 0, 10_000);
        ov.write_all_at(9_990, &[2u8; 10]).unwrap();
        let runs = ov.changed_runs();
        assert_eq!(runs[0].0, 8192);
        assert_eq!(runs[0].1.len(), 10_000 - 8192, "a run never extends past the end");
        assert!(ov.write_all_at(9_995, &[0u8; 10]).is_err());
        let mut b = [0u8; 2];
        assert!(ov.read_exact_at(9_999, &mut b).is_err());
    }
}
