//! In-place conversion: the filesystem stays where it is, boot.img goes in sector 0 and
//! core.img in the post-MBR gap or the boot-loader inode, and the result is the source plus a
//! delta the report counts exactly.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::*;

const BLOCK: u64 = 512 << 10;

/// 512 KiB blocks in which two images differ (a shorter one reads as zeros past its end).
fn changed_blocks(a: &Path, b: &Path) -> u64 {
    let (fa, fb) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    let mut ba = vec![0u8; BLOCK as usize];
    let mut bb = vec![0u8; BLOCK as usize];
    let mut n = 0;
    for i in 0..la.max(lb).div_ceil(BLOCK) {
        for (f, len, buf) in [(&fa, la, &mut ba), (&fb, lb, &mut bb)] {
            buf.fill(0);
            let at = i * BLOCK;
            let avail = len.saturating_sub(at).min(BLOCK) as usize;
            f.read_exact_at(&mut buf[..avail], at).unwrap();
        }
        n += u64::from(ba != bb);
    }
    n
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::fs::File::open(path).unwrap().read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// core.img as boot.img and diskboot would load it from `disk`: the sector at boot.img's
/// 0x5C, then every run of the blocklist in that sector.
fn load_core_like_the_bios(disk: &Path) -> (u64, Vec<u8>) {
    let mbr = read_at(disk, 0, 512);
    let lba = u64::from_le_bytes(mbr[0x5C..0x64].try_into().unwrap());
    let first = read_at(disk, lba * 512, 512);
    let mut core = first.clone();
    let mut at = 0x1F4;
    loop {
        let start = u64::from_le_bytes(first[at..at + 8].try_into().unwrap());
        let len = u16::from_le_bytes(first[at + 8..at + 10].try_into().unwrap());
        if len == 0 {
            break;
        }
        let segment = u16::from_le_bytes(first[at + 10..at + 12].try_into().unwrap());
        assert_eq!(u64::from(segment), 0x820 + 0x20 * (core.len() as u64 / 512 - 1), "load address of run at {at:#x}");
        core.extend(read_at(disk, start * 512, usize::from(len) * 512));
        at -= 12;
    }
    (lba, core)
}

fn convert_json(src: &Path, dst: &Path, extra: &[&str]) -> serde_json::Value {
    let out = run_ok(pv2hvm().arg("convert").arg(src).arg(dst).args(["--format", "json", "-q"]).args(extra));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["report"].clone()
}

#[test]
fn whole_disk_in_place_is_the_source_plus_a_counted_delta() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture_cloud();
    let before = sha256(&src);
    let dst = dir.path().join("hvm.img");
    let report = convert_json(&src, &dst, &[]);
    let plan = &report["plan"];
    assert_eq!(plan["disk"]["kind"], "in-place");
    assert_eq!(plan["disk"]["core_placement"], "boot-loader-inode");
    assert_eq!(plan["device_map"][0]["nitro_device"], "/dev/nvme0n1");
    assert_eq!(plan["device_map"][0]["xen_hvm_device"], "/dev/xvda");
    assert_eq!(plan["device_map"][0]["emulated_device"], "/dev/sda");
    assert!(plan["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("growpart")), "{plan}");
    assert_eq!(sha256(&src), before, "the source is never written");
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), std::fs::metadata(&src).unwrap().len());

    // Sector 0: boot.img with no partition entries; the filesystem at 0 is clean.
    let mbr = read_at(&dst, 0, 512);
    assert_eq!(&mbr[0x1FE..], &[0x55, 0xAA]);
    assert!(mbr[0x1B8..0x1FE].iter().all(|&b| b == 0), "no disk signature, no partition");
    e2fsck_clean(&dst.display().to_string());
    let t = dst.display().to_string();
    let menu = guest_cat(&t, "/boot/grub/menu.lst");
    assert!(menu.contains("root (hd0)\n") && !menu.contains("(hd0,0)"), "(hd0) names the whole disk: {menu}");
    assert!(
        guest_cat(&t, "/etc/fstab")
            .contains(&format!("UUID={}", plan["source_layout"]["fs"]["uuid"].as_str().unwrap()))
    );

    // core.img, loaded the way the BIOS path loads it, is what the boot-loader inode holds.
    let (lba, loaded) = load_core_like_the_bios(&dst);
    assert_eq!(report["core_lba"], lba);
    let dumped = dir.path().join("inode5");
    debugfs(&t, &format!("dump <5> {}", dumped.display()), false);
    let inode5 = std::fs::read(&dumped).unwrap();
    assert!(inode5.len() > 100 << 10, "core.img is in inode 5 ({} bytes)", inode5.len());
    assert!(loaded.len() >= inode5.len() && loaded.len() - inode5.len() < 512, "{} {}", loaded.len(), inode5.len());
    assert_eq!(&loaded[..inode5.len()], &inode5[..], "the blocklist reaches exactly inode 5's blocks");
    let stat = debugfs(&t, "stat <5>", false);
    assert!(stat.contains("Type: regular"), "{stat}");

    // The delta the report counts is the measured difference, and it is small.
    let delta = &report["delta"];
    assert_eq!(delta["block_size"], BLOCK);
    let measured = changed_blocks(&src, &dst);
    assert_eq!(delta["changed_blocks"], measured, "{delta}");
    assert_eq!(delta["upload_bytes"], measured * BLOCK);
    assert!(measured < 64, "{measured} blocks changed");
    // The plan's estimate is of the right size.
    let estimate = plan["delta_estimate"]["blocks"].as_u64().unwrap();
    assert!(estimate >= measured / 2 && estimate <= measured * 2, "estimated {estimate}, measured {measured}");
}

