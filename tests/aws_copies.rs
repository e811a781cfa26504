//! `migrate --copy-to-regions` and `cleanup --regions` against the strict local server, which
//! copies an AMI as EC2 does (tests/aws/strict_copies.py): new snapshots in the destination,
//! tagged only by the call's TagSpecifications, encrypted with a key of that region.

mod common;

use common::moto::{Moto, tag};
use common::*;

const EU_KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/6c1d9e2a-0b7f-4c55-9a3e-2f8d1c0b9e71";
const SOURCE_KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1f2e3d4c-5b6a-4798-8a9b-0c1d2e3f4a5b";

fn snapshot(m: &Moto, region: &str, id: &str) -> serde_json::Value {
    let state = m.tool_json(&["state", region]);
    state["snapshots"].as_array().unwrap().iter().find(|s| s["SnapshotId"] == id).cloned().unwrap_or_else(|| {
        panic!("no {id} in {region}");
    })
}

fn root_of(m: &Moto, region: &str, image: &str) -> String {
    let state = m.tool_json(&["state", region]);
    let img = state["images"].as_array().unwrap().iter().find(|i| i["ImageId"] == image).unwrap().clone();
    img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"].as_str().unwrap().to_string()
}

#[test]
fn copies_tag_their_snapshots_take_a_key_of_their_region_and_cleanup_removes_them_everywhere() {
    let m = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let seeded = m.tool_json(&["seed", fixture_cloud().to_str().unwrap(), "--kms-key", SOURCE_KEY]);
    let ami = seeded["image"].as_str().unwrap();
    let key_arg = format!("eu-west-1={EU_KEY}");
    let args = [ami, "--copy-to-regions", "us-west-2,eu-west-1", "--copy-kms-key-id", &key_arg, "--run-id", "copies"];
    let r = m.migrate_json(&args, dir.path());
    assert_eq!(r["outcome"], "migrated");
    let home_root = r["root_snapshot"].as_str().unwrap();
    assert_eq!(snapshot(&m, "us-east-1", home_root)["KmsKeyId"], SOURCE_KEY, "in place keeps the source's key");
    let notes = r["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect::<Vec<_>>().join("\n");
    assert!(
        notes.contains(&format!(
            "the copy in us-west-2 is encrypted with us-west-2's default EBS key, not {SOURCE_KEY}"
        )),
        "{notes}"
    );
    assert!(notes.contains(&format!("the copy in eu-west-1 is encrypted with {EU_KEY}")), "{notes}");

    let copies: Vec<(String, String)> = r["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c[0].as_str().unwrap().to_string(), c[1].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(copies.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["us-west-2", "eu-west-1"]);
    let home_disk = dir.path().join("home.img");
    m.tool(&["download", home_root, home_disk.to_str().unwrap()]);
    for (region, copy) in &copies {
        let root = root_of(&m, region, copy);
        assert_ne!(root, home_root, "{region}: the copy has snapshots of its own");
        let s = snapshot(&m, region, &root);
        assert_eq!(tag(&s, "pv2hvm:run-id"), Some("copies"), "{region}: {s}");
        assert_eq!(tag(&s, "pv2hvm:role"), Some("copy"), "{region}: {s}");
        assert_eq!(tag(&s, "pv2hvm:source"), Some(ami), "{region}: {s}");
        assert_eq!(s["Encrypted"], true, "{region}");
        let want = if region == "eu-west-1" {
            EU_KEY.to_string()
        } else {
            format!("arn:aws:kms:{region}:123456789012:alias/aws/ebs")
        };
        assert_eq!(s["KmsKeyId"], want.as_str(), "{region}");
        // The copy holds the AMI's disk.
        let disk = dir.path().join(format!("{region}.img"));
        m.tool_in(region, &["download", &root, disk.to_str().unwrap()]);
        assert_eq!(sha256(&disk), sha256(&home_disk), "{region}");
        let _ = std::fs::remove_file(&disk);
    }

    // A second run finds both copies and makes nothing.
    let again = m.migrate_json(&args, dir.path());
    assert_eq!(again["copies"], r["copies"]);
    for (region, _) in &copies {
        assert_eq!(m.tagged(region, "images", "copies").len(), 1, "{region}");
        assert_eq!(m.tagged(region, "snapshots", "copies").len(), 1, "{region}");
    }

    // cleanup removes the run's AMIs and snapshots in every region named, the copies' snapshots
    // included (each region's AMIs go first: EC2 refuses to delete a snapshot an AMI holds).
    let out = run_ok(m.pv2hvm().args(["cleanup", "--run-id", "copies", "--regions", "us-west-2,eu-west-1", "--yes"]));
    let text = stdout(&out);
    for region in ["us-east-1", "us-west-2", "eu-west-1"] {
        assert!(text.contains(&format!("({region})")), "{region}: {text}");
        assert!(m.tagged(region, "images", "copies").is_empty(), "{region}: {text}");
        assert!(m.tagged(region, "snapshots", "copies").is_empty(), "{region}: {text}");
    }
}

#[test]
fn a_failed_copy_leaves_no_snapshots_and_the_next_run_copies_again() {
    let m = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let seeded = m.tool_json(&["seed", fixture_cloud().to_str().unwrap()]);
    let ami = seeded["image"].as_str().unwrap();
    // Test-only: copies of this AMI's HVM successor (it inherits the tag) fail in us-west-2.
    m.tool(&["tag", ami, "moto:copy-fails=us-west-2"]);
    let args = ["migrate", ami, "--copy-to-regions", "us-west-2", "--run-id", "fails", "--yes", "-q", "--work-dir"];
    let out = m.pv2hvm().args(args).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("was deregistered and its 1 snapshot(s) in us-west-2 were removed"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let failed = err.split("the failed copy ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    assert!(m.tagged("us-west-2", "images", "fails").is_empty(), "the failed copy is deregistered");
    assert!(m.tagged("us-west-2", "snapshots", "fails").is_empty(), "no snapshot of the failed copy is left");
    let home = m.tagged("us-east-1", "images", "fails");
    assert_eq!(home.len(), 1);
    assert_eq!(tag(&home[0], "pv2hvm:copy-failures:us-west-2"), Some("1"), "the failure is on record");

    // Once copies work again, the next run registers nothing new at home and copies anew (a
    // new ClientToken: the failed copy's would return the failed copy).
    let hvm = home[0]["ImageId"].as_str().unwrap();
    m.tool(&["untag", hvm, "moto:copy-fails"]);
    let r = m.migrate_json(&args[1..6], dir.path());
    assert_eq!(r["image"], hvm, "{r}");
    let copy = r["copies"][0][1].as_str().unwrap();
    assert_ne!(copy, failed, "a new copy, not the failed one again");
    let copies = m.tagged("us-west-2", "images", "fails");
    assert!(copies.iter().any(|i| i["ImageId"] == copy && i["State"] == "available"), "{copies:?}");
    assert_eq!(m.tagged("us-west-2", "snapshots", "fails").len(), 1);
}

#[test]
fn another_accounts_snapshot_is_copied_into_the_account_and_the_child_built_on_the_copy() {
    let m = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let seeded = m.tool_json(&["seed", fixture_cloud().to_str().unwrap()]);
    let snap = seeded["snapshot"].as_str().unwrap();
    // Test-only: the snapshot is owned by another account, as one shared with this one is.
    m.tool(&["tag", snap, "moto:owner=111122223333"]);

    let out = m.pv2hvm().args(["plan", snap, "--work-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("{snap} belongs to 111122223333")), "{}", stderr(&out));

    let r = m.migrate_json(&[snap, "--run-id", "foreign"], dir.path());
    assert_eq!(r["outcome"], "migrated");
    let notes = r["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect::<Vec<_>>().join("\n");
    assert!(notes.contains(&format!("copied {snap} to the temporary")), "{notes}");
    assert!(m.tagged("us-east-1", "snapshots", "foreign").iter().all(|s| tag(s, "pv2hvm:role") != Some("temporary")));
    // The child of the copy is the source plus the delta.
    let disk = dir.path().join("root.img");
    m.tool(&["download", r["root_snapshot"].as_str().unwrap(), disk.to_str().unwrap()]);
    let differ = differing_blocks(&fixture_cloud(), &disk);
    assert!(!differ.is_empty() && differ.len() as u64 <= r["delta_blocks"].as_u64().unwrap(), "{}", differ.len());
}
