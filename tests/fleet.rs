//! `pv2hvm fleet …` against a local AWS API server (moto, patched by tests/aws/moto_patches.py):
//! discovery over regions, a planned run with failures and its reports, kill -9 at several
//! points and resume (with and without the journal), shards run at once and share one run id,
//! two runs of one journal at once, the exit codes, and the journal format. The deploy files
//! are tests/deploy.rs's.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::moto::{Moto, tag};
use common::*;

fn seed(m: &Moto, image: &Path, n: usize, extra: &[&str]) -> Vec<String> {
    seeded(m, image, n, extra).0
}

/// The instances seeded, and the snapshot of their AMI. Each instance's root volume holds its
/// own data (tests/aws/tool.py): the image plus /etc/pv2hvm-volume naming the instance.
fn seeded(m: &Moto, image: &Path, n: usize, extra: &[&str]) -> (Vec<String>, String) {
    let mut args = vec!["fleet-seed", image.to_str().unwrap()];
    let count = n.to_string();
    args.push(&count);
    args.extend(extra);
    let v = m.tool_json(&args);
    let ids = v["instances"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()).collect();
    (ids, v["snapshot"].as_str().unwrap().to_string())
}

/// The root snapshot of `ami` (its /dev/xvda mapping).
fn root_of(state: &serde_json::Value, ami: &str) -> String {
    let img =
        state["images"].as_array().unwrap().iter().find(|i| i["ImageId"] == ami).unwrap_or_else(|| panic!("{ami}"));
    let maps = img["BlockDeviceMappings"].as_array().unwrap();
    maps.iter().find(|b| b["DeviceName"] == "/dev/xvda").unwrap()["Ebs"]["SnapshotId"].as_str().unwrap().to_string()
}

/// `ami`'s root is the converted disk of `inst`'s own volume: its own file names it, the
/// bootloader config is rewritten with the original kept, and e2fsck finds it clean. `copy` is
/// a copy of the fixture (the AMI snapshot `base`), put back afterwards.
fn assert_converted_root(m: &Moto, state: &serde_json::Value, ami: &str, inst: &str, base: &str, copy: &Path) {
    let changed = m.apply(base, &root_of(state, ami), copy);
    let t = copy.display().to_string();
    assert_eq!(guest_cat(&t, "/etc/pv2hvm-volume"), format!("volume of {inst}\n"), "{ami} of {inst}");
    let menu = guest_cat(&t, "/boot/grub/menu.lst");
    assert!(menu.contains("root=UUID=") && menu.contains("console=ttyS0"), "{ami} of {inst}: {menu}");
    assert!(guest_exists(&t, "/boot/grub/menu.lst.pv2hvm-orig"), "{ami} of {inst}");
    e2fsck_clean(&t);
    common::moto::restore(copy, &fixture_cloud(), &changed);
}

/// The pv2hvm AMIs of the home region: (source, spec hash) → AMI ids.
fn amis(m: &Moto) -> BTreeMap<(String, String), Vec<String>> {
    let state = m.tool_json(&["state"]);
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for img in state["images"].as_array().unwrap() {
        if let (Some(src), Some(h)) = (tag(img, "pv2hvm:source"), tag(img, "pv2hvm:spec-hash")) {
            out.entry((src.into(), h.into())).or_default().push(img["ImageId"].as_str().unwrap().into());
        }
    }
    out
}

