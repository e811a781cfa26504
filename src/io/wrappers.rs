//! Wrappers that compose over the block traits: byte counting and progress on sources,
//! zero-skipping on writes into a fresh sparse sink.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BlockSource, BlockWrite};
use crate::progress::Progress;

/// Counts the bytes and reads that pass through to a source.
pub struct CountingSource {
    inner: Arc<dyn BlockSource>,
    bytes: AtomicU64,
    reads: AtomicU64,
    /// The 4 KiB chunks read so far, by index.
    seen: std::sync::Mutex<std::collections::HashSet<u64>>,
    distinct: AtomicU64,
}

/// Bytes and requests read from a source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadStats {
    pub bytes: u64,
    pub requests: u64,
    /// Of `bytes`, those in 4 KiB chunks read for the first time: the rest were read again.
    #[serde(default)]
    pub distinct_bytes: u64,
    /// From a remote source: the 512 KiB blocks fetched over the network (each at most once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks_fetched: Option<u64>,
}

const CHUNK: u64 = 4096;

impl CountingSource {
    pub fn new(inner: Arc<dyn BlockSource>) -> Self {
        CountingSource {
            inner,
            bytes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            seen: Default::default(),
            distinct: AtomicU64::new(0),
        }
    }
    /// What was read so far.
    pub fn stats(&self) -> ReadStats {
        ReadStats {
            bytes: self.bytes_read(),
            requests: self.reads(),
            distinct_bytes: self.distinct.load(Ordering::Relaxed),
            blocks_fetched: None,
        }
    }
    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// Read requests so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

impl BlockSource for CountingSource {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact_at(offset, buf)?;
        self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.reads.fetch_add(1, Ordering::Relaxed);
        if !buf.is_empty()
            && let Ok(mut seen) = self.seen.lock()
        {
            let end = offset + buf.len() as u64;
            let new: u64 = (offset / CHUNK..end.div_ceil(CHUNK))
                .filter(|&c| seen.insert(c))
                .map(|c| end.min((c + 1) * CHUNK) - offset.max(c * CHUNK))
                .sum();
            self.distinct.fetch_add(new, Ordering::Relaxed);
        }
        Ok(())
    }
    fn data_ranges(&self) -> io::Result<Vec<Range<u64>>> {
        self.inner.data_ranges()
    }
    fn prefetch(&self, ranges: &[Range<u64>]) -> io::Result<()> {
        self.inner.prefetch(ranges)
    }
}

/// Reports every byte read through it to a [`Progress`] observer.
pub struct ProgressSource<'a> {
    inner: &'a dyn BlockSource,
    progress: &'a dyn Progress,
}

impl<'a> ProgressSource<'a> {
    pub fn new(inner: &'a dyn BlockSource, progress: &'a dyn Progress) -> Self {
        ProgressSource { inner, progress }
    }
}

impl BlockSource for ProgressSource<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.progress.stop_requested() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, StopRequested));
        }
        self.inner.read_exact_at(offset, buf)?;
        self.progress.advance(buf.len() as u64);
        Ok(())
    }
    fn data_ranges(&self) -> io::Result<Vec<Range<u64>>> {
        self.inner.data_ranges()
    }
    fn prefetch(&self, ranges: &[Range<u64>]) -> io::Result<()> {
        self.inner.prefetch(ranges)
    }
}

/// Drops writes of all-zero buffers. Only for writes into a region known to read as zeros
/// already, such as a freshly created sparse sink: a zero write there changes nothing.
pub struct ZeroSkipping<'a> {
    inner: &'a mut dyn BlockWrite,
    written: u64,
    skipped: u64,
}

impl<'a> ZeroSkipping<'a> {
    pub fn new(inner: &'a mut dyn BlockWrite) -> Self {
        ZeroSkipping { inner, written: 0, skipped: 0 }
    }
    /// Bytes passed on to the inner writer.
    pub fn written(&self) -> u64 {
        self.written
    }
    /// Bytes dropped as zeros.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

impl BlockWrite for ZeroSkipping<'_> {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if buf.iter().all(|&b| b == 0) {
            self.skipped += buf.len() as u64;
            return Ok(());
        }
        self.inner.write_all_at(offset, buf)?;
        self.written += buf.len() as u64;
        Ok(())
    }
}

/// Copies `len` bytes of `src` from `src_off` to `dst_off` of `dst`, reading only the ranges
/// the source says may hold data, in chunks of `chunk` bytes.
pub fn copy_range(
    src: &dyn BlockSource,
    src_off: u64,
    len: u64,
    dst: &mut dyn BlockWrite,
    dst_off: u64,
    chunk: usize,
) -> Result<(), CopyError> {
    let end = src_off + len;
    let ranges: Vec<(u64, u64)> = src
        .data_ranges()
        .map_err(|err| CopyError::Read { offset: 0, err })?
        .into_iter()
        .map(|r| (r.start.max(src_off), r.end.min(end)))
        .filter(|(s, e)| s < e)
        .collect();
    let mut buf = vec![0u8; chunk];
    for (start, stop) in ranges {
        let mut pos = start;
        while pos < stop {
            let n = ((stop - pos) as usize).min(chunk);
            src.read_exact_at(pos, &mut buf[..n]).map_err(|err| CopyError::Read { offset: pos, err })?;
            let at = dst_off + (pos - src_off);
            dst.write_all_at(at, &buf[..n]).map_err(|err| CopyError::Write { offset: at, err })?;
            pos += n as u64;
        }
    }
    Ok(())
}

