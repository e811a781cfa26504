//! cpio "newc" (070701) and "crc" (070702) archives, through the `cpio` crate: reading one or
//! more archives laid end to end (zero padding between them), and writing one back.

use std::io::{self, Read, Write};

use super::input::Input;

/// One archive member, with everything newc stores. `data` is `None` for a member whose
/// content was passed over (pv2hvm holds only the files it reads or writes); `size` is the
/// content's size as the archive has it.
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
    pub size: u32,
    pub data: Option<Vec<u8>>,
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
    /// The content, when it was held.
    pub fn data(&self) -> Option<&[u8]> {
        self.data.as_deref()
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

/// An archive would unpack to more than its limit; the limit and what crossed it.
#[derive(Debug, thiserror::Error)]
#[error("{what} would take it past {limit} bytes")]
pub struct LimitExceeded {
    pub limit: u64,
    pub what: String,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn hex(field: &[u8]) -> io::Result<u32> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|t| u32::from_str_radix(t, 16).ok())
        .ok_or_else(|| invalid("cpio: a header field is not hexadecimal".into()))
}

/// The members of consecutive archives (zero padding between them), one header at a time;
/// each member's content is read, passed on or skipped by the caller, and nothing else is
/// kept. At most `limit` bytes are unpacked: a member whose header claims more than is left
/// is refused before anything is read for it, and so is a name longer than `PATH_MAX`.
pub struct Members<'a, R> {
    r: &'a mut Input<R>,
    limit: u64,
    start: u64,
    count: usize,
    /// The current member's name and the content and padding not yet consumed.
    current: String,
    data_left: u64,
    pad_left: u64,
    in_archive: bool,
    done: bool,
    end: u64,
}

impl<'a, R: Read> Members<'a, R> {
    pub fn new(r: &'a mut Input<R>, limit: u64) -> Self {
        let start = r.position();
        Members {
            r,
            limit,
            start,
            count: 0,
            current: String::new(),
            data_left: 0,
            pad_left: 0,
            in_archive: false,
            done: false,
            end: 0,
        }
    }

    /// Bytes the archives and the zero padding after them took (so far).
    pub fn end(&self) -> u64 {
        self.end
    }

    fn consumed(&self) -> u64 {
        self.r.position() - self.start
    }

    /// Skips what is left of the current member.
    fn finish_member(&mut self) -> io::Result<()> {
        let (data, pad) = (std::mem::take(&mut self.data_left), std::mem::take(&mut self.pad_left));
        let what = format!("cpio: {}", self.current);
        self.r.pass(data, None, &what)?;
        self.r.pass(pad, None, "cpio: the padding")
    }

    /// The current member's content, read whole (the caller checked its size).
    pub fn data(&mut self) -> io::Result<Vec<u8>> {
        let n = usize::try_from(std::mem::take(&mut self.data_left)).expect("a u32 size");
        let data = self.r.take_vec(n, &format!("cpio: {}", self.current))?;
        self.finish_member()?;
        Ok(data)
    }

    /// Passes the current member's content to `out`.
    pub fn copy_data(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let what = format!("cpio: {}", self.current);
        self.r.pass(std::mem::take(&mut self.data_left), Some(out), &what)?;
        self.finish_member()
    }

