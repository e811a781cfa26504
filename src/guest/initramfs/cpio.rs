//! cpio "newc" (070701) and "crc" (070702) archives, through the `cpio` crate: reading one or
//! more archives laid end to end (zero padding between them), and writing one back.

use std::io::{self, Read};

/// One archive member, with everything newc stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpioEntry {
    pub name: String,
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub data: Vec<u8>,
}

pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;

impl CpioEntry {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }
    /// The name without a leading `./` or `/`.
    pub fn path(&self) -> &str {
        normalize(&self.name)
    }
}

pub fn normalize(name: &str) -> &str {
    name.trim_start_matches("./").trim_start_matches('/')
}

fn starts_archive(data: &[u8]) -> bool {
    data.starts_with(b"070701") || data.starts_with(b"070702")
}

/// The longest member name a header may claim (the kernel's `PATH_MAX`, with its NUL).
const MAX_NAME: usize = 4096;
const HEADER: usize = 110;
/// The most members an initramfs may hold in all its archives (README, "Limits"); a real one
/// has a few thousand.
pub const MAX_ENTRIES: usize = 1 << 18;
const CHUNK: usize = 64 << 10;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// An archive would unpack to more than its limit; the limit and what crossed it.
#[derive(Debug, thiserror::Error)]
#[error("{what} would take it past {limit} bytes")]
pub struct LimitExceeded {
    pub limit: u64,
    pub what: String,
}

/// A reader that can look ahead, counting what it consumed.
struct Peek<R> {
    inner: R,
    buf: Vec<u8>,
    at: usize,
    consumed: u64,
}

impl<R: Read> Peek<R> {
    /// Up to `n` bytes ahead (fewer only at the end of the input).
    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.buf.len() - self.at < n {
            self.buf.drain(..self.at);
            self.at = 0;
            let mut chunk = vec![0u8; CHUNK.max(n)];
            while self.buf.len() < n {
                let k = self.inner.read(&mut chunk)?;
                if k == 0 {
                    break;
                }
                self.buf.extend_from_slice(&chunk[..k]);
            }
        }
        let end = (self.at + n).min(self.buf.len());
        Ok(&self.buf[self.at..end])
    }

    fn consume(&mut self, n: usize) {
        self.at += n;
        self.consumed += n as u64;
    }

    fn skip_zeros(&mut self) -> io::Result<()> {
        loop {
            let b = self.peek(CHUNK)?;
            // A whole chunk of zeros (compared at memcmp speed) is the common case of a bomb.
            let zeros = if b == &ZEROS[..b.len()] { b.len() } else { b.iter().take_while(|&&c| c == 0).count() };
            let len = b.len();
            self.consume(zeros);
            if len == 0 || zeros < len {
                return Ok(());
            }
        }
    }

    /// Exactly `n` bytes, allocated only as they arrive.
    fn take_vec(&mut self, n: usize, what: &str) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while out.len() < n {
            let b = self.peek((n - out.len()).min(CHUNK))?;
            if b.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("cpio: {what} is truncated")));
            }
            let k = b.len();
            out.extend_from_slice(b);
            self.consume(k);
        }
        Ok(out)
    }
}

fn hex(field: &[u8]) -> io::Result<u32> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|t| u32::from_str_radix(t, 16).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "cpio: a header field is not hexadecimal"))
}

/// Reads consecutive archives from the start of `data`. Returns the entries (trailers left
/// out) and how many bytes the archives and the zero padding after them took.
pub fn read_archives(data: &[u8]) -> io::Result<(Vec<CpioEntry>, usize)> {
    let (entries, used) = read_stream(data, data.len() as u64)?;
    Ok((entries, used as usize))
}

