//! `convert --in-place IMG`: the sink is the source image itself. Only the delta is written,
//! each write going through an undo file (see [`crate::ext2fs::undo`]) unless the user
//! declined one, so `e2undo UNDO IMG` gives the original back.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::wrappers::{CopyError, copy_into_fresh};
use super::{BlockSink, BlockSource, BlockWrite};
use crate::ext2fs::undo::UndoWriter;
use crate::progress::Progress;

pub struct ImageSink {
    path: PathBuf,
    file: File,
    len: u64,
    undo: Option<UndoWriter>,
    _note: super::cleanup::InterruptNote,
}

impl ImageSink {
    /// Opens `image` for writing in place, saving what it overwrites to `undo` when given.
    pub fn open(image: &Path, undo: Option<&Path>) -> Result<Self, super::OpenError> {
        let shown = image.display().to_string();
        let dest = |err| super::OpenError::Destination { name: shown.clone(), err };
        let file = OpenOptions::new().read(true).write(true).open(image).map_err(dest)?;
        let len = file.metadata().map_err(dest)?.len();
        let note = match undo {
            Some(u) => format!("{shown} may be partly converted: `e2undo {} {shown}` restores it", u.display()),
            None => format!("{shown} may be partly converted, and no undo file was kept"),
        };
        let undo = match undo {
            Some(u) => Some(UndoWriter::open(image, u).map_err(|e| dest(io::Error::other(e)))?),
            None => None,
        };
        Ok(ImageSink { path: image.to_path_buf(), file, len, undo, _note: super::cleanup::note_on_interrupt(note) })
    }
}

impl BlockWrite for ImageSink {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        match &mut self.undo {
            Some(u) => u.write(offset, buf).map_err(io::Error::other),
            None => self.file.write_all_at(buf, offset),
        }
    }
}

impl BlockSink for ImageSink {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
    fn disk_size(&self) -> u64 {
        self.len
    }
    fn local_image(&self) -> Option<&Path> {
        Some(&self.path)
    }
    fn copy_from(
        &mut self,
        source: &dyn BlockSource,
        src_off: u64,
        len: u64,
        dst_off: u64,
        progress: &dyn Progress,
    ) -> Result<u64, CopyError> {
        // The source is this image: its bytes are already where they belong.
        let same = |f: &File| {
            let (a, b) = (f.metadata(), self.file.metadata());
            matches!((a, b), (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino())
        };
        if src_off == dst_off && source.local_file().is_some_and(same) {
            progress.advance(len);
            return Ok(0);
        }
        copy_into_fresh(source, src_off, len, self, dst_off, progress)
    }
    fn commit(mut self: Box<Self>) -> io::Result<()> {
        if let Some(u) = self.undo.take() {
            u.close().map_err(io::Error::other)?;
        }
        self.file.sync_all()
    }
}
