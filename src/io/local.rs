//! Local raw images and block devices: a read-only [`LocalFileSource`], and a
//! [`LocalFileSink`] that stages `DST.partial` and renames it into place on commit.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::wrappers::{CopyError, copy_into_fresh};
use super::{BlockSink, BlockSource, BlockWrite};
use crate::progress::Progress;

/// Bytes per `copy_file_range` call: progress is reported between calls.
const FAST_CHUNK: u64 = 64 << 20;

/// A raw image file opened read-only.
pub struct LocalFileSource {
    path: PathBuf,
    file: File,
    len: u64,
}

impl LocalFileSource {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let len = if meta.file_type().is_file() {
            meta.len()
        } else {
            // A block device: its size is where SEEK_END lands.
            // SAFETY: lseek on a file descriptor we own; it does not touch memory.
            let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
            if end < 0 {
                return Err(io::Error::last_os_error());
            }
            end as u64
        };
        Ok(LocalFileSource { path: path.to_path_buf(), file, len })
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
        self.file.read_exact_at(buf, offset)
    }
    fn data_ranges(&self) -> io::Result<Vec<Range<u64>>> {
        data_ranges(&self.file, self.len)
    }
    fn local_file(&self) -> Option<&File> {
        Some(&self.file)
    }
}

/// Data extents of a file via SEEK_DATA/SEEK_HOLE; the whole file where unsupported.
pub fn data_ranges(file: &File, len: u64) -> io::Result<Vec<Range<u64>>> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on a descriptor `file` keeps open; it does not touch memory.
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
        // SAFETY: as above.
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
    /// Removes `DST.partial` if the run is interrupted.
    registered: Option<super::cleanup::Registered>,
    /// A `DST.partial` left by an interrupted run was replaced.
    replaced_stale: bool,
}

impl LocalFileSink {
    /// Creates (or replaces a stale) `DST.partial` of `len` bytes, sparse.
    pub fn create(dest: &Path, len: u64) -> io::Result<Self> {
        let partial = crate::util::partial_path(dest);
        let replaced_stale = partial.exists();
        if replaced_stale {
            // Its blocks may be shared or huge: start from an empty file, not a truncated one.
            std::fs::remove_file(&partial)?;
        }
        let registered = Some(super::cleanup::register(&partial));
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&partial)?;
        let sink =
            LocalFileSink { dest: dest.to_path_buf(), partial, file: Some(file), len, registered, replaced_stale };
        if let Some(f) = &sink.file {
            f.set_len(len)?;
        }
        Ok(sink)
    }
}

impl BlockWrite for LocalFileSink {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        match &self.file {
            Some(f) => f.write_all_at(buf, offset),
            None => Err(io::Error::other("the sink was already committed")),
        }
    }
}

impl BlockSink for LocalFileSink {
    fn describe(&self) -> String {
        self.dest.display().to_string()
    }
    fn disk_size(&self) -> u64 {
        self.len
    }
    fn local_image(&self) -> Option<&Path> {
        Some(&self.partial)
    }
    fn notice(&self) -> Option<String> {
        self.replaced_stale.then(|| format!("replacing {}, left behind by an interrupted run", self.partial.display()))
    }
    fn copy_from(
        &mut self,
        source: &dyn BlockSource,
        src_off: u64,
        len: u64,
        dst_off: u64,
        progress: &dyn Progress,
    ) -> Result<u64, CopyError> {
        if let (Some(src), Some(dst)) = (source.local_file(), &self.file)
            && let Some(copied) = fast_copy(source, src, dst, src_off, len, dst_off, progress)?
        {
            return Ok(copied);
        }
        copy_into_fresh(source, src_off, len, self, dst_off, progress)
    }
    fn flush_data(&mut self) -> io::Result<()> {
        match &self.file {
            Some(f) => f.sync_data(),
            None => Err(io::Error::other("the sink was already committed")),
        }
    }
    fn commit(mut self: Box<Self>) -> io::Result<()> {
        let Some(file) = self.file.take() else { return Err(io::Error::other("the sink was already committed")) };
        file.sync_all()?;
        drop(file);
        let rename = || std::fs::rename(&self.partial, &self.dest);
        match self.registered.take() {
            Some(r) => r.settle(rename)?,
            None => rename()?,
        }
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

/// Copies between two local files in the kernel: a reflink of the whole file where the
/// filesystem shares blocks (FICLONE), else `copy_file_range` over the source's data ranges.
/// `Ok(None)` when neither is supported here, so the caller copies through reads.
fn fast_copy(
    source: &dyn BlockSource,
    src: &File,
    dst: &File,
    src_off: u64,
    len: u64,
    dst_off: u64,
    progress: &dyn Progress,
) -> Result<Option<u64>, CopyError> {
    let whole = src_off == 0 && dst_off == 0 && len == source.len();
    let dst_len = dst.metadata().map_err(|err| CopyError::Write { offset: 0, err })?.len();
    if whole && dst_len == len {
        // SAFETY: FICLONE takes the source descriptor as its argument; both descriptors are
        // open for the duration of the call.
        let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
        if rc == 0 {
            progress.advance(len);
            return Ok(Some(len));
        }
    }
    let end = src_off + len;
    let ranges = source.data_ranges().map_err(|err| CopyError::Read { offset: src_off, err })?;
    let mut copied = 0u64;
    for r in ranges {
        let (start, stop) = (r.start.max(src_off), r.end.min(end));
        let mut pos = start;
        while pos < stop {
            if progress.stop_requested() {
                return Err(CopyError::Stopped);
            }
            let mut off_in = pos as libc::loff_t;
            let mut off_out = (dst_off + (pos - src_off)) as libc::loff_t;
            let want = (stop - pos).min(FAST_CHUNK) as usize;
            // SAFETY: both descriptors are open; the offsets are valid out-pointers that the
            // kernel advances, and no user memory is read or written.
            let n =
                unsafe { libc::copy_file_range(src.as_raw_fd(), &mut off_in, dst.as_raw_fd(), &mut off_out, want, 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                let unsupported =
                    matches!(err.raw_os_error(), Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL));
                if unsupported && copied == 0 {
                    return Ok(None);
                }
                return Err(CopyError::Write { offset: off_out as u64, err });
            }
            if n == 0 {
                let err = io::Error::new(io::ErrorKind::UnexpectedEof, "the source ended early");
                return Err(CopyError::Read { offset: pos, err });
            }
            pos += n as u64;
            copied += n as u64;
            progress.advance(n as u64);
        }
    }
    Ok(Some(copied))
}
