//! Block sources and sinks: where a conversion reads the PV volume from and writes the HVM
//! disk to. Local raw images today; EBS snapshots implement the same traits.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Something a PV volume can be read from, by byte offset.
pub trait BlockSource: Send + Sync {
    /// A human-readable name for messages ("disk.img", "snap-…").
    fn describe(&self) -> String;
    /// Size in bytes.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset`; reading past the end is an error.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Byte ranges that may hold data, in order; the rest reads as zeros.
    fn data_ranges(&self) -> io::Result<Vec<Range<u64>>>;
    /// Bytes read through this source so far.
    fn bytes_read(&self) -> u64;
}

/// Something the HVM disk is written to. Nothing is visible at the destination until
/// [`BlockSink::commit`] succeeds; dropping an uncommitted sink removes what it wrote.
pub trait BlockSink {
    fn describe(&self) -> String;
    /// Size of the disk being written, in bytes.
    fn disk_size(&self) -> u64;
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// The local staging image that libext2fs and e2fsck work on.
    fn staging_path(&self) -> &Path;
    /// Makes the result durable and visible at the destination.
    fn commit(self: Box<Self>) -> io::Result<()>;
}

/// A raw image file opened read-only.
pub struct LocalFileSource {
    path: PathBuf,
    file: File,
    len: u64,
    read: AtomicU64,
}

impl LocalFileSource {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let len = if meta.file_type().is_file() {
            meta.len()
        } else {
            // A block device: its size is where SEEK_END lands.
            let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
            if end < 0 {
                return Err(io::Error::last_os_error());
            }
            end as u64
        };
        Ok(LocalFileSource { path: path.to_path_buf(), file, len, read: AtomicU64::new(0) })
    }
}

impl BlockSource for LocalFileSource {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read of {} bytes at {offset} is past the end ({})", buf.len(), self.len),
            ));
        }
        self.file.read_exact_at(buf, offset)?;
        self.read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn data_ranges(&self) -> io::Result<Vec<Range<u64>>> {
        data_ranges(&self.file, self.len)
    }
    fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

/// Data extents of a file via SEEK_DATA/SEEK_HOLE; the whole file where unsupported.
pub fn data_ranges(file: &File, len: u64) -> io::Result<Vec<Range<u64>>> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENXIO) => break,
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) if out.is_empty() => {
                    return Ok(std::iter::once(0..len).collect());
                }
                _ => return Err(err),
            }
        }
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let end = (hole as u64).min(len);
        if end > data as u64 {
            out.push(data as u64..end);
        }
        pos = hole;
    }
    Ok(out)
}

/// Writes `DST.partial` beside the destination and renames it into place on commit.
pub struct LocalFileSink {
    dest: PathBuf,
    partial: PathBuf,
    file: Option<File>,
    len: u64,
}

impl LocalFileSink {
    /// Creates (or truncates a stale) `DST.partial` of `len` bytes, sparse.
    pub fn create(dest: &Path, len: u64) -> io::Result<Self> {
        let mut name = dest.as_os_str().to_owned();
        name.push(".partial");
        let partial = PathBuf::from(name);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&partial)?;
        let sink = LocalFileSink { dest: dest.to_path_buf(), partial, file: Some(file), len };
        sink.file.as_ref().expect("open").set_len(len)?;
        Ok(sink)
    }
}

impl BlockSink for LocalFileSink {
    fn describe(&self) -> String {
        self.dest.display().to_string()
    }
    fn disk_size(&self) -> u64 {
        self.len
    }
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.as_ref().expect("sink in use").write_all_at(buf, offset)
    }
    fn staging_path(&self) -> &Path {
        &self.partial
    }
    fn commit(mut self: Box<Self>) -> io::Result<()> {
        let file = self.file.take().expect("sink in use");
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.partial, &self.dest)?;
        if let Some(dir) = self.dest.parent() {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl Drop for LocalFileSink {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
