//! Reads stay proportional to what is edited, never to the data a guest holds: adding 4 GiB of
//! file data to a guest changes what `plan` and an in-place conversion read from the source by
//! less than 1 MiB. On EBS every block read is a request, so this is what keeps a migration's
//! cost independent of the volume's contents.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const MIB: u64 = 1 << 20;

/// The cloud fixture grown to 7 GiB, with 4 GiB of random file data under /data when `extra`.
fn guest(dir: &Path, extra: bool) -> PathBuf {
    let img = copy_sparse(&fixture_cloud(), dir, "pv.img");
    run_ok(Command::new("truncate").arg("-s").arg("7G").arg(&img));
    run_ok(Command::new("e2fsck").arg("-fy").arg(&img));
    run_ok(Command::new("resize2fs").arg("-f").arg(&img).arg("7G"));
    if extra {
        let chunk = dir.join("random");
        run_ok(Command::new("sh").arg("-c").arg(format!("head -c 1G /dev/urandom > {}", chunk.display())));
        let t = img.display().to_string();
        debugfs(&t, "mkdir /data", true);
        for i in 0..4 {
            debugfs(&t, &format!("write {} /data/random-{i}", chunk.display()), true);
        }
        std::fs::remove_file(&chunk).unwrap();
        let used = debugfs(&t, "stat /data/random-3", false);
        assert!(used.contains("Size: 1073741824"), "{used}");
    }
    img
}

/// Bytes `plan` and `convert --in-place` read from the source.
fn reads(img: &Path) -> (u64, u64) {
    let out = run_ok(pv2hvm().arg("plan").arg(img).args(["--format", "json"]));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = run_ok(pv2hvm().arg("convert").arg("--in-place").arg(img).args(["--no-undo", "--format", "json", "-q"]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (plan["source_reads"]["bytes"].as_u64().unwrap(), report["report"]["source_reads"]["bytes"].as_u64().unwrap())
}

#[test]
fn four_gib_of_data_changes_what_is_read_by_less_than_a_mib() {
    let dir = tempfile::tempdir().unwrap();
    let (plain_dir, full_dir) = (dir.path().join("plain"), dir.path().join("full"));
    std::fs::create_dir(&plain_dir).unwrap();
    std::fs::create_dir(&full_dir).unwrap();
    let plain = guest(&plain_dir, false);
    let full = guest(&full_dir, true);
    // The same two guests with a journal to replay: the replay reads metadata and the journal.
    let plain_j = copy_sparse(&plain, &plain_dir, "journalled.img");
    let full_j = copy_sparse(&full, &full_dir, "journalled.img");
    for img in [&plain_j, &full_j] {
        journal_rewrite(img, "/etc/hostname", |t| t.to_ascii_uppercase());
    }
    let (plan_plain, convert_plain) = reads(&plain);
    let (plan_full, convert_full) = reads(&full);
    let (_, replay_plain) = reads(&plain_j);
    let (_, replay_full) = reads(&full_j);
    println!("with a journal replay: {replay_plain} -> {replay_full}");
    assert!(replay_full < replay_plain + MIB, "replay: {replay_plain} -> {replay_full}");
    assert!(replay_full < 256 * MIB, "{replay_full}");
    assert_eq!(guest_cat(&full_j.display().to_string(), "/etc/hostname"), "PV-GUEST\n", "the replay is in the result");
    println!(
        "plan reads {plan_plain} -> {plan_full} bytes; convert --in-place reads {convert_plain} -> {convert_full}"
    );
    assert!(plan_full < plan_plain + MIB, "plan: {plan_plain} -> {plan_full}");
    assert!(convert_full < convert_plain + MIB, "convert: {convert_plain} -> {convert_full}");
    // And both stay far below the data: metadata and the files the plan reads or edits.
    assert!(convert_full < 64 * MIB, "{convert_full}");
    e2fsck_clean(&full.display().to_string());
}
