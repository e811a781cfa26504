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
    pub fn parse(data: &[u8]) -> Result<Self, InitramfsError> {
        let mut segments = Vec::new();
        let mut pos = 0usize;
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
                cpio::read_archives(&data[pos..]).map_err(|err| InitramfsError::Cpio { offset, err })?
            } else {
                let (plain, used) = compression
                    .decompress_stream(&data[pos..])
                    .map_err(|err| InitramfsError::Decompress { compression: compression.name(), offset, err })?;
                let (entries, _) = cpio::read_archives(&plain).map_err(|err| InitramfsError::Cpio { offset, err })?;
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
    fn rejects_garbage_and_empty() {
        assert!(matches!(Initramfs::parse(b"hello world"), Err(InitramfsError::Unrecognised { offset: 0 })));
        assert!(matches!(Initramfs::parse(&[0u8; 16]), Err(InitramfsError::Empty)));
        let mut bad = Compression::Gzip.compress(&archive(&[("init", b"x")])).unwrap();
        bad.truncate(bad.len() / 2);
        assert!(matches!(Initramfs::parse(&bad), Err(InitramfsError::Decompress { .. })));
    }
}
