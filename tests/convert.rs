//! Conversion over the real binary: layouts, both source shapes, file edits with backups,
//! metadata kept, journal replay, dry runs that write nothing, and an untouched source.

mod common;

use std::process::Command;

/// The first `len` bytes of an image, without reading the rest.
fn head(path: &std::path::Path, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(path).unwrap(), &mut buf, 0).unwrap();
    buf
}

use common::*;

#[test]
fn unpartitioned_source_to_mbr() {
    let src = fixture_cloud();
    let before = sha256(&src);
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("hvm.img");
    let out = run_ok(pv2hvm().arg("convert").arg(&src).arg(&dst).args(["--layout", "mbr", "-q"]));
    assert_eq!(sha256(&src), before, "the source must stay byte-identical");
    assert!(stdout(&out).contains("converted"));

    // 2 GiB source: 2 GiB rounded up, plus 1 GiB.
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), 3 << 30);
    let pt = partition_table(&dst);
    let parts = &pt["partitiontable"]["partitions"];
    assert_eq!(pt["partitiontable"]["label"], "dos");
    assert_eq!(parts.as_array().unwrap().len(), 1);
    assert_eq!(parts[0]["start"], 2048);
    assert_eq!(parts[0]["type"], "83");
    assert_eq!(parts[0]["bootable"], true);

    // boot.img in the MBR, patched for core.img at LBA 1.
    let disk = head(&dst, 2 * MIB);
    let boot = std::fs::read("/usr/lib/grub/i386-pc/boot.img").unwrap();
    assert_eq!(&disk[..0x5C], &boot[..0x5C]);
    assert_eq!(u64::from_le_bytes(disk[0x5C..0x64].try_into().unwrap()), 1);
    assert_eq!(&disk[0x66..0x68], &[0x90, 0x90]);
    assert_eq!(&disk[0x68..0x1B8], &boot[0x68..0x1B8]);
    // core.img right after, with its blocklist pointing at LBA 2.
    assert_eq!(u64::from_le_bytes(disk[512 + 0x1F4..512 + 0x1FC].try_into().unwrap()), 2);
    drop(disk);

    let t = at(&dst, MIB);
    e2fsck_clean(&t);
    let uuid = debugfs(&t, "stats", false)
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem UUID:").map(|u| u.trim().to_string()))
        .unwrap();
    let menu = guest_cat(&t, "/boot/grub/menu.lst");
    assert!(menu.contains("root (hd0,0)\n"), "{menu}");
    assert!(menu.contains(&format!("root=UUID={uuid} ro console=tty0 console=ttyS0,115200n8")), "{menu}");
    let orig = guest_cat(&t, "/boot/grub/menu.lst.pv2hvm-orig");
    assert!(orig.contains("root (hd0)\n") && orig.contains("root=/dev/xvda1 ro console=hvc0"), "{orig}");
    let fstab = guest_cat(&t, "/etc/fstab");
    assert!(fstab.contains(&format!("UUID={uuid}  /  ext4")), "{fstab}");
    assert!(guest_cat(&t, "/etc/fstab.pv2hvm-orig").contains("/dev/xvda1  /  ext4"));
}

#[test]
fn gpt_layout_has_bios_boot_partition() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("hvm.img");
    run_ok(pv2hvm().arg("convert").arg(fixture_cloud()).arg(&dst).args(["--layout", "gpt", "--size", "4", "-q"]));
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), 4 << 30);
    let pt = partition_table(&dst);
    assert_eq!(pt["partitiontable"]["label"], "gpt");
    let parts = pt["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert!(parts[0]["node"].as_str().unwrap().ends_with('1'));
    assert_eq!(parts[0]["start"], 4096);
    assert_eq!(parts[0]["type"], "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    assert_eq!(parts[1]["start"], 2048);
    assert_eq!(parts[1]["size"], 2048);
    assert_eq!(parts[1]["type"], "21686148-6449-6E6F-744E-656564454649");
    let disk = head(&dst, 2 * MIB);
    assert_eq!(u64::from_le_bytes(disk[0x5C..0x64].try_into().unwrap()), 2048);
    let core = MIB as usize;
    assert_eq!(u64::from_le_bytes(disk[core + 0x1F4..core + 0x1FC].try_into().unwrap()), 2049);
    e2fsck_clean(&at(&dst, 2 * MIB));
}

#[test]
fn partitioned_source_at_sector_63_moves_to_1mib() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_mbr_disk(&fixture_cloud(), dir.path(), 63);
    let before = sha256(&src);
    let dst = dir.path().join("hvm.img");
    let plan =
        run_ok(pv2hvm().arg("convert").arg(&src).arg(&dst).args(["--layout", "mbr", "--dry-run", "--format", "json"]));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["source_layout"]["shape"], "mbr");
    assert_eq!(plan["source_layout"]["fs_offset"], 63 * 512);
    run_ok(pv2hvm().arg("convert").arg(&src).arg(&dst).args(["--layout", "mbr", "-q"]));
    assert_eq!(sha256(&src), before);
    let pt = partition_table(&dst);
    assert_eq!(pt["partitiontable"]["partitions"][0]["start"], 2048);
    let t = at(&dst, MIB);
    e2fsck_clean(&t);
    let menu = guest_cat(&t, "/boot/grub/menu.lst");
    assert!(menu.contains("root (hd0,0)\n") && menu.contains("console=ttyS0,115200n8"), "{menu}");
}

