//! libext2fs through the block traits: real errors survive, edits stay in the overlay.

use std::ops::Range;
use std::process::Command;

use super::*;
use crate::io::LocalFileSource;

/// A small ext4 image holding /etc/motd, made by the host's mkfs.ext4.
fn image(dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/motd"), "hello from the guest\n").unwrap();
    let img = dir.join("fs.img");
    let ok = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-d"])
        .arg(&root)
        .arg(&img)
        .arg("8M")
        .status()
        .expect("mkfs.ext4 runs");
    assert!(ok.success());
    img
}

/// Fails every read at or past `from` with a recognisable error.
struct Failing {
    inner: LocalFileSource,
    from: u64,
}
impl BlockSource for Failing {
    fn describe(&self) -> String {
        "failing".into()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if offset + buf.len() as u64 > self.from {
            return Err(std::io::Error::other("simulated throttling from the block service"));
        }
        self.inner.read_exact_at(offset, buf)
    }
    fn data_ranges(&self) -> std::io::Result<Vec<Range<u64>>> {
        self.inner.data_ranges()
    }
}

#[test]
fn the_sources_own_error_survives_libext2fs() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let inner = LocalFileSource::open(&img).unwrap();
    // The superblock and group descriptors read fine; nothing past 8 KiB does.
    let err = Ext2Fs::open_source(Arc::new(Failing { inner, from: 8192 }), 0)
        .and_then(|fs| fs.read_file("/etc/motd"))
        .expect_err("reads past 8 KiB fail");
    let io = err.io.as_ref().expect("the I/O error is kept");
    assert_eq!(io.to_string(), "simulated throttling from the block service");
    assert_eq!(err.code, Code::Ext2(EXT2_ET_SHORT_READ));
}

#[test]
fn edits_through_the_overlay_leave_the_source_alone() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let before = std::fs::read(&img).unwrap();
    let src: Arc<dyn BlockSource> = Arc::new(LocalFileSource::open(&img).unwrap());
    let overlay = Arc::new(Overlay::new(Arc::clone(&src), 0, src.len()));
    let mut fs = Ext2Fs::open_overlay(Arc::clone(&overlay)).unwrap();
    fs.replace_file("/etc/motd", b"hello from HVM\n").unwrap();
    fs.close().unwrap();
    assert_eq!(std::fs::read(&img).unwrap(), before, "the source is never written");
    assert!(overlay.changed_bytes() > 0);
    let edited = Ext2Fs::open_source(overlay.clone(), 0).unwrap();
    assert_eq!(edited.read_file("/etc/motd").unwrap(), b"hello from HVM\n");
    assert_eq!(edited.read_file(&format!("/etc/motd{BACKUP_SUFFIX}")).unwrap(), b"hello from the guest\n");
    // The source with the changed runs applied is a clean filesystem.
    let out = dir.path().join("edited.img");
    std::fs::copy(&img, &out).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&out).unwrap();
    for (at, bytes) in overlay.changed_runs() {
        std::os::unix::fs::FileExt::write_all_at(&f, &bytes, at).unwrap();
    }
    let fsck = Command::new("e2fsck").arg("-fn").arg(&out).output().unwrap();
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));
}
