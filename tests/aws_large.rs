//! A 20 GiB instance volume through the strict local server with 1% of every EBS and EC2 call
//! failing (throttling, 5xx, corrupted block bodies) on top of the transients AWS documents:
//! its listing spans many short pages, and the new AMI's root is the source plus the delta,
//! byte for byte.

mod common;

use common::moto::Moto;
use common::*;

#[test]
fn a_20_gib_instance_migrates_through_many_listing_pages_with_faults_on_every_call() {
    let big = fixture_big();
    let m = Moto::start_with(&[("PV2HVM_MOTO_FAULT_RATE", "0.01"), ("PV2HVM_MOTO_SEED", "11")]);
    let dir = tempfile::tempdir().unwrap();
    let seeded = m.tool_json(&["seed", big.to_str().unwrap()]);
    let inst = seeded["instance"].as_str().unwrap();

    let r = m.migrate_json(&[inst], dir.path());
    assert_eq!(r["outcome"], "migrated");
    let source = r["source_snapshot"].as_str().unwrap();
    let root = r["root_snapshot"].as_str().unwrap();

    // The source snapshot's listing came in many pages, the last ending the list, and pv2hvm
    // read to its end: the pages served add up to every block the snapshot holds.
    let log = std::fs::read_to_string(&m.strict_log).unwrap();
    let pages: Vec<(u64, u64)> = log
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("page list {source} ")))
        .map(|l| {
            let (n, total) = l.split_once(" of ").unwrap();
            (n.parse().unwrap(), total.parse().unwrap())
        })
        .collect();
    let total = pages.first().map(|p| p.1).unwrap_or(0);
    assert!(total > 2000, "the volume holds {total} blocks");
    assert!(pages.len() > 20, "{} pages", pages.len());
    assert_eq!(pages.iter().map(|p| p.0).sum::<u64>(), total, "every page was read, once");

    // The result: outside the delta, the source; and a clean filesystem.
    let disk = dir.path().join("root.img");
    m.tool(&["download", root, disk.to_str().unwrap()]);
    let differ = differing_blocks(&big, &disk);
    let delta = r["delta_blocks"].as_u64().unwrap();
    assert!(!differ.is_empty() && differ.len() as u64 <= delta, "{} blocks differ, delta {delta}", differ.len());
    assert!(differ.len() as u64 <= r["blocks_uploaded"].as_u64().unwrap(), "only what went up differs");
    run_ok(std::process::Command::new("e2fsck").arg("-fn").arg(&disk));

    assert!(m.dealt("random ") > 0, "the 1% faults were dealt");
    assert!(m.dealt("corrupt get") > 0 && m.dealt("notfound put") > 0, "and the documented transients");
}
