//! Where blocks come from and go to. The pipeline sees only these traits:
//! - [`BlockSource`]: the PV volume, read by byte offset (a local image or device today, an
//!   EBS snapshot in `aws::ebs`);
//! - [`BlockWrite`] and [`BlockSink`]: the HVM disk being written, visible at its destination
//!   only after [`BlockSink::commit`];
//! - wrappers that compose over them ([`wrappers`]) and the copy-on-write [`overlay`] that
//!   filesystem edits go through.
//!
//! [`open_source`] and [`create_sink`] choose the implementation from what the user named.

pub mod cleanup;
pub mod delta;
pub mod image;
pub mod local;
pub mod memory;
pub mod overlay;
pub mod wrappers;

use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

pub use local::{LocalFileSink, LocalFileSource};
pub use memory::MemorySource;
pub use overlay::Overlay;
pub use wrappers::{CountingSource, ProgressSource, ReadStats, ZeroSkipping};

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
    /// A hint that `ranges` will be read soon: a remote source fetches them now, many requests
    /// at a time. Local sources ignore it.
    fn prefetch(&self, _ranges: &[Range<u64>]) -> io::Result<()> {
        Ok(())
    }
    /// The local file behind this source, which a sink may copy from directly (reflink,
    /// `copy_file_range`). Wrappers that count or observe reads keep the default, `None`.
    fn local_file(&self) -> Option<&std::fs::File> {
        None
    }
}

/// Positional writes, the part of a sink that copies need.
pub trait BlockWrite {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
}

/// Where the HVM disk is written. Nothing is visible at the destination until
/// [`BlockSink::commit`] succeeds; dropping an uncommitted sink removes what it wrote.
pub trait BlockSink: BlockWrite + Send {
    fn describe(&self) -> String;
    /// Size of the disk being written, in bytes.
    fn disk_size(&self) -> u64;
    /// A local file holding the staged disk, for host tools that need a file (e2fsck).
    fn local_image(&self) -> Option<&Path>;
    /// Copies `len` bytes of `source` from `src_off` to `dst_off`, reading only its data
    /// ranges and reporting each byte to `progress`. The sink starts out as zeros, so zeros
    /// need not be written. Returns the bytes written.
    fn copy_from(
        &mut self,
        source: &dyn BlockSource,
        src_off: u64,
        len: u64,
        dst_off: u64,
        progress: &dyn crate::progress::Progress,
    ) -> Result<u64, wrappers::CopyError>;
    /// Makes what was written so far durable, so that the commit has less to wait for; a
    /// caller with other work runs it on a second thread. Sinks that stage nothing locally
    /// have nothing to do.
    fn flush_data(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Makes the result durable and visible at the destination.
    fn commit(self: Box<Self>) -> io::Result<()>;
    /// Something the user should know about how the sink was set up (a stale `DST.partial`
    /// replaced), if anything.
    fn notice(&self) -> Option<String> {
        None
    }
}

/// Why a source or destination name could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("opening the source {name}")]
    Source {
        name: String,
        #[source]
        err: io::Error,
    },
    #[error("creating {name}")]
    Destination {
        name: String,
        #[source]
        err: io::Error,
    },
    #[error("{name}: AWS {what} sources are not supported by this command: it converts local images and devices")]
    Cloud { name: String, what: &'static str },
    #[error("{0} already exists (pass --force to replace it)")]
    DestExists(String),
    #[error("the destination {0} is the source")]
    DestIsSource(String),
}

/// The AWS resource kind a name such as `snap-0123…` denotes, if it looks like one.
pub fn cloud_kind(name: &str) -> Option<&'static str> {
    let (prefix, rest) = name.split_once('-')?;
    let hex = !rest.is_empty() && rest.chars().all(|c| c.is_ascii_hexdigit());
    match prefix {
        "snap" if hex => Some("snapshot"),
        "ami" if hex => Some("AMI"),
        "i" if hex => Some("instance"),
        "vol" if hex => Some("volume"),
        _ => None,
    }
}

/// Opens the source the user named: a raw image or a block device. A name that looks like an
/// AWS resource and is not a local file is refused with a clear message.
pub fn open_source(name: &Path) -> Result<Arc<dyn BlockSource>, OpenError> {
    let shown = name.display().to_string();
    if !name.exists()
        && let Some(what) = name.to_str().and_then(cloud_kind)
    {
        return Err(OpenError::Cloud { name: shown, what });
    }
    let src = LocalFileSource::open(name).map_err(|err| OpenError::Source { name: shown, err })?;
    Ok(Arc::new(src))
}

/// Opens `image` as its own sink (`convert --in-place`), keeping an undo file at `undo` when
/// given.
pub fn open_in_place_sink(image: &Path, undo: Option<&Path>) -> Result<Box<dyn BlockSink>, OpenError> {
    Ok(Box::new(image::ImageSink::open(image, undo)?))
}

/// Creates the sink for `dest`, a `len`-byte disk. Refuses a destination that is the source,
/// and an existing one unless `force`.
pub fn create_sink(dest: &Path, len: u64, force: bool, source: &Path) -> Result<Box<dyn BlockSink>, OpenError> {
    use std::os::unix::fs::MetadataExt;
    let shown = dest.display().to_string();
    if let Ok(dest_meta) = std::fs::metadata(dest) {
        if let Ok(src_meta) = std::fs::metadata(source)
            && dest_meta.dev() == src_meta.dev()
            && dest_meta.ino() == src_meta.ino()
        {
            return Err(OpenError::DestIsSource(shown));
        }
        if !force {
            return Err(OpenError::DestExists(shown));
        }
    }
    let sink = LocalFileSink::create(dest, len).map_err(|err| OpenError::Destination { name: shown, err })?;
    Ok(Box::new(sink))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_names_are_recognised() {
        assert_eq!(cloud_kind("snap-0123abcd"), Some("snapshot"));
        assert_eq!(cloud_kind("i-0abc"), Some("instance"));
        assert_eq!(cloud_kind("ami-12"), Some("AMI"));
        assert_eq!(cloud_kind("image-1.img"), None);
        assert_eq!(cloud_kind("snap-"), None);
    }

    #[test]
    fn a_cloud_name_that_is_no_file_is_refused() {
        let err = open_source(Path::new("snap-0123456789abcdef0")).err().expect("refused");
        assert!(matches!(err, OpenError::Cloud { what: "snapshot", .. }), "{err}");
    }

    #[test]
    fn existing_destinations_need_force_and_the_source_is_never_one() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        let dst = dir.path().join("dst.img");
        std::fs::write(&src, b"x").unwrap();
        std::fs::write(&dst, b"y").unwrap();
        assert!(matches!(create_sink(&dst, 4096, false, &src), Err(OpenError::DestExists(_))));
        assert!(matches!(create_sink(&src, 4096, true, &src), Err(OpenError::DestIsSource(_))));
        let sink = create_sink(&dst, 4096, true, &src).expect("forced");
        drop(sink);
        assert_eq!(std::fs::read(&dst).unwrap(), b"y", "an uncommitted sink leaves the old file alone");
        assert!(!dir.path().join("dst.img.partial").exists());
    }
}
