//! Driver injection checked from the host: each new initramfs is unpacked with the system's
//! decompressors and cpio the way the kernel unpacks it (every archive in order, later files
//! over earlier ones), its modules and kmod indexes are checked (also through the host's
//! modprobe), and the load list and the guest's generator config are verified. By default
//! the original bytes must be kept whole, with one archive appended.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use pv2hvm::guest::initramfs::Initramfs;

struct Converted {
    _dir: tempfile::TempDir,
    target: String,
    report: serde_json::Value,
    unpacked: std::path::PathBuf,
    kernel: String,
    original: Vec<u8>,
    rebuilt: Vec<u8>,
}

fn dump(target: &str, path: &str, out: &Path) -> Vec<u8> {
    debugfs(target, &format!("dump {path} {}", out.display()), false);
    std::fs::read(out).unwrap()
}

/// Unpacks one compressed archive run (`bytes`) into `root` with the host's tools, over what
/// is there.
fn unpack(bytes: &[u8], root: &Path, scratch: &Path) {
    std::fs::write(scratch, bytes).unwrap();
    let decompressor: &[&str] = match &bytes[..4] {
        [0x1f, 0x8b, ..] => &["gzip", "-dc"],
        [0xfd, b'7', ..] => &["xz", "-dc"],
        [0x5d, 0, 0, _] => &["xz", "--format=lzma", "-dc"],
        [0x02, 0x21, 0x4c, 0x18] => &["lz4", "-dc"],
        [0x28, 0xb5, 0x2f, 0xfd] => &["zstd", "-dcq"],
        [b'B', b'Z', b'h', _] => &["bzip2", "-dc"],
        other => panic!("unexpected compression {other:?}"),
    };
    let mut cat =
        Command::new(decompressor[0]).args(&decompressor[1..]).arg(scratch).stdout(Stdio::piped()).spawn().unwrap();
    let status = Command::new("cpio")
        .args(["-idmu", "--quiet", "--no-absolute-filenames"])
        .current_dir(root)
        .stdin(cat.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(cat.wait().unwrap().success(), "{decompressor:?} failed on the new initramfs");
    assert!(status.success(), "cpio could not unpack the new initramfs");
}

/// Converts `src` (append mode unless `rebuild`) and unpacks the new initramfs.
fn convert(src: &Path) -> Converted {
    convert_with(src, false)
}

fn convert_with(src: &Path, rebuild: bool) -> Converted {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("hvm.img");
    let mode = if rebuild { "rebuild" } else { "append" };
    let out = run_ok(pv2hvm().arg("convert").arg(src).arg(&dst).args([
        "--layout",
        "mbr",
        "--initramfs",
        mode,
        "--format",
        "json",
        "-q",
    ]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ird = &report["report"]["plan"]["initramfs"][0];
    let path = ird["path"].as_str().unwrap().to_string();
    let kernel = ird["kernel"].as_str().unwrap().to_string();
    let target = at(&dst, MIB);
    e2fsck_clean(&target);
    let rebuilt = dump(&target, &path, &dir.path().join("rebuilt"));
    let original = dump(&target, &format!("{path}.pv2hvm-orig"), &dir.path().join("orig"));
    let src_t = src.display().to_string();
    assert_eq!(original, dump(&src_t, &path, &dir.path().join("src")), "the backup is the original initramfs");

    let unpacked = dir.path().join("root");
    std::fs::create_dir(&unpacked).unwrap();
    let scratch = dir.path().join("archive");
    if rebuild {
        unpack(&rebuilt, &unpacked, &scratch);
    } else {
        // The original bytes stay as they were; one archive follows them.
        assert_eq!(&rebuilt[..original.len()], &original[..], "the original bytes are kept whole");
        let appended = &rebuilt[original.len()..];
        let start = appended.iter().position(|&b| b != 0).expect("an appended archive");
        assert!(appended.len() - start < 4 << 20, "the appended archive is small: {} bytes", appended.len());
        unpack(&original, &unpacked, &scratch);
        unpack(&appended[start..], &unpacked, &scratch);
    }
    Converted { _dir: dir, target, report, unpacked, kernel, original, rebuilt }
}

fn moddir(c: &Converted) -> std::path::PathBuf {
    c.unpacked.join("usr/lib/modules").join(&c.kernel)
}

/// Every module in modules.dep exists, and every dependency it names is itself included.
fn check_indexes(c: &Converted) {
    let dir = moddir(c);
    let dep = std::fs::read_to_string(dir.join("modules.dep")).unwrap();
    let keys: Vec<&str> = dep.lines().filter_map(|l| l.split_once(':').map(|(k, _)| k)).collect();
    for line in dep.lines() {
        let (module, deps) = line.split_once(':').unwrap();
        assert!(dir.join(module).is_file(), "{module} is in modules.dep but not in the initramfs");
        for d in deps.split_whitespace() {
            assert!(keys.contains(&d), "{module} needs {d}, which modules.dep lacks");
            assert!(dir.join(d).is_file(), "{d} is missing");
        }
    }
    for added in c.report["report"]["plan"]["initramfs"][0]["add"].as_array().unwrap() {
        let added = added.as_str().unwrap();
        assert!(dir.join(added).is_file(), "{added} was not added");
        assert!(keys.contains(&added), "{added} is not in modules.dep");
    }
}

/// The host's modprobe, reading the rebuilt initramfs's binary indexes.
fn modprobe_show(c: &Converted, what: &str) -> String {
    let out = run_ok(
        Command::new("modprobe").arg("-d").arg(&c.unpacked).arg("-S").arg(&c.kernel).arg("--show-depends").arg(what),
    );
    stdout(&out)
}

fn guest_file(c: &Converted, name: &str) -> String {
    std::fs::read_to_string(c.unpacked.join(name)).unwrap()
}

#[test]
fn cloud_kernel_initramfs_gets_xen_ena_and_ata() {
    let c = convert(&fixture_cloud());
    let ours = Initramfs::parse(&c.rebuilt).unwrap();
    assert!(ours.find("init").is_some());
    assert_eq!(Initramfs::parse(&c.original).unwrap().segments.len() + 1, ours.segments.len(), "one archive appended");
    check_indexes(&c);
    let dir = moddir(&c);
    for m in
        ["kernel/drivers/block/xen-blkfront.ko", "kernel/drivers/net/xen-netfront.ko", "kernel/drivers/ata/ata_piix.ko"]
    {
        assert!(dir.join(m).is_file(), "{m}");
    }
    assert!(std::fs::read_dir(dir.join("kernel/drivers/net/ethernet/amazon/ena")).unwrap().count() == 1);
    let shown = modprobe_show(&c, "ata_piix");
    assert!(shown.contains("libata.ko") && shown.contains("ata_piix.ko"), "{shown}");
    assert!(shown.find("libata.ko").unwrap() < shown.find("ata_piix.ko").unwrap(), "dependencies load first: {shown}");
    // The ENA PCI id resolves through modules.alias.bin.
    let shown = modprobe_show(&c, "pci:v00001D0Fd0000EC20sv00001D0Fsd00000000bc02sc00i00");
    assert!(shown.contains("/ena.ko"), "{shown}");
    // nvme is built in: nothing to load, nothing added.
    assert!(modprobe_show(&c, "nvme").contains("builtin nvme"));

    let load = guest_file(&c, "conf/modules");
    for m in ["xen-blkfront", "xen-netfront", "ena", "ata_piix", "sd_mod"] {
        assert!(load.lines().any(|l| l == m), "conf/modules lacks {m}: {load}");
    }
    let modules = guest_cat(&c.target, "/etc/initramfs-tools/modules");
    assert!(modules.contains("\nena\n") && modules.contains("\nxen-netfront\n"), "{modules}");
    assert!(guest_exists(&c.target, "/etc/initramfs-tools/modules.pv2hvm-orig"));
}

/// Host compressors for the formats the fixtures do not use, with the plan's name for each.
const OTHER_FORMATS: [(&str, &[&str]); 4] = [
    ("lzma", &["xz", "--format=lzma", "-c"]),
    ("lz4", &["lz4", "-l", "-c"]),
    ("zstd", &["zstd", "-c", "-q", "-19"]),
    ("bzip2", &["bzip2", "-c"]),
];

#[test]
fn lzma_lz4_zstd_and_bzip2_initramfs_are_read_and_written_in_their_own_format() {
    // Each format, made by the host's own compressor, read by ours; the new archive (appended,
    // or the whole initramfs rebuilt) is written in the same format by ours and read back by
    // the host's decompressor in unpack().
    for (name, compress) in OTHER_FORMATS {
        let dir = tempfile::tempdir().unwrap();
        let src = cloud_fixture_recompressed(dir.path(), compress);
        let before = sha256(&src);
        for rebuild in [false, true] {
            let c = convert_with(&src, rebuild);
            assert_eq!(c.report["report"]["plan"]["initramfs"][0]["compression"], name);
            let ours = Initramfs::parse(&c.rebuilt).unwrap();
            // lz4's legacy format has no end mark: an appended stream reads as more frames of
            // the first (the kernel's unlz4 skips the second magic number the same way).
            let expected = if rebuild || name == "lz4" { 1 } else { 2 };
            assert_eq!(ours.segments.len(), expected, "{name}");
            assert!(ours.segments.iter().all(|s| s.compression.name() == name), "{name}: every archive is {name}");
            assert_eq!(c.rebuilt[..4], c.original[..4], "{name}: same magic");
            check_indexes(&c);
            let load = guest_file(&c, "conf/modules");
            for m in ["xen-blkfront", "xen-netfront", "ena", "ata_piix"] {
                assert!(load.lines().any(|l| l == m), "{name}: conf/modules lacks {m}: {load}");
            }
            assert!(modprobe_show(&c, "ena").contains("/ena.ko"), "{name}");
        }
        assert_eq!(sha256(&src), before, "the source is only read");
    }
}

#[test]
fn dracut_initramfs_gets_nvme_with_its_dependencies() {
    let c = convert(&fixture_generic());
    assert_eq!(c.report["report"]["plan"]["initramfs"][0]["generator"], "dracut");
    assert_eq!(c.report["report"]["plan"]["initramfs"][0]["compression"], "xz");
    check_indexes(&c);
    let shown = modprobe_show(&c, "nvme");
    assert!(shown.find("nvme-core.ko").unwrap() < shown.find("/nvme.ko").unwrap(), "{shown}");
    let shown = modprobe_show(&c, "pci:v00008086d00005845sv00001AF4sd00001100bc01sc08i02");
    assert!(shown.contains("/nvme.ko"), "the NVMe class alias resolves: {shown}");
    assert!(modprobe_show(&c, "xen-netfront").contains("xen-netfront.ko"));
    assert!(guest_file(&c, "etc/modules-load.d/pv2hvm.conf").lines().any(|l| l == "nvme"));
    let cmdline = guest_file(&c, "etc/cmdline.d/50-pv2hvm.conf");
    assert!(
        cmdline.starts_with("rd.driver.pre=") && cmdline.contains("nvme") && cmdline.contains("ata_piix"),
        "{cmdline}"
    );
    let conf = guest_cat(&c.target, "/etc/dracut.conf.d/pv2hvm.conf");
    assert!(conf.contains("add_drivers+=\" ") && conf.contains(" nvme ") && conf.contains(" xen-netfront "), "{conf}");
}

#[test]
fn missing_driver_is_refused_unless_the_target_excludes_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = copy_sparse(&fixture_cloud(), dir.path(), "noena.img");
    let t = src.display().to_string();
    let ver = kernel_version(&t);
    let moddir = format!("/lib/modules/{ver}");
    let dep = guest_cat(&t, &format!("{moddir}/modules.dep"));
    let ena = dep.lines().find(|l| l.contains("/ena.ko")).unwrap().split(':').next().unwrap().to_string();
    debugfs(&t, &format!("rm {moddir}/{ena}"), true);
    let kept: String = dep.lines().filter(|l| !l.contains("/ena.ko")).map(|l| format!("{l}\n")).collect();
    guest_write(&t, &format!("{moddir}/modules.dep"), &kept);

    let before = sha256(&src);
    let dst = dir.path().join("hvm.img");
    let out = pv2hvm().arg("convert").arg(&src).arg(&dst).arg("-q").output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(sha256(&src), before, "the source is unchanged");
    assert!(
        err.contains(&format!("kernel {ver} has no ena driver: Nitro is not possible without a newer kernel; Xen HVM remains possible: pass --target xen")),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1);
    assert!(!dst.exists());

    let out =
        run_ok(pv2hvm().arg("convert").arg(&src).arg(&dst).args(["--target", "xen", "--dry-run", "--format", "json"]));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ird = &plan["initramfs"][0];
    assert_eq!(ird["nitro_possible"], false);
    assert_eq!(ird["xen_hvm_possible"], true);
    let load: Vec<&str> = ird["load"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(load.contains(&"xen-netfront") && !load.contains(&"ena"), "{load:?}");
    let out = pv2hvm().arg("convert").arg(&src).arg(&dst).args(["--target", "nitro", "--dry-run"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("kernel {ver} has no ena driver: Nitro is not possible")), "{err}");
    assert!(!dst.exists() && !dir.path().join("hvm.img.partial").exists());
    assert_eq!(sha256(&src), before, "the source is unchanged");
}

#[test]
fn no_room_for_the_new_initramfs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = copy_sparse(&fixture_cloud(), dir.path(), "full.img");
    debugfs(&src.display().to_string(), "ssv free_blocks_count 100", true);
    let before = sha256(&src);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let dst = out_dir.join("hvm.img");
    let out = pv2hvm().arg("convert").arg(&src).arg(&dst).args(["--layout", "mbr", "-q"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("not enough free space for the rebuilt /boot/initrd.img-"), "{err}");
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0, "nothing is left in the output directory");
    assert_eq!(sha256(&src), before, "the source is unchanged");
}

#[test]
fn keep_initramfs_leaves_it_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("hvm.img");
    let src = fixture_cloud();
    run_ok(pv2hvm().arg("convert").arg(&src).arg(&dst).args(["--layout", "mbr", "--keep-initramfs", "-q"]));
    let t = at(&dst, MIB);
    let ver = kernel_version(&t);
    let path = format!("/boot/initrd.img-{ver}");
    assert!(!guest_exists(&t, &format!("{path}.pv2hvm-orig")));
    assert_eq!(dump(&t, &path, &dir.path().join("a")), dump(&src.display().to_string(), &path, &dir.path().join("b")));
}

#[test]
fn rebuilding_the_whole_initramfs_gives_the_same_drivers() {
    let c = convert_with(&fixture_generic(), true);
    assert_eq!(c.report["report"]["plan"]["initramfs"][0]["mode"], "rebuild");
    let ours = Initramfs::parse(&c.rebuilt).unwrap();
    assert_eq!(Initramfs::parse(&c.original).unwrap().segments.len(), ours.segments.len(), "no archive appended");
    check_indexes(&c);
    let shown = modprobe_show(&c, "nvme");
    assert!(shown.find("nvme-core.ko").unwrap() < shown.find("/nvme.ko").unwrap(), "{shown}");
    assert!(guest_file(&c, "etc/modules-load.d/pv2hvm.conf").lines().any(|l| l == "nvme"));
}

#[test]
fn the_guests_own_listing_tools_still_read_the_new_initramfs() {
    // initramfs-tools' unmkinitramfs and dracut's lsinitrd handle an initramfs with an archive
    // appended: they read the original archive, as before, and stop at its end.
    let c = convert(&fixture_cloud());
    let file = c._dir.path().join("initrd");
    std::fs::write(&file, &c.rebuilt).unwrap();
    let out = c._dir.path().join("unmk");
    run_ok(Command::new("unmkinitramfs").arg(&file).arg(&out));
    assert!(out.join("init").is_file() && out.join("conf/initramfs.conf").is_file(), "the original archive unpacks");
    let g = convert(&fixture_generic());
    let file = g._dir.path().join("initrd");
    std::fs::write(&file, &g.rebuilt).unwrap();
    let listing = stdout(&run_ok(Command::new("lsinitrd").arg(&file)));
    assert!(listing.contains("dracut modules:") && listing.contains("usr/lib/systemd"), "{listing}");
}

/// Copies a guest file to another name with debugfs.
fn guest_copy(target: &str, from: &str, to: &str) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    debugfs(target, &format!("dump {from} {}", tmp.path().display()), false);
    debugfs(target, &format!("write {} {to}", tmp.path().display()), true);
}

