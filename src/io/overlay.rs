//! A copy-on-write overlay over a [`BlockSource`]: reads come from the overlay first and then,
//! lazily, from the source; writes stay in the overlay. libext2fs edits the guest through it
//! (see [`crate::ext2fs`]), so the source is never written and the result of the edits is
//! exactly the set of changed chunks.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::BlockSource;

/// Granularity of the overlay: one filesystem block on common ext4 volumes.
pub const CHUNK: u64 = 4096;
/// Changed chunks held in memory; past this many bytes of them, an overlay with a spill
/// directory keeps the rest in a file there (a new initramfs as large as the original).
pub const MEMORY_BUDGET: u64 = 64 << 20;

/// Where a changed chunk is.
enum Slot {
    Memory(Box<[u8]>),
    /// In the spill file, at `index * CHUNK`.
    Spilled,
}

struct Chunks {
    map: BTreeMap<u64, Slot>,
    in_memory: u64,
    spill_dir: Option<PathBuf>,
    spill: Option<std::fs::File>,
}

/// `len` bytes of a source starting at `base_offset`, with writes kept aside.
pub struct Overlay {
    base: Arc<dyn BlockSource>,
    base_offset: u64,
    len: u64,
    chunks: Mutex<Chunks>,
}

impl Overlay {
    /// An overlay over `base[base_offset .. base_offset + len]`, addressed from 0, holding
    /// every change in memory.
    pub fn new(base: Arc<dyn BlockSource>, base_offset: u64, len: u64) -> Self {
        Self::with_spill(base, base_offset, len, None)
    }

    /// The same, but once [`MEMORY_BUDGET`] of changes are in memory the rest go to an
    /// unnamed file in `spill_dir` (removed by the system when the process ends).
    pub fn with_spill(base: Arc<dyn BlockSource>, base_offset: u64, len: u64, spill_dir: Option<&Path>) -> Self {
        let chunks =
            Chunks { map: BTreeMap::new(), in_memory: 0, spill_dir: spill_dir.map(Path::to_path_buf), spill: None };
        Overlay { base, base_offset, len, chunks: Mutex::new(chunks) }
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
        let mut guard = self.chunks.lock().unwrap_or_else(PoisonError::into_inner);
        let chunks = &mut *guard;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = pos / CHUNK;
            let within = (pos % CHUNK) as usize;
            let n = (CHUNK as usize - within).min(buf.len() - done);
            let piece = &buf[done..done + n];
            if let Some(Slot::Memory(chunk)) = chunks.map.get_mut(&index) {
                chunk[within..within + n].copy_from_slice(piece);
            } else if chunks.map.contains_key(&index) {
                spill_file(chunks)?.write_all_at(piece, pos)?;
            } else {
                let mut fresh = vec![0u8; CHUNK as usize].into_boxed_slice();
                if n < CHUNK as usize {
                    // A partial write keeps the rest of the chunk as the source has it.
                    let start = index * CHUNK;
                    let keep = (self.len - start).min(CHUNK) as usize;
                    self.read_base(start, &mut fresh[..keep])?;
                }
                fresh[within..within + n].copy_from_slice(piece);
                let slot = if chunks.spill_dir.is_some() && chunks.in_memory >= MEMORY_BUDGET {
                    spill_file(chunks)?.write_all_at(&fresh, index * CHUNK)?;
                    Slot::Spilled
                } else {
                    chunks.in_memory += CHUNK;
                    Slot::Memory(fresh)
                };
                chunks.map.insert(index, slot);
            }
            done += n;
        }
        Ok(())
    }

    /// The changed byte ranges, adjacent chunks merged, in order.
    pub fn changed_ranges(&self) -> Vec<Range<u64>> {
        let chunks = self.chunks.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<Range<u64>> = Vec::new();
        for &index in chunks.map.keys() {
            let at = index * CHUNK;
            let end = (at + CHUNK).min(self.len);
            match out.last_mut() {
                Some(r) if r.end == at => r.end = end,
                _ => out.push(at..end),
            }
        }
        out
    }

    /// The changed bytes as contiguous `(offset, bytes)` runs of at most `max` bytes, in
    /// order, read one at a time.
    pub fn changed_runs_of(&self, max: usize) -> impl Iterator<Item = io::Result<(u64, Vec<u8>)>> + '_ {
        let max = max.max(1) as u64;
        self.changed_ranges()
            .into_iter()
            .flat_map(move |r| {
                (r.start..r.end).step_by(max as usize).map(move |at| at..at.saturating_add(max).min(r.end))
            })
            .map(|piece| {
                let mut buf = vec![0u8; (piece.end - piece.start) as usize];
                self.read_exact_at(piece.start, &mut buf).map(|()| (piece.start, buf))
            })
    }

    /// Every changed run whole, in memory (for tests and small overlays).
    pub fn changed_runs(&self) -> Vec<(u64, Vec<u8>)> {
        self.changed_runs_of(usize::MAX).collect::<io::Result<_>>().expect("reading the overlay's changes")
    }

    /// Bytes the overlay holds (whole chunks).
    pub fn changed_bytes(&self) -> u64 {
        self.chunks.lock().unwrap_or_else(PoisonError::into_inner).map.len() as u64 * CHUNK
    }

    /// Bytes of changes held in memory (the rest are in the spill file).
    pub fn bytes_in_memory(&self) -> u64 {
        self.chunks.lock().unwrap_or_else(PoisonError::into_inner).in_memory
    }
}

