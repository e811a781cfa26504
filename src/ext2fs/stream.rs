//! Guest files as streams, for those too large to hold in memory (an initramfs): a reader
//! that goes through the file in order, and writes whose content comes from a reader.

use std::io::{self, Read};

use super::ffi::*;
use super::{Ext2Error, Ext2Fs, Kind, Result};

/// A regular guest file, read from its start; dropping it closes the file and logs the
/// bytes read as one whole-file read.
pub struct FileReader<'a> {
    fs: &'a Ext2Fs,
    file: ext2_file_t,
    path: String,
    size: u64,
    read: u64,
    /// The libext2fs error that ended a read, kept for the caller to report as such.
    failed: Option<Ext2Error>,
}

impl FileReader<'_> {
    /// The file's size, from its inode.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The libext2fs (or block layer) error behind a failed read, if one failed.
    pub fn take_error(&mut self) -> Option<Ext2Error> {
        self.failed.take()
    }
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(1 << 20);
        let mut got = 0u32;
        // SAFETY: `file` is open and `buf` has room for the `want` bytes asked for.
        let rc = unsafe { ext2fs_file_read(self.file, buf.as_mut_ptr().cast(), want as u32, &mut got) };
        if let Err(e) = self.fs.check("reading", &self.path, rc) {
            let shown = io::Error::other(e.to_string());
            self.failed = Some(e);
            return Err(shown);
        }
        self.read += u64::from(got);
        Ok(got as usize)
    }
}

impl Drop for FileReader<'_> {
    fn drop(&mut self) {
        // SAFETY: `file` was opened by `open_file` and is not used after this call.
        unsafe { ext2fs_file_close(self.file) };
        if let Ok(mut log) = self.fs.read_log.lock() {
            log.push((self.path.clone(), self.read));
        }
    }
}

impl Ext2Fs {
    /// Opens the regular file at `path` (symlinks followed) for reading in order.
    pub fn open_file(&self, path: &str) -> Result<FileReader<'_>> {
        let r = self.resolve(path)?;
        if r.stat.kind != Kind::File {
            return Err(Ext2Error::errno("reading", path, libc::EISDIR));
        }
        let mut file: ext2_file_t = std::ptr::null_mut();
        // SAFETY: `fs` is open and `file` is an out-pointer, used only on success.
        self.check("opening", &r.path, unsafe { ext2fs_file_open(self.fs, r.stat.ino, 0, &mut file) })?;
        Ok(FileReader { fs: self, file, path: path.to_string(), size: r.stat.size, read: 0, failed: None })
    }

    /// The SHA-256 of the regular file at `path`, read as a stream, if it exists.
    pub fn try_sha256_file(&self, path: &str) -> Result<Option<String>> {
        match self.try_resolve(path)? {
            Some(r) if r.stat.kind == Kind::File => {}
            _ => return Ok(None),
        }
        let mut reader = self.open_file(path)?;
        let mut hash = crate::util::Sha256Writer::default();
        if io::copy(&mut reader, &mut hash).is_err() {
            let err = reader.take_error();
            return Err(err.unwrap_or_else(|| Ext2Error::errno("reading", path, libc::EIO)));
        }
        Ok(Some(hash.hex()))
    }

    /// Writes the new inode `ino`'s data from `content`, read to its end, 1 MiB at a time.
    pub(super) fn write_ino(&mut self, ino: u32, content: &mut dyn std::io::Read, path: &str) -> Result<()> {
        let mut file: ext2_file_t = std::ptr::null_mut();
        // SAFETY: `fs` is open and `file` is an out-pointer, used only on success.
        self.check("opening", path, unsafe { ext2fs_file_open(self.fs, ino, EXT2_FILE_WRITE, &mut file) })?;
        let mut result = Ok(());
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        'chunks: loop {
            let len = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let mut err =
                        Ext2Error::errno("reading the content for", path, e.raw_os_error().unwrap_or(libc::EIO));
                    err.message = e.to_string();
                    err.io = Some(e);
                    result = Err(err);
                    break;
                }
            };
            let mut done = 0usize;
            while done < len {
                let chunk = &buf[done..len];
                let mut written = 0u32;
                // SAFETY: `file` is open for writing and `chunk` holds the bytes passed.
                let rc = unsafe { ext2fs_file_write(file, chunk.as_ptr().cast(), chunk.len() as u32, &mut written) };
                if rc != 0 {
                    result = Err(Ext2Error::new("writing", path, rc));
                    break 'chunks;
                }
                if written == 0 {
                    result = Err(Ext2Error::errno("writing", path, libc::ENOSPC));
                    break 'chunks;
                }
                done += written as usize;
            }
            total += len as u64;
        }
        if result.is_ok() {
            // SAFETY: `file` is open for writing.
            result = self.check("sizing", path, unsafe { ext2fs_file_set_size2(file, total) });
        }
        // SAFETY: `file` was opened above and is not used after this call.
        let rc = unsafe { ext2fs_file_close(file) };
        result?;
        self.check("closing", path, rc)
    }
}