#[test]
fn all_kernels_injects_into_every_kernel_of_the_bootloader_config() {
    let dir = tempfile::tempdir().unwrap();
    let src = copy_sparse(&fixture_cloud(), dir.path(), "two.img");
    let t = src.display().to_string();
    let ver = kernel_version(&t);
    let second = format!("{ver}-second");
    for f in ["vmlinuz", "initrd.img", "config"] {
        guest_copy(&t, &format!("/boot/{f}-{ver}"), &format!("/boot/{f}-{second}"));
    }
    debugfs(&t, &format!("symlink /lib/modules/{second} /lib/modules/{ver}"), true);
    let menu = guest_cat(&t, "/boot/grub/menu.lst");
    let entry = menu[menu.find("title").unwrap()..].replace(&ver, &second);
    guest_write(&t, "/boot/grub/menu.lst", &format!("{menu}\n{entry}"));

    let kernels = |args: &[&str]| -> Vec<String> {
        let out = run_ok(pv2hvm().arg("plan").arg(&src).args(["--format", "json"]).args(args));
        let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        p["initramfs"].as_array().unwrap().iter().map(|i| i["kernel"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(kernels(&[]), std::slice::from_ref(&ver), "by default only the default entry's kernel");
    assert_eq!(kernels(&["--all-kernels"]), [ver.clone(), second.clone()]);

    let dst = dir.path().join("hvm.img");
    run_ok(pv2hvm().arg("convert").arg(&src).arg(&dst).args(["--all-kernels", "-q"]));
    let d = dst.display().to_string();
    e2fsck_clean(&d);
    for k in [&ver, &second] {
        assert!(guest_exists(&d, &format!("/boot/initrd.img-{k}.pv2hvm-orig")), "{k}'s initramfs was rewritten");
        let new = dump(&d, &format!("/boot/initrd.img-{k}"), &dir.path().join("new"));
        let ird = Initramfs::parse(&new).unwrap();
        assert!(ird.entries().any(|e| e.path().ends_with("/ena.ko")), "{k} got ena");
    }
}

#[test]
fn rebuilt_indexes_agree_with_depmod_over_the_rebuilt_tree() {
    // depmod run over the unpacked new initramfs must find the same dependencies, aliases
    // and symbols, and modprobe must resolve every module the same through either index.
    let c = convert(&fixture_cloud());
    let ours = moddir(&c);
    let theirs_root = c._dir.path().join("depmod");
    run_ok(Command::new("cp").arg("-a").arg(&c.unpacked).arg(&theirs_root));
    run_ok(Command::new("depmod").arg("-b").arg(&theirs_root).arg(&c.kernel));
    let theirs = theirs_root.join("usr/lib/modules").join(&c.kernel);
    let sorted = |dir: &Path, f: &str| {
        let mut l: Vec<String> = std::fs::read_to_string(dir.join(f)).unwrap().lines().map(str::to_string).collect();
        l.sort();
        l
    };
    for f in ["modules.dep", "modules.alias", "modules.symbols"] {
        assert_eq!(sorted(&ours, f), sorted(&theirs, f), "{f}");
    }
    let dep = std::fs::read_to_string(ours.join("modules.dep")).unwrap();
    let show = |root: &Path, m: &str| {
        stdout(&run_ok(
            Command::new("modprobe").arg("-d").arg(root).arg("-S").arg(&c.kernel).arg("--show-depends").arg(m),
        ))
        .replace(&root.display().to_string(), "ROOT")
    };
    let mut checked = 0;
    for m in dep.lines().filter_map(|l| l.split(':').next()) {
        let name = m.rsplit('/').next().unwrap().trim_end_matches(".ko");
        assert_eq!(show(&c.unpacked, name), show(&theirs_root, name), "{name}");
        checked += 1;
    }
    assert!(checked >= 8, "{checked}");
}
