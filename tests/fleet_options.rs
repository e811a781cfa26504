//! The options of `pv2hvm fleet plan` and `fleet run` that tests/fleet.rs does not exercise,
//! against the strict local AWS server (tests/common/moto.rs), each shown from what the server
//! saw or holds rather than from pv2hvm's own output:
//!
//! - `fleet plan` creates nothing (the whole state of two regions, and no creating call), and
//!   takes PV AMIs as sources only with `--images` (`fleet run --images` migrates them too);
//! - `fleet run --per-region N` never has more than N migrations at once in a region, and does
//!   reach N, while `--concurrency` is larger (the timed calls of the strict log);
//! - `--fail-fast` stops at the first failure worth a retry and leaves the rest pending; run
//!   again without it, such a failure stops nothing and the rest migrate, and a source whose
//!   volume drifted from the saved `--plan` is refused with its reason, nothing made for it;
//! - `--copy-to-regions --launch --stop --keep-temp`: the copies, the stopped replacements, the
//!   source stopped before its snapshot and started again, the kept snapshots, and a status
//!   that names what AWS holds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::moto::{Moto, tag};
use common::*;

/// `fleet-seed` in `region`: a PV AMI of the cloud fixture and `n` instances of it, each with a
/// volume of its own. Returns (instances, AMI).
fn seed_in(m: &Moto, region: &str, n: usize, prefix: &str) -> (Vec<String>, String) {
    let fixture = fixture_cloud();
    let out = m.tool_in(region, &["fleet-seed", fixture.to_str().unwrap(), &n.to_string(), "--name", prefix]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ids = v["instances"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()).collect();
    (ids, v["image"].as_str().unwrap().to_string())
}

fn state(m: &Moto, region: &str) -> serde_json::Value {
    m.tool_json(&["state", region])
}

fn fleet_run(m: &Moto, dir: &Path, journal: &Path, args: &[&str]) -> Command {
    let mut c = m.pv2hvm();
    c.args(["-q", "fleet", "run", "--yes", "--work-dir"]).arg(dir).arg("--journal").arg(journal).args(args);
    c.env_remove("PV2HVM_SHARDS").env_remove("PV2HVM_RUN_ID").env_remove("AWS_BATCH_JOB_ID");
    c.env_remove("AWS_BATCH_JOB_ARRAY_INDEX").env_remove("JOB_COMPLETION_INDEX");
    c.stdin(Stdio::null());
    c
}

fn status(m: &Moto, journal: &Path) -> serde_json::Value {
    let out = run_ok(m.pv2hvm().args(["fleet", "status", "--format", "json", "--journal"]).arg(journal));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

/// Each source's journal entry.
fn entries(s: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    s["instances"].as_array().unwrap().iter().map(|e| (e["source"].as_str().unwrap().to_string(), e.clone())).collect()
}

/// `fleet plan … --format json` (no file): the sources planned, with their verdicts.
fn planned(m: &Moto, dir: &Path, args: &[&str]) -> BTreeMap<String, String> {
    let out = run_ok(m.pv2hvm().args(["fleet", "plan", "--format", "json", "--work-dir"]).arg(dir).args(args));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| (e["source"].as_str().unwrap().to_string(), e["verdict"].as_str().unwrap().to_string()))
        .collect()
}

/// The strict log's lines from line `from` on.
fn log_from(m: &Moto, from: usize) -> Vec<String> {
    std::fs::read_to_string(&m.strict_log).unwrap_or_default().lines().skip(from).map(str::to_string).collect()
}

fn log_len(m: &Moto) -> usize {
    log_from(m, 0).len()
}

/// The time at the end of a strict log line.
fn time_of(line: &str) -> f64 {
    line.rsplit(' ').next().unwrap().parse().unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// The first line starting with `prefix`.
fn find<'a>(calls: &'a [String], prefix: &str) -> &'a str {
    calls.iter().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in {calls:#?}"))
}

/// The most of `intervals` open at one time. An interval that ends when another starts does
/// not overlap it (the next migration of a region is claimed only after one ended).
fn max_overlap(intervals: &[(f64, f64)]) -> usize {
    let mut events: Vec<(f64, i32)> = intervals.iter().flat_map(|&(a, b)| [(a, 1), (b, -1)]).collect();
    events.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
    let (mut open, mut most) = (0i32, 0i32);
    for (_, d) in events {
        open += d;
        most = most.max(open);
    }
    most as usize
}

/// The resources of `what` (images, snapshots, instances) in `state` tagged with `source`.
fn of_source<'a>(state: &'a serde_json::Value, what: &str, source: &str) -> Vec<&'a serde_json::Value> {
    state[what].as_array().unwrap().iter().filter(|x| tag(x, "pv2hvm:source") == Some(source)).collect()
}

