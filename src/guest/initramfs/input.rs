//! A buffered reader that looks ahead as far as asked and counts what was consumed: under the
//! decoders it is the initramfs file (a decoder takes exactly its own stream from it, so the
//! next archive starts where it stopped), and under the cpio reader a decoder's output.

use std::io::{self, BufRead, Read, Write};

const CHUNK: usize = 64 << 10;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

pub struct Input<R> {
    inner: R,
    buf: Vec<u8>,
    at: usize,
    pos: u64,
}

impl<R: Read> Input<R> {
    pub fn new(inner: R) -> Self {
        Input { inner, buf: Vec::new(), at: 0, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Up to `n` bytes ahead (fewer only at the end of the input).
    pub fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.buf.len() - self.at < n {
            self.buf.drain(..self.at);
            self.at = 0;
            let target = n.max(CHUNK);
            while self.buf.len() < n {
                let old = self.buf.len();
                self.buf.resize(target, 0);
                match self.inner.read(&mut self.buf[old..]) {
                    Ok(k) => {
                        self.buf.truncate(old + k);
                        if k == 0 {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => self.buf.truncate(old),
                    Err(e) => {
                        self.buf.truncate(old);
                        return Err(e);
                    }
                }
            }
        }
        let end = (self.at + n).min(self.buf.len());
        Ok(&self.buf[self.at..end])
    }

    /// Consumes `n` bytes, which must have been peeked.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(self.at + n <= self.buf.len());
        self.at += n;
        self.pos += n as u64;
    }

    /// Consumes a run of zeros; returns its length.
    pub fn skip_zeros(&mut self) -> io::Result<u64> {
        let mut skipped = 0;
        loop {
            let b = self.peek(CHUNK)?;
            // A whole chunk of zeros (compared at memcmp speed) is the common case of a bomb.
            let zeros = if b == &ZEROS[..b.len()] { b.len() } else { b.iter().take_while(|&&c| c == 0).count() };
            let len = b.len();
            self.consume(zeros);
            skipped += zeros as u64;
            if len == 0 || zeros < len {
                return Ok(skipped);
            }
        }
    }

    /// Passes the next `n` bytes to `out` (`None`: discards them); fails if the input ends
    /// first, naming `what`.
    pub fn pass(&mut self, mut n: u64, mut out: Option<&mut dyn Write>, what: &str) -> io::Result<()> {
        while n > 0 {
            let b = self.peek(usize::try_from(n).unwrap_or(CHUNK).min(CHUNK))?;
            if b.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{what} is truncated")));
            }
            let k = b.len();
            if let Some(w) = out.as_mut() {
                w.write_all(b)?;
            }
            self.consume(k);
            n -= k as u64;
        }
        Ok(())
    }

    /// Exactly `n` bytes, allocated only as they arrive.
    pub fn take_vec(&mut self, n: usize, what: &str) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while out.len() < n {
            let b = self.peek((n - out.len()).min(CHUNK))?;
            if b.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{what} is truncated")));
            }
            let k = b.len();
            out.extend_from_slice(b);
            self.consume(k);
        }
        Ok(out)
    }
}

impl<R: Read> BufRead for Input<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.at == self.buf.len() {
            self.peek(1)?;
        }
        Ok(&self.buf[self.at..])
    }

    fn consume(&mut self, amt: usize) {
        Input::consume(self, amt.min(self.buf.len() - self.at));
    }
}

impl<R: Read> Read for Input<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let b = self.fill_buf()?;
        let n = b.len().min(out.len());
        out[..n].copy_from_slice(&b[..n]);
        Input::consume(self, n);
        Ok(n)
    }
}

/// A writer that counts what passes through it.
pub struct Counting<W> {
    pub inner: W,
    pub count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeks_consumes_and_counts() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
        let mut input = Input::new(&data[..]);
        assert_eq!(input.peek(100_000).unwrap().len(), 100_000, "beyond one chunk");
        input.consume(3);
        assert_eq!(input.skip_zeros().unwrap(), 0);
        assert_eq!(input.take_vec(4, "x").unwrap(), [3, 4, 5, 6]);
        assert_eq!(input.skip_zeros().unwrap(), 1);
        let mut out = Vec::new();
        input.pass(10, Some(&mut out), "x").unwrap();
        assert_eq!(out, data[8..18]);
        assert_eq!(input.position(), 18);
        assert!(input.pass(1 << 20, None, "the rest").is_err(), "the end comes first");
        assert_eq!(input.position(), data.len() as u64);
        assert!(input.peek(1).unwrap().is_empty());
    }
}