/// Reads consecutive archives from `input`, unpacking at most `limit` bytes: a member whose
/// header claims more than is left is refused before anything is allocated for it, and so is
/// a name longer than `PATH_MAX`. Returns the entries and the bytes taken from `input`.
pub fn read_stream<R: Read>(input: R, limit: u64) -> io::Result<(Vec<CpioEntry>, u64)> {
    let mut r = Peek { inner: input, buf: Vec::new(), at: 0, consumed: 0 };
    let mut entries = Vec::new();
    let mut end = 0u64;
    loop {
        r.skip_zeros()?;
        if !starts_archive(r.peek(6)?) {
            // Zero padding belongs to the archive before it.
            if end > 0 {
                end = r.consumed;
            }
            break;
        }
        loop {
            if entries.len() >= MAX_ENTRIES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("cpio: more than {MAX_ENTRIES} members"),
                ));
            }
            let h = r.peek(HEADER)?;
            if h.len() < HEADER || !starts_archive(h) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "cpio: a truncated or bad header"));
            }
            let f = |i: usize| hex(&h[6 + 8 * i..14 + 8 * i]);
            let (ino, mode, uid, gid, nlink, mtime) = (f(0)?, f(1)?, f(2)?, f(3)?, f(4)?, f(5)?);
            let (size, dev_major, dev_minor, rdev_major, rdev_minor) = (f(6)?, f(7)?, f(8)?, f(9)?, f(10)?);
            let name_len = f(11)? as usize;
            if name_len == 0 || name_len > MAX_NAME {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("cpio: a header claims a name of {name_len} bytes"),
                ));
            }
            r.consume(HEADER);
            let mut name = r.take_vec(name_len, "a name")?;
            if name.pop() != Some(0) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "cpio: a name without its NUL"));
            }
            let name = String::from_utf8(name)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "cpio: a name that is not UTF-8"))?;
            r.take_vec((HEADER + name_len).next_multiple_of(4) - HEADER - name_len, "the padding")?;
            let left = limit.saturating_sub(r.consumed);
            if u64::from(size) > left {
                return Err(io::Error::other(LimitExceeded { limit, what: format!("member {name} of {size} bytes") }));
            }
            let data = r.take_vec(size as usize, &name)?;
            r.take_vec((size as usize).next_multiple_of(4) - size as usize, "the padding")?;
            if name == "TRAILER!!!" {
                break;
            }
            entries.push(CpioEntry {
                name,
                ino,
                mode,
                uid,
                gid,
                nlink,
                mtime,
                dev_major,
                dev_minor,
                rdev_major,
                rdev_minor,
                data,
            });
        }
        end = r.consumed;
    }
    Ok((entries, end))
}

/// Writes one newc archive with a trailer, padded to a 512-byte block as cpio(1) does.
pub fn write_archive(entries: &[CpioEntry]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for e in entries {
        let size = u32::try_from(e.data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{} is over 4 GiB", e.name)))?;
        let mut w = cpio::newc::Builder::new(&e.name)
            .ino(e.ino)
            .mode(e.mode)
            .uid(e.uid)
            .gid(e.gid)
            .nlink(e.nlink)
            .mtime(e.mtime)
            .dev_major(e.dev_major)
            .dev_minor(e.dev_minor)
            .rdev_major(e.rdev_major)
            .rdev_minor(e.rdev_minor)
            .write(&mut out, size);
        io::Write::write_all(&mut w, &e.data)?;
        w.finish()?;
    }
    cpio::newc::trailer(&mut out)?;
    let pad = out.len().next_multiple_of(512) - out.len();
    out.extend(std::iter::repeat_n(0, pad));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn entry(name: &str, mode: u32, data: &[u8]) -> CpioEntry {
        CpioEntry {
            name: name.into(),
            ino: 0,
            mode,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            dev_major: 0,
            dev_minor: 0,
            rdev_major: 0,
            rdev_minor: 0,
            data: data.to_vec(),
        }
    }

    #[test]
    fn round_trip_and_concatenation() {
        let a = vec![
            entry("kernel", S_IFDIR | 0o755, b""),
            entry("kernel/x86/microcode/GenuineIntel.bin", S_IFREG | 0o644, b"ucode"),
        ];
        let b = vec![
            entry(".", S_IFDIR | 0o755, b""),
            entry("init", S_IFREG | 0o755, b"#!/bin/sh\n"),
            entry("lib", S_IFLNK | 0o777, b"usr/lib"),
        ];
        let mut data = write_archive(&a).unwrap();
        data.extend(write_archive(&b).unwrap());
        data.extend([0u8; 4]);
        let (entries, used) = read_archives(&data).unwrap();
        assert_eq!(entries, [a, b].concat());
        assert_eq!(used, data.len());
    }

    #[test]
    fn stops_before_other_data() {
        let mut data = write_archive(&[entry("a", S_IFREG | 0o644, b"x")]).unwrap();
        let len = data.len();
        data.extend([0x1f, 0x8b, 8, 0]);
        let (entries, used) = read_archives(&data).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(used, len);
    }

    #[test]
    fn truncated_archive_is_an_error() {
        let data = write_archive(&[entry("a", S_IFREG | 0o644, &[1u8; 4000])]).unwrap();
        assert!(read_archives(&data[..2000]).is_err());
        assert!(read_archives(&data[..50]).is_err());
    }
}
