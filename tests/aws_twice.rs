//! Two runs of one source at once, with no journal between them (a replacement pod started
//! beside the old one, a Batch retry of a lost node): EC2's unique AMI names make exactly one
//! AMI, which the second run adopts, or the second fails with a documented code and its next
//! try finds the AMI. Against the strict local server.

mod common;

use std::process::Stdio;

use common::moto::{Moto, tag};
use common::*;

#[test]
fn two_migrations_of_one_instance_at_once_make_one_ami() {
    let m = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let seeded = m.tool_json(&["seed", fixture_cloud().to_str().unwrap()]);
    let inst = seeded["instance"].as_str().unwrap();
    let spawn = |run: &str| {
        let work = dir.path().join(run);
        std::fs::create_dir_all(&work).unwrap();
        m.pv2hvm()
            .args(["migrate", inst, "--yes", "--format", "json", "-q", "--run-id", run, "--work-dir"])
            .arg(&work)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("first"), spawn("second"));
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    for out in &outs {
        // Success, or an AWS failure worth a retry (the other run removed what this one was
        // writing once its AMI existed): never an internal error or a refusal.
        assert!(matches!(out.status.code(), Some(0 | 7)), "{:?}: {}", out.status, stderr(out));
    }
    let state = m.tool_json(&["state"]);
    let images: Vec<&serde_json::Value> =
        state["images"].as_array().unwrap().iter().filter(|i| tag(i, "pv2hvm:source") == Some(inst)).collect();
    let names: Vec<_> = images.iter().map(|i| (i["ImageId"].as_str(), i["Name"].as_str())).collect();
    assert_eq!(images.len(), 1, "exactly one AMI: {names:?}");
    let ami = images[0]["ImageId"].as_str().unwrap();
    for out in outs.iter().filter(|o| o.status.success()) {
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["image"], ami, "both name the one AMI: {r}");
    }
    // The AMI's root exists and is complete; a next run finds the AMI and makes nothing.
    let root = images[0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"].as_str().unwrap();
    let root_state = state["snapshots"].as_array().unwrap().iter().find(|s| s["SnapshotId"] == root).unwrap();
    assert_eq!(root_state["State"], "completed");
    let again = m.migrate_json(&[inst], dir.path());
    assert_eq!(again["outcome"], "already-migrated");
    assert_eq!(again["image"], ami);
    // And nothing is left behind: no temporary, no root outside the AMI.
    let left = m.tool_json(&["state"]);
    for s in left["snapshots"].as_array().unwrap() {
        if tag(s, "pv2hvm:source") == Some(inst) {
            assert_eq!(s["SnapshotId"], root, "left behind: {s}");
        }
    }
}