/// The spill file, made on first use.
fn spill_file(chunks: &mut Chunks) -> io::Result<&std::fs::File> {
    if chunks.spill.is_none() {
        let dir = chunks.spill_dir.as_deref().unwrap_or(Path::new("."));
        chunks.spill = Some(tempfile::tempfile_in(dir)?);
    }
    Ok(chunks.spill.as_ref().expect("just made"))
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
            let n = (CHUNK as usize - within).min(buf.len() - done);
            match chunks.map.get(&index) {
                Some(Slot::Memory(chunk)) => {
                    buf[done..done + n].copy_from_slice(&chunk[within..within + n]);
                    done += n;
                }
                Some(Slot::Spilled) => {
                    // Spilled chunks that follow one another are read in one request.
                    let mut end = index + 1;
                    let last = (offset + buf.len() as u64).div_ceil(CHUNK);
                    while end < last && matches!(chunks.map.get(&end), Some(Slot::Spilled)) {
                        end += 1;
                    }
                    let n = ((end * CHUNK - pos) as usize).min(buf.len() - done);
                    let file =
                        chunks.spill.as_ref().ok_or_else(|| io::Error::other("the overlay lost its spill file"))?;
                    file.read_exact_at(&mut buf[done..done + n], pos)?;
                    done += n;
                }
                None => {
                    // Read up to the next changed chunk from the base in one request.
                    let next = chunks.map.range(index..).next().map_or(u64::MAX, |(&i, _)| i * CHUNK);
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
    fn past_the_budget_changes_go_to_the_spill_file() {
        let len = MEMORY_BUDGET + 64 * CHUNK;
        let src = Arc::new(mem(vec![1u8; len as usize]));
        let dir = tempfile::tempdir().unwrap();
        let ov = Overlay::with_spill(src, 0, len, Some(dir.path()));
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        // Written unaligned, in pieces, the last one partial.
        for (i, piece) in data[10..len as usize - 10].chunks(1 << 20).enumerate() {
            ov.write_all_at(10 + (i << 20) as u64, piece).unwrap();
        }
        assert_eq!(ov.bytes_in_memory(), MEMORY_BUDGET);
        assert_eq!(ov.changed_bytes(), len);
        let mut got = vec![0u8; len as usize];
        ov.read_exact_at(0, &mut got).unwrap();
        assert!(got[..10] == [1u8; 10] && got[len as usize - 10..] == [1u8; 10], "the source's bytes around");
        assert!(got[10..len as usize - 10] == data[10..len as usize - 10]);
        // Rewritten in place in the spill file, and read back in runs of at most 1 MiB.
        ov.write_all_at(len - 100, b"again").unwrap();
        let runs: Vec<(u64, Vec<u8>)> = ov.changed_runs_of(1 << 20).map(Result::unwrap).collect();
        assert!(runs.iter().all(|(_, r)| r.len() <= 1 << 20));
        let joined: Vec<u8> = runs.into_iter().flat_map(|(_, r)| r).collect();
        assert_eq!(&joined[len as usize - 100..len as usize - 95], b"again");
        assert_eq!(joined.len() as u64, len);
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
