//! The initramfs reader and kmod index writer against what the guest's own tools made.

mod common;

use common::*;
use pv2hvm::guest::initramfs::{Initramfs, kmod_index};

fn fixture_initramfs(fx: std::path::PathBuf) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let t = fx.display().to_string();
    let ver = kernel_version(&t);
    let out = dir.path().join("initrd");
    debugfs(&t, &format!("dump /boot/initrd.img-{ver} {}", out.display()), false);
    std::fs::read(out).unwrap()
}

#[test]
fn reads_the_guest_initramfs_and_rebuilds_it_identically() {
    for fx in [fixture_cloud(), fixture_generic()] {
        let data = fixture_initramfs(fx);
        let ird = Initramfs::parse(&data).unwrap();
        assert!(ird.find("init").is_some());
        assert!(ird.entries().any(|e| e.path().ends_with("/xen-blkfront.ko")));
        assert_eq!(ird.to_vec(&data).unwrap(), data, "an unchanged initramfs is written back byte for byte");
    }
}

#[test]
fn kmod_indexes_match_the_guest_depmod_byte_for_byte() {
    for fx in [fixture_cloud(), fixture_generic()] {
        indexes_match(Initramfs::parse_holding_all(&fixture_initramfs(fx)).unwrap());
    }
}

fn indexes_match(ird: Initramfs) {
    let moddir = ird
        .entries()
        .find(|e| e.path().ends_with("/modules.dep"))
        .map(|e| e.path().trim_end_matches("/modules.dep").to_string())
        .unwrap();
    let text = |n: &str| String::from_utf8(ird.find(&format!("{moddir}/{n}")).unwrap().data.clone().unwrap()).unwrap();
    let bin = |n: &str| ird.find(&format!("{moddir}/{n}")).unwrap().data.clone().unwrap();
    let dep = text("modules.dep");
    let order = kmod_index::dep_order(&dep);
    assert_eq!(kmod_index::dep_index(&dep), bin("modules.dep.bin"));
    assert_eq!(kmod_index::alias_index(&text("modules.alias"), &order), bin("modules.alias.bin"));
    assert_eq!(kmod_index::symbols_index(&text("modules.symbols"), &order), bin("modules.symbols.bin"));
}

/// Unpacks an initramfs with initramfs-tools' unmkinitramfs (early archives and the main one)
/// and lists every path with its type, mode and a hash of its content.
fn unpacked_tree(initrd: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("initrd");
    std::fs::write(&file, initrd).unwrap();
    let root = dir.path().join("root");
    run_ok(std::process::Command::new("unmkinitramfs").arg(&file).arg(&root));
    let out = run_ok(
        std::process::Command::new("sh")
            .arg("-c")
            .arg("find . -printf '%p %y %m %l\\n' | sort; find . -type f -print0 | sort -z | xargs -0 sha256sum")
            .current_dir(&root),
    );
    stdout(&out).lines().map(str::to_string).collect()
}

#[test]
fn every_archive_written_anew_unpacks_to_the_same_tree_with_the_hosts_tools() {
    for fx in [fixture_cloud(), fixture_generic()] {
        let data = fixture_initramfs(fx);
        let mut ird = Initramfs::parse(&data).unwrap();
        for s in &mut ird.segments {
            s.changed = true;
        }
        let rewritten = ird.to_vec(&data).unwrap();
        assert_ne!(rewritten, data, "every archive was encoded again, not copied");
        let (ours, theirs) = (unpacked_tree(&rewritten), unpacked_tree(&data));
        assert!(ours.len() > 100, "{} entries", ours.len());
        assert_eq!(ours, theirs, "our cpio writer and compressor give the same files, modes and links");
    }
}
