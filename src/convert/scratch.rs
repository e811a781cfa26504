//! Sparse scratch images of a filesystem's metadata, for e2fsck, the one host tool that needs
//! a local file: built from any block source (so on a remote source only metadata crosses the
//! wire), removed when dropped or when the run is interrupted.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::Error;
use crate::ext2fs::Ext2Fs;
use crate::guest::inspect::InspectError;
use crate::host::fsck;
use crate::io::wrappers::CopyError;
use crate::io::{BlockSource, LocalFileSource, Overlay};

const BLOCK: u64 = 4096;

/// A sparse file in the work directory holding the metadata of a filesystem.
pub struct MetadataImage {
    file: tempfile::NamedTempFile,
    _registered: crate::io::cleanup::Registered,
    /// A hash of every 4 KiB block copied in, to find what e2fsck changed afterwards.
    copied: HashMap<u64, u64>,
    len: u64,
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl MetadataImage {
    /// Copies the metadata of the `len`-byte filesystem at `offset` of `source` into a new
    /// sparse file in `work_dir`. `whole_journal` copies the journal too, for a replay.
    pub fn build(
        source: &Arc<dyn BlockSource>,
        offset: u64,
        len: u64,
        whole_journal: bool,
        work_dir: &Path,
    ) -> Result<Self, Error> {
        let fs = Ext2Fs::open_source(Arc::clone(source), offset)
            .map_err(|err| InspectError::Filesystem { image: source.describe(), err })?;
        let ranges: Vec<Range<u64>> = fs.metadata_ranges(whole_journal).map_err(Error::Edit)?;
        drop(fs);
        // A remote source fetches all of it now, many requests at a time.
        let wanted: Vec<Range<u64>> =
            ranges.iter().map(|r| offset + r.start.min(len)..offset + r.end.min(len)).collect();
        source
            .prefetch(&wanted)
            .map_err(|err| Error::Copy { what: source.describe(), err: CopyError::Read { offset, err } })?;
        let shown = work_dir.display().to_string();
        let werr = |err| Error::Write { target: shown.clone(), offset: 0, err };
        let file = tempfile::Builder::new().prefix(".pv2hvm-metadata-").tempfile_in(work_dir).map_err(werr)?;
        let registered = crate::io::cleanup::register(file.path());
        file.as_file().set_len(len).map_err(werr)?;
        let mut copied = HashMap::new();
        let mut buf = vec![0u8; 1 << 20];
        for r in ranges {
            let mut at = r.start.min(len);
            let end = r.end.min(len);
            while at < end {
                let n = ((end - at) as usize).min(buf.len());
                source.read_exact_at(offset + at, &mut buf[..n]).map_err(|err| Error::Copy {
                    what: source.describe(),
                    err: CopyError::Read { offset: offset + at, err },
                })?;
                file.as_file().write_all_at(&buf[..n], at).map_err(werr)?;
                for (i, block) in buf[..n].chunks(BLOCK as usize).enumerate() {
                    copied.insert(at / BLOCK + i as u64, hash(block));
                }
                at += n as u64;
            }
        }
        Ok(MetadataImage { file, _registered: registered, copied, len })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The 4 KiB blocks whose bytes differ from what was copied in (what e2fsck wrote),
    /// written into `overlay`.
    pub fn changes_into(&self, overlay: &Overlay) -> Result<u64, Error> {
        let image = LocalFileSource::open(self.path()).map_err(|err| Error::Write {
            target: self.path().display().to_string(),
            offset: 0,
            err,
        })?;
        let read_err =
            |offset, err| Error::Copy { what: self.path().display().to_string(), err: CopyError::Read { offset, err } };
        let mut changed = 0;
        let mut block = vec![0u8; BLOCK as usize];
        for r in image.data_ranges().map_err(|err| read_err(0, err))? {
            let mut at = r.start / BLOCK * BLOCK;
            while at < r.end.min(self.len) {
                let n = (self.len - at).min(BLOCK) as usize;
                image.read_exact_at(at, &mut block[..n]).map_err(|err| read_err(at, err))?;
                if self.copied.get(&(at / BLOCK)) != Some(&hash(&block[..n])) {
                    overlay.write_all_at(at, &block[..n]).map_err(|err| Error::Write {
                        target: overlay.describe(),
                        offset: at,
                        err,
                    })?;
                    changed += 1;
                }
                at += BLOCK;
            }
        }
        Ok(changed)
    }
}

/// Replays the journal of the filesystem at `offset` of `source` on a metadata image, and
/// returns the source with what the replay wrote laid over it.
pub fn replay_journal(
    source: &Arc<dyn BlockSource>,
    offset: u64,
    len: u64,
    work_dir: &Path,
) -> Result<(Arc<Overlay>, u64), Error> {
    let image = MetadataImage::build(source, offset, len, true, work_dir)?;
    fsck::replay_journal(image.path(), 0)?;
    let replayed = Arc::new(Overlay::new(Arc::clone(source), offset, len));
    let changed = image.changes_into(&replayed)?;
    let sb = crate::disk::superblock::Superblock::read(replayed.as_ref(), 0)
        .map_err(|err| Error::Copy { what: replayed.describe(), err: CopyError::Read { offset: 1024, err } })?;
    if sb.is_none_or(|s| s.needs_recovery) {
        return Err(Error::JournalNotReplayed(source.describe()));
    }
    Ok((replayed, changed))
}

/// `e2fsck -fn` on a metadata image of the filesystem that `edited` holds (the source with
/// the edits over it), for a sink that has no local file to check.
pub fn check_edited(edited: &Arc<Overlay>, work_dir: &Path) -> Result<(), Error> {
    let as_source: Arc<dyn BlockSource> = edited.clone();
    let image = MetadataImage::build(&as_source, 0, edited.len(), false, work_dir)?;
    fsck::check_clean(image.path(), 0)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn image(dir: &Path) -> std::path::PathBuf {
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/motd"), "hello\n").unwrap();
        std::fs::write(root.join("big"), vec![0x5Au8; 3 << 20]).unwrap();
        let img = dir.join("fs.img");
        let ok =
            Command::new("mkfs.ext4").args(["-q", "-F", "-b", "4096", "-d"]).arg(&root).arg(&img).arg("32M").status();
        assert!(ok.unwrap().success());
        img
    }

    #[test]
    fn a_metadata_image_holds_metadata_and_no_file_data_and_checks_clean() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path());
        let src: Arc<dyn BlockSource> = Arc::new(LocalFileSource::open(&img).unwrap());
        let counted = Arc::new(crate::io::CountingSource::new(Arc::clone(&src)));
        let counted_src: Arc<dyn BlockSource> = counted.clone();
        let meta = MetadataImage::build(&counted_src, 0, src.len(), false, dir.path()).unwrap();
        assert!(counted.bytes_read() < 3 << 20, "no file data is read: {}", counted.bytes_read());
        let out = Command::new("e2fsck").arg("-fn").arg(meta.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        let cat = Command::new("debugfs").arg("-R").arg("cat /etc/motd").arg(meta.path()).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&cat.stdout), "\0".repeat(6), "file data stays out, however small");
        let path = meta.path().to_path_buf();
        drop(meta);
        assert!(!path.exists(), "the scratch file goes with the handle");
    }

    #[test]
    fn edits_are_checked_through_a_metadata_image() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path());
        let src: Arc<dyn BlockSource> = Arc::new(LocalFileSource::open(&img).unwrap());
        let edited = Arc::new(Overlay::new(Arc::clone(&src), 0, src.len()));
        let mut fs = Ext2Fs::open_overlay(Arc::clone(&edited)).unwrap();
        fs.replace_file("/etc/motd", b"edited\n").unwrap();
        fs.close().unwrap();
        check_edited(&edited, dir.path()).expect("clean after the edits");
        // A broken edit is caught: the root directory's block overwritten with zeros.
        let broken = Arc::new(Overlay::new(Arc::clone(&src), 0, src.len()));
        let out = Command::new("debugfs").arg("-R").arg("blocks /").arg(&img).output().unwrap();
        let root_block: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        broken.write_all_at(root_block * 4096, &[0u8; 4096]).unwrap();
        assert!(matches!(check_edited(&broken, dir.path()), Err(Error::Fsck(fsck::FsckError::Failed { .. }))));
    }
}
