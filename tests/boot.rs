//! Boot tests: converted fixtures must boot under SeaBIOS in QEMU (TCG) from an NVMe disk, as
//! on Nitro, to the guest's marker with root mounted read-write on nvme0n1p1.

mod common;

use std::path::Path;

use common::*;
use pv2hvm::boot::check::{self as bootcheck, BootCheck, DiskBus};

fn boot(image: &Path, bus: DiskBus, log: &Path) -> bootcheck::BootOutcome {
    let mut check = BootCheck::new(image, bus);
    check.console_log = Some(log.to_path_buf());
    bootcheck::run(&check).expect("QEMU runs")
}

fn convert_and_boot(src: &Path, layout: &str) {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("hvm.img");
    run_ok(pv2hvm().arg("convert").arg(src).arg(&dst).args(["--layout", layout, "-q"]));
    let outcome = boot(&dst, DiskBus::Nvme, &dir.path().join("console.log"));
    assert!(outcome.ok(), "{}", outcome.summary());
    assert_eq!(outcome.root_device.as_deref(), Some("/dev/nvme0n1p1"), "{}", outcome.summary());
}

#[test]
fn mbr_boots_on_nvme() {
    convert_and_boot(&fixture_cloud(), "mbr");
}

#[test]
fn saved_gpt_plan_round_trip_boots_on_nvme() {
    // plan -o, then convert --plan: the reviewed plan is what gets applied, and it boots.
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("plan.json");
    run_ok(pv2hvm().arg("plan").arg(fixture_cloud()).args(["--layout", "gpt", "-o"]).arg(&saved));
    let dst = dir.path().join("hvm.img");
    let out = run_ok(
        pv2hvm()
            .arg("convert")
            .arg("--plan")
            .arg(&saved)
            .arg(fixture_cloud())
            .arg(&dst)
            .args(["--format", "json", "-q"]),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["report"]["plan"]["disk"]["kind"], "gpt");
    let outcome = boot(&dst, DiskBus::Nvme, &dir.path().join("console.log"));
    assert!(outcome.ok(), "{}", outcome.summary());
    assert_eq!(outcome.root_device.as_deref(), Some("/dev/nvme0n1p1"), "{}", outcome.summary());
}

#[test]
fn partitioned_source_boots_on_nvme() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_mbr_disk(&fixture_cloud(), dir.path(), 63);
    convert_and_boot(&src, "mbr");
}

#[test]
fn boot_check_flag_reports_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("hvm.img");
    let out = run_ok(pv2hvm().arg("convert").arg(fixture_cloud()).arg(&dst).args(["--boot-check", "-q"]));
    let text = stdout(&out);
    assert!(text.contains("boot check: NVMe boot reached userspace in"), "{text}");
    assert!(text.contains("root /dev/nvme0n1p1 mounted read-write"), "{text}");
}

#[test]
fn cloud_kernel_boots_on_ide_after_injection() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("hvm.img");
    run_ok(pv2hvm().arg("convert").arg(fixture_cloud()).arg(&dst).arg("-q"));
    let outcome = boot(&dst, DiskBus::Ide, &dir.path().join("console.log"));
    assert!(outcome.ok(), "{}", outcome.summary());
    assert_eq!(outcome.root_device.as_deref(), Some("/dev/sda1"), "{}", outcome.summary());
}

#[test]
fn generic_kernel_needs_injection_to_boot_on_nvme() {
    // Without injection the dracut initramfs has no nvme driver: the root disk never shows up.
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("hvm.img");
    run_ok(pv2hvm().arg("convert").arg(fixture_generic()).arg(&dst).args(["--keep-initramfs", "-q"]));
    let mut check = BootCheck::new(&dst, DiskBus::Nvme);
    check.timeout = std::time::Duration::from_secs(300);
    let outcome = bootcheck::run(&check).expect("QEMU runs");
    assert!(outcome.marker.is_none(), "booted without nvme in the initramfs: {}", outcome.summary());
    assert!(outcome.failure.is_some() || outcome.timed_out, "{}", outcome.summary());
}

#[test]
fn generic_kernel_boots_on_nvme_and_ide_after_injection() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("hvm.img");
    run_ok(pv2hvm().arg("convert").arg(fixture_generic()).arg(&dst).arg("-q"));
    for (bus, root) in [(DiskBus::Nvme, "/dev/nvme0n1p1"), (DiskBus::Ide, "/dev/sda1")] {
        let outcome = boot(&dst, bus, &dir.path().join("console.log"));
        assert!(outcome.ok(), "{}", outcome.summary());
        assert_eq!(outcome.root_device.as_deref(), Some(root), "{}", outcome.summary());
    }
}
