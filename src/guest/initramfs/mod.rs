//! Reading and rebuilding an initramfs: one or more cpio archives laid end to end, each
//! uncompressed (an early-microcode archive usually comes first) or compressed.
//!
//! A rebuild re-encodes only the segments that changed, with their own compression, and keeps
//! the others byte for byte.

pub mod compress;
pub mod cpio;
pub mod kmod_index;

pub use compress::{Compression, Level};
pub use cpio::CpioEntry;

use cpio::{S_IFDIR, S_IFREG};

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("unrecognised data at offset {offset} (not cpio, nor a known compression)")]
    Unrecognised { offset: usize },
    #[error("{compression} stream at offset {offset}: {err}")]
    Decompress { compression: &'static str, offset: usize, err: std::io::Error },
    #[error("cpio archive at offset {offset}: {err}")]
    Cpio { offset: usize, err: std::io::Error },
    #[error("the initramfs holds no files")]
    Empty,
    #[error("re-encoding as {compression}: {err}")]
    Encode { compression: &'static str, err: std::io::Error },
    #[error(
        "refused as a decompression bomb: the archive at offset {offset} unpacks beyond the limit for a {size}-byte initramfs ({MAX_RATIO} times its size, at least {MIN_UNPACKED} and at most {MAX_UNPACKED} bytes): {err}"
    )]
    TooLarge { offset: usize, size: usize, err: cpio::LimitExceeded },
    #[error("{0} bytes, more than the {MAX_UNPACKED} bytes an initramfs may unpack to")]
    FileTooLarge(u64),
}

/// The most an initramfs may unpack to, in all (README, "Limits").
pub const MAX_UNPACKED: u64 = 1 << 30;
/// The most it may unpack to, as a multiple of its size ...
pub const MAX_RATIO: u64 = 100;
/// ... but never less than this, so small files are not refused.
pub const MIN_UNPACKED: u64 = 64 << 20;

/// What an initramfs of `size` bytes may unpack to.
pub fn unpack_limit(size: usize) -> u64 {
    (size as u64).saturating_mul(MAX_RATIO).clamp(MIN_UNPACKED, MAX_UNPACKED)
}

/// Counts what a decoder yields and fails once it passes `left`.
struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
    /// Whether the decoder itself failed (corrupt compressed data).
    failed: bool,
}

impl<R: std::io::Read> Limited<R> {
    fn inner_read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
}

impl<R: std::io::Read> std::io::Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner_read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(cpio::LimitExceeded {
                    limit: self.limit,
                    what: "the decompressed stream".into(),
                })),
            };
        }
        let n = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let got = self.inner_read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

/// The limit error inside `err`, if that is what it is.
fn limit_hit(err: &std::io::Error) -> Option<cpio::LimitExceeded> {
    let inner = err.get_ref()?.downcast_ref::<cpio::LimitExceeded>()?;
    Some(cpio::LimitExceeded { limit: inner.limit, what: inner.what.clone() })
}

/// One archive run (compressed or not) with the bytes it came from.
#[derive(Clone, Debug)]
pub struct Segment {
    pub offset: usize,
    pub compression: Compression,
    /// The original bytes, including the padding after them.
    raw: Vec<u8>,
    pub entries: Vec<CpioEntry>,
    pub changed: bool,
    /// How hard to compress it when it is written again.
    pub level: Level,
}

#[derive(Clone, Debug)]
pub struct Initramfs {
    pub segments: Vec<Segment>,
}

impl Initramfs {
    /// Parses an initramfs, unpacking at most [`unpack_limit`] of its size: decompression is
    /// streamed, and a member is allocated only once its header has been checked against
    /// what is left of that limit.
    pub fn parse(data: &[u8]) -> Result<Self, InitramfsError> {
        let mut segments = Vec::new();
        let mut pos = 0usize;
        let limit = unpack_limit(data.len());
        let mut left = limit;
        while pos < data.len() {
            let zeros = data[pos..].iter().take_while(|&&b| b == 0).count();
            if zeros > 0 {
                if let Some(Segment { raw, .. }) = segments.last_mut() {
                    raw.extend_from_slice(&data[pos..pos + zeros]);
                }
                pos += zeros;
                continue;
            }
            let offset = pos;
            let compression = Compression::detect(&data[pos..]).ok_or(InitramfsError::Unrecognised { offset })?;
            let (entries, used) = if compression == Compression::None {
                let (entries, used) =
                    cpio::read_archives(&data[pos..]).map_err(|err| InitramfsError::Cpio { offset, err })?;
                left = left.saturating_sub(used as u64);
                (entries, used)
            } else {
                let bomb = |err| InitramfsError::TooLarge { offset, size: data.len(), err };
                let decompress = |err: std::io::Error| match limit_hit(&err) {
                    Some(hit) => bomb(hit),
                    None => InitramfsError::Decompress { compression: compression.name(), offset, err },
                };
                let decoder = compression.decoder(&data[pos..]).map_err(decompress)?;
                let mut plain = Limited { inner: decoder, left, limit, failed: false };
                let (entries, _) = match cpio::read_stream(&mut plain, left) {
                    Ok(read) => read,
                    Err(err) => {
                        return Err(match limit_hit(&err) {
                            Some(hit) => bomb(cpio::LimitExceeded { limit, what: hit.what }),
                            // A decoder's own failure is reported as such; else the cpio is bad.
                            None if plain.failed => decompress(err),
                            None => InitramfsError::Cpio { offset, err },
                        });
                    }
                };
                // What follows the archives in the stream (padding) still counts.
                std::io::copy(&mut plain, &mut std::io::sink()).map_err(decompress)?;
                left = plain.left;
                let used = data.len() - pos - plain.inner.rest().len();
                (entries, used)
            };
            if used == 0 {
                return Err(InitramfsError::Unrecognised { offset });
            }
            segments.push(Segment {
                offset,
                compression,
                raw: data[pos..pos + used].to_vec(),
                entries,
                changed: false,
                level: Level::Default,
            });
            pos += used;
        }
        if segments.iter().all(|s| s.entries.is_empty()) {
            return Err(InitramfsError::Empty);
        }
        Ok(Initramfs { segments })
    }

