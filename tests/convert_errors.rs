//! Bad input: each case is refused with one clear line, exit status 1, and nothing at DST.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Runs `pv2hvm convert SRC DST`, expects a refusal (exit 3) naming `expect`, and checks no output.
fn refuse(src: &Path, expect: &str) {
    fail(src, expect, 3);
}

/// Runs `pv2hvm convert SRC DST`, expects exit `code` and an error naming `expect`, and checks
/// no output.
fn fail(src: &Path, expect: &str, code: i32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dst = dir.path().join("out.img");
    let before = src.exists().then(|| sha256(src));
    let out = pv2hvm().arg("convert").arg(src).arg(&dst).arg("-q").output().expect("run pv2hvm");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "expected exit {code} for {expect:?}, got {:?}: {err}", out.status);
    assert!(err.contains(expect), "stderr should name {expect:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line of error: {err}");
    assert!(err.starts_with("pv2hvm: error: "), "{err}");
    assert!(!dst.exists(), "DST must not exist after a failure");
    assert!(!dir.path().join("out.img.partial").exists(), "no partial output may be left");
    assert_eq!(src.exists().then(|| sha256(src)), before, "the source changed");
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("empty.img");
    std::fs::write(&src, b"").unwrap();
    refuse(&src, "the source is empty");
}

#[test]
fn garbage() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("garbage.img");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&src, bytes).unwrap();
    refuse(&src, "no ext2/ext3/ext4 filesystem or MBR partition table found");
}

#[test]
fn missing_source() {
    fail(Path::new("/nonexistent/pv.img"), "/nonexistent/pv.img: No such file or directory", 4);
}

#[test]
fn truncated_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let src = copy_sparse(&fixture_cloud(), dir.path(), "trunc.img");
    std::fs::OpenOptions::new().write(true).open(&src).unwrap().set_len(300 * MIB).unwrap();
    refuse(&src, "the filesystem is truncated");
}

#[test]
fn xfs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("xfs.img");
    std::fs::File::create(&src).unwrap().set_len(512 * MIB).unwrap();
    run_ok(Command::new("mkfs.xfs").arg("-q").arg(&src));
    refuse(&src, "XFS (whole volume) is not supported yet");
}

#[test]
fn btrfs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("btrfs.img");
    std::fs::File::create(&src).unwrap().set_len(256 * MIB).unwrap();
    run_ok(Command::new("mkfs.btrfs").arg("-q").arg(&src));
    refuse(&src, "btrfs (whole volume) is not supported yet");
}

#[test]
fn lvm_physical_volume() {
    // An LVM2 PV label in sector 1, as pvcreate writes it.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("lvm.img");
    let mut b = vec![0u8; 8 * MIB as usize];
    b[512..520].copy_from_slice(b"LABELONE");
    b[512 + 0x18..512 + 0x20].copy_from_slice(b"LVM2 001");
    std::fs::write(&src, b).unwrap();
    refuse(&src, "LVM (whole volume) is not supported yet");
}

#[test]
fn lvm_partition() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("lvm-part.img");
    std::fs::File::create(&src).unwrap().set_len(64 * MIB).unwrap();
    let mut child = Command::new("sfdisk").arg("-q").arg(&src).stdin(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "label: dos\nstart=2048, type=8e").unwrap();
    assert!(child.wait().unwrap().success());
    refuse(&src, "LVM (partition type 8e) is not supported yet");
}

#[test]
fn no_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let src = copy_sparse(&fixture_cloud(), dir.path(), "nokernel.img");
    let t = src.display().to_string();
    let ver = kernel_version(&t);
    debugfs(&t, &format!("rm /boot/vmlinuz-{ver}"), true);
    refuse(&src, "no kernel found in /boot");
    inspect_reports_impossible(&src, "no kernel found in /boot");
}