fn root_snapshot(image: &serde_json::Value) -> String {
    let root = image["RootDeviceName"].as_str().unwrap();
    let maps = image["BlockDeviceMappings"].as_array().unwrap();
    maps.iter().find(|b| b["DeviceName"] == root).unwrap()["Ebs"]["SnapshotId"].as_str().unwrap().to_string()
}

fn root_volume(state: &serde_json::Value, inst: &str) -> String {
    let i = state["instances"].as_array().unwrap().iter().find(|i| i["InstanceId"] == inst).unwrap();
    let root = i["RootDeviceName"].as_str().unwrap();
    let maps = i["BlockDeviceMappings"].as_array().unwrap();
    maps.iter().find(|b| b["DeviceName"] == root).unwrap()["Ebs"]["VolumeId"].as_str().unwrap().to_string()
}

fn instance<'a>(state: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    state["instances"].as_array().unwrap().iter().find(|i| i["InstanceId"] == id).unwrap_or_else(|| panic!("{id}"))
}

#[test]
fn plan_creates_nothing_takes_amis_only_with_images_and_run_holds_the_per_region_limit() {
    let m = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    // Seeding uploads the fixture to each region: both at once.
    let ((east, east_ami), (west, west_ami)) = std::thread::scope(|s| {
        let east = s.spawn(|| seed_in(&m, "us-east-1", 3, "east"));
        let west = seed_in(&m, "eu-west-1", 1, "west");
        (east.join().unwrap(), west)
    });
    let regions = ["--regions", "us-east-1,eu-west-1"];
    let instances: BTreeSet<String> = east.iter().chain(&west).cloned().collect();
    let amis: BTreeSet<String> = [east_ami.clone(), west_ami.clone()].into();

    // Planning reads existing snapshots only: the whole state of both regions is as it was,
    // and the server saw no call that makes a snapshot or an image (one made and deleted again
    // would leave the state as it was).
    let before = (state(&m, "us-east-1"), state(&m, "eu-west-1"));
    let mark = log_len(&m);
    let plan = planned(&m, dir.path(), &regions);
    let with_images = planned(&m, dir.path(), &[&regions[..], &["--images", "--concurrency", "3"]].concat());
    let calls = log_from(&m, mark);
    for made in ["call CreateSnapshot ", "call StartSnapshot ", "call RegisterImage ", "call StopInstances "] {
        assert!(!calls.iter().any(|l| l.starts_with(made)), "planning called {made}: {calls:#?}");
    }
    assert_eq!(state(&m, "us-east-1"), before.0, "fleet plan changed us-east-1");
    assert_eq!(state(&m, "eu-west-1"), before.1, "fleet plan changed eu-west-1");

    // Without --images the instances alone; with it, the PV AMIs too, planned as sources.
    assert_eq!(plan.keys().cloned().collect::<BTreeSet<_>>(), instances, "{plan:?}");
    let all: BTreeSet<String> = instances.union(&amis).cloned().collect();
    assert_eq!(with_images.keys().cloned().collect::<BTreeSet<_>>(), all, "{with_images:?}");
    assert!(with_images.values().all(|v| v == "ready"), "{with_images:?}");

    // A run of all six (four in us-east-1, two in eu-west-1), four at once but at most two in
    // a region. The first four claimed are two of each region, all at once: each region
    // reaches its limit, and us-east-1's other two wait for a slot.
    let journal = dir.path().join("fleet.db");
    let mark = log_len(&m);
    let args = [&regions[..], &["--images", "--concurrency", "4", "--per-region", "2"]].concat();
    let out = fleet_run(&m, dir.path(), &journal, &args).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("6 done, 0 failed this run"), "{}", stdout(&out));
    let calls = log_from(&m, mark);
    let s = status(&m, &journal);
    let mut work: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let states = [("us-east-1", state(&m, "us-east-1")), ("eu-west-1", state(&m, "eu-west-1"))];
    for (src, e) in entries(&s) {
        assert_eq!(e["status"], "done", "{e}");
        let region = e["region"].as_str().unwrap();
        let st = &states.iter().find(|(r, _)| *r == region).unwrap().1;
        let images: Vec<_> = of_source(st, "images", &src);
        assert_eq!(images.len(), 1, "{src}: one AMI");
        assert_eq!(images[0]["ImageId"], e["image"], "{src}");
        // A source's work, as the server saw it: from the first call that makes something for
        // it (the snapshot of an instance's volume; an AMI's new root) to its RegisterImage.
        let start = if src.starts_with("i-") {
            time_of(find(&calls, &format!("call CreateSnapshot {} {src} ", root_volume(st, &src))))
        } else {
            time_of(find(&calls, &format!("call StartSnapshot {} ", root_snapshot(images[0]))))
        };
        let end = time_of(find(&calls, &format!("call RegisterImage {} {region} ", e["image"].as_str().unwrap())));
        assert!(start < end, "{src}: {start} {end}");
        work.entry(region.to_string()).or_default().push((start, end));
    }
    assert_eq!(work["us-east-1"].len(), 4);
    assert_eq!(work["eu-west-1"].len(), 2);
    for (region, intervals) in &work {
        let most = max_overlap(intervals);
        assert!(most <= 2, "{region}: {most} migrations at once with --per-region 2: {intervals:?}");
    }
    for (region, intervals) in &work {
        assert_eq!(max_overlap(intervals), 2, "{region}: the limit is reached (not one at a time): {intervals:?}");
    }
    // And the four at once across regions: more than any one region may have.
    let every: Vec<(f64, f64)> = work.values().flatten().copied().collect();
    assert!(max_overlap(&every) > 2, "--concurrency 4 ran more than a region's 2 at once: {every:?}");
}

