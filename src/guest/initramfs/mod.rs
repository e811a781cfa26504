//! Reading and rebuilding an initramfs: one or more cpio archives laid end to end, each
//! uncompressed (an early-microcode archive usually comes first) or compressed.
//!
//! A rebuild re-encodes only the segments that changed, with their own compression, and keeps
//! the others byte for byte.

pub mod compress;
pub mod cpio;
pub mod input;
pub mod kmod_index;

use std::io::{self, Read, Write};

pub use compress::{Compression, Level};
pub use cpio::CpioEntry;

use cpio::{S_IFDIR, S_IFREG};
use input::{Counting, Input};

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("unrecognised data at offset {offset} (not cpio, nor a known compression)")]
    Unrecognised { offset: u64 },
    #[error("{compression} stream at offset {offset}: {err}")]
    Decompress { compression: &'static str, offset: u64, err: std::io::Error },
    #[error("cpio archive at offset {offset}: {err}")]
    Cpio { offset: u64, err: std::io::Error },
    #[error("the initramfs holds no files")]
    Empty,
    #[error("re-encoding as {compression}: {err}")]
    Encode { compression: &'static str, err: std::io::Error },
    #[error(
        "refused as a decompression bomb: the archive at offset {offset} unpacks beyond the limit for a {size}-byte initramfs ({MAX_RATIO} times its size, at least {MIN_UNPACKED} and at most {MAX_UNPACKED} bytes): {err}"
    )]
    TooLarge { offset: u64, size: u64, err: cpio::LimitExceeded },
    #[error("{0} bytes, more than the {MAX_UNPACKED} bytes an initramfs may unpack to")]
    FileTooLarge(u64),
    #[error("reading it at offset {offset}: {err}")]
    Read { offset: u64, err: std::io::Error },
    #[error("writing the new initramfs: {0}")]
    Write(std::io::Error),
}

/// The most an initramfs may unpack to, in all (README, "Limits").
pub const MAX_UNPACKED: u64 = 1 << 30;
/// The most it may unpack to, as a multiple of its size ...
pub const MAX_RATIO: u64 = 100;
/// ... but never less than this, so small files are not refused.
pub const MIN_UNPACKED: u64 = 64 << 20;
/// The most bytes the names of its members may take, in all (README, "Limits"): they are
/// kept while the rest of each member is passed over. A real one has well under 1 MiB.
pub const MAX_NAME_BYTES: u64 = 16 << 20;
/// The most bytes of its own files pv2hvm holds to read or extend them (README, "Limits"):
/// `init`, `conf/modules` and the text indexes `modules.dep`, `.alias`, `.symbols`, `.order`.
pub const MAX_HELD: u64 = 64 << 20;

/// What an initramfs of `size` bytes may unpack to.
pub fn unpack_limit(size: u64) -> u64 {
    size.saturating_mul(MAX_RATIO).clamp(MIN_UNPACKED, MAX_UNPACKED)
}

/// Whether pv2hvm reads (and so holds) the content of the member at `path`.
fn held(path: &str) -> bool {
    path == "init"
        || path == "conf/modules"
        || matches!(
            path.rsplit('/').next(),
            Some("modules.dep" | "modules.alias" | "modules.symbols" | "modules.order")
        )
}

/// Counts what a decoder yields and fails once it passes `left`.
struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
    /// Whether the decoder itself failed (corrupt compressed data).
    failed: bool,
}

impl<R: Read> Limited<R> {
    fn inner_read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
}