#[test]
fn without_driver_injection_only_a_handful_of_blocks_change() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("hvm.img");
    let report = convert_json(&fixture_cloud(), &dst, &["--keep-initramfs"]);
    let measured = changed_blocks(&fixture_cloud(), &dst);
    assert_eq!(report["delta"]["changed_blocks"], measured);
    assert!(measured <= 12, "{measured} blocks changed");
}

#[test]
fn partitioned_sources_keep_their_table() {
    for (start, placement) in [(63u64, "boot-loader-inode"), (2048, "gap")] {
        let dir = tempfile::tempdir().unwrap();
        let src = make_mbr_disk(&fixture_cloud(), dir.path(), start);
        let before = sha256(&src);
        let dst = dir.path().join("hvm.img");
        let report = convert_json(&src, &dst, &[]);
        let disk = &report["plan"]["disk"];
        assert_eq!(disk["core_placement"], placement, "start {start}");
        assert_eq!(disk["root_start"], start * 512);
        assert_eq!(report["plan"]["device_map"][0]["nitro_device"], "/dev/nvme0n1p1");
        assert_eq!(sha256(&src), before);
        let parts = |p: &Path| {
            let mut v = partition_table(p)["partitiontable"]["partitions"].clone();
            for e in v.as_array_mut().unwrap() {
                e.as_object_mut().unwrap().remove("node");
            }
            v
        };
        assert_eq!(parts(&dst), parts(&src));
        assert_eq!(read_at(&dst, 0x1B8, 0x46), read_at(&src, 0x1B8, 0x46), "signature and table kept");
        e2fsck_clean(&at(&dst, start * 512));
        let (lba, loaded) = load_core_like_the_bios(&dst);
        assert_eq!(report["core_lba"], lba);
        if start == 2048 {
            assert_eq!(lba, 1, "the gap after the MBR");
        } else {
            assert!(lba > start, "inside the partition's filesystem");
        }
        assert!(loaded.len() > 100 << 10);
        assert_eq!(report["delta"]["changed_blocks"], changed_blocks(&src, &dst));
        let menu = guest_cat(&at(&dst, start * 512), "/boot/grub/menu.lst");
        assert!(menu.contains("(hd0,0)"), "{menu}");
    }
}

/// Expects `convert SRC` to refuse with `expect` and exit 3, leaving nothing behind.
fn refuse(src: &Path, args: &[&str], expect: &str) {
    let out_dir = tempfile::tempdir().unwrap();
    let dst = out_dir.path().join("hvm.img");
    let before = sha256(src);
    let out = pv2hvm().arg("convert").arg(src).arg(&dst).arg("-q").args(args).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(expect), "{expect:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0, "nothing is left behind");
    assert_eq!(sha256(src), before);
}

