//! The mkinitrd/nash path on a synthetic RHEL/CentOS 5 shaped guest built by
//! tests/fixtures/build-nash-guest.sh: modules go flat into the initrd's /lib, nash's init
//! gets `insmod` lines (dependencies first, before the root device is made), and
//! /etc/modprobe.conf gets `scsi_hostadapter` aliases for future mkinitrd runs.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn build_guest(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("centos5.img");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build-nash-guest.sh");
    run_ok(Command::new("bash").arg(script).arg(fixture_cloud()).arg(&out));
    out
}

/// Splits concatenated gzip members and unpacks each, in order, with the host's gzip and cpio.
fn unpack_members(initrd: &[u8], root: &Path, scratch: &Path) -> usize {
    let mut members = 0;
    let mut rest = initrd;
    while let Some(start) = rest.iter().position(|&b| b != 0) {
        rest = &rest[start..];
        assert_eq!(&rest[..2], &[0x1f, 0x8b], "a gzip member");
        // gzip -l does not give member lengths; find the member's end by decoding it.
        let mut dec = flate2::bufread::GzDecoder::new(rest);
        std::io::copy(&mut dec, &mut std::io::sink()).unwrap();
        let used = rest.len() - dec.into_inner().len();
        std::fs::write(scratch, &rest[..used]).unwrap();
        let mut cat = Command::new("gzip").arg("-dc").arg(scratch).stdout(Stdio::piped()).spawn().unwrap();
        let ok = Command::new("cpio")
            .args(["-idmu", "--quiet", "--no-absolute-filenames"])
            .current_dir(root)
            .stdin(cat.stdout.take().unwrap())
            .status()
            .unwrap();
        assert!(cat.wait().unwrap().success() && ok.success(), "gzip/cpio could not unpack member {members}");
        rest = &rest[used..];
        members += 1;
    }
    members
}

#[test]
fn nash_initrd_gets_insmod_lines_and_modprobe_conf_gets_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let src = build_guest(dir.path());
    let before = sha256(&src);
    let t = src.display().to_string();
    let ver = kernel_version(&t);
    let initrd = format!("/boot/initrd-{ver}.img");
    let original_init = {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("i");
        debugfs(&t, &format!("dump {initrd} {}", f.display()), false);
        let root = d.path().join("r");
        std::fs::create_dir(&root).unwrap();
        unpack_members(&std::fs::read(&f).unwrap(), &root, &d.path().join("s"));
        std::fs::read_to_string(root.join("init")).unwrap()
    };

    let dst = dir.path().join("hvm.img");
    let out = run_ok(pv2hvm().arg("convert").arg(&src).arg(&dst).args(["--format", "json", "-q"]));
    assert_eq!(sha256(&src), before, "the source is only read");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ird = &report["report"]["plan"]["initramfs"][0];
    assert_eq!(ird["generator"], "mkinitrd");
    assert_eq!(ird["path"], initrd.as_str());
    let d = dst.display().to_string();
    e2fsck_clean(&d);

    let file = dir.path().join("initrd");
    debugfs(&d, &format!("dump {initrd} {}", file.display()), false);
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let members = unpack_members(&std::fs::read(&file).unwrap(), &root, &dir.path().join("member"));
    assert_eq!(members, 2, "the original archive and one appended");

    // Modules sit flat in /lib, each insmod'ed after what it depends on and before mkblkdevs.
    let init = std::fs::read_to_string(root.join("init")).unwrap();
    let lines: Vec<&str> = init.lines().collect();
    let pos = |needle: &str| {
        lines.iter().position(|l| *l == needle).unwrap_or_else(|| panic!("init lacks {needle:?}:\n{init}"))
    };
    for m in ["xen-blkfront", "xen-netfront", "ena", "scsi_common", "scsi_mod", "libata", "ata_piix", "sd_mod"] {
        assert!(root.join(format!("lib/{m}.ko")).is_file(), "lib/{m}.ko missing");
        assert!(pos(&format!("insmod /lib/{m}.ko")) < pos("mkblkdevs"), "{m} loads before the root device");
    }
    for (dep, user) in
        [("scsi_common", "scsi_mod"), ("scsi_mod", "libata"), ("libata", "ata_piix"), ("scsi_mod", "sd_mod")]
    {
        assert!(pos(&format!("insmod /lib/{dep}.ko")) < pos(&format!("insmod /lib/{user}.ko")), "{dep} before {user}");
    }
    assert_eq!(init.matches("insmod /lib/xen-blkfront.ko").count(), 1, "an existing insmod is not repeated");
    for l in original_init.lines() {
        assert!(lines.contains(&l), "the original init line {l:?} is kept");
    }
    assert_eq!(lines[0], "#!/bin/nash");

    let conf = guest_cat(&d, "/etc/modprobe.conf");
    let orig = guest_cat(&d, "/etc/modprobe.conf.pv2hvm-orig");
    assert_eq!(orig, "alias eth0 xennet\nalias scsi_hostadapter xenblk\n");
    assert!(conf.starts_with(&orig), "{conf}");
    for (n, m) in [(1, "xen-blkfront"), (2, "ata_piix"), (3, "sd_mod")] {
        assert!(conf.lines().any(|l| l == format!("alias scsi_hostadapter{n} {m}")), "{conf}");
    }
    // nash's mkrootdev takes root= from the kernel command line over its own argument (sda1),
    // so the root device is named by UUID there.
    let menu = guest_cat(&d, "/boot/grub/menu.lst");
    let uuid = report["report"]["plan"]["source_layout"]["fs"]["uuid"].as_str().unwrap();
    assert!(menu.contains(&format!("root=UUID={uuid}")), "{menu}");
    assert!(menu.contains("console=ttyS0,115200n8") && !menu.contains("xvc0"), "{menu}");
    assert!(guest_cat(&d, "/etc/inittab").contains("agetty ttyS0 115200"));
}