impl<R: Read> Read for Limited<R> {
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

/// What the members of all archives may take in memory, as far as used.
#[derive(Default)]
struct Budget {
    /// Hold every member's content, not only those pv2hvm reads.
    all: bool,
    entries: usize,
    names: u64,
    held: u64,
}

impl Budget {
    /// Reads the members of `m`, holding the content of those pv2hvm reads.
    fn collect<R: Read>(&mut self, m: &mut cpio::Members<'_, R>) -> io::Result<Vec<CpioEntry>> {
        let over = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
        let mut entries = Vec::new();
        while let Some(mut e) = m.next_member()? {
            self.entries += 1;
            self.names += e.name.len() as u64;
            if self.entries > cpio::MAX_ENTRIES {
                return Err(over(format!("cpio: more than {} members in all", cpio::MAX_ENTRIES)));
            }
            if self.names > MAX_NAME_BYTES {
                return Err(over(format!("cpio: member names of more than {MAX_NAME_BYTES} bytes in all")));
            }
            if self.all || (e.is_file() && held(e.path())) {
                self.held += u64::from(e.size);
                if self.held > MAX_HELD {
                    return Err(over(format!(
                        "cpio: {} of {} bytes takes the files pv2hvm reads (init, conf/modules, modules.*) past {MAX_HELD} bytes in all",
                        e.name, e.size
                    )));
                }
                e.data = Some(m.data()?);
            }
            entries.push(e);
        }
        Ok(entries)
    }
}

/// One archive run (compressed or not): where it is in the file and its members.
#[derive(Clone, Debug)]
pub struct Segment {
    pub offset: u64,
    pub compression: Compression,
    /// The bytes it takes in the file, with the padding after it (0 for an appended one).
    len: u64,
    pub entries: Vec<CpioEntry>,
    /// How many of `entries` the file has (the rest were added).
    original: usize,
    /// Appended by [`Initramfs::append_segment`], not in the file.
    appended: bool,
    pub changed: bool,
    /// How hard to compress it when it is written again.
    pub level: Level,
}

/// An initramfs as read: its segments and members, the content only of the members pv2hvm
/// reads. Writing it ([`Initramfs::write_to`]) reads the file again and passes the rest
/// through.
#[derive(Clone, Debug)]
pub struct Initramfs {
    pub segments: Vec<Segment>,
}

impl Initramfs {
    /// Parses an initramfs held in memory (see [`parse_from`](Self::parse_from)).
    pub fn parse(data: &[u8]) -> Result<Self, InitramfsError> {
        Self::parse_from(data, data.len() as u64)
    }

    /// Parses the `size`-byte initramfs read from `input`, to its end, unpacking at most
    /// [`unpack_limit`] of its size: decompression is streamed, a member is passed over
    /// unless pv2hvm reads it, and one is held only once its header has been checked against
    /// what is left of that limit and of [`MAX_HELD`].
    pub fn parse_from(input: impl Read, size: u64) -> Result<Self, InitramfsError> {
        Self::parse_with(input, size, Budget::default())
    }

    /// Parses an initramfs held in memory with the content of every member (for tests and
    /// tools that compare contents), still at most [`MAX_HELD`] of it.
    pub fn parse_holding_all(data: &[u8]) -> Result<Self, InitramfsError> {
        Self::parse_with(data, data.len() as u64, Budget { all: true, ..Budget::default() })
    }