    /// The next member's header (its content not read: `data` is `None`), or `None` after
    /// the last archive.
    pub fn next_member(&mut self) -> io::Result<Option<CpioEntry>> {
        self.finish_member()?;
        while !self.done {
            if !self.in_archive {
                self.r.skip_zeros()?;
                if !starts_archive(self.r.peek(6)?) {
                    // Zero padding belongs to the archive before it.
                    if self.end > 0 {
                        self.end = self.consumed();
                    }
                    self.done = true;
                    break;
                }
                self.in_archive = true;
            }
            if self.count >= MAX_ENTRIES {
                return Err(invalid(format!("cpio: more than {MAX_ENTRIES} members")));
            }
            let h = self.r.peek(HEADER)?;
            if h.len() < HEADER || !starts_archive(h) {
                return Err(invalid("cpio: a truncated or bad header".into()));
            }
            let f = |i: usize| hex(&h[6 + 8 * i..14 + 8 * i]);
            let (ino, mode, uid, gid, nlink, mtime) = (f(0)?, f(1)?, f(2)?, f(3)?, f(4)?, f(5)?);
            let (size, dev_major, dev_minor, rdev_major, rdev_minor) = (f(6)?, f(7)?, f(8)?, f(9)?, f(10)?);
            let name_len = f(11)? as usize;
            if name_len == 0 || name_len > MAX_NAME {
                return Err(invalid(format!("cpio: a header claims a name of {name_len} bytes")));
            }
            self.r.consume(HEADER);
            let mut name = self.r.take_vec(name_len, "cpio: a name")?;
            if name.pop() != Some(0) {
                return Err(invalid("cpio: a name without its NUL".into()));
            }
            let name = String::from_utf8(name).map_err(|_| invalid("cpio: a name that is not UTF-8".into()))?;
            let pad = (HEADER + name_len).next_multiple_of(4) - HEADER - name_len;
            self.r.pass(pad as u64, None, "cpio: the padding")?;
            let left = self.limit.saturating_sub(self.consumed());
            if u64::from(size) > left {
                let what = format!("member {name} of {size} bytes");
                return Err(io::Error::other(LimitExceeded { limit: self.limit, what }));
            }
            self.data_left = u64::from(size);
            self.pad_left = u64::from(size.next_multiple_of(4) - size);
            self.current = name;
            if self.current == "TRAILER!!!" {
                self.finish_member()?;
                self.in_archive = false;
                self.end = self.consumed();
                continue;
            }
            self.count += 1;
            return Ok(Some(CpioEntry {
                name: self.current.clone(),
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
                size,
                data: None,
            }));
        }
        Ok(None)
    }
}

/// Reads consecutive archives from the start of `data`. Returns the entries (trailers left
/// out) with their content, and how many bytes the archives and the zero padding after them
/// took.
pub fn read_archives(data: &[u8]) -> io::Result<(Vec<CpioEntry>, usize)> {
    let (entries, used) = read_stream(data, data.len() as u64)?;
    Ok((entries, used as usize))
}

/// Reads consecutive archives from `input`, unpacking at most `limit` bytes (see
/// [`Members`]), every member with its content. Returns the entries and the bytes taken.
pub fn read_stream<R: Read>(input: R, limit: u64) -> io::Result<(Vec<CpioEntry>, u64)> {
    let mut input = Input::new(input);
    let mut members = Members::new(&mut input, limit);
    let mut entries = Vec::new();
    while let Some(mut e) = members.next_member()? {
        e.data = Some(members.data()?);
        entries.push(e);
    }
    Ok((entries, members.end()))
}

/// Writes one member: its header, then `size` bytes from `content` (which must have them),
/// then the padding.
pub fn write_member(
    out: &mut dyn Write,
    e: &CpioEntry,
    size: u32,
    content: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
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
        .write(out, size);
    content(&mut w)?;
    w.finish()?;
    Ok(())
}

/// Writes a held member (its `data`).
pub fn write_held(out: &mut dyn Write, e: &CpioEntry) -> io::Result<()> {
    let data = e
        .data()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: its content was not read", e.name)))?;
    let size = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{} is over 4 GiB", e.name)))?;
    write_member(out, e, size, &mut |w| w.write_all(data))
}

/// Ends an archive that `written` bytes went into so far: the trailer, and zeros up to a
/// 512-byte block as cpio(1) does.
pub fn write_trailer(out: &mut dyn Write, written: u64) -> io::Result<()> {
    let mut trailer = Vec::new();
    cpio::newc::trailer(&mut trailer)?;
    let total = written + trailer.len() as u64;
    let pad = total.next_multiple_of(512) - total;
    trailer.extend(std::iter::repeat_n(0, pad as usize));
    out.write_all(&trailer)
}

/// Writes one newc archive of held members, with a trailer, padded to a 512-byte block.
pub fn write_archive(entries: &[CpioEntry]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for e in entries {
        write_held(&mut out, e)?;
    }
    let n = out.len() as u64;
    write_trailer(&mut out, n)?;
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
            size: data.len() as u32,
            data: Some(data.to_vec()),
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
