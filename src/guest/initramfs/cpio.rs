//! cpio "newc" (070701) and "crc" (070702) archives, through the `cpio` crate: reading one or
//! more archives laid end to end (zero padding between them), and writing one back.

use std::io::{self, Cursor, Read};

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

/// Reads consecutive archives from the start of `data`. Returns the entries (trailers left
/// out) and how many bytes the archives and the zero padding after them took.
pub fn read_archives(data: &[u8]) -> io::Result<(Vec<CpioEntry>, usize)> {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    let mut max_entries = data.len() / 110 + 1;
    loop {
        let skip = data[pos..].iter().take_while(|&&b| b == 0).count();
        if !starts_archive(&data[pos + skip..]) {
            // Zero padding belongs to the archive before it.
            if pos > 0 {
                pos += skip;
            }
            break;
        }
        pos += skip;
        let mut cursor = Cursor::new(&data[pos..]);
        loop {
            if max_entries == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "cpio: too many entries"));
            }
            max_entries -= 1;
            let mut reader = cpio::newc::Reader::new(&mut cursor)?;
            let e = reader.entry();
            if e.is_trailer() {
                reader.finish()?;
                break;
            }
            let mut entry = CpioEntry {
                name: e.name().to_string(),
                ino: e.ino(),
                mode: e.mode(),
                uid: e.uid(),
                gid: e.gid(),
                nlink: e.nlink(),
                mtime: e.mtime(),
                dev_major: e.dev_major(),
                dev_minor: e.dev_minor(),
                rdev_major: e.rdev_major(),
                rdev_minor: e.rdev_minor(),
                data: Vec::new(),
            };
            let size = e.file_size() as usize;
            if size > data.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("cpio: {} claims {size} bytes", entry.name),
                ));
            }
            entry.data.reserve(size);
            reader.read_to_end(&mut entry.data)?;
            if entry.data.len() != size {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("cpio: {} is truncated", entry.name)));
            }
            reader.finish()?;
            entries.push(entry);
        }
        pos += cursor.position() as usize;
    }
    Ok((entries, pos))
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