    fn parse_with(input: impl Read, size: u64, mut budget: Budget) -> Result<Self, InitramfsError> {
        let mut input = Input::new(input);
        let mut segments: Vec<Segment> = Vec::new();
        let limit = unpack_limit(size);
        let mut left = limit;
        loop {
            let read = |offset, err| InitramfsError::Read { offset, err };
            let at = input.position();
            let zeros = input.skip_zeros().map_err(|e| read(at, e))?;
            if let Some(s) = segments.last_mut() {
                s.len += zeros;
            }
            let offset = input.position();
            let head = input.peek(6).map_err(|e| read(offset, e))?;
            if head.is_empty() {
                break;
            }
            let compression = Compression::detect(head).ok_or(InitramfsError::Unrecognised { offset })?;
            let entries = if compression == Compression::None {
                let mut m = cpio::Members::new(&mut input, size.saturating_sub(offset));
                let entries = budget.collect(&mut m).map_err(|err| InitramfsError::Cpio { offset, err })?;
                left = left.saturating_sub(m.end());
                entries
            } else {
                let bomb = |err| InitramfsError::TooLarge { offset, size, err };
                let decompress = |err: std::io::Error| match limit_hit(&err) {
                    Some(hit) => bomb(hit),
                    None => InitramfsError::Decompress { compression: compression.name(), offset, err },
                };
                let decoder = compression.decoder(&mut input).map_err(decompress)?;
                let mut plain = Input::new(Limited { inner: decoder, left, limit, failed: false });
                let mut m = cpio::Members::new(&mut plain, left);
                let entries = match budget.collect(&mut m) {
                    Ok(entries) => entries,
                    Err(err) => {
                        return Err(match limit_hit(&err) {
                            Some(hit) => bomb(cpio::LimitExceeded { limit, what: hit.what }),
                            // A decoder's own failure is reported as such; else the cpio is bad.
                            None if plain.get_mut().failed => decompress(err),
                            None => InitramfsError::Cpio { offset, err },
                        });
                    }
                };
                // What follows the archives in the stream (padding) still counts.
                std::io::copy(&mut plain, &mut std::io::sink()).map_err(decompress)?;
                left = plain.into_inner().left;
                entries
            };
            let len = input.position() - offset;
            if len == 0 {
                return Err(InitramfsError::Unrecognised { offset });
            }
            let original = entries.len();
            let (changed, appended, level) = (false, false, Level::Default);
            segments.push(Segment { offset, compression, len, entries, original, appended, changed, level });
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
        let offset = self.segments.last().map_or(0, |s| s.offset + s.len);
        self.segments.push(Segment {
            offset,
            compression,
            len: 0,
            entries: Vec::new(),
            original: 0,
            appended: true,
            changed: true,
            level,
        });
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Writes the initramfs to `out`, reading the file it was parsed from again from
    /// `source` (from its start): unchanged segments byte for byte, changed ones re-encoded
    /// as they stream through, the members pv2hvm did not touch passed over from the
    /// original. Returns the bytes written.
    pub fn write_to(&self, source: impl Read, out: &mut dyn Write) -> Result<u64, InitramfsError> {
        let mut input = Input::new(source);
        let mut out = Counting { inner: out, count: 0 };
        for s in &self.segments {
            let enc = |err| InitramfsError::Encode { compression: s.compression.name(), err };
            let read = |err| InitramfsError::Read { offset: s.offset, err };
            if !s.appended {
                let gap = s.offset.checked_sub(input.position()).ok_or_else(|| read(shorter()))?;
                // Zeros before the first archive are kept as they are.
                input.pass(gap, Some(&mut out), "the initramfs").map_err(read)?;
                if !s.changed {
                    input.pass(s.len, Some(&mut out), "the initramfs").map_err(read)?;
                    continue;
                }
            }
            // The kernel reads an uncompressed cpio archive only at a 4-byte aligned offset; a
            // compressed one starts anywhere, and padding before it would make gzip (and so
            // initramfs-tools' unmkinitramfs) take it for trailing garbage.
            if s.compression == Compression::None {
                let pad = out.count.next_multiple_of(4) - out.count;
                out.write_all(&vec![0; pad as usize]).map_err(InitramfsError::Write)?;
            }
            if s.appended {
                let plain = cpio::write_archive(&s.entries).map_err(enc)?;
                let packed = s.compression.compress_at(&plain, s.level).map_err(enc)?;
                out.write_all(&packed).map_err(InitramfsError::Write)?;
            } else {
                s.rebuild(&mut input, &mut out)?;
                let rest = (s.offset + s.len).checked_sub(input.position()).ok_or_else(|| read(shorter()))?;
                input.pass(rest, None, "the initramfs").map_err(read)?;
            }
        }
        out.flush().map_err(InitramfsError::Write)?;
        Ok(out.count)
    }

    /// [`write_to`](Self::write_to) into memory, from the original bytes.
    pub fn to_vec(&self, original: &[u8]) -> Result<Vec<u8>, InitramfsError> {
        let mut out = Vec::new();
        self.write_to(original, &mut out)?;
        Ok(out)
    }
}

fn shorter() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "it is not the initramfs that was read")
}

impl Segment {
    /// Re-encodes this segment of the file, whose start `input` stands at: its members in
    /// order, each held one from memory and the others from the original's stream, then the
    /// members added.
    fn rebuild<R: Read>(&self, input: &mut Input<R>, out: &mut dyn Write) -> Result<(), InitramfsError> {
        let enc = |err| InitramfsError::Encode { compression: self.compression.name(), err };
        let offset = self.offset;
        let mut encoder = self.compression.encoder(&mut *out, self.level).map_err(enc)?;
        let mut w = Counting { inner: &mut encoder, count: 0 };
        let result = if self.compression == Compression::None {
            self.write_members(&mut cpio::Members::new(input, u64::MAX), &mut w)
        } else {
            let decoder = self.compression.decoder(input).map_err(enc)?;
            let mut plain = Input::new(decoder);
            self.write_members(&mut cpio::Members::new(&mut plain, u64::MAX), &mut w)
        };
        result.map_err(|err| InitramfsError::Cpio { offset, err })?;
        let n = w.count;
        cpio::write_trailer(&mut w, n).map_err(enc)?;
        encoder.finish().map_err(enc)?;
        Ok(())
    }

    /// Writes the members in order: those the file has from `m` (checked against it) unless
    /// held, then those added.
    fn write_members<R: Read>(&self, m: &mut cpio::Members<'_, R>, w: &mut dyn Write) -> io::Result<()> {
        for (i, e) in self.entries.iter().enumerate() {
            if i < self.original {
                let found = m.next_member()?;
                if found.as_ref().map(|f| &f.name) != Some(&e.name) {
                    return Err(shorter());
                }
                if e.data.is_none() {
                    cpio::write_member(w, e, e.size, &mut |w| m.copy_data(w))?;
                    continue;
                }
            }
            cpio::write_held(w, e)?;
        }
        Ok(())
    }

    fn prefix(&self) -> &'static str {
        if self.entries.iter().any(|e| e.name.starts_with("./")) { "./" } else { "" }
    }

