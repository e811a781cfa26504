//! A source held in memory: for small images built on the fly, and for tests.

use std::io;
use std::ops::Range;

use super::BlockSource;

pub struct MemorySource {
    name: String,
    data: Vec<u8>,
}

impl MemorySource {
    pub fn new(name: &str, data: Vec<u8>) -> Self {
        MemorySource { name: name.to_string(), data }
    }

    /// The bytes the source holds.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}

impl BlockSource for MemorySource {
    fn describe(&self) -> String {
        self.name.clone()
    }
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.data.get(start..end))
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, format!("read at {offset} is past the end")))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn data_ranges(&self) -> io::Result<Vec<Range<u64>>> {
        Ok(std::iter::once(0..self.len()).collect())
    }
}