    /// The segment holding the system (the one with `init`, else the last).
    pub fn main_segment(&mut self) -> &mut Segment {
        let i = self
            .segments
            .iter()
            .position(|s| s.entries.iter().any(|e| e.path() == "init"))
            .unwrap_or(self.segments.len() - 1);
        &mut self.segments[i]
    }

    /// The compression of the main segment.
    pub fn compression(&self) -> Compression {
        self.segments
            .iter()
            .find(|s| s.entries.iter().any(|e| e.path() == "init"))
            .or(self.segments.last())
            .map_or(Compression::None, |s| s.compression)
    }

    /// All entries, in archive order (later segments override earlier ones when unpacked).
    pub fn entries(&self) -> impl Iterator<Item = &CpioEntry> {
        self.segments.iter().flat_map(|s| s.entries.iter())
    }

    pub fn find(&self, path: &str) -> Option<&CpioEntry> {
        let path = cpio::normalize(path);
        self.entries().filter(|e| e.path() == path).last()
    }

    /// Adds an empty archive after the others, compressed as `compression` at `level`. The
    /// kernel unpacks every archive in order and a later file replaces an earlier one of the
    /// same name, so files put here override the original's while its bytes stay unchanged.
    pub fn append_segment(&mut self, compression: Compression, level: Level) -> &mut Segment {
        let offset = self.segments.last().map_or(0, |s| s.offset + s.raw.len());
        self.segments.push(Segment { offset, compression, raw: Vec::new(), entries: Vec::new(), changed: true, level });
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Serialises: unchanged segments byte for byte, changed ones re-encoded.
    pub fn to_bytes(&self) -> Result<Vec<u8>, InitramfsError> {
        let mut out = Vec::new();
        for s in &self.segments {
            if !s.changed {
                out.extend_from_slice(&s.raw);
                continue;
            }
            let enc = |err| InitramfsError::Encode { compression: s.compression.name(), err };
            let plain = cpio::write_archive(&s.entries).map_err(enc)?;
            let packed = s.compression.compress_at(&plain, s.level).map_err(enc)?;
            // The kernel reads an uncompressed cpio archive only at a 4-byte aligned offset; a
            // compressed one starts anywhere, and padding before it would make gzip (and so
            // initramfs-tools' unmkinitramfs) take it for trailing garbage.
            if s.compression == Compression::None {
                let pad = out.len().next_multiple_of(4) - out.len();
                out.extend(std::iter::repeat_n(0, pad));
            }
            out.extend_from_slice(&packed);
        }
        Ok(out)
    }
}

impl Segment {
    fn prefix(&self) -> &'static str {
        if self.entries.iter().any(|e| e.name.starts_with("./")) { "./" } else { "" }
    }

    fn next_ino(&self) -> u32 {
        self.entries.iter().map(|e| e.ino).max().unwrap_or(0) + 1
    }

    pub fn find_mut(&mut self, path: &str) -> Option<&mut CpioEntry> {
        let path = cpio::normalize(path);
        self.entries.iter_mut().filter(|e| e.path() == path).last()
    }

    /// Adds the directories leading to `path` that the archive lacks.
    pub fn ensure_dirs(&mut self, path: &str) {
        let path = cpio::normalize(path);
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if self.entries.iter().all(|e| e.path() != at) {
                let ino = self.next_ino();
                let name = format!("{}{at}", self.prefix());
                self.entries.push(new_entry(name, ino, S_IFDIR | 0o755, Vec::new()));
                self.changed = true;
            }
        }
    }

    /// Adds or replaces a regular file (its directories created first).
    pub fn put_file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        if let Some(e) = self.find_mut(path) {
            e.data = data;
            e.mode = S_IFREG | (mode & 0o7777);
            e.nlink = 1;
        } else {
            if let Some((dir, _)) = cpio::normalize(path).rsplit_once('/') {
                self.ensure_dirs(dir);
            }
            let ino = self.next_ino();
            let name = format!("{}{}", self.prefix(), cpio::normalize(path));
            self.entries.push(new_entry(name, ino, S_IFREG | (mode & 0o7777), data));
        }
        self.changed = true;
    }
}