/// The copy every sink can do: reads through `progress`, zeros skipped (the sink starts out
/// as zeros). Returns the bytes written.
pub fn copy_into_fresh(
    source: &dyn BlockSource,
    src_off: u64,
    len: u64,
    sink: &mut dyn BlockWrite,
    dst_off: u64,
    progress: &dyn Progress,
) -> Result<u64, CopyError> {
    let observed = ProgressSource::new(source, progress);
    let mut zeros = ZeroSkipping::new(sink);
    match copy_range(&observed, src_off, len, &mut zeros, dst_off, 4 << 20) {
        Err(CopyError::Read { err, .. }) if err.get_ref().is_some_and(|e| e.is::<StopRequested>()) => {
            Err(CopyError::Stopped)
        }
        r => r.map(|()| zeros.written()),
    }
}

/// Bytes in the data ranges of `src` between `src_off` and `src_off + len`.
pub fn data_bytes(src: &dyn BlockSource, src_off: u64, len: u64) -> io::Result<u64> {
    let end = src_off + len;
    Ok(src.data_ranges()?.iter().map(|r| r.end.min(end).saturating_sub(r.start.max(src_off))).sum())
}

/// What a read through [`ProgressSource`] fails with once its progress asks to stop.
#[derive(Debug)]
struct StopRequested;

impl std::fmt::Display for StopRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the copy is no longer wanted")
    }
}

impl std::error::Error for StopRequested {}

/// A failed copy: which side failed, and where.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Its [`Progress`] asked it to stop: the run failed elsewhere.
    #[error("stopped: the copy is no longer wanted")]
    Stopped,
    #[error("reading at offset {offset}")]
    Read {
        offset: u64,
        #[source]
        err: io::Error,
    },
    #[error("writing at offset {offset}")]
    Write {
        offset: u64,
        #[source]
        err: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemorySource;
    use crate::io::Overlay;

    struct Sink(Vec<u8>);
    impl BlockWrite for Sink {
        fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
            self.0[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
            Ok(())
        }
    }

    fn mem(data: Vec<u8>) -> MemorySource {
        MemorySource::new("mem", data)
    }

    #[test]
    fn counting_tells_bytes_read_again_from_new_ones() {
        let src = CountingSource::new(Arc::new(mem(vec![1u8; 64 << 10])));
        let mut buf = vec![0u8; 6000];
        src.read_exact_at(100, &mut buf).unwrap(); // chunks 0 and 1, partly
        src.read_exact_at(100, &mut buf).unwrap(); // the same again
        src.read_exact_at(8192, &mut buf[..10]).unwrap(); // chunk 2, new
        let s = src.stats();
        assert_eq!((s.bytes, s.requests, s.distinct_bytes, s.blocks_fetched), (12_010, 3, 6010, None));
    }

    #[test]
    fn counting_and_zero_skipping_compose_with_copy() {
        let mut data = vec![0u8; 64 << 10];
        data[40_000] = 7;
        let src = Arc::new(CountingSource::new(Arc::new(mem(data.clone()))));
        let mut sink = Sink(vec![0u8; 80 << 10]);
        let mut skip = ZeroSkipping::new(&mut sink);
        copy_range(src.as_ref(), 0, data.len() as u64, &mut skip, 4096, 16 << 10).unwrap();
        assert_eq!((skip.written(), skip.skipped()), (16 << 10, 48 << 10));
        assert_eq!(src.bytes_read(), 64 << 10);
        assert_eq!(src.reads(), 4);
        assert_eq!(sink.0[4096 + 40_000], 7);
        assert_eq!(data_bytes(src.as_ref(), 1000, 2000).unwrap(), 2000);
    }

    #[test]
    fn progress_sees_every_byte() {
        struct Sum(AtomicU64);
        impl Progress for Sum {
            fn start(&self, _: &str, _: u64) {}
            fn advance(&self, n: u64) {
                self.0.fetch_add(n, Ordering::Relaxed);
            }
            fn finish(&self) {}
        }
        let sum = Sum(AtomicU64::new(0));
        let ones = mem(vec![1u8; 10_000]);
        let src = ProgressSource::new(&ones, &sum);
        let ov = Overlay::new(Arc::new(mem(vec![0u8; 10_000])), 0, 10_000);
        let mut buf = vec![0u8; 10_000];
        src.read_exact_at(0, &mut buf).unwrap();
        ov.read_exact_at(0, &mut buf).unwrap();
        assert_eq!(sum.0.load(Ordering::Relaxed), 10_000);
    }
}