    fn next_ino(&self) -> u32 {
        self.entries.iter().map(|e| e.ino).max().unwrap_or(0).saturating_add(1)
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
            e.size = u32::try_from(data.len()).unwrap_or(u32::MAX);
            e.data = Some(data);
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
        size: u32::try_from(data.len()).unwrap_or(u32::MAX),
        data: Some(data),
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

    /// 3 MiB that compress, not all alike.
    fn big_member() -> Vec<u8> {
        (0..3u32 << 20).map(|i| (i / 4096 % 251) as u8 ^ (i % 7) as u8).collect()
    }

    /// Every member of the one compressed stream at the start of `data`, with its content.
    fn unpack(c: Compression, data: &[u8]) -> Vec<CpioEntry> {
        let mut input = Input::new(data);
        cpio::read_stream(c.decoder(&mut input).unwrap(), u64::MAX).unwrap().0
    }

    #[test]
    fn appended_archive_keeps_the_original_bytes() {
        let original =
            Compression::Gzip.compress(&archive(&[("init", b"#!/bin/sh\n"), ("big", &big_member())])).unwrap();
        let mut ird = Initramfs::parse(&original).unwrap();
        ird.append_segment(Compression::Gzip, Level::Fast).put_file(
            "lib/modules/6.1/modules.dep",
            0o644,
            b"a.ko:\n".to_vec(),
        );
        let out = ird.to_vec(&original).unwrap();
        assert_eq!(&out[..original.len()], &original[..]);
        let again = Initramfs::parse(&out).unwrap();
        assert_eq!(again.segments.len(), 2);
        assert_eq!(again.find("lib/modules/6.1/modules.dep").unwrap().data(), Some(&b"a.ko:\n"[..]));
        // Written from a different file, it is refused rather than mixed.
        let other = Compression::Gzip.compress(&archive(&[("init", b"x")])).unwrap();
        assert!(!ird.main_segment().changed && ird.to_vec(&other).is_err());
    }

    #[test]
    fn held_files_and_names_are_bounded() {
        // conf/modules is held: one past the budget is refused before it is read.
        let mut claim = archive(&[("conf/modules", b"")]);
        let size = format!("{:08x}", MAX_HELD + 1);
        claim[54..62].copy_from_slice(size.as_bytes());
        let err = Initramfs::parse_from(&claim[..], 1 << 30).unwrap_err();
        assert!(err.to_string().contains("files pv2hvm reads"), "{err}");
        // Names: 16 MiB of them in all is the most.
        let name = "n".repeat(4000);
        let files: Vec<(String, &[u8])> = (0..4300).map(|i| (format!("{name}{i}"), &b""[..])).collect();
        let files: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        let err = Initramfs::parse(&archive(&files)).unwrap_err();
        assert!(err.to_string().contains("member names of more than"), "{err}");
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
            let big = big_member();
            let main = archive(&[("init", b"#!/bin/sh\n"), ("big", &big), ("conf/modules", b"")]);
            data.extend(c.compress(&main).unwrap());
            data.extend([0u8; 8]);
            let mut ird = Initramfs::parse(&data).unwrap();
            assert_eq!(ird.segments.len(), 2, "{c:?}");
            assert_eq!(ird.compression(), c);
            assert_eq!(ird.find("init").unwrap().data(), Some(&b"#!/bin/sh\n"[..]));
            assert_eq!(ird.find("big").unwrap().data(), None, "passed over, not held");
            assert_eq!(ird.to_vec(&data).unwrap(), data, "unchanged: byte for byte");

            ird.main_segment().put_file("usr/lib/modules/6.1/kernel/drivers/nvme/host/nvme.ko", 0o644, b"ELF".to_vec());
            ird.main_segment().put_file("conf/modules", 0o644, b"nvme\n".to_vec());
            let rebuilt = ird.to_vec(&data).unwrap();
            assert_eq!(&rebuilt[..early_len], &data[..early_len], "the early archive is kept");
            let again = Initramfs::parse(&rebuilt).unwrap();
            assert_eq!(again.segments[1].compression, c);
            assert_eq!(again.find("usr/lib/modules/6.1/kernel/drivers/nvme/host/nvme.ko").unwrap().size, 3);
            let all = unpack(c, &rebuilt[early_len..]);
            let content = |p: &str| all.iter().find(|e| e.path() == p).and_then(|e| e.data.clone()).unwrap();
            assert_eq!(content("usr/lib/modules/6.1/kernel/drivers/nvme/host/nvme.ko"), b"ELF");
            assert_eq!(content("conf/modules"), b"nvme\n", "a held member replaced");
            assert_eq!(content("big"), big_member(), "a member passed through from the original");
            assert_eq!(content("init"), b"#!/bin/sh\n");
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
        assert_eq!(Initramfs::parse(&big).unwrap().find("init").unwrap().data().unwrap().len(), 60 << 20);
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
