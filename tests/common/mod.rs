//! Helpers shared by the integration tests: fixture images, the real binary, and independent
//! tools (debugfs, e2fsck, sfdisk) to check what it wrote.
#![allow(dead_code)]

pub mod moto;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const MIB: u64 = 1 << 20;

/// The cloud fixture grown to 20 GiB with 1 GiB of random file data (scripts/lib.sh
/// big_fixture), built and cached by scripts/test.
pub fn fixture_big() -> PathBuf {
    std::env::var_os("PV2HVM_FIXTURE_BIG")
        .map(PathBuf::from)
        .expect("PV2HVM_FIXTURE_BIG is not set: run the tests through scripts/test, which builds the fixture")
}

/// The 512 KiB blocks where two equally long images differ, read only where either holds data
/// (SEEK_DATA), so that big sparse images compare quickly.
pub fn differing_blocks(a: &Path, b: &Path) -> Vec<u64> {
    use std::os::unix::fs::FileExt;
    const BLOCK: u64 = 512 << 10;
    let (fa, fb) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    let len = fa.metadata().unwrap().len();
    assert_eq!(len, fb.metadata().unwrap().len(), "{} and {}", a.display(), b.display());
    let mut blocks = data_blocks(&fa, len, BLOCK);
    blocks.extend(data_blocks(&fb, len, BLOCK));
    let (mut ba, mut bb) = (vec![0u8; BLOCK as usize], vec![0u8; BLOCK as usize]);
    let mut out = Vec::new();
    for i in blocks {
        let n = (len - i * BLOCK).min(BLOCK) as usize;
        fa.read_exact_at(&mut ba[..n], i * BLOCK).unwrap();
        fb.read_exact_at(&mut bb[..n], i * BLOCK).unwrap();
        if ba[..n] != bb[..n] {
            out.push(i);
        }
    }
    out
}

/// The `block`-sized blocks of `f` that hold data (not holes).
pub fn data_blocks(f: &std::fs::File, len: u64, block: u64) -> std::collections::BTreeSet<u64> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(f);
    let mut blocks = std::collections::BTreeSet::new();
    let mut at = 0i64;
    loop {
        // SAFETY: lseek on a file we hold open; no memory is touched.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 || data as u64 >= len {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        blocks.extend(data as u64 / block..=(hole as u64 - 1) / block);
        at = hole;
    }
    blocks
}

/// The Debian 12 cloud-kernel PV fixture built by scripts/test.
pub fn fixture_cloud() -> PathBuf {
    fixture("PV2HVM_FIXTURE_CLOUD")
}

/// The Debian 12 generic-kernel (nvme as a module) dracut PV fixture built by scripts/test.
pub fn fixture_generic() -> PathBuf {
    fixture("PV2HVM_FIXTURE_GENERIC")
}

/// The generic fixture on ext3, mounted by LABEL=rootfs.
pub fn fixture_ext3() -> PathBuf {
    fixture("PV2HVM_FIXTURE_EXT3")
}

fn fixture(var: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{var} is not set: run the tests through scripts/test, which builds the fixtures"));
    assert!(p.is_file(), "fixture {} is missing: run scripts/test", p.display());
    p
}

/// A sparse copy of `src` in `dir`.
pub fn copy_sparse(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    run_ok(Command::new("cp").arg("--sparse=always").arg(src).arg(&dst));
    dst
}

pub fn pv2hvm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pv2hvm"))
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `image?offset=N` for e2fsprogs tools.
pub fn at(image: &Path, offset: u64) -> String {
    format!("{}?offset={offset}", image.display())
}

/// Runs a debugfs request (writable with `write`) and returns its stdout. debugfs exits 0
/// even when the request fails, so anything on stderr besides its version banner fails the
/// test.
pub fn debugfs(target: &str, request: &str, write: bool) -> String {
    let mut cmd = Command::new("debugfs");
    if write {
        cmd.arg("-w");
    }
    let out = run_ok(cmd.arg("-R").arg(request).arg(target));
    let err = stderr(&out);
    let complaints: Vec<&str> = err.lines().filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty()).collect();
    assert!(complaints.is_empty(), "debugfs {request:?} on {target} failed: {err}");
    stdout(&out)
}

pub fn guest_cat(target: &str, path: &str) -> String {
    debugfs(target, &format!("cat {path}"), false)
}

pub fn guest_exists(target: &str, path: &str) -> bool {
    let out = Command::new("debugfs").arg("-R").arg(format!("stat {path}")).arg(target).output().expect("debugfs");
    !String::from_utf8_lossy(&out.stderr).contains("File not found")
        && String::from_utf8_lossy(&out.stdout).contains("Inode:")
}