fn new_entry(name: String, ino: u32, mode: u32, data: Vec<u8>) -> CpioEntry {
    CpioEntry {
        name,
        ino,
        mode,
        uid: 0,
        gid: 0,
        nlink: if mode & cpio::S_IFMT == S_IFDIR { 2 } else { 1 },
        mtime: 0,
        dev_major: 0,
        dev_minor: 0,
        rdev_major: 0,
        rdev_minor: 0,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let entries: Vec<CpioEntry> = files
            .iter()
            .enumerate()
            .map(|(i, (n, d))| new_entry(n.to_string(), i as u32 + 1, S_IFREG | 0o644, d.to_vec()))
            .collect();
        cpio::write_archive(&entries).unwrap()
    }

    #[test]
    fn microcode_then_compressed_main_archive() {
        for c in [
            Compression::Gzip,
            Compression::Xz,
            Compression::Lzma,
            Compression::Zstd,
            Compression::Bzip2,
            Compression::Lz4,
        ] {
            let mut data = archive(&[("kernel/x86/microcode/AuthenticAMD.bin", b"ucode")]);
            let early_len = data.len();
            data.extend(c.compress(&archive(&[("init", b"#!/bin/sh\n"), ("conf/modules", b"")])).unwrap());
            data.extend([0u8; 8]);
            let mut ird = Initramfs::parse(&data).unwrap();
            assert_eq!(ird.segments.len(), 2, "{c:?}");
            assert_eq!(ird.compression(), c);
            assert_eq!(ird.find("init").unwrap().data, b"#!/bin/sh\n");
            assert_eq!(ird.to_bytes().unwrap(), data, "unchanged: byte for byte");

            ird.main_segment().put_file("usr/lib/modules/6.1/kernel/drivers/nvme/host/nvme.ko", 0o644, b"ELF".to_vec());
            let rebuilt = ird.to_bytes().unwrap();
            assert_eq!(&rebuilt[..early_len], &data[..early_len], "the early archive is kept");
            let again = Initramfs::parse(&rebuilt).unwrap();
            assert_eq!(again.segments[1].compression, c);
            assert_eq!(again.find("usr/lib/modules/6.1/kernel/drivers/nvme/host/nvme.ko").unwrap().data, b"ELF");
            let dirs: Vec<&str> = again.entries().filter(|e| e.is_dir()).map(|e| e.path()).collect();
            assert_eq!(
                dirs,
                [
                    "usr",
                    "usr/lib",
                    "usr/lib/modules",
                    "usr/lib/modules/6.1",
                    "usr/lib/modules/6.1/kernel",
                    "usr/lib/modules/6.1/kernel/drivers",
                    "usr/lib/modules/6.1/kernel/drivers/nvme",
                    "usr/lib/modules/6.1/kernel/drivers/nvme/host"
                ]
            );
        }
    }

    #[test]
    fn a_decompression_bomb_is_refused_while_streaming() {
        // 256 MiB of zeros after a small archive, gzip: about 250 KiB, so the limit is 64 MiB.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &archive(&[("init", b"x")])).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..256 {
            std::io::Write::write_all(&mut enc, &zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        let err = Initramfs::parse(&bomb).unwrap_err();
        assert!(matches!(err, InitramfsError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains(&MIN_UNPACKED.to_string()), "{err}");
        // A member whose header claims 4 GiB is refused before it is allocated.
        let mut claim = archive(&[("big", b"")]);
        claim[54..62].copy_from_slice(b"ffffffff");
        let packed = Compression::Gzip.compress(&claim).unwrap();
        let err = Initramfs::parse(&packed).unwrap_err();
        assert!(err.to_string().contains("member big of 4294967295 bytes"), "{err}");
        // A 60 MiB archive of 1 MiB is well within the limit's floor.
        let big = Compression::Gzip.compress(&archive(&[("init", &vec![0u8; 60 << 20])])).unwrap();
        assert!(big.len() < 1 << 20);
        assert_eq!(Initramfs::parse(&big).unwrap().find("init").unwrap().data.len(), 60 << 20);
        assert_eq!(unpack_limit(28 << 20), MAX_UNPACKED);
        assert_eq!(unpack_limit(2 << 20), 200 << 20);
    }

    #[test]
    fn rejects_garbage_and_empty() {
        assert!(matches!(Initramfs::parse(b"hello world"), Err(InitramfsError::Unrecognised { offset: 0 })));
        assert!(matches!(Initramfs::parse(&[0u8; 16]), Err(InitramfsError::Empty)));
        let mut bad = Compression::Gzip.compress(&archive(&[("init", b"x")])).unwrap();
        bad.truncate(bad.len() / 2);
        assert!(matches!(Initramfs::parse(&bad), Err(InitramfsError::Decompress { .. })));
    }
}