/// No temporary snapshot is left, and every root or data snapshot pv2hvm made is in an AMI.
fn assert_no_orphans(m: &Moto) {
    let state = m.tool_json(&["state"]);
    let used: BTreeSet<String> = state["images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["BlockDeviceMappings"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| b["Ebs"]["SnapshotId"].as_str().map(str::to_string))
        .collect();
    for s in state["snapshots"].as_array().unwrap() {
        let id = s["SnapshotId"].as_str().unwrap();
        match tag(s, "pv2hvm:role") {
            Some("temporary") => panic!("temporary snapshot {id} left behind"),
            Some("root" | "data") => assert!(used.contains(id), "{id} ({:?}) is in no AMI", tag(s, "pv2hvm:role")),
            _ => {}
        }
    }
}

fn status(m: &Moto, journal: &Path) -> serde_json::Value {
    let out = run_ok(m.pv2hvm().args(["fleet", "status", "--format", "json", "--journal"]).arg(journal));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

fn fleet_run(m: &Moto, dir: &Path, journal: &Path, args: &[&str]) -> Command {
    let mut c = m.pv2hvm();
    c.args(["-q", "fleet", "run", "--yes", "--work-dir"]).arg(dir).arg("--journal").arg(journal).args(args);
    c.env_remove("PV2HVM_SHARDS").env_remove("PV2HVM_RUN_ID").env_remove("AWS_BATCH_JOB_ID");
    c.stdin(Stdio::null());
    c
}

/// Starts `cmd`, SIGKILLs it once `when` holds (polled), and returns how long it ran.
fn kill_when(mut cmd: Command, when: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    loop {
        if when() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return started.elapsed();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before the kill point");
        }
        assert!(started.elapsed() < Duration::from_secs(300), "no kill point within 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn discover_lists_exactly_the_pv_instances_and_amis_of_three_regions() {
    let m = Moto::start();
    let regions = [("us-east-1", 8, 2), ("eu-west-1", 7, 2), ("ap-southeast-2", 5, 1)];
    let mut pv = BTreeSet::new();
    let mut pv_images = BTreeSet::new();
    for (r, p, h) in regions {
        let v = m.tool_json(&["fake-fleet", r, &p.to_string(), &h.to_string()]);
        pv.extend(v["pv"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()));
        pv_images.insert(v["pv_image"].as_str().unwrap().to_string());
    }
    assert_eq!(pv.len(), 20);
    let out = run_ok(m.pv2hvm().args([
        "fleet",
        "discover",
        "--regions",
        "us-east-1,eu-west-1,ap-southeast-2",
        "--format",
        "json",
    ]));
    let items: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let found = |kind: &str| -> BTreeSet<String> {
        items.iter().filter(|i| i["kind"] == kind).map(|i| i["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(found("instance"), pv);
    assert_eq!(found("image"), pv_images);
    for i in &items {
        assert_eq!(i["verdict"], "candidate", "{i}");
        assert_eq!(i["kernel_id"], "aki-919dcaf8");
        assert!(i["launched"].as_str().is_some_and(|t| t.ends_with('Z')), "{i}");
    }
    // `all` asks DescribeRegions; a filter narrows; CSV has a header and one line per item.
    let out = run_ok(m.pv2hvm().args(["fleet", "discover", "--regions", "all", "--format", "csv"]));
    let text = stdout(&out);
    assert!(text.starts_with("id,kind,region,name,"), "{text}");
    assert_eq!(text.lines().count(), 1 + 20 + 3);
    let out = run_ok(m.pv2hvm().args([
        "fleet",
        "discover",
        "--regions",
        "all",
        "--filter",
        "tag:Name=pv-eu-west-1-03",
        "--format",
        "csv",
    ]));
    let rows: Vec<String> = stdout(&out).lines().skip(1).map(str::to_string).collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].contains(",eu-west-1,pv-eu-west-1-03,"), "{rows:?}");
    // A bad filter is a usage error before any call.
    let out = m.pv2hvm().args(["fleet", "discover", "--filter", "nonsense"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // More than one page of EC2's largest (1,000 items) of each kind: the strict server pages
    // DescribeInstances and DescribeImages shortly and at random (tests/aws/strict_listings.py),
    // and every item of every page is listed, the HVM ones between them left out.
    let bulk = m.tool_json(&["bulk", "sa-east-1", "1100", "1050"]);
    let set = |k: &str| -> BTreeSet<String> {
        bulk[k].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()).collect()
    };
    let seen = std::fs::read_to_string(&m.strict_log).unwrap().lines().count();
    let out = run_ok(m.pv2hvm().args(["fleet", "discover", "--regions", "sa-east-1", "--format", "json"]));
    let items: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let found = |kind: &str| -> BTreeSet<String> {
        items.iter().filter(|i| i["kind"] == kind).map(|i| i["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(found("instance"), set("pv"));
    assert_eq!(found("image"), set("pv_images"));
    assert_eq!(items.len(), 1100 + 1050, "each item once");
    // The server's own count: pages served to pv2hvm add up to the whole listing, in many pages.
    let log = std::fs::read_to_string(&m.strict_log).unwrap();
    // The instance listing holds the HVM instances too (no server-side filter for them).
    let hvm = bulk["hvm"].as_array().unwrap().len();
    for (what, total) in [("describe-instances", 1100 + hvm), ("describe-images", 1050)] {
        let pages: Vec<(usize, usize)> = log
            .lines()
            .skip(seen)
            .filter_map(|l| l.strip_prefix(&format!("page {what} ")))
            .map(|l| {
                let (n, of) = l.split_once(" of ").unwrap();
                (n.parse().unwrap(), of.parse().unwrap())
            })
            .collect();
        assert!(pages.len() > 7, "{what}: {pages:?}");
        assert!(pages.iter().all(|&(_, of)| of == total), "{what}: {pages:?}");
        assert_eq!(pages.iter().map(|&(n, _)| n).sum::<usize>(), total, "{what}: every page, to the last");
    }
}

/// Report text with its run-dependent parts replaced: ids, timings, the fixture's kernel
/// version; table rows sorted by name (ids sort randomly).
fn normalise(text: &str, format: &str, kernel: &str) -> String {
    let text = text.replace(kernel, "KVER");
    let token = |w: &str| -> String {
        for prefix in ["ami-", "snap-", "i-"] {
            if let Some(rest) = w.strip_prefix(prefix)
                && rest.len() >= 8
                && rest.chars().all(|c| c.is_ascii_hexdigit())
            {
                return format!("{prefix}X");
            }
        }
        if let Some((k, v)) = w.split_once('=')
            && let Some(secs) = v.strip_suffix('s')
            && secs.parse::<f64>().is_ok()
        {
            return format!("{k}=Ns");
        }
        if w.contains('.') && w.parse::<f64>().is_ok() {
            return "N".into();
        }
        w.to_string()
    };
    let scrub = |l: &str| -> String {
        let mut out = String::new();
        let mut word = String::new();
        for c in l.chars() {
            if matches!(c, ' ' | ',' | '|' | '`' | ':' | ';') {
                out.push_str(&token(&word));
                word.clear();
                out.push(c);
            } else {
                word.push(c);
            }
        }
        out.push_str(&token(&word));
        out
    };
    if format == "json" {
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let list = v["instances"].as_array_mut().unwrap();
        for e in list.iter_mut() {
            e["seconds"] = serde_json::Value::Null;
            for k in ["blocks_fetched", "blocks_uploaded"] {
                if e[k].as_u64().is_some_and(|n| n > 0) {
                    e[k] = "N".into();
                }
            }
            for st in e["stages"].as_array_mut().unwrap() {
                st[1] = serde_json::Value::Null;
            }
            for k in ["source", "image", "error"] {
                if let Some(s) = e[k].as_str() {
                    e[k] = scrub(s).into();
                }
            }
        }
        list.sort_by_key(|e| e["name"].as_str().unwrap_or_default().to_string());
        return serde_json::to_string_pretty(&v).unwrap() + "\n";
    }
    let mut lines: Vec<String> = text.lines().map(scrub).collect();
    let first_row = lines.iter().position(|l| l.starts_with("| `") || l.starts_with("i-X,")).unwrap_or(lines.len());
    // Block counts follow the fixture (its kernel and initramfs): checked by the test itself.
    let count =
        |c: &str| if c.trim().parse::<u64>().is_ok_and(|n| n > 0) { c.replace(c.trim(), "N") } else { c.to_string() };
    for l in &mut lines[first_row..] {
        let sep = if l.starts_with('|') { '|' } else { ',' };
        *l = l.split(sep).map(count).collect::<Vec<_>>().join(&sep.to_string());
    }
    let key =
        |l: &String| l.split([',', '|']).map(str::trim).filter(|c| !c.is_empty()).nth(2).unwrap_or("").to_string();
    lines[first_row..].sort_by_key(key);
    lines.join("\n") + "\n"
}

fn expect(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fleet").join(name);
    if std::env::var_os("PV2HVM_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(got, want, "{name} differs (PV2HVM_BLESS=1 rewrites it)");
}

#[test]
fn a_planned_run_of_ten_with_two_that_cannot_migrate_and_its_reports() {
    let m = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let (good, base) = seeded(&m, &fixture_cloud(), 10, &[]);
    // A Xen PV-only kernel, and an instance-store root.
    let xen = copy_sparse(&fixture_cloud(), dir.path(), "xen.img");
    let t = xen.display().to_string();
    let config = format!("/boot/config-{}", kernel_version(&t));
    let text = guest_cat(&t, &config);
    guest_write(&t, &config, &format!("{text}CONFIG_X86_64_XEN=y\n"));
    let xen_id = seed(&m, &xen, 1, &["--name", "xenonly"]).remove(0);
    let tiny = dir.path().join("tiny.img");
    std::fs::write(&tiny, vec![1u8; 4096]).unwrap();
    let store_id = seed(&m, &tiny, 1, &["--name", "storeroot", "--variant", "instance-store"]).remove(0);

    let plan = dir.path().join("fleet-plan.json");
    let out = run_ok(
        m.pv2hvm().args(["fleet", "plan", "--concurrency", "4", "--work-dir"]).arg(dir.path()).arg("-o").arg(&plan),
    );
    let md = stdout(&out);
    assert!(md.contains("12 source(s)") && md.contains("| ready | 10 |") && md.contains("| refused | 2 |"), "{md}");
    assert!(md.contains("| m5 | 10 |"), "{md}");
    assert!(md.contains(&format!("`{xen_id}`")) && md.contains("cannot run as an HVM guest"), "{md}");
    assert!(md.contains(&format!("`{store_id}`")) && md.contains("instance store"), "{md}");
    assert_eq!(md.matches("<details><summary><code>").count(), 12);
    assert!(amis(&m).is_empty(), "planning made an AMI");

    let journal = dir.path().join("fleet.db");
    let out = fleet_run(&m, dir.path(), &journal, &["--plan", plan.to_str().unwrap(), "--concurrency", "4"])
        .output()
        .unwrap();
    // Both failures are refusals: exit 9, not worth a retry.
    assert_eq!(out.status.code(), Some(9), "two refused: {}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("10 done, 2 failed this run"), "{}", stdout(&out));
    let made = amis(&m);
    assert_eq!(made.len(), 10);
    // Each AMI is the converted disk of its own instance's volume (they all differ).
    let state = m.tool_json(&["state"]);
    let copy = copy_sparse(&fixture_cloud(), dir.path(), "check.img");
    for id in &good {
        let n: usize = made.iter().filter(|((s, _), _)| s == id).map(|(_, v)| v.len()).sum();
        assert_eq!(n, 1, "{id}");
        let ami = made.iter().find(|((s, _), _)| s == id).unwrap().1[0].clone();
        assert_converted_root(&m, &state, &ami, id, &base, &copy);
    }
    assert_no_orphans(&m);
    let s = status(&m, &journal);
    assert_eq!(s["totals"]["done"], 10);
    assert_eq!(s["totals"]["failed"], 2);
    // The AMI each source's status and report name is the one AWS holds tagged with that source.
    let out = run_ok(m.pv2hvm().args(["fleet", "report", "--format", "json", "--journal"]).arg(&journal));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ids_are_aws(&m, &s);
    assert_ids_are_aws(&m, &report);
    for e in s["instances"].as_array().unwrap() {
        if e["status"] == "done" {
            let stages: Vec<&str> = e["stages"].as_array().unwrap().iter().map(|x| x[0].as_str().unwrap()).collect();
            assert_eq!(stages, ["snapshot", "read", "convert", "upload", "register", "cleanup"], "{e}");
            // In place: the metadata and edited files come down, a small delta goes up.
            let (fetched, uploaded) = (e["blocks_fetched"].as_u64().unwrap(), e["blocks_uploaded"].as_u64().unwrap());
            assert!(fetched >= 40 && (1..=64).contains(&uploaded), "{e}");
        }
    }

    for (format, file) in [("markdown", "report.md"), ("csv", "report.csv"), ("json", "report.json")] {
        let out = run_ok(m.pv2hvm().args(["fleet", "report", "--format", format, "--journal"]).arg(&journal));
        expect(file, &normalise(&stdout(&out), format, &kernel_version(&fixture_cloud().display().to_string())));
    }
    // Again: nothing to do, nothing made.
    let out = fleet_run(&m, dir.path(), &journal, &["--plan", plan.to_str().unwrap()]).output().unwrap();
    assert!(stdout(&out).contains("0 done, 2 failed this run"), "{}", stdout(&out));
    assert_eq!(amis(&m), made);
}

/// Each done entry of a status or report names, as its image, copies and replacement, the
/// resources AWS holds tagged `pv2hvm:source` with that entry's source, in every region.
fn assert_ids_are_aws(m: &Moto, v: &serde_json::Value) {
    let mut regions: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for e in v["instances"].as_array().unwrap().iter().filter(|e| e["status"] == "done") {
        let src = e["source"].as_str().unwrap();
        let region = e["region"].as_str().unwrap_or("us-east-1").to_string();
        let state = regions.entry(region.clone()).or_insert_with(|| m.tool_json(&["state", &region])).clone();
        let tagged = |what: &str, key: &str| -> Vec<String> {
            state[what]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| tag(x, "pv2hvm:source") == Some(src) && tag(x, "pv2hvm:spec-hash").is_some())
                .map(|x| x[key].as_str().unwrap().to_string())
                .collect()
        };
        let images = tagged("images", "ImageId");
        assert_eq!(images, vec![e["image"].as_str().unwrap().to_string()], "{src}: {e}");
        let instances = tagged("instances", "InstanceId");
        assert_eq!(instances, e["instance"].as_str().map(str::to_string).into_iter().collect::<Vec<_>>(), "{src}: {e}");
        for c in e["copies"].as_array().into_iter().flatten() {
            let (r, id) = (c[0].as_str().unwrap(), c[1].as_str().unwrap());
            let there = regions.entry(r.to_string()).or_insert_with(|| m.tool_json(&["state", r])).clone();
            let copy = there["images"].as_array().unwrap().iter().find(|i| i["ImageId"] == id);
            assert!(copy.is_some_and(|i| tag(i, "pv2hvm:source") == Some(src)), "{src}: copy {id} in {r}");
        }
    }
}

/// True when some source's current attempt (in `journal`) is in `stage`: begun, not done.
fn in_stage(journal: &Path, stage: &str) -> bool {
    let Ok(db) = rusqlite::Connection::open_with_flags(journal, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return false;
    };
    db.query_row(
        "SELECT count(*) FROM stages s JOIN items i ON i.source = s.source AND s.attempt = i.attempts \
         WHERE i.status = 'running' AND s.stage = ?1 AND s.finished IS NULL",
        [stage],
        |r| r.get::<_, i64>(0),
    )
    .is_ok_and(|n| n > 0)
}

/// The root volume of each instance in `state`.
fn root_volumes(state: &serde_json::Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for i in state["instances"].as_array().unwrap() {
        let root = i["RootDeviceName"].as_str().unwrap_or_default();
        if let Some(b) = i["BlockDeviceMappings"].as_array().unwrap().iter().find(|b| b["DeviceName"] == root) {
            out.insert(
                i["InstanceId"].as_str().unwrap().to_string(),
                b["Ebs"]["VolumeId"].as_str().unwrap().to_string(),
            );
        }
    }
    out
}

/// The snapshots of `role` tagged with each source, with their state.
fn work_snapshots(state: &serde_json::Value, role: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for s in state["snapshots"].as_array().unwrap() {
        if let (Some(src), Some(r)) = (tag(s, "pv2hvm:source"), tag(s, "pv2hvm:role"))
            && r == role
        {
            out.entry(src.into())
                .or_default()
                .push((s["SnapshotId"].as_str().unwrap().into(), s["State"].as_str().unwrap().into()));
        }
    }
    out
}

#[test]
fn killed_runs_resume_from_their_last_stage_with_or_without_the_journal() {
    let m = Moto::start_with(&[("PV2HVM_MOTO_REGISTER_DELAY", "1.5")]);
    let dir = tempfile::tempdir().unwrap();
    let (ids, base) = seeded(&m, &fixture_cloud(), 4, &[]);
    let volumes = root_volumes(&m.tool_json(&["state"]));
    let copy = copy_sparse(&fixture_cloud(), dir.path(), "check.img");
    let ids_file = dir.path().join("ids");
    std::fs::write(&ids_file, ids.join("\n") + "\n").unwrap();
    let ids_arg = ["--ids-file", ids_file.to_str().unwrap(), "--concurrency", "2"];
    // Each scenario's options differ (--target), so each is new work for the same instances.
    // A scenario's kills come one after the other, each run resuming the one killed before.
    let scenarios: [(&str, &[&str], bool); 3] = [
        ("auto", &["in the snapshot stage", "in the read stage", "in the convert stage", "after 25 uploads"], false),
        ("nitro", &["during registration"], false),
        ("xen", &["after 30 uploads"], true),
    ];
    for (target, points, drop_journal) in scenarios {
        let journal = dir.path().join(format!("{target}.db"));
        let args: Vec<&str> = ids_arg.iter().copied().chain(["--target", target]).collect();
        let calls_before = std::fs::read_to_string(&m.strict_log).unwrap_or_default().lines().count();
        // What the kills left: completed root snapshots (to be registered as they are), pending
        // ones (to be removed), temporary snapshots (to be read again).
        let (mut roots, mut pending, mut temporaries) = (BTreeMap::new(), BTreeSet::new(), BTreeSet::new());
        let earlier: BTreeSet<String> = m.tool_json(&["state"])["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["SnapshotId"].as_str().unwrap().to_string())
            .collect();
        for point in points {
            let (puts, registers) = (m.calls("put"), m.calls("register"));
            let ran = kill_when(fleet_run(&m, dir.path(), &journal, &args), || match *point {
                "during registration" => m.calls("register") > registers,
                p if p.starts_with("in the ") => in_stage(&journal, p.split(' ').nth(2).unwrap()),
                p => m.calls("put") >= puts + p.split(' ').nth(1).unwrap().parse::<usize>().unwrap(),
            });
            eprintln!("{target}: killed {point} after {ran:?}");
            // A root whose CompleteSnapshot went out just before the kill settles as completed
            // a moment later (strict S5) and is then to be registered, not removed: let
            // everything settle before telling finished roots from unfinished ones.
            std::thread::sleep(Duration::from_millis(1500));
            let state = m.tool_json(&["state"]);
            for (src, snaps) in work_snapshots(&state, "root") {
                for (id, st) in snaps.into_iter().filter(|(id, _)| !earlier.contains(id)) {
                    if st == "completed" {
                        roots.insert(src.clone(), id);
                    } else {
                        pending.insert(id);
                    }
                }
            }
            for (src, snaps) in work_snapshots(&state, "temporary") {
                if snaps.iter().any(|(id, _)| !earlier.contains(id)) {
                    temporaries.insert(src);
                }
            }
        }
        if drop_journal {
            for suffix in ["", "-journal", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", journal.display()));
            }
        }
        let out = fleet_run(&m, dir.path(), &journal, &args).output().unwrap();
        assert!(out.status.success(), "{target}: {}{}", stdout(&out), stderr(&out));
        assert!(stdout(&out).contains("the journal has 4 done, 0 failed, 0 pending"), "{}", stdout(&out));
        // Exactly one AMI per instance for these options, no orphaned snapshot.
        let made = amis(&m);
        let hashes: BTreeSet<&String> = made.keys().map(|(_, h)| h).collect();
        for h in &hashes {
            for id in &ids {
                assert_eq!(made.get(&(id.clone(), (*h).clone())).map_or(0, Vec::len), 1, "{target}: {id} {h}");
            }
        }
        assert_no_orphans(&m);
        let s = status(&m, &journal);
        assert_eq!(s["totals"]["done"], 4, "{s}");
        let state = m.tool_json(&["state"]);
        let snapshot_ids: BTreeSet<&str> =
            state["snapshots"].as_array().unwrap().iter().map(|x| x["SnapshotId"].as_str().unwrap()).collect();
        let calls: Vec<String> =
            std::fs::read_to_string(&m.strict_log).unwrap().lines().skip(calls_before).map(str::to_string).collect();
        for e in s["instances"].as_array().unwrap() {
            let (src, outcome, ami) =
                (e["source"].as_str().unwrap(), e["outcome"].as_str().unwrap(), e["image"].as_str().unwrap());
            // What a kill left was reused: the volume was snapshotted once in all the runs, a
            // completed root snapshot is the AMI's, and the outcome says so.
            let vol = &volumes[src];
            let snapshotted = calls.iter().filter(|l| l.starts_with(&format!("call CreateSnapshot {vol} "))).count();
            assert_eq!(snapshotted, 1, "{target}: {src}'s volume {vol} snapshotted {snapshotted} times");
            if let Some(root) = roots.get(src) {
                assert_eq!(&root_of(&state, ami), root, "{target}: {src}: the completed root snapshot is registered");
            }
            if roots.contains_key(src) || temporaries.contains(src) {
                assert!(["resumed", "already-migrated"].contains(&outcome), "{target}: {src}: {outcome}");
            } else {
                assert_eq!(outcome, "migrated", "{target}: {src}");
            }
            // And the AMI is the converted disk of this instance's volume.
            assert_converted_root(&m, &state, ami, src, &base, &copy);
        }
        for p in &pending {
            assert!(!snapshot_ids.contains(p.as_str()), "{target}: the unfinished root {p} is removed");
        }
        assert!(!temporaries.is_empty(), "{target}: the kills left something to resume");
        eprintln!(
            "{target}: resumed {} temporary and {} root snapshot(s), removed {}",
            temporaries.len(),
            roots.len(),
            pending.len()
        );
    }
    assert_eq!(amis(&m).len(), 12);
}

#[test]
fn three_shards_at_once_take_disjoint_slices_and_one_report_covers_them() {
    let m = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let ids: BTreeSet<String> = seed(&m, &fixture_cloud(), 12, &[]).into_iter().collect();
    let shard_dir = |k: usize| {
        let d = dir.path().join(format!("node{k}"));
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    // Shard 0 by flag; 1 as an AWS Batch array child; 2 as a Kubernetes Indexed Job pod. Each
    // keeps its journal where it runs, under the default name.
    let mut children = Vec::new();
    for k in 0..3usize {
        let d = shard_dir(k);
        let mut c = m.pv2hvm();
        c.current_dir(&d).args(["-q", "fleet", "run", "--yes", "--concurrency", "2", "--work-dir"]).arg(&d);
        c.args(["--copy-to-regions", "us-west-2", "--launch"]);
        c.env_remove("AWS_BATCH_JOB_ARRAY_INDEX").env_remove("JOB_COMPLETION_INDEX");
        c.env_remove("PV2HVM_SHARDS").env_remove("PV2HVM_RUN_ID").env_remove("AWS_BATCH_JOB_ID");
        // One run id for all three: given, from the Batch array job's id, from the Job's uid.
        match k {
            0 => c.args(["--shard", "0/3", "--run-id", "fleet3"]),
            1 => c.env("AWS_BATCH_JOB_ARRAY_INDEX", "1").env("PV2HVM_SHARDS", "3").env("AWS_BATCH_JOB_ID", "fleet3:1"),
            _ => c.env("JOB_COMPLETION_INDEX", "2").env("PV2HVM_SHARDS", "3").env("PV2HVM_RUN_ID", "fleet3"),
        };
        children.push(c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    }
    let journals: Vec<PathBuf> = (0..3).map(|k| shard_dir(k).join(format!("pv2hvm-fleet-{k}-of-3.db"))).collect();
    let state = m.tool_json(&["state"]);
    for img in state["images"].as_array().unwrap().iter().filter(|i| tag(i, "pv2hvm:source").is_some()) {
        assert_eq!(tag(img, "pv2hvm:run-id"), Some("fleet3"), "{img}");
    }
    for j in &journals {
        let out = run_ok(m.pv2hvm().args(["fleet", "status", "--journal"]).arg(j));
        assert!(stdout(&out).starts_with("run fleet3, shard "), "{}", stdout(&out));
    }
    let mut seen = BTreeSet::new();
    for j in &journals {
        let s = status(&m, j);
        for e in s["instances"].as_array().unwrap() {
            assert_eq!(e["status"], "done", "{e}");
            assert!(seen.insert(e["source"].as_str().unwrap().to_string()), "{} is in two shards", e["source"]);
        }
    }
    assert_eq!(seen, ids);
    let made = amis(&m);
    assert_eq!(made.len(), 12);
    assert!(made.values().all(|v| v.len() == 1));
    assert_no_orphans(&m);
    let mut c = m.pv2hvm();
    c.args(["fleet", "report", "--format", "json"]);
    for j in &journals {
        c.arg("--journal").arg(j);
    }
    let r: serde_json::Value = serde_json::from_slice(&run_ok(&mut c).stdout).unwrap();
    assert_eq!(r["totals"]["sources"], 12);
    assert_eq!(r["totals"]["done"], 12);
    assert_ids_are_aws(&m, &r);
    let covered: BTreeSet<String> =
        r["instances"].as_array().unwrap().iter().map(|e| e["source"].as_str().unwrap().to_string()).collect();
    assert_eq!(covered, ids);
    // A journal of one shard refuses another.
    let out =
        m.pv2hvm().args(["fleet", "run", "--yes", "--shard", "1/3", "--journal"]).arg(&journals[0]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("holds shard 0/3"), "{}", stderr(&out));
    // N without K, and N unlike --shard's: refused before anything is done.
    let out =
        m.pv2hvm().current_dir(dir.path()).args(["fleet", "run", "--yes"]).env("PV2HVM_SHARDS", "3").output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("PV2HVM_SHARDS=3 is set but no shard index is"), "{}", stderr(&out));
    let out = m
        .pv2hvm()
        .current_dir(dir.path())
        .args(["fleet", "run", "--yes", "--shard", "1/4"])
        .env("PV2HVM_SHARDS", "3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn a_second_run_of_one_journal_stops_at_once_and_failures_worth_a_retry_exit_10() {
    let m = Moto::start_with(&[("PV2HVM_MOTO_REGISTER_DELAY", "1.5")]);
    let dir = tempfile::tempdir().unwrap();
    let mut ids = seed(&m, &fixture_cloud(), 3, &[]);
    let extra = ids.pop().unwrap();
    let ids_file = dir.path().join("ids");
    std::fs::write(&ids_file, ids.join("\n") + "\n").unwrap();
    let journal = dir.path().join("fleet.db");
    let args = ["--ids-file", ids_file.to_str().unwrap(), "--concurrency", "2"];
    // Seeding put blocks too (each volume's own content): count the first run's puts only.
    let seeded_puts = m.calls("put");
    let first =
        fleet_run(&m, dir.path(), &journal, &args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Once the first is migrating (it has the lock by then), a second run of the journal.
    let t = Instant::now();
    while m.calls("put") == seeded_puts {
        assert!(t.elapsed() < Duration::from_secs(120), "the first run did not start uploading");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    let second = fleet_run(&m, dir.path(), &journal, &args).output().unwrap();
    assert_eq!(second.status.code(), Some(11), "{}{}", stdout(&second), stderr(&second));
    assert!(stderr(&second).contains("another fleet run is using this journal"), "{}", stderr(&second));
    assert!(t.elapsed() < Duration::from_secs(15), "the second run waited {:?}", t.elapsed());
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}{}", stdout(&first), stderr(&first));
    let made = amis(&m);
    for id in &ids {
        assert_eq!(made.iter().filter(|((s, _), _)| s == id).map(|(_, v)| v.len()).sum::<usize>(), 1, "{id}");
    }
    assert_no_orphans(&m);

    // An AWS failure (every block upload fails, after its retries): exit 10, worth a retry.
    std::fs::write(&ids_file, format!("{extra}\n")).unwrap();
    m.inject("put=100000:500");
    let out = fleet_run(&m, dir.path(), &dir.path().join("retry.db"), &args).output().unwrap();
    assert_eq!(out.status.code(), Some(10), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("0 done, 1 failed this run"), "{}", stdout(&out));
}

#[test]
fn a_format_1_journal_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    let sql = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fleet/journal-format-1.sql"))
        .unwrap();
    rusqlite::Connection::open(&db).unwrap().execute_batch(&sql).unwrap();
    let out = run_ok(pv2hvm().args(["fleet", "report", "--format", "csv", "--journal"]).arg(&db));
    expect("journal-format-1.csv", &stdout(&out));
    let out = run_ok(pv2hvm().args(["fleet", "status", "--journal"]).arg(&db));
    assert!(stdout(&out).contains("3 source(s): 2 done, 1 failed, 0 running, 0 pending"), "{}", stdout(&out));
    // Not a journal, and no journal at all: clear refusals.
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other).unwrap().execute_batch("CREATE TABLE t (x);").unwrap();
    let out = pv2hvm().args(["fleet", "status", "--journal"]).arg(&other).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("not a pv2hvm fleet journal"), "{}", stderr(&out));
    let out = pv2hvm().args(["fleet", "status", "--journal"]).arg(dir.path().join("none.db")).output().unwrap();
    assert!(stderr(&out).contains("no such journal"), "{}", stderr(&out));
    assert!(!dir.path().join("none.db").exists());
}