/// Writes `content` to guest `path` (replacing it) with debugfs.
pub fn guest_write(target: &str, path: &str, content: &str) {
    let tmp = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(tmp.path(), content).expect("write temp");
    if guest_exists(target, path) {
        debugfs(target, &format!("rm {path}"), true);
    }
    debugfs(target, &format!("write {} {path}", tmp.path().display()), true);
}

/// The kernel version in the fixture's /boot.
pub fn kernel_version(target: &str) -> String {
    let ls = debugfs(target, "ls -p /boot", false);
    ls.lines()
        .filter_map(|l| l.split('/').nth(5))
        .find_map(|n| n.strip_prefix("vmlinuz-").map(str::to_string))
        .expect("a kernel in /boot")
}

pub fn e2fsck_clean(target: &str) {
    run_ok(Command::new("e2fsck").arg("-fn").arg(target));
}

pub fn sha256(path: &Path) -> String {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("open for hashing");
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

/// Wraps a filesystem image into an MBR disk whose partition 1 starts at `start_sector`
/// (the PV-GRUB "hd00" shape; old images start at 63).
pub fn make_mbr_disk(fs_image: &Path, dir: &Path, start_sector: u64) -> PathBuf {
    let disk = dir.join("hd00.img");
    let fs_len = std::fs::metadata(fs_image).expect("fixture").len();
    let f = std::fs::File::create(&disk).expect("create disk");
    f.set_len(fs_len + start_sector * 512).expect("size disk");
    drop(f);
    let mut sfdisk = Command::new("sfdisk");
    sfdisk.arg("--no-reread").arg("--no-tell-kernel").arg("-q").arg(&disk).stdin(std::process::Stdio::piped());
    let mut child = sfdisk.spawn().expect("sfdisk");
    use std::io::Write;
    writeln!(child.stdin.take().expect("stdin"), "label: dos\nstart={start_sector}, type=83, bootable")
        .expect("sfdisk input");
    assert!(child.wait().expect("sfdisk").success(), "sfdisk failed");
    run_ok(
        Command::new("dd")
            .arg(format!("if={}", fs_image.display()))
            .arg(format!("of={}", disk.display()))
            .arg("bs=1M")
            .arg(format!("seek={}", start_sector * 512))
            .arg("oflag=seek_bytes")
            .arg("conv=sparse,notrunc")
            .arg("status=none"),
    );
    disk
}

/// `sfdisk --json` of a disk image.
pub fn partition_table(disk: &Path) -> serde_json::Value {
    let out = run_ok(Command::new("sfdisk").arg("--json").arg(disk));
    serde_json::from_slice(&out.stdout).expect("sfdisk json")
}

/// Commits a transaction to the journal of `src` that rewrites the data block of guest `path`
/// with `change` (same length), without replaying it: the file changes only when the journal
/// is replayed.
pub fn journal_rewrite(src: &Path, path: &str, change: fn(&str) -> String) {
    let t = src.display().to_string();
    let block = debugfs(&t, &format!("blocks {path}"), false).trim().to_string();
    assert!(!block.contains(' '), "{path} fits one block");
    let new = tempfile::NamedTempFile::new().unwrap();
    let old = guest_cat(&t, path);
    let changed = change(&old);
    assert_eq!(changed.len(), old.len());
    let mut data = changed.into_bytes();
    data.resize(4096, 0);
    std::fs::write(new.path(), data).unwrap();
    let mut child = Command::new("debugfs")
        .args(["-w", "-f", "-"])
        .arg(src)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    write!(child.stdin.take().unwrap(), "jo\njw -b {block} {}\njc\n", new.path().display()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success() && stderr(&out).lines().all(|l| l.starts_with("debugfs ")), "{}", stderr(&out));
    assert!(debugfs(&t, "logdump", false).contains("commit block"), "a committed transaction");
    assert!(debugfs(&t, "stats", false).contains("needs_recovery"));
    assert_eq!(guest_cat(&t, path), old, "only a replay changes the file");
}

/// The cloud fixture with its initramfs recompressed by a host tool (`compress`).
pub fn cloud_fixture_recompressed(dir: &Path, compress: &[&str]) -> std::path::PathBuf {
    let src = copy_sparse(&fixture_cloud(), dir, "pv.img");
    let t = src.display().to_string();
    let path = format!("/boot/initrd.img-{}", kernel_version(&t));
    let gz = dir.join("initrd.gz");
    debugfs(&t, &format!("dump {path} {}", gz.display()), false);
    let plain = run_ok(Command::new("gzip").arg("-dc").arg(&gz)).stdout;
    let mut tool = Command::new(compress[0])
        .args(&compress[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = tool.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &plain).unwrap());
    let packed = tool.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(packed.status.success(), "{compress:?} failed");
    let file = dir.join("initrd.other");
    std::fs::write(&file, &packed.stdout).unwrap();
    debugfs(&t, &format!("rm {path}"), true);
    debugfs(&t, &format!("write {} {path}", file.display()), true);
    src
}
