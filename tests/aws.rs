//! `pv2hvm migrate`, `plan` and `cleanup` against a local AWS API server (moto, patched by
//! tests/aws/moto_patches.py). The fixture goes in as a snapshot through EBS direct, behind a
//! PV AMI (aki- kernel) and an instance; what comes out is read back with boto3 and booted.

mod common;

use std::path::Path;

use common::moto::{Moto, tag};
use common::*;
use pv2hvm::boot::check::{self as bootcheck, BootCheck, DiskBus};

fn image<'a>(state: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    state["images"].as_array().unwrap().iter().find(|i| i["ImageId"] == id).unwrap_or_else(|| panic!("no {id}"))
}

fn ids(state: &serde_json::Value, what: &str, key: &str) -> Vec<String> {
    let mut v: Vec<String> =
        state[what].as_array().unwrap().iter().map(|x| x[key].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

/// How many 512 KiB blocks the filesystem's metadata touches, by e2image -r.
fn metadata_blocks(image: &Path, dir: &Path) -> u64 {
    let meta = dir.join("meta.img");
    run_ok(std::process::Command::new("e2image").arg("-r").arg(image).arg(&meta));
    let f = std::fs::File::open(&meta).unwrap();
    let blocks = data_blocks(&f, f.metadata().unwrap().len(), 512 << 10);
    let _ = std::fs::remove_file(&meta);
    blocks.len() as u64
}

/// Downloads `snapshot` block by block and boots it on NVMe; returns the root device.
fn boot_snapshot(m: &Moto, snapshot: &str, dir: &Path) -> String {
    let disk = dir.join("downloaded.img");
    m.tool(&["download", snapshot, disk.to_str().unwrap()]);
    boot_disk(&disk, dir)
}

/// Boots a downloaded disk on NVMe and removes it; returns the root device.
fn boot_disk(disk: &Path, dir: &Path) -> String {
    let mut check = BootCheck::new(disk, DiskBus::Nvme);
    check.console_log = Some(dir.join("console.log"));
    let outcome = bootcheck::run(&check).expect("QEMU runs");
    assert!(outcome.ok(), "{}", outcome.summary());
    let _ = std::fs::remove_file(disk);
    outcome.root_device.unwrap_or_default()
}

/// The root volume of instance `id` in a `state`.
fn root_volume(state: &serde_json::Value, id: &str) -> String {
    let i = state["instances"].as_array().unwrap().iter().find(|i| i["InstanceId"] == id).unwrap();
    let root = i["RootDeviceName"].as_str().unwrap();
    let maps = i["BlockDeviceMappings"].as_array().unwrap();
    maps.iter().find(|b| b["DeviceName"] == root).unwrap()["Ebs"]["VolumeId"].as_str().unwrap().to_string()
}

/// When the injected faults of `op` were dealt, by their key (a block: "snap-… 12"), from the
/// fault log ("OP KIND TIME KEY" lines).
fn dealt_times(log: &Path, op: &str) -> std::collections::BTreeMap<String, Vec<f64>> {
    let mut out: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let w: Vec<&str> = line.split(' ').collect();
        if w[0] == op && w.len() >= 3 {
            out.entry(w[3..].join(" ")).or_default().push(w[2].parse().unwrap());
        }
    }
    out
}

/// What the strict server saw pv2hvm call, and what settled when, in order ("call …",
/// "settled …" lines of its log).
fn server_calls(m: &Moto) -> Vec<String> {
    let log = std::fs::read_to_string(&m.strict_log).unwrap_or_default();
    log.lines().filter(|l| l.starts_with("call ") || l.starts_with("settled ")).map(str::to_string).collect()
}

#[test]
fn migrating_an_instance_in_place_registers_a_bootable_hvm_ami_from_the_delta_alone() {
    let m = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let seeded = m.tool_json(&["seed", fixture_cloud().to_str().unwrap(), "--data-volume"]);
    let (snap, ami, inst) =
        (seeded["snapshot"].as_str().unwrap(), seeded["image"].as_str().unwrap(), seeded["instance"].as_str().unwrap());
    let before = m.tool_json(&["state"]);

    let r = m.migrate_json(&[inst], dir.path());
    assert_eq!(r["outcome"], "migrated");
    let new_ami = r["image"].as_str().unwrap();
    let root = r["root_snapshot"].as_str().unwrap();
    let source_snap = r["source_snapshot"].as_str().unwrap();
    let state = m.tool_json(&["state"]);

    // The AMI: HVM, BIOS, its own kernel, ENA, root /dev/xvda on the new snapshot, the
    // ephemeral mapping kept, tags copied and pv2hvm's added.
    let img = image(&state, new_ami);
    assert_eq!(img["VirtualizationType"], "hvm");
    assert_eq!(img["RootDeviceName"], "/dev/xvda");
    assert_eq!(img["BootMode"], "legacy-bios");
    assert_eq!(img["Architecture"], "x86_64");
    assert_eq!(img["EnaSupport"], true);
    assert!(img.get("KernelId").is_none_or(|k| k.is_null()), "no kernel id: {img}");
    // The cloud kernel carries ixgbevf, so the plan asks for SR-IOV, and the AMI has it.
    assert_eq!(r["plan"]["ami"]["sriov_net_support"], "simple");
    assert_eq!(img["SriovNetSupport"], "simple");
    let maps = img["BlockDeviceMappings"].as_array().unwrap();
    let root_map = maps.iter().find(|x| x["DeviceName"] == "/dev/xvda").unwrap();
    assert_eq!(root_map["Ebs"]["SnapshotId"], root);
    assert!(maps.iter().any(|x| x["VirtualName"] == "ephemeral0" && x["DeviceName"] == "/dev/sdb"), "{maps:?}");
    // The instance's other volume, snapshotted as it is and mapped under its own name.
    let data = maps.iter().find(|x| x["DeviceName"] == "/dev/sdf").expect("the data volume is mapped");
    let data_snap = data["Ebs"]["SnapshotId"].as_str().unwrap();
    let data_snap = state["snapshots"].as_array().unwrap().iter().find(|x| x["SnapshotId"] == data_snap).unwrap();
    assert_eq!(tag(data_snap, "pv2hvm:role"), Some("data"));
    assert_eq!(tag(img, "Name"), Some("web-1"));
    assert_eq!(tag(img, "pv2hvm:source"), Some(inst));
    assert_eq!(tag(img, "pv2hvm:run-id"), r["run_id"].as_str());
    assert_eq!(tag(img, "pv2hvm:layout"), Some("inplace"));
    assert!(tag(img, "pv2hvm:plan-hash").is_some_and(|h| h.len() == 16));

    // Only the delta moved: the child's changed blocks against the source snapshot are what
    // was uploaded, no more than the delta; and far fewer blocks were fetched than stored.
    let delta_blocks: std::collections::BTreeSet<u64> =
        m.tool_json(&["changed", source_snap, root]).as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect();
    let changed = delta_blocks.len() as u64;
    let uploaded = r["blocks_uploaded"].as_u64().unwrap();
    let delta = r["delta_blocks"].as_u64().unwrap();
    assert!(
        changed > 0 && changed == uploaded && uploaded <= delta,
        "changed {changed}, uploaded {uploaded}, delta {delta}"
    );
    // What was fetched is the filesystem's metadata (as e2image -r, an independent tool, sees
    // it, in 512 KiB blocks) plus the few files the conversion reads and edits: the initramfs,
    // the modules it gains, the configs.
    let fetched = r["blocks_fetched"].as_u64().unwrap();
    let meta = metadata_blocks(&fixture_cloud(), dir.path());
    assert!(fetched <= meta + 48, "fetched {fetched} blocks; the metadata alone touches {meta}");
    // The temporary source snapshot is gone; the PV AMI and its snapshot are as they were.
    let snaps = ids(&state, "snapshots", "SnapshotId");
    assert!(!snaps.contains(&source_snap.to_string()), "the temporary snapshot was removed");
    assert!(snaps.contains(&snap.to_string()));
    assert_eq!(image(&state, ami), image(&before, ami), "the source AMI is unchanged");
    // From the PV AMI's snapshot to the result: the blocks the volume changed since launch
    // (the seed's own file) and the delta, nothing else.
    let from_ami: std::collections::BTreeSet<u64> =
        m.tool_json(&["changed", snap, root]).as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect();
    let own: std::collections::BTreeSet<u64> =
        seeded["volume_blocks"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect();
    assert!(!own.is_empty());
    assert_eq!(from_ami, &own | &delta_blocks, "the AMI's snapshot to the result");

    // A second run finds the AMI and makes nothing.
    let again = m.migrate_json(&[inst], dir.path());
    assert_eq!(again["outcome"], "already-migrated");
    assert_eq!(again["image"], new_ami);
    let after = m.tool_json(&["state"]);
    assert_eq!(ids(&after, "images", "ImageId"), ids(&state, "images", "ImageId"));
    assert_eq!(ids(&after, "snapshots", "SnapshotId"), snaps);

    // The volume's own data, written since launch (the seed's /etc/pv2hvm-volume), is in the
    // new AMI: it was built on a snapshot of the volume, not on the AMI the instance came from.
    // Proof is a boot: the AMI's root snapshot, block by block, on NVMe.
    let disk = dir.path().join("downloaded.img");
    m.tool(&["download", root, disk.to_str().unwrap()]);
    let t = disk.display().to_string();
    assert_eq!(guest_cat(&t, "/etc/pv2hvm-volume"), format!("volume of {inst}\n"));
    e2fsck_clean(&t);
    assert_eq!(boot_disk(&disk, dir.path()), "/dev/nvme0n1");
}

/// A customer-managed key of the test account, not the account's default key.
const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

#[test]
fn plans_create_nothing_and_ami_and_snapshot_sources_migrate_in_each_layout() {
    let m = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    // An encrypted source: the in-place child inherits its encryption, the full upload asks for it.
    let seeded = m.tool_json(&["seed", fixture_cloud().to_str().unwrap(), "--encrypted", "--kms-key", KEY]);
    let (snap, ami, inst) =
        (seeded["snapshot"].as_str().unwrap(), seeded["image"].as_str().unwrap(), seeded["instance"].as_str().unwrap());

    let before = m.tool_json(&["state"]);
    let out = run_ok(m.pv2hvm().args(["plan", inst, "--format", "json", "--work-dir"]).arg(dir.path()));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(before, m.tool_json(&["state"]), "plan created nothing");
    let notes = plan["notes"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n.as_str().unwrap().contains(snap) && n.as_str().unwrap().contains(ami)),
        "the plan names the snapshot it read (the AMI's: the volume has none): {notes:?}"
    );
    assert!(plan["delta_estimate"]["blocks"].as_u64().unwrap() > 0);
    // --snapshot-now reads a fresh snapshot of the volume and deletes it again.
    let out =
        run_ok(m.pv2hvm().args(["plan", inst, "--snapshot-now", "--format", "json", "--work-dir"]).arg(dir.path()));
    let fresh: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let notes = fresh["notes"].as_array().unwrap();
    assert!(notes.iter().any(|n| n.as_str().unwrap().contains("taken now of vol-")), "{notes:?}");
    let after = m.tool_json(&["state"]);
    assert_eq!(ids(&after, "snapshots", "SnapshotId"), ids(&before, "snapshots", "SnapshotId"));
    assert_eq!(ids(&after, "images", "ImageId"), ids(&before, "images", "ImageId"));

    // The reviewed plan, applied to the instance: its fresh snapshot has not drifted.
    let saved = dir.path().join("plan.json");
    run_ok(m.pv2hvm().args(["plan", inst, "-q", "-o"]).arg(&saved).arg("--work-dir").arg(dir.path()));
    let r = m.migrate_json(&[inst, "--plan", saved.to_str().unwrap()], dir.path());
    assert_eq!(r["outcome"], "migrated");
    // A plan (other options, so other work) reviewed before the volume changed a file it
    // edits: the fresh snapshot has drifted, and the run is refused with nothing left.
    let nitro = dir.path().join("nitro.json");
    run_ok(
        m.pv2hvm().args(["plan", inst, "--target", "nitro", "-q", "-o"]).arg(&nitro).arg("--work-dir").arg(dir.path()),
    );
    let fstab = guest_cat(&fixture_cloud().display().to_string(), "/etc/fstab") + "# edited on the instance\n";
    m.tool(&["edit-volume", inst, fixture_cloud().to_str().unwrap(), "/etc/fstab", &fstab]);
    let before_drift = m.tool_json(&["state"]);
    let out = m
        .pv2hvm()
        .args(["migrate", inst, "--yes", "-q", "--plan", nitro.to_str().unwrap(), "--work-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("drifted") && stderr(&out).contains("/etc/fstab changed"), "{}", stderr(&out));
    let after = m.tool_json(&["state"]);
    assert_eq!(ids(&after, "snapshots", "SnapshotId"), ids(&before_drift, "snapshots", "SnapshotId"));
    assert_eq!(ids(&after, "images", "ImageId"), ids(&before_drift, "images", "ImageId"));

    // From the AMI, in place, copied to two more regions.
    let r = m.migrate_json(&[ami, "--name", "from-ami", "--copy-to-regions", "us-west-2,eu-west-1"], dir.path());
    assert_eq!(r["outcome"], "migrated");
    assert_eq!(r["source_snapshot"], snap, "an AMI's root snapshot is read as it is");
    let state = m.tool_json(&["state"]);
    let img = image(&state, r["image"].as_str().unwrap());
    assert_eq!(img["Name"], "from-ami");
    assert_eq!(img["Description"], "a PV guest");
    assert_eq!(tag(img, "team"), Some("storage"));
    assert!(ids(&state, "snapshots", "SnapshotId").contains(&snap.to_string()), "the source snapshot stays");
    let encrypted = |s: &serde_json::Value, id: &str| {
        s["snapshots"].as_array().unwrap().iter().find(|x| x["SnapshotId"] == id).unwrap()["Encrypted"] == true
    };
    assert!(encrypted(&state, snap) && encrypted(&state, r["root_snapshot"].as_str().unwrap()));
    // With the source's own key, which the child inherits: pv2hvm asked for no encryption of
    // its own (EBS refuses Encrypted with a parent).
    let key_of = |s: &serde_json::Value, id: &str| {
        s["snapshots"].as_array().unwrap().iter().find(|x| x["SnapshotId"] == id).unwrap()["KmsKeyId"].clone()
    };
    assert_eq!(key_of(&state, snap), KEY);
    assert_eq!(key_of(&state, r["root_snapshot"].as_str().unwrap()), KEY);
    let started = |id: &str| {
        let calls = server_calls(&m);
        calls.iter().find(|l| l.starts_with(&format!("call StartSnapshot {id} "))).cloned().unwrap_or_default()
    };
    let line = started(r["root_snapshot"].as_str().unwrap());
    assert!(line.contains(&format!("parent={snap} encrypted=None kms=None")), "{line}");
    let copies = r["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 2);
    for (region, copy) in copies.iter().map(|c| (c[0].as_str().unwrap(), c[1].as_str().unwrap())) {
        let there = m.tool_json(&["state", region]);
        let c = image(&there, copy);
        assert_eq!(c["Name"], "from-ami", "{region}");
        assert_eq!(tag(c, "pv2hvm:source"), Some(ami), "{region}: the copy is tagged");
        assert_eq!(c["VirtualizationType"], "hvm", "{region}");
    }

    // From the snapshot, --layout mbr: a whole new disk with no parent, which boots.
    let r = m.migrate_json(&[snap, "--layout", "mbr", "--name", "from-snap"], dir.path());
    assert_eq!(r["outcome"], "migrated");
    let root = r["root_snapshot"].as_str().unwrap();
    assert!(r["blocks_uploaded"].as_u64().unwrap() > 300, "the whole disk went up: {r}");
    assert!(encrypted(&m.tool_json(&["state"]), root), "the full upload is encrypted like its source");
    // With the source's key, asked for by pv2hvm (a snapshot with no parent gets the account's
    // default key otherwise).
    assert_eq!(key_of(&m.tool_json(&["state"]), root), KEY);
    let line = started(root);
    assert!(line.contains(&format!("parent=None encrypted=True kms={KEY} ")), "{line}");
    assert_eq!(boot_snapshot(&m, root, dir.path()), "/dev/nvme0n1p1");
}

#[test]
fn throttling_and_server_errors_are_retried_and_cleanup_removes_an_interrupted_run() {
    let m = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let seeded = m.tool_json(&["seed", fixture_cloud().to_str().unwrap()]);
    let inst = seeded["instance"].as_str().unwrap();
    let before = m.tool_json(&["state"]);

    // An EC2 call that keeps failing (500): the SDK's 8 attempts and no more (pv2hvm's own
    // retries of fresh ids do not multiply them), then exit 7 with nothing made.
    let log = m.inject("DescribeInstances=100000:500");
    let out = m
        .pv2hvm()
        .args(["migrate", inst, "--yes", "-q", "--run-id", "capped", "--work-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let dealt = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(dealt.lines().filter(|l| l.starts_with("DescribeInstances 500 ")).count(), 8, "{dealt}");
    assert_eq!(m.tool_json(&["state"]), before, "nothing made");

    // Every put fails: the run stops with exit 7 and names its run id; what it wrote stays
    // tagged until cleanup, and nothing was registered.
    let log = m.inject("put=100000:500");
    let out = m
        .pv2hvm()
        .args(["migrate", inst, "--yes", "-q", "--run-id", "interrupted", "--work-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("cleanup --run-id interrupted") && err.lines().count() == 1, "{err}");
    // Each block was tried at most 10 times, the documented cap, and the error says so; the
    // delays between tries rose from 50-100 ms, doubling, to 2.5-5 s (the server's own times).
    assert!(err.contains("(after 10 attempts)"), "{err}");
    let puts = dealt_times(&log, "put");
    assert!(puts.values().all(|t| t.len() <= 10), "{puts:?}");
    // (The run stops at the first block out of tries; the others were stopped in their
    // retries. A block's first logged try may be its third, after the server's own transients:
    // counting from 1 gives lower bounds that still hold.)
    assert!(puts.values().any(|t| t.len() >= 8), "{puts:?}");
    for (block, times) in &puts {
        for (attempt, w) in (1..).zip(times.windows(2)) {
            let least = (0.1 * 2f64.powi(attempt - 1)).min(5.0) / 2.0;
            assert!(w[1] - w[0] >= least - 0.005, "{block}: {:.3} s after try {attempt}, under {least} s", w[1] - w[0]);
        }
    }
    let left = m.tool_json(&["state"]);
    assert_eq!(ids(&left, "images", "ImageId"), ids(&before, "images", "ImageId"));
    let tagged = |s: &serde_json::Value| {
        s["snapshots"].as_array().unwrap().iter().filter(|x| tag(x, "pv2hvm:run-id") == Some("interrupted")).count()
    };
    assert_eq!(tagged(&left), 1, "the unfinished child snapshot, not the temporary one");
    let out = run_ok(m.pv2hvm().args(["cleanup", "--run-id", "interrupted", "--yes"]));
    assert!(stdout(&out).contains("removed snapshot"), "{}", stdout(&out));
    assert_eq!(tagged(&m.tool_json(&["state"])), 0);
    assert_eq!(ids(&m.tool_json(&["state"]), "snapshots", "SnapshotId"), ids(&before, "snapshots", "SnapshotId"));

    // Killed (-9) mid-upload: the temporary source snapshot and the unfinished child stay, both
    // tagged; cleanup finds them by the run id and removes them.
    m.inject("put=100000:500");
    let mut child = m
        .pv2hvm()
        .args(["migrate", inst, "--yes", "-q", "--run-id", "killed", "--work-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let s = m.tool_json(&["state"]);
        let root_started = s["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| tag(x, "pv2hvm:run-id") == Some("killed") && tag(x, "pv2hvm:role") == Some("root"));
        if root_started {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the upload never started");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its upload started");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = |s: &serde_json::Value| {
        s["snapshots"].as_array().unwrap().iter().filter(|x| tag(x, "pv2hvm:run-id") == Some("killed")).count()
    };
    let left = m.tool_json(&["state"]);
    assert_eq!(killed(&left), 2, "the temporary snapshot and the unfinished child: {}", left["snapshots"]);
    let out = run_ok(m.pv2hvm().args(["cleanup", "--run-id", "killed", "--yes"]));
    assert_eq!(stdout(&out).matches("removed snapshot").count(), 2, "{}", stdout(&out));
    let after = m.tool_json(&["state"]);
    assert_eq!(killed(&after), 0);
    assert_eq!(ids(&after, "snapshots", "SnapshotId"), ids(&before, "snapshots", "SnapshotId"));
    assert_eq!(ids(&after, "images", "ImageId"), ids(&before, "images", "ImageId"));

    // --stop, and a failure between the stop and the start: CreateSnapshot is refused (no
    // retry helps). The instance was stopped (and had settled) before the snapshot was asked
    // for; it stays stopped, tagged with the run that stopped it.
    let vol = root_volume(&before, inst);
    let mark = server_calls(&m).len();
    m.inject("CreateSnapshot=1:denied");
    let out = m
        .pv2hvm()
        .args(["migrate", inst, "--stop", "--yes", "-q", "--run-id", "stopfail", "--work-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("not authorized"), "{}", stderr(&out));
    let calls = server_calls(&m).split_off(mark);
    let at =
        |what: &str| calls.iter().position(|l| l.starts_with(what)).unwrap_or_else(|| panic!("no {what}: {calls:?}"));
    let snapshot_call = at(&format!("call CreateSnapshot {vol} {inst} "));
    assert!(at(&format!("call StopInstances {inst} ")) < at(&format!("settled {inst} stopped ")), "{calls:?}");
    assert!(at(&format!("settled {inst} stopped ")) < snapshot_call, "stopped before the snapshot: {calls:?}");
    assert!(calls[snapshot_call].contains(" stopped "), "{}", calls[snapshot_call]);
    assert!(!calls.iter().any(|l| l.starts_with(&format!("call StartInstances {inst} "))), "{calls:?}");
    let s = m.tool_json(&["state"]);
    let i = s["instances"].as_array().unwrap().iter().find(|i| i["InstanceId"] == inst).unwrap();
    assert_eq!(i["State"]["Name"], "stopped");
    assert_eq!(tag(i, "pv2hvm:stopped-by"), Some("stopfail"));
    let seen = mark + calls.len();

    // Throttling and 500s: retried with backoff to success. The run resumes the stopped
    // instance's migration: it snapshots the (still stopped) volume, starts the instance only
    // once the snapshot has completed, and removes the stopped-by tag; --launch leaves a
    // stopped Nitro replacement of the same size with the source's tags.
    let log = m.inject(
        "put=3:throttle,get=4:500,start=2:throttle,complete=2:500,list=3:500,CreateSnapshot=1:throttle,\
         DescribeSnapshots=2:throttle,RegisterImage=1:500,RunInstances=1:throttle,StartInstances=1:500",
    );
    let dealt_before = std::fs::read_to_string(&log).unwrap_or_default().lines().count();
    let r = m.migrate_json(&[inst, "--stop", "--launch"], dir.path());
    assert_eq!(r["outcome"], "migrated");
    let calls = server_calls(&m).split_off(seen);
    let at =
        |what: &str| calls.iter().position(|l| l.starts_with(what)).unwrap_or_else(|| panic!("no {what}: {calls:?}"));
    let snapshot_call = at(&format!("call CreateSnapshot {vol} {inst} "));
    assert!(calls[snapshot_call].contains(" stopped "), "{}", calls[snapshot_call]);
    let completed = at(&format!("settled {} completed ", r["source_snapshot"].as_str().unwrap()));
    let started = at(&format!("call StartInstances {inst} "));
    assert!(snapshot_call < completed && completed < started, "started after the snapshot completed: {calls:?}");
    let state = m.tool_json(&["state"]);
    let instance =
        |id: &str| state["instances"].as_array().unwrap().iter().find(|i| i["InstanceId"] == id).unwrap().clone();
    assert!(["pending", "running"].contains(&instance(inst)["State"]["Name"].as_str().unwrap()), "started again");
    assert_eq!(tag(&instance(inst), "pv2hvm:stopped-by"), None, "the stopped-by tag is gone");
    let new = instance(r["instance"].as_str().unwrap());
    assert_eq!(new["InstanceType"], "m5.large");
    assert!(["stopping", "stopped"].contains(&new["State"]["Name"].as_str().unwrap()), "{new}");
    assert_eq!(new["ImageId"], r["image"]);
    assert_eq!(tag(&new, "Name"), Some("web-1"));
    assert_eq!(tag(&new, "pv2hvm:run-id"), r["run_id"].as_str());
    let injected: Vec<String> =
        std::fs::read_to_string(&log).unwrap().lines().skip(dealt_before).map(str::to_string).collect();
    for (fault, n) in [
        ("put throttle", 3),
        ("get 500", 4),
        ("start throttle", 2),
        ("complete 500", 2),
        ("list 500", 3),
        ("CreateSnapshot throttle", 1),
        ("DescribeSnapshots throttle", 2),
        ("RegisterImage 500", 1),
        ("RunInstances throttle", 1),
        ("StartInstances 500", 1),
    ] {
        let dealt = injected.iter().filter(|l| l.starts_with(&format!("{fault} "))).count();
        assert_eq!(dealt, n, "{fault}: {injected:?}");
    }
    // The EBS calls made one at a time waited between their tries.
    for op in ["start", "complete", "list"] {
        let times: Vec<f64> = injected
            .iter()
            .filter(|l| l.starts_with(&format!("{op} ")))
            .map(|l| l.split(' ').nth(2).unwrap().parse().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[1] - w[0] >= 0.045), "{op}: {times:?}");
    }
}

#[test]
fn preflight_refusals_already_hvm_and_an_unreachable_endpoint() {
    let m = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    // Refusals need no blocks: a small image stands in for the volume.
    let small = dir.path().join("small.img");
    std::fs::write(&small, vec![0x5a; 4 << 20]).unwrap();
    let small = small.to_str().unwrap();
    for (variant, words) in [
        ("windows", "Windows guests are not supported"),
        ("marketplace", "Marketplace product code aw0evgkw8e5c1q413zgy5pjce"),
        ("instance-store", "the root device is instance store"),
    ] {
        let s = m.tool_json(&["seed", small, "--variant", variant]);
        let before = m.tool_json(&["state"]);
        let inst = s["instance"].as_str().unwrap();
        let out = m.pv2hvm().args(["migrate", inst, "--yes", "--work-dir"]).arg(dir.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{variant}: {}", stderr(&out));
        assert!(stderr(&out).contains(words), "{variant}: {}", stderr(&out));
        assert_eq!(m.tool_json(&["state"]), before, "{variant}: nothing was created");
    }

    // A root filesystem the plan rules out: refused with the plan's reason, and the temporary
    // snapshot taken to read it is gone again.
    let s = m.tool_json(&["seed", small]);
    let inst = s["instance"].as_str().unwrap();
    let before = m.tool_json(&["state"]);
    let out = m.pv2hvm().args(["migrate", inst, "--yes", "--work-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("no ext2/ext3/ext4 filesystem or MBR partition table found"), "{}", stderr(&out));
    assert_eq!(ids(&m.tool_json(&["state"]), "snapshots", "SnapshotId"), ids(&before, "snapshots", "SnapshotId"));

    // Already HVM: nothing to do, exit 0.
    let hvm = m.tool(&["hvm-image", s["image"].as_str().unwrap()]);
    let out = run_ok(m.pv2hvm().args(["migrate", hvm.trim(), "--yes", "--work-dir"]).arg(dir.path()));
    assert!(stdout(&out).contains("already HVM, nothing to do"), "{}", stdout(&out));

    // Off a terminal, without --yes: refused before anything is made.
    let before = m.tool_json(&["state"]);
    let out = m.pv2hvm().args(["migrate", inst, "--work-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("pass --yes"), "{}", stderr(&out));
    assert_eq!(ids(&m.tool_json(&["state"]), "snapshots", "SnapshotId"), ids(&before, "snapshots", "SnapshotId"));

    // Nobody listening: one line, exit 7, in bounded time.
    let started = std::time::Instant::now();
    let out = pv2hvm()
        .args(["migrate", "i-0123456789abcdef0", "--yes", "-q"])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("Connection refused"), "{}", stderr(&out));
    assert!(started.elapsed().as_secs() < 90, "gave up after {:?}", started.elapsed());
}

#[test]
fn encryption_by_default_public_snapshots_names_and_types_as_aws_has_them_with_faults_on_every_call() {
    // 1% of every call fails (throttling, 5xx, corrupted block bodies), on top of the strict
    // server's own transients.
    let m = Moto::start_with(&[("PV2HVM_MOTO_FAULT_RATE", "0.01"), ("PV2HVM_MOTO_SEED", "7")]);
    let dir = tempfile::tempdir().unwrap();
    let seeded = m.tool_json(&["seed", fixture_cloud().to_str().unwrap(), "--instance-type", "m1.small"]);
    let (snap, ami, inst) =
        (seeded["snapshot"].as_str().unwrap(), seeded["image"].as_str().unwrap(), seeded["instance"].as_str().unwrap());
    m.tool(&["tag", inst, "Name=db, primary"]);
    m.tool(&["public", snap]);
    m.tool(&["encryption-by-default", "on"]);

    // A plan creates nothing, so it cannot copy what EBS direct cannot read: it says what to do.
    let before = m.tool_json(&["state"]);
    for (source, words) in [(ami, "`pv2hvm migrate` copies it"), (inst, "pass --snapshot-now")] {
        let out = m.pv2hvm().args(["plan", source, "--work-dir"]).arg(dir.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{source}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("{snap} is public")) && stderr(&out).contains(words),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(ids(&m.tool_json(&["state"]), "snapshots", "SnapshotId"), ids(&before, "snapshots", "SnapshotId"));

    // An invalid --name is refused before anything is made.
    let out =
        m.pv2hvm().args(["migrate", ami, "--yes", "--name", "a, b", "--work-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("not an AMI name EC2 takes"), "{}", stderr(&out));

    // The public AMI snapshot: copied into the account, encrypted (the account encrypts by
    // default), and the child built on the copy; the copy is gone at the end.
    let r = m.migrate_json(&[ami], dir.path());
    assert_eq!(r["outcome"], "migrated");
    let notes = r["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect::<Vec<_>>().join("\n");
    assert!(notes.contains(&format!("copied {snap} to the temporary")) && notes.contains("is public"), "{notes}");
    let root = r["root_snapshot"].as_str().unwrap();
    let state = m.tool_json(&["state"]);
    let snapshot = |id: &str| state["snapshots"].as_array().unwrap().iter().find(|x| x["SnapshotId"] == id).cloned();
    let root_snap = snapshot(root).unwrap();
    assert_eq!(root_snap["Encrypted"], true);
    assert!(root_snap["KmsKeyId"].as_str().is_some_and(|k| k.ends_with("alias/aws/ebs")), "{root_snap}");
    let copies: Vec<_> = state["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| tag(x, "pv2hvm:run-id") == r["run_id"].as_str() && tag(x, "pv2hvm:role") == Some("temporary"))
        .collect();
    assert!(copies.is_empty(), "the temporary copy is removed: {copies:?}");
    // The result is the source plus the delta: outside it, byte for byte the source.
    let disk = dir.path().join("root.img");
    m.tool(&["download", root, disk.to_str().unwrap()]);
    let differ = differing_blocks(&fixture_cloud(), &disk);
    let delta = r["delta_blocks"].as_u64().unwrap();
    assert!(!differ.is_empty() && differ.len() as u64 <= delta, "{} blocks differ, delta {delta}", differ.len());
    run_ok(std::process::Command::new("e2fsck").arg("-fn").arg(&disk));
    let _ = std::fs::remove_file(&disk);

    // The instance, with encryption by default on: its fresh snapshot is unencrypted, so the
    // child is built on an encrypted copy; its Name becomes a valid AMI name; m1.small's
    // replacement is a type that exists (there is no m5.small).
    let r = m.migrate_json(&[inst, "--launch"], dir.path());
    assert_eq!(r["outcome"], "migrated");
    let notes = r["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect::<Vec<_>>().join("\n");
    assert!(notes.contains("encryption by default is on"), "{notes}");
    let state = m.tool_json(&["state"]);
    let img = image(&state, r["image"].as_str().unwrap());
    let name = img["Name"].as_str().unwrap();
    assert!(name.starts_with("db-primary-hvm-") && name.len() == "db-primary-hvm-".len() + 8, "{name}");
    assert_eq!(tag(img, "Name"), Some("db, primary"), "the tag itself is kept as it was");
    let new = state["instances"].as_array().unwrap().iter().find(|i| i["InstanceId"] == r["instance"]).unwrap();
    assert_eq!(new["InstanceType"], "m5.large");
    assert!(["stopping", "stopped"].contains(&new["State"]["Name"].as_str().unwrap()), "{new}");

    // What the strict server dealt pv2hvm, and pv2hvm came through: each new snapshot's first
    // put found no snapshot and its second failed to read; each StartSnapshot first hit the
    // concurrency limit; block 0's first body failed its checksum; fresh ids were NotFound.
    for (what, at_least) in [
        ("notfound put", 2),
        ("failed-read put", 2),
        ("concurrent-limit start", 2),
        ("corrupt get", 2),
        ("notfound describe snap-", 2),
        ("notfound describe ami-", 2),
        ("notfound describe i-", 1),
    ] {
        assert!(m.dealt(what) >= at_least, "{what}: {} dealt", m.dealt(what));
    }
    assert!(m.dealt("random ") > 0, "the 1% faults were dealt");
}