/// `inspect` reports what it found, with verdicts that give `why` conversion is impossible.
fn inspect_reports_impossible(src: &Path, why: &str) {
    let out = run_ok(pv2hvm().arg("inspect").arg(src).args(["--format", "json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["os"]["distro"], "debian", "the rest is still reported");
    for v in ["xen_hvm", "nitro"] {
        assert_eq!(r["verdicts"][v]["possible"], false);
        let missing = r["verdicts"][v]["missing"][0].as_str().unwrap();
        assert!(missing.contains(why), "{missing}");
    }
    let text = stdout(&run_ok(pv2hvm().arg("inspect").arg(src)));
    assert!(text.contains("verdict") && text.contains(why), "{text}");
}

#[test]
fn no_bootloader_config() {
    let dir = tempfile::tempdir().unwrap();
    let src = copy_sparse(&fixture_cloud(), dir.path(), "noconfig.img");
    debugfs(&src.display().to_string(), "rm /boot/grub/menu.lst", true);
    refuse(&src, "no bootloader config found");
    inspect_reports_impossible(&src, "no bootloader config found");
    let out = run_ok(pv2hvm().arg("inspect").arg(&src).args(["--format", "json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["bootloader"].is_null());
    assert!(stdout(&run_ok(pv2hvm().arg("inspect").arg(&src))).contains("bootloader   none found"));
}

#[test]
fn xen_only_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let src = copy_sparse(&fixture_cloud(), dir.path(), "xenonly.img");
    let t = src.display().to_string();
    let ver = kernel_version(&t);
    let config = format!("/boot/config-{ver}");
    let text = guest_cat(&t, &config);
    guest_write(&t, &config, &format!("{text}CONFIG_X86_64_XEN=y\n"));
    refuse(&src, "cannot run as an HVM guest");
    // inspect reports it as verdicts rather than failing.
    let out = run_ok(pv2hvm().arg("inspect").arg(&src).args(["--format", "json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for v in ["xen_hvm", "nitro"] {
        assert_eq!(r["verdicts"][v]["possible"], false);
        let why = r["verdicts"][v]["missing"][0].as_str().unwrap();
        assert!(why.contains("sets CONFIG_X86_64_XEN=y (a Xen PV-only kernel)"), "{why}");
    }
}

#[test]
fn destination_on_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    run_ok(Command::new("mount").args(["-t", "tmpfs", "-o", "size=64m", "pv2hvm-full"]).arg(&small));
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&small);
    let src = fixture_cloud();
    let before = sha256(&src);
    let dst = small.join("out.img");
    let out = pv2hvm().arg("convert").arg(&src).arg(&dst).arg("-q").output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!dst.exists());
    assert_eq!(std::fs::read_dir(&small).unwrap().count(), 0, "nothing may be left on the full disk");
    assert_eq!(sha256(&src), before);
}

#[test]
fn existing_destination_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("out.img");
    std::fs::write(&dst, b"keep me").unwrap();
    let out = pv2hvm().arg("convert").arg(fixture_cloud()).arg(&dst).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("already exists (pass --force to replace it)"));
    assert_eq!(std::fs::read(&dst).unwrap(), b"keep me");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no DST.partial either");
    // --force replaces it with a converted disk.
    run_ok(pv2hvm().arg("convert").arg(fixture_cloud()).arg(&dst).args(["--force", "--keep-initramfs", "-q"]));
    e2fsck_clean(&dst.display().to_string());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // The destination can never be the source, even with --force.
    let src = copy_sparse(&fixture_cloud(), dir.path(), "pv.img");
    let before = sha256(&src);
    let out = pv2hvm().arg("convert").arg(&src).arg(&src).args(["--force", "-q"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains(&format!("the destination {} is the source", src.display())), "{}", stderr(&out));
    assert_eq!(sha256(&src), before);
    assert!(!dir.path().join("pv.img.partial").exists());
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture_cloud();
    let before = sha256(&src);
    let dst = dir.path().join("out.img");
    for (args, expect) in [
        (vec![], "the following required arguments were not provided"),
        (vec!["--layout", "zfs"], "invalid value 'zfs' for '--layout <LAYOUT>'"),
        (vec!["--in-place", "--undo"], "a value is required for '--undo <UNDO>'"),
    ] {
        let mut cmd = pv2hvm();
        cmd.current_dir(dir.path()).arg("convert");
        if !args.is_empty() {
            cmd.arg(&src).arg(&dst);
        }
        let out = cmd.args(&args).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing is written");
    }
    assert_eq!(sha256(&src), before);
}

#[test]
#[should_panic(expected = "failed: debugfs")]
fn the_debugfs_helper_sees_failed_requests() {
    // debugfs exits 0 when a request fails; the helper must not.
    debugfs(&fixture_cloud().display().to_string(), "stat /no/such/file", false);
}
