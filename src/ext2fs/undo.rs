//! Writing a disk image in place with an undo file that `e2undo UNDO IMAGE` applies: every
//! block is saved before its first overwrite by libext2fs' own `undo_io_manager`, and the
//! undo file's header and index are flushed after every write, so the image stays
//! restorable whenever the process stops.

use std::ffi::CString;
use std::path::Path;
use std::sync::Mutex;

use super::ffi::*;
use super::{Ext2Error, Result};

/// The undo manager keeps its backup file name in a global: one writer at a time.
static UNDO: Mutex<()> = Mutex::new(());

/// Bytes per saved block (e2undo accepts 1 KiB to 1 MiB).
const UNDO_BLOCK: i32 = 4096;

/// An image open for writing through the undo manager.
pub struct UndoWriter {
    channel: *mut IoChannel,
    shown: String,
}

// SAFETY: the channel is only used through `&mut self` (one thread at a time), and libext2fs'
// I/O channels hold no thread-affine state.
unsafe impl Send for UndoWriter {}

impl UndoWriter {
    /// Opens `image` for writing, saving what each write overwrites to `undo` (which must not
    /// exist yet).
    pub fn open(image: &Path, undo: &Path) -> Result<Self> {
        let shown = image.display().to_string();
        if undo.exists() {
            return Err(Ext2Error::errno("creating the undo file", undo.display().to_string(), libc::EEXIST));
        }
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| Ext2Error::errno("opening", p.display().to_string(), libc::EINVAL))
        };
        let (cimage, cundo) = (c(image)?, c(undo)?);
        let _one = UNDO.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut channel: *mut IoChannel = std::ptr::null_mut();
        // SAFETY: the managers are libext2fs' own statics; the backup file name is copied by
        // set_undo_io_backup_file; `channel` is an out-pointer used only on success.
        let rc = unsafe {
            let rc = set_undo_io_backing_manager(unix_io_manager);
            if rc != 0 {
                return Err(Ext2Error::new("setting up the undo file for", &shown, rc));
            }
            let rc = set_undo_io_backup_file(cundo.as_ptr() as *mut libc::c_char);
            if rc != 0 {
                return Err(Ext2Error::new("setting up the undo file for", &shown, rc));
            }
            let open = (*undo_io_manager).open;
            match open {
                Some(open) => open(cimage.as_ptr(), IO_FLAG_RW, &mut channel),
                None => EXT2_ET_INVALID_ARGUMENT,
            }
        };
        if rc != 0 {
            return Err(Ext2Error::new("opening with an undo file", &shown, rc));
        }
        let w = UndoWriter { channel, shown };
        // SAFETY: the channel is open; set_blksize is part of every manager.
        let rc = unsafe { (*(*w.channel).manager).set_blksize.map_or(0, |f| f(w.channel, UNDO_BLOCK)) };
        if rc != 0 {
            return Err(Ext2Error::new("setting the block size of", &w.shown, rc));
        }
        Ok(w)
    }

    /// Writes `bytes` at `offset`, the overwritten blocks saved to the undo file first.
    pub fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        for (i, chunk) in bytes.chunks(64 << 20).enumerate() {
            let at = offset + (i as u64) * (64 << 20);
            let at = libc::c_ulong::try_from(at).map_err(|_| Ext2Error::errno("writing", &self.shown, libc::EFBIG))?;
            // SAFETY: the channel is open and `chunk` holds the bytes passed (under 2 GiB).
            let rc =
                unsafe { io_channel_write_byte(self.channel, at, chunk.len() as libc::c_int, chunk.as_ptr().cast()) };
            if rc != 0 {
                return Err(Ext2Error::new("writing", &self.shown, rc));
            }
            // SAFETY: as above; flushing writes the undo file's index and header.
            let rc = unsafe { (*(*self.channel).manager).flush.map_or(0, |f| f(self.channel)) };
            if rc != 0 {
                return Err(Ext2Error::new("flushing the undo file of", &self.shown, rc));
            }
        }
        Ok(())
    }

    /// Completes the undo file and closes the image.
    pub fn close(mut self) -> Result<()> {
        let rc = self.close_channel();
        if rc != 0 { Err(Ext2Error::new("closing", &self.shown, rc)) } else { Ok(()) }
    }

    fn close_channel(&mut self) -> errcode_t {
        if self.channel.is_null() {
            return 0;
        }
        // SAFETY: the channel is open; close frees it, and the pointer is cleared so it is
        // never used again.
        let rc = unsafe { (*(*self.channel).manager).close.map_or(0, |f| f(self.channel)) };
        self.channel = std::ptr::null_mut();
        rc
    }
}

impl Drop for UndoWriter {
    fn drop(&mut self) {
        // An unfinished run still leaves a complete undo file.
        self.close_channel();
    }
}