#[test]
fn fail_fast_leaves_the_rest_pending_and_a_drifted_source_is_refused_while_the_others_migrate() {
    let m = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let (ids, _) = seed_in(&m, "us-east-1", 4, "ff");
    let plan = dir.path().join("fleet-plan.json");
    run_ok(m.pv2hvm().args(["fleet", "plan", "-q", "--work-dir"]).arg(dir.path()).arg("-o").arg(&plan));
    // The run claims the sources in the plan file's order.
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    let order: Vec<String> =
        v["instances"].as_array().unwrap().iter().map(|e| e["source"].as_str().unwrap().to_string()).collect();
    assert_eq!(order.iter().cloned().collect::<BTreeSet<_>>(), ids.iter().cloned().collect::<BTreeSet<_>>());
    let (first, drifted) = (order[0].clone(), order[1].clone());
    let plan_arg = ["--plan", plan.to_str().unwrap()];
    let journal = dir.path().join("fleet.db");

    // The first source's RegisterImage is refused (an AWS error: worth a retry), after it made
    // its snapshots. With --fail-fast and one at a time, nothing else starts.
    m.inject("RegisterImage=1:denied");
    let mark = log_len(&m);
    let out = fleet_run(&m, dir.path(), &journal, &[&plan_arg[..], &["--fail-fast", "--concurrency", "1"]].concat())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(10), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("0 done, 1 failed this run"), "{}", stdout(&out));
    assert!(stdout(&out).contains("--fail-fast: sources not started stay pending"), "{}", stdout(&out));
    let e = entries(&status(&m, &journal));
    assert_eq!(e[&first]["status"], "failed", "{:?}", e[&first]);
    assert!(e[&first]["error"].as_str().unwrap().contains("not authorized"), "{:?}", e[&first]);
    for other in &order[1..] {
        assert_eq!(e[other]["status"], "pending", "{other}: {:?}", e[other]);
    }
    // It had made a snapshot of its volume and begun its root; both are gone. Nothing was
    // begun for any other source.
    let calls = log_from(&m, mark);
    let st = state(&m, "us-east-1");
    find(&calls, &format!("call CreateSnapshot {} {first} ", root_volume(&st, &first)));
    find(&calls, "call StartSnapshot ");
    assert_eq!(calls.iter().filter(|l| l.starts_with("call CreateSnapshot ")).count(), 1, "{calls:#?}");
    for src in &order {
        assert!(of_source(&st, "snapshots", src).is_empty(), "{src}: {:?}", of_source(&st, "snapshots", src));
        assert!(of_source(&st, "images", src).is_empty(), "{src}");
    }

    // The second source's volume changes since the plan, in a file the plan edits.
    let fstab = guest_cat(&fixture_cloud().display().to_string(), "/etc/fstab") + "# edited on the instance\n";
    m.tool(&["edit-volume", &drifted, fixture_cloud().to_str().unwrap(), "/etc/fstab", &fstab]);
    // Again, without --fail-fast, and the first RegisterImage of this run refused again: that
    // source fails (worth a retry: exit 10) and the run goes on with the others; the drifted
    // one is refused.
    m.inject("RegisterImage=1:denied");
    let out = fleet_run(&m, dir.path(), &journal, &[&plan_arg[..], &["--concurrency", "2"]].concat()).output().unwrap();
    assert_eq!(out.status.code(), Some(10), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("2 done, 2 failed this run"), "{}", stdout(&out));
    let e = entries(&status(&m, &journal));
    let denied: Vec<&String> =
        order.iter().filter(|s| e[*s]["error"].as_str().is_some_and(|x| x.contains("not authorized"))).collect();
    assert_eq!(denied.len(), 1, "{e:?}");
    assert_ne!(denied[0], &drifted);
    // Once more, with nothing refused by the server: the drifted one is refused again (not
    // worth a retry: exit 9), and every other source is done.
    m.inject("");
    let out = fleet_run(&m, dir.path(), &journal, &[&plan_arg[..], &["--concurrency", "2"]].concat()).output().unwrap();
    assert_eq!(out.status.code(), Some(9), "{}{}", stdout(&out), stderr(&out));
    let e = entries(&status(&m, &journal));
    let error = e[&drifted]["error"].as_str().unwrap_or_default();
    assert_eq!(e[&drifted]["status"], "failed", "{:?}", e[&drifted]);
    assert!(error.contains("drifted") && error.contains("/etc/fstab changed"), "{error}");
    let st = state(&m, "us-east-1");
    assert!(of_source(&st, "snapshots", &drifted).is_empty(), "{:?}", of_source(&st, "snapshots", &drifted));
    assert!(of_source(&st, "images", &drifted).is_empty());
    for src in order.iter().filter(|s| **s != drifted) {
        assert_eq!(e[src]["status"], "done", "{src}: {:?}", e[src]);
        let images = of_source(&st, "images", src);
        assert_eq!(images.len(), 1, "{src}");
        assert_eq!(images[0]["ImageId"], e[src]["image"], "{src}");
    }
}