#[test]
fn in_place_refusals_name_the_layout_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let src = copy_sparse(&fixture_cloud(), dir.path(), "pv.img");
    refuse(&src, &["--size", "1"], "an in-place disk keeps the source's 2147483648 bytes: --size cannot shrink it");

    let t = src.display().to_string();
    debugfs(&t, "sif <5> size 4096", true);
    refuse(&src, &[], "boot-loader inode 5, which already holds 4096 bytes (another bootloader's): use --layout mbr");
    debugfs(&t, "sif <5> size 0", true);

    debugfs(&t, "ssv free_blocks_count 100", true);
    refuse(
        &src,
        &[],
        "in place, core.img needs 1048576 bytes of free space in the root filesystem, which has 409600: use --layout mbr",
    );
}

#[test]
fn a_grown_in_place_disk_keeps_the_filesystem_and_zeroes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("hvm.img");
    let report = convert_json(&fixture_cloud(), &dst, &["--size", "3", "--keep-initramfs"]);
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), 3 << 30);
    assert_eq!(report["plan"]["disk"]["disk_size"], 3u64 << 30);
    e2fsck_clean(&dst.display().to_string());
    let status =
        Command::new("cmp").arg("-n").arg("1048576").arg("-i").arg("2147483648:0").arg(&dst).arg("/dev/zero").status();
    assert!(status.unwrap().success(), "the grown part reads as zeros");
}

#[test]
fn converting_an_image_itself_is_undone_by_e2undo() {
    for start in [None, Some(63u64)] {
        let dir = tempfile::tempdir().unwrap();
        let img = match start {
            None => copy_sparse(&fixture_cloud(), dir.path(), "pv.img"),
            Some(s) => make_mbr_disk(&fixture_cloud(), dir.path(), s),
        };
        let original = copy_sparse(&img, dir.path(), "original.img");
        let before = sha256(&img);
        let undo = dir.path().join("pv.undo");
        let out = run_ok(
            pv2hvm()
                .arg("convert")
                .arg("--in-place")
                .arg(&img)
                .arg("--undo")
                .arg(&undo)
                .args(["--format", "json", "-q"]),
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let offset = start.unwrap_or(0) * 512;
        e2fsck_clean(&at(&img, offset));
        assert_eq!(report["report"]["delta"]["changed_blocks"], changed_blocks(&original, &img));
        let (lba, _) = load_core_like_the_bios(&img);
        assert_eq!(report["report"]["core_lba"], lba);
        assert_ne!(sha256(&img), before);
        run_ok(Command::new("e2undo").arg(&undo).arg(&img));
        assert_eq!(sha256(&img), before, "e2undo gives the original back, byte for byte");
    }
}

#[test]
fn converting_an_image_itself_needs_an_undo_decision_and_the_in_place_layout() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_sparse(&fixture_cloud(), dir.path(), "pv.img");
    let before = sha256(&img);
    for (args, expect) in [
        (vec![], "pass --undo FILE to be able to restore it with e2undo, or --no-undo"),
        (vec!["--no-undo", "--layout", "mbr"], "--in-place keeps the filesystem where it is: --layout mbr moves it"),
        (vec!["--no-undo", "--size", "5"], "--in-place keeps the image's size"),
    ] {
        let out = pv2hvm().arg("convert").arg("--in-place").arg(&img).args(&args).arg("-q").output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains(expect), "{expect:?}: {err}");
        assert_eq!(sha256(&img), before);
    }
    let undo = dir.path().join("taken.undo");
    std::fs::write(&undo, b"someone else's").unwrap();
    let out = pv2hvm().arg("convert").arg("--in-place").arg(&img).arg("--undo").arg(&undo).arg("-q").output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("taken.undo"), "{}", stderr(&out));
    assert_eq!(sha256(&img), before);
    assert_eq!(std::fs::read(&undo).unwrap(), b"someone else's");
    // Without an undo file, by choice.
    run_ok(pv2hvm().arg("convert").arg("--in-place").arg(&img).args(["--no-undo", "-q"]));
    e2fsck_clean(&img.display().to_string());
}
