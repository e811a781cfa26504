//! The delta of an in-place conversion: which 512 KiB blocks (the EBS snapshot block size)
//! of the result differ from the source. Every write after the source's own bytes passes
//! through [`Delta::note`], which compares it with what the source holds there, so the
//! delta counts real differences, never a block rewritten with the bytes it had.

use std::collections::BTreeSet;
use std::io;

use serde::Serialize;

use super::BlockSource;

/// EBS direct APIs' block size.
pub const DELTA_BLOCK: u64 = 512 << 10;
const COMPARE: usize = 64 << 10;

/// Changed blocks of a disk relative to a source at the same offsets.
pub struct Delta<'a> {
    source: &'a dyn BlockSource,
    blocks: BTreeSet<u64>,
    bytes: u64,
}

/// What the delta amounts to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeltaReport {
    /// Block size of the count: 524288, as EBS snapshots have it.
    pub block_size: u64,
    /// Blocks that differ from the source.
    pub changed_blocks: u64,
    /// Bytes that differ from the source.
    pub changed_bytes: u64,
    /// Bytes an incremental snapshot of the result moves: `changed_blocks × block_size`.
    pub upload_bytes: u64,
}

impl<'a> Delta<'a> {
    pub fn new(source: &'a dyn BlockSource) -> Self {
        Delta { source, blocks: BTreeSet::new(), bytes: 0 }
    }

    /// Records `bytes` about to be written at `offset`: what differs from the source there
    /// (past its end, from zeros) joins the delta.
    pub fn note(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut old = vec![0u8; COMPARE];
        let mut done = 0usize;
        while done < bytes.len() {
            let n = COMPARE.min(bytes.len() - done);
            let at = offset + done as u64;
            let avail = self.source.len().saturating_sub(at).min(n as u64) as usize;
            old[..n].fill(0);
            if avail > 0 {
                self.source.read_exact_at(at, &mut old[..avail])?;
            }
            let new = &bytes[done..done + n];
            // Most of a piece is alike or unlike as a whole: compared at memcmp speed, and
            // each block joins the delta once, not once per differing byte.
            if old[..n] != *new {
                let mut i = 0usize;
                while i < n {
                    let block = (at + i as u64) / DELTA_BLOCK;
                    let end = (((block + 1) * DELTA_BLOCK - at) as usize).min(n);
                    let differ = differing(&old[i..end], &new[i..end]);
                    if differ > 0 {
                        self.bytes += differ as u64;
                        self.blocks.insert(block);
                    }
                    i = end;
                }
            }
            done += n;
        }
        Ok(())
    }

    pub fn report(&self) -> DeltaReport {
        let changed_blocks = self.blocks.len() as u64;
        DeltaReport {
            block_size: DELTA_BLOCK,
            changed_blocks,
            changed_bytes: self.bytes,
            upload_bytes: changed_blocks * DELTA_BLOCK,
        }
    }
}

/// How many bytes of `a` and `b` (of one length) differ, eight at a time.
fn differing(a: &[u8], b: &[u8]) -> usize {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = wa.remainder().iter().zip(wb.remainder()).filter(|(x, y)| x != y).count();
    let words = wa.zip(wb).map(|(x, y)| {
        let v = u64::from_ne_bytes(x.try_into().expect("8 bytes")) ^ u64::from_ne_bytes(y.try_into().expect("8 bytes"));
        // The high bit of each byte of `t` is set when that byte of `v` is not zero.
        let t = ((v & LOW7) + LOW7) | v;
        (t & !LOW7).count_ones() as usize
    });
    words.sum::<usize>() + tail
}

#[cfg(test)]
mod tests {
    use crate::io::MemorySource;

    use super::*;

    fn mem(data: Vec<u8>) -> MemorySource {
        MemorySource::new("mem", data)
    }

    #[test]
    fn only_real_differences_count() {
        let src = mem(vec![7u8; 3 * DELTA_BLOCK as usize]);
        let mut d = Delta::new(&src);
        d.note(100, &[7u8; 5000]).unwrap();
        assert_eq!(d.report().changed_blocks, 0, "the same bytes again are no change");
        d.note(DELTA_BLOCK - 2, &[8u8; 4]).unwrap();
        d.note(3 * DELTA_BLOCK + 10, &[0u8; 10]).unwrap();
        d.note(3 * DELTA_BLOCK + 20, &[1u8; 1]).unwrap();
        let r = d.report();
        assert_eq!((r.changed_blocks, r.changed_bytes), (3, 5), "{r:?}");
        assert_eq!(r.upload_bytes, 3 * DELTA_BLOCK);
    }

    #[test]
    fn differing_bytes_are_counted_exactly() {
        let a: Vec<u8> = (0..1003u32).map(|i| (i % 256) as u8).collect();
        let mut b = a.clone();
        for i in [0, 7, 8, 9, 500, 1001, 1002] {
            b[i] ^= 0x80;
        }
        b[300] ^= 1;
        assert_eq!(differing(&a, &b), 8);
        assert_eq!(differing(&a, &a), 0);
    }
}