#[test]
fn copies_stopped_replacements_and_kept_snapshots_and_the_status_names_them() {
    let m = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let (ids, _) = seed_in(&m, "us-east-1", 3, "full");
    let before = state(&m, "us-east-1");
    let journal = dir.path().join("fleet.db");
    let mark = log_len(&m);
    let args = ["--concurrency", "3", "--copy-to-regions", "us-west-2", "--launch", "--stop", "--keep-temp"];
    let out = fleet_run(&m, dir.path(), &journal, &args).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("3 done, 0 failed this run"), "{}", stdout(&out));
    let calls = log_from(&m, mark);
    let e = entries(&status(&m, &journal));
    assert_eq!(e.keys().cloned().collect::<BTreeSet<_>>(), ids.iter().cloned().collect::<BTreeSet<_>>());
    // Replacements are left stopped; the last stop may still be settling.
    let t = Instant::now();
    let (home, there) = loop {
        let home = state(&m, "us-east-1");
        let settled = ids.iter().all(|src| {
            of_source(&home, "instances", src).iter().all(|i| i["State"]["Name"] != "stopping")
                && instance(&home, src)["State"]["Name"] != "pending"
        });
        if settled || t.elapsed() > Duration::from_secs(30) {
            break (home, state(&m, "us-west-2"));
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    for src in &ids {
        let e = &e[src];
        assert_eq!(e["status"], "done", "{e}");
        let vol = root_volume(&before, src);
        // Stopped (and settled) before its snapshot was asked for; started again once the
        // snapshot had completed; running now, its stopped-by tag gone.
        let at = |prefix: &str| {
            calls.iter().position(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?}: {calls:#?}"))
        };
        let snapshot_call = at(&format!("call CreateSnapshot {vol} {src} "));
        assert!(calls[snapshot_call].contains(&format!(" {src} stopped ")), "{}", calls[snapshot_call]);
        assert!(at(&format!("call StopInstances {src} ")) < at(&format!("settled {src} stopped ")));
        assert!(at(&format!("settled {src} stopped ")) < snapshot_call, "{src}: stopped before the snapshot");
        let kept: Vec<_> =
            of_source(&home, "snapshots", src).into_iter().filter(|s| tag(s, "pv2hvm:role") == Some("kept")).collect();
        assert_eq!(kept.len(), 1, "{src}: one kept snapshot: {:?}", of_source(&home, "snapshots", src));
        let kept_id = kept[0]["SnapshotId"].as_str().unwrap();
        assert_eq!(kept[0]["VolumeId"], vol.as_str(), "{src}: the kept snapshot is of its volume");
        assert!(
            at(&format!("settled {kept_id} completed ")) < at(&format!("call StartInstances {src} ")),
            "{src}: started again after its snapshot completed"
        );
        let source = instance(&home, src);
        assert_eq!(source["State"]["Name"], "running", "{src}");
        assert_eq!(tag(source, "pv2hvm:stopped-by"), None, "{src}");
        assert!(
            of_source(&home, "snapshots", src).iter().all(|s| tag(s, "pv2hvm:role") != Some("temporary")),
            "{src}: no temporary snapshot is left"
        );

        // One AMI here, one copy of it in us-west-2 tagged with the source, one stopped
        // replacement of the AMI: the ones the status names.
        let images = of_source(&home, "images", src);
        assert_eq!(images.len(), 1, "{src}");
        let ami = images[0]["ImageId"].as_str().unwrap();
        assert_eq!(e["image"], ami, "{src}");
        let copies = of_source(&there, "images", src);
        assert_eq!(copies.len(), 1, "{src}: one copy in us-west-2");
        let copy = copies[0]["ImageId"].as_str().unwrap();
        assert_eq!(e["copies"], serde_json::json!([["us-west-2", copy]]), "{src}");
        assert_eq!(copies[0]["VirtualizationType"], "hvm");
        let launched = of_source(&home, "instances", src);
        assert_eq!(launched.len(), 1, "{src}: one replacement");
        assert_eq!(e["instance"], launched[0]["InstanceId"], "{src}");
        assert_eq!(launched[0]["ImageId"], ami, "{src}: the replacement runs the AMI");
        assert_eq!(launched[0]["State"]["Name"], "stopped", "{src}");
    }
}