#[test]
fn dry_run_writes_nothing_and_shows_diffs() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("hvm.img");
    let src = fixture_cloud();
    let before = sha256(&src);
    let out = run_ok(pv2hvm().arg("convert").arg(&src).arg(&dst).args(["--layout", "mbr", "--dry-run"]));
    let text = stdout(&out);
    assert!(text.contains("--- a/boot/grub/menu.lst\n+++ b/boot/grub/menu.lst\n"), "{text}");
    assert!(text.contains("\n-root (hd0)\n") && text.contains("\n+root (hd0,0)\n"), "{text}");
    assert!(text.contains("original kept as /etc/fstab.pv2hvm-orig"), "{text}");
    assert!(text.contains("device map   /dev/xvda1 -> partition 1"), "{text}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "dry run wrote something");
    let out =
        run_ok(pv2hvm().arg("convert").arg(&src).arg(&dst).args(["--layout", "mbr", "--dry-run", "--format", "json"]));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["schema_version"], 1);
    assert_eq!(plan["disk"]["kind"], "mbr");
    assert_eq!(plan["disk"]["root_start"], MIB);
    let edits = plan["edits"].as_array().unwrap();
    let paths: Vec<&str> = edits.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/boot/grub/menu.lst", "/etc/fstab", "/etc/initramfs-tools/modules"]);
    assert_eq!(edits[0]["backup"], "/boot/grub/menu.lst.pv2hvm-orig");
    assert!(plan["bootloader"]["embedded_config"].as_str().unwrap().contains("legacy_configfile /boot/grub/menu.lst"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert_eq!(sha256(&src), before);
}

#[test]
fn console_network_and_metadata_edits() {
    let dir = tempfile::tempdir().unwrap();
    let src = copy_sparse(&fixture_cloud(), dir.path(), "pv.img");
    let t = src.display().to_string();
    // A sysvinit/upstart-era guest: hvc0 gettys, persistent-net rules, menu.lst as a symlink
    // to grub.conf, and an fstab with an SELinux label, odd owner and mode.
    guest_write(&t, "/etc/inittab", "id:3:initdefault:\nco:2345:respawn:/sbin/agetty hvc0 9600 vt100-nav\n");
    for d in ["/etc/init", "/etc/udev/rules.d"] {
        if !guest_exists(&t, d) {
            debugfs(&t, &format!("mkdir {d}"), true);
        }
    }
    guest_write(
        &t,
        "/etc/init/hvc0.conf",
        "start on stopped rc RUNLEVEL=[2345]\nrespawn\nexec /sbin/getty -8 38400 hvc0\n",
    );
    guest_write(
        &t,
        "/etc/udev/rules.d/70-persistent-net.rules",
        "SUBSYSTEM==\"net\", ATTR{address}==\"12:34:56:78:9a:bc\", NAME=\"eth0\"\n",
    );
    let menu = guest_cat(&t, "/boot/grub/menu.lst");
    guest_write(&t, "/boot/grub/grub.conf", &menu);
    debugfs(&t, "rm /boot/grub/menu.lst", true);
    debugfs(&t, "symlink /boot/grub/menu.lst grub.conf", true);
    debugfs(&t, "ea_set /etc/fstab security.selinux system_u:object_r:etc_t:s0", true);
    debugfs(&t, "set_inode_field /etc/fstab uid 7", true);
    debugfs(&t, "set_inode_field /etc/fstab gid 9", true);
    debugfs(&t, "set_inode_field /etc/fstab mode 0100640", true);
    e2fsck_clean(&t);

    let dst = dir.path().join("hvm.img");
    let out = run_ok(pv2hvm().arg("convert").arg(&src).arg(&dst).args(["--layout", "mbr", "--format", "json", "-q"]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let edits = report["report"]["plan"]["edits"].as_array().unwrap();
    let actions: Vec<(String, String)> =
        edits.iter().map(|e| (e["path"].as_str().unwrap().into(), e["action"].as_str().unwrap().into())).collect();
    assert_eq!(
        actions,
        [
            ("/boot/grub/grub.conf".to_string(), "rewrite".to_string()),
            ("/etc/fstab".into(), "rewrite".into()),
            ("/etc/inittab".into(), "rewrite".into()),
            ("/etc/init/ttyS0.conf".into(), "create".into()),
            ("/etc/udev/rules.d/70-persistent-net.rules".into(), "move-aside".into()),
            ("/etc/initramfs-tools/modules".into(), "rewrite".into()),
        ]
    );

    let d = at(&dst, MIB);
    e2fsck_clean(&d);
    // The symlink still points at grub.conf, which was rewritten with its backup beside it.
    assert!(debugfs(&d, "stat /boot/grub/menu.lst", false).contains("Fast link dest: \"grub.conf\""));
    assert!(guest_cat(&d, "/boot/grub/grub.conf").contains("root (hd0,0)"));
    assert!(guest_cat(&d, "/boot/grub/grub.conf.pv2hvm-orig").contains("root (hd0)\n"));
    assert!(guest_cat(&d, "/etc/inittab").contains("co:2345:respawn:/sbin/agetty ttyS0 115200 vt100-nav"));
    assert!(guest_cat(&d, "/etc/inittab.pv2hvm-orig").contains("agetty hvc0 9600"));
    assert!(guest_cat(&d, "/etc/init/ttyS0.conf").contains("exec /sbin/getty -8 115200 ttyS0"));
    assert!(!guest_exists(&d, "/etc/udev/rules.d/70-persistent-net.rules"));
    assert!(guest_exists(&d, "/etc/udev/rules.d/70-persistent-net.rules.pv2hvm-orig"));
    // Owner, mode and SELinux label survive the rewrite; the backup is the original inode.
    let stat = debugfs(&d, "stat /etc/fstab", false);
    assert!(stat.contains("Mode:  0640"), "{stat}");
    assert!(stat.contains("User:     7   Group:     9"), "{stat}");
    let ea = debugfs(&d, "ea_get /etc/fstab security.selinux", false);
    assert!(ea.contains("system_u:object_r:etc_t:s0"), "{ea}");
    assert!(
        debugfs(&d, "ea_get /etc/fstab.pv2hvm-orig security.selinux", false).contains("system_u:object_r:etc_t:s0")
    );
}

/// A copy of the cloud fixture whose journal holds a committed transaction, not replayed, that
/// rewrites the data block of `path` with `change`.
fn with_journalled(dir: &std::path::Path, path: &str, change: fn(&str) -> String) -> std::path::PathBuf {
    let src = copy_sparse(&fixture_cloud(), dir, "dirty.img");
    journal_rewrite(&src, path, change);
    src
}

#[test]
fn journal_needing_recovery_is_replayed_on_the_copy_only() {
    for layout in ["mbr", "in-place"] {
        let dir = tempfile::tempdir().unwrap();
        let src = with_journalled(dir.path(), "/etc/hostname", |t| t.to_ascii_uppercase());
        let t = src.display().to_string();
        let before = sha256(&src);
        let out_dir = dir.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let dst = out_dir.join("hvm.img");
        let out = run_ok(pv2hvm().arg("convert").arg(&src).arg(&dst).args(["--layout", layout, "-q"]));
        assert!(stdout(&out).contains("journal      needs recovery: replayed on the copy"), "{}", stdout(&out));
        assert_eq!(sha256(&src), before, "the source journal must not be replayed");
        assert!(debugfs(&t, "stats", false).contains("needs_recovery"));
        let d = if layout == "mbr" { at(&dst, MIB) } else { dst.display().to_string() };
        assert!(!debugfs(&d, "stats", false).contains("needs_recovery"));
        assert_eq!(guest_cat(&d, "/etc/hostname"), "PV-GUEST\n", "{layout}: the transaction is in DST");
        e2fsck_clean(&d);
        let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("hvm.img")], "the scratch copy is gone");
        assert!(
            stdout(&out).contains("journal replayed: the 4 file(s) the plan read are unchanged"),
            "{}",
            stdout(&out)
        );
    }
}

#[test]
fn a_replay_that_changes_an_edited_file_is_planned_again() {
    let dir = tempfile::tempdir().unwrap();
    let src = with_journalled(dir.path(), "/etc/fstab", |t| t.replace("errors=remount-ro", "errors=remount-RO"));
    let dst = dir.path().join("hvm.img");
    let out = run_ok(pv2hvm().arg("convert").arg(&src).arg(&dst).arg("-q"));
    let text = stdout(&out);
    assert!(text.contains("journal replayed: it changed /etc/fstab, so the plan was made again"), "{text}");
    let d = dst.display().to_string();
    let fstab = guest_cat(&d, "/etc/fstab");
    assert!(fstab.contains("UUID=") && fstab.contains("errors=remount-RO"), "the replayed fstab, rewritten: {fstab}");
    assert!(
        guest_cat(&d, "/etc/fstab.pv2hvm-orig").contains("errors=remount-RO"),
        "the backup is the replayed original"
    );
    e2fsck_clean(&d);
}

#[test]
fn doctor_lists_host_tools() {
    let out = run_ok(pv2hvm().arg("doctor"));
    let text = stdout(&out);
    for what in ["GRUB i386-pc boot.img", "grub-mkimage", "libext2fs", "e2fsck", "qemu-system-x86_64"] {
        assert!(text.lines().any(|l| l.starts_with("ok") && l.contains(what)), "{what}: {text}");
    }
    let out = pv2hvm().args(["doctor", "--grub-dir", "/nonexistent"]).output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(stdout(&out).contains("install the grub-pc-bin package"));
    let dir = tempfile::tempdir().unwrap();
    let never = dir.path().join("never.img");
    let out =
        pv2hvm().arg("convert").arg(fixture_cloud()).arg(&never).args(["--grub-dir", "/nonexistent"]).output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(stderr(&out).contains("install the grub-pc-bin package"), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing is written");
}

#[test]
fn a_moved_filesystem_takes_only_the_blocks_it_uses() {
    // 32 MiB of random bytes in a file that is then deleted: its blocks are free, not zero.
    let dir = tempfile::tempdir().unwrap();
    let src = copy_sparse(&fixture_cloud(), dir.path(), "pv.img");
    let t = src.display().to_string();
    let junk = dir.path().join("junk");
    run_ok(Command::new("sh").arg("-c").arg(format!("head -c 32M /dev/urandom > {}", junk.display())));
    debugfs(&t, &format!("write {} /junk", junk.display()), true);
    let blocks: Vec<u64> = debugfs(&t, "blocks /junk", false).split_whitespace().map(|b| b.parse().unwrap()).collect();
    assert!(blocks.len() >= 8192, "{}", blocks.len());
    debugfs(&t, "rm /junk", true);
    let dst = dir.path().join("hvm.img");
    run_ok(pv2hvm().arg("convert").arg(&src).arg(&dst).args(["--layout", "mbr", "--keep-initramfs", "-q"]));
    let d = at(&dst, MIB);
    e2fsck_clean(&d);
    let read = |path: &std::path::Path, at: u64| {
        let mut b = vec![0u8; 4096];
        std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(path).unwrap(), &mut b, at).unwrap();
        b
    };
    let mut checked = 0;
    for &b in blocks.iter().step_by(blocks.len() / 64) {
        assert!(read(&src, b * 4096).iter().any(|&x| x != 0), "block {b} of the source holds the deleted data");
        if debugfs(&d, &format!("testb {b}"), false).contains("not in use") {
            assert!(read(&dst, MIB + b * 4096).iter().all(|&x| x == 0), "free block {b} was carried over");
            checked += 1;
        }
    }
    assert!(checked > 32, "only {checked} sampled blocks stayed free");
}
