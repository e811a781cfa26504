//! The options of `pv2hvm migrate`, `plan` and `cleanup` that the README promises and the other
//! AWS tests leave out, against the strict local server (tests/common/moto.rs):
//! - `migrate --dry-run` prints the plan and creates nothing;
//! - `--keep-temp` keeps the temporary source snapshot, retagged `pv2hvm:role=kept`;
//! - `--launch --instance-type T` launches exactly T, into the source's subnet, with its
//!   security groups, key pair and IAM instance profile;
//! - `cleanup --all-stale [--older-than H]` removes only temporary snapshots older than H hours
//!   (`--dry-run` lists them), never a finished migration's AMI or snapshots;
//! - a run interrupted after its copy finds the copy again by its tags (no second CopyImage);
//! - `cleanup --run-id ID --regions …` terminates the run's replacement instance and
//!   deregisters its AMIs, and leaves other runs' work alone;
//! - `plan i-…` reads the newest completed snapshot of the root volume, and `--snapshot-now` a
//!   fresh one, deleted again;
//! - `--layout mbr` refuses a `--work-dir` without room for the staging image;
//! - `--keep-temp` still keeps the source snapshot when a run killed while registering is
//!   resumed.
//!
//! Two tests, one server each, each going through its steps on one seeded account.

mod common;

use std::process::{Command, Stdio};

use common::moto::{Moto, tag};
use common::*;

fn ids(state: &serde_json::Value, what: &str, key: &str) -> Vec<String> {
    let mut v: Vec<String> =
        state[what].as_array().unwrap().iter().map(|x| x[key].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

fn find<'a>(state: &'a serde_json::Value, what: &str, key: &str, id: &str) -> Option<&'a serde_json::Value> {
    state[what].as_array().unwrap().iter().find(|x| x[key] == id)
}

fn instance(state: &serde_json::Value, id: &str) -> serde_json::Value {
    find(state, "instances", "InstanceId", id).unwrap_or_else(|| panic!("no instance {id}")).clone()
}

fn snapshot_ids(m: &Moto, region: &str) -> Vec<String> {
    ids(&m.tool_json(&["state", region]), "snapshots", "SnapshotId")
}

fn image_ids(m: &Moto, region: &str) -> Vec<String> {
    ids(&m.tool_json(&["state", region]), "images", "ImageId")
}

fn s<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("no {key} in {v}"))
}

#[test]
fn an_instance_migration_honours_its_options_and_cleanup_removes_exactly_what_it_is_asked_to() {
    let m = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let seeded = m.tool_json(&["seed", fixture_cloud().to_str().unwrap(), "--network"]);
    let inst = s(&seeded, "instance");
    let work = dir.path().to_str().unwrap();

    // --dry-run prints the plan and makes nothing, even with --yes.
    let before = m.tool_json(&["state"]);
    let out = run_ok(m.pv2hvm().args(["migrate", inst, "--dry-run", "--yes", "-q", "--work-dir", work]));
    assert!(stdout(&out).contains("/etc/fstab") && stdout(&out).contains("+UUID="), "{}", stdout(&out));
    assert_eq!(m.tool_json(&["state"]), before, "--dry-run created nothing");
    assert!(image_ids(&m, "us-west-2").is_empty());

    // A run that keeps its temporary snapshot, launches a replacement of a type asked for, and
    // copies the AMI to us-west-2.
    let args = [inst, "--keep-temp", "--launch", "--instance-type", "c5.xlarge", "--copy-to-regions", "us-west-2"];
    let r = m.migrate_json(&[&args[..], &["--run-id", "done"]].concat(), dir.path());
    assert_eq!(r["outcome"], "migrated");
    let state = m.tool_json(&["state"]);
    let kept = s(&r, "source_snapshot");
    let kept_snap = find(&state, "snapshots", "SnapshotId", kept).expect("the temporary snapshot is kept");
    assert_eq!(tag(kept_snap, "pv2hvm:role"), Some("kept"), "{kept_snap}");
    assert!(!r["temporary_deleted"].as_array().unwrap().iter().any(|x| x == kept), "{r}");
    // The replacement: exactly the type asked for, where the source was, as the source was.
    let new = instance(&state, s(&r, "instance"));
    assert_eq!(new["InstanceType"], "c5.xlarge");
    assert_eq!(new["ImageId"], r["image"]);
    assert_eq!(new["SubnetId"], seeded["subnet"], "{new}");
    let groups: Vec<&str> = new["SecurityGroups"].as_array().unwrap().iter().map(|g| s(g, "GroupId")).collect();
    assert_eq!(groups, [s(&seeded, "security_group")], "{new}");
    assert_eq!(new["KeyName"], seeded["key_name"], "{new}");
    assert_eq!(new["IamInstanceProfile"]["Arn"], seeded["profile_arn"], "{new}");
    let done_copy = r["copies"][0][1].as_str().unwrap().to_string();

    // Another run of the instance, other options (so other work), that dies after its copy was
    // made: RunInstances is refused. Its temporary snapshot stays behind (the run never got to
    // its cleanup), beside a finished AMI, its root snapshot and its copy.
    let stale_args = ["--target", "nitro", "--launch", "--copy-to-regions", "us-west-2", "--run-id", "stale"];
    m.inject("RunInstances=1:denied");
    let out = m.pv2hvm().args(["migrate", inst, "--yes", "-q", "--work-dir", work]).args(stale_args).output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let temporaries: Vec<String> = m
        .tagged("us-east-1", "snapshots", "stale")
        .iter()
        .filter(|x| tag(x, "pv2hvm:role") == Some("temporary"))
        .map(|x| s(x, "SnapshotId").to_string())
        .collect();
    assert_eq!(temporaries.len(), 1, "the interrupted run's temporary snapshot is left");
    let stale_temp = &temporaries[0];
    let stale_copies = m.tagged("us-west-2", "images", "stale");
    assert_eq!(stale_copies.len(), 1, "the interrupted run had made its copy");

    // --all-stale goes by age: the temporary snapshot is seconds old, so the default 24 h and
    // --older-than 1 remove nothing.
    let (home, west) = (snapshot_ids(&m, "us-east-1"), snapshot_ids(&m, "us-west-2"));
    let (home_images, west_images) = (image_ids(&m, "us-east-1"), image_ids(&m, "us-west-2"));
    let unchanged = |what: &str| {
        assert_eq!(snapshot_ids(&m, "us-east-1"), home, "{what}");
        assert_eq!(snapshot_ids(&m, "us-west-2"), west, "{what}");
        assert_eq!(image_ids(&m, "us-east-1"), home_images, "{what}");
        assert_eq!(image_ids(&m, "us-west-2"), west_images, "{what}");
    };
    let out = run_ok(m.pv2hvm().args(["cleanup", "--all-stale", "--regions", "us-west-2", "--yes"]));
    assert!(stdout(&out).contains("nothing to clean up"), "{}", stdout(&out));
    let out = run_ok(m.pv2hvm().args(["cleanup", "--all-stale", "--older-than", "1", "--yes"]));
    assert!(stdout(&out).contains("nothing to clean up"), "{}", stdout(&out));
    unchanged("younger than the threshold");
    // --dry-run lists the temporary snapshot, and only it, and removes nothing.
    let out = run_ok(
        m.pv2hvm().args(["cleanup", "--all-stale", "--older-than", "0", "--regions", "us-west-2"]).arg("--dry-run"),
    );
    let text = stdout(&out);
    let listed: Vec<&str> = text.lines().filter(|l| l.starts_with("would remove")).collect();
    assert_eq!(listed, [format!("would remove snapshot {stale_temp} (us-east-1)")], "{text}");
    unchanged("--dry-run");
    // Without it the temporary snapshot goes; the finished AMIs, their root snapshots, the
    // copies and the kept snapshot stay.
    let out =
        run_ok(m.pv2hvm().args(["cleanup", "--all-stale", "--older-than", "0", "--regions", "us-west-2", "--yes"]));
    assert!(stdout(&out).contains(&format!("removed snapshot {stale_temp} (us-east-1)")), "{}", stdout(&out));
    let left: Vec<String> = home.iter().filter(|x| *x != stale_temp).cloned().collect();
    assert_eq!(snapshot_ids(&m, "us-east-1"), left);
    assert!(left.contains(&kept.to_string()) && left.contains(&s(&r, "root_snapshot").to_string()));
    assert_eq!(snapshot_ids(&m, "us-west-2"), west);
    assert_eq!(image_ids(&m, "us-east-1"), home_images);
    assert_eq!(image_ids(&m, "us-west-2"), west_images);

    // The interrupted run again: it finds its AMI and its copy by their tags and asks for no
    // second copy (CopyImage is armed to fail, and is not called), then launches.
    let faults = m.inject("CopyImage=1:denied");
    let again = m.migrate_json(&[&[inst][..], &stale_args].concat(), dir.path());
    assert_eq!(again["outcome"], "resumed", "{again}");
    assert_eq!(again["copies"][0][1], stale_copies[0]["ImageId"]);
    let reused = again["reused"].to_string();
    assert!(reused.contains(&format!("the copy {} in us-west-2", s(&stale_copies[0], "ImageId"))), "{reused}");
    assert!(!std::fs::read_to_string(&faults).unwrap_or_default().contains("CopyImage"), "CopyImage was called");
    assert_eq!(m.tagged("us-west-2", "images", "stale").len(), 1, "one copy");
    m.inject("");
    let stale_instance = s(&again, "instance").to_string();

    // cleanup --run-id: the run's replacement is terminated, its AMI and copy deregistered and
    // their snapshots (the kept one too) deleted; the other run's work and the source stay.
    let out = run_ok(m.pv2hvm().args(["cleanup", "--run-id", "done", "--regions", "us-west-2", "--yes"]));
    let text = stdout(&out);
    assert!(text.contains(&format!("removed instance {}", s(&r, "instance"))), "{text}");
    let state = m.tool_json(&["state"]);
    let gone = instance(&state, s(&r, "instance"));
    assert!(["shutting-down", "terminated"].contains(&gone["State"]["Name"].as_str().unwrap()), "{gone}");
    for region in ["us-east-1", "us-west-2"] {
        assert!(m.tagged(region, "images", "done").is_empty(), "{region}: {text}");
        assert!(m.tagged(region, "snapshots", "done").is_empty(), "{region}: {text}");
    }
    assert!(find(&state, "images", "ImageId", s(&r, "image")).is_none(), "the home AMI is deregistered");
    assert!(!image_ids(&m, "us-west-2").contains(&done_copy));
    assert!(find(&state, "snapshots", "SnapshotId", kept).is_none(), "the kept snapshot is the run's too");
    assert_eq!(m.tagged("us-east-1", "images", "stale").len(), 1, "another run's AMI stays");
    assert_eq!(m.tagged("us-west-2", "images", "stale").len(), 1, "another run's copy stays");
    for id in [inst, stale_instance.as_str()] {
        let i = instance(&state, id);
        assert!(!["shutting-down", "terminated"].contains(&i["State"]["Name"].as_str().unwrap()), "{i}");
    }
}

#[test]
fn plans_read_the_newest_or_a_fresh_snapshot_and_mbr_needs_room_in_the_work_dir() {
    // Registration is slowed, so that the last part can kill a run while it registers.
    let m = Moto::start_with(&[("PV2HVM_MOTO_REGISTER_DELAY", "3")]);
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixture_cloud();
    let seeded = m.tool_json(&["seed", fixture.to_str().unwrap()]);
    let (inst, ami_snap) = (s(&seeded, "instance"), s(&seeded, "snapshot"));
    let work = dir.path().to_str().unwrap();
    let fstab = guest_cat(&fixture.display().to_string(), "/etc/fstab");
    // The volume's /etc/fstab with a line of its own: the plan's diff of fstab shows it (as
    // context of the edit), so which content the plan read is in the diff.
    let edit = |mark: &str| {
        m.tool(&["edit-volume", inst, fixture.to_str().unwrap(), "/etc/fstab", &format!("{fstab}# {mark}\n")]);
    };
    let plan = |extra: &[&str]| -> serde_json::Value {
        let out = run_ok(m.pv2hvm().args(["plan", inst, "--format", "json", "-q", "--work-dir", work]).args(extra));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let fstab_diff = |p: &serde_json::Value| -> String {
        let edits = p["edits"].as_array().unwrap();
        edits.iter().find(|e| e["path"] == "/etc/fstab").map(|e| s(e, "diff").to_string()).unwrap_or_default()
    };
    let notes = |p: &serde_json::Value| p["notes"].to_string();

    // Two snapshots of the root volume, an edit before each: the plan reads the newer.
    edit("first edit");
    let older = m.tool(&["snapshot-volume", inst]).trim().to_string();
    edit("second edit");
    let newer = m.tool(&["snapshot-volume", inst]).trim().to_string();
    let before = m.tool_json(&["state"]);
    let p = plan(&[]);
    assert!(notes(&p).contains(&format!("reads {newer}, the newest completed snapshot of vol-")), "{}", notes(&p));
    assert!(!notes(&p).contains(&older) && !notes(&p).contains(ami_snap), "{}", notes(&p));
    assert!(fstab_diff(&p).contains("# second edit") && !fstab_diff(&p).contains("# first edit"), "{}", fstab_diff(&p));
    assert_eq!(m.tool_json(&["state"]), before, "plan created nothing");

    // The volume changes after its newest snapshot: --snapshot-now sees the change, a plain
    // plan still reads the newest snapshot; the fresh snapshot is gone again.
    edit("third edit");
    let before = snapshot_ids(&m, "us-east-1");
    let fresh = plan(&["--snapshot-now"]);
    assert!(notes(&fresh).contains("taken now of vol-"), "{}", notes(&fresh));
    assert!(fstab_diff(&fresh).contains("# third edit"), "{}", fstab_diff(&fresh));
    assert_eq!(snapshot_ids(&m, "us-east-1"), before, "the fresh snapshot is deleted");
    let p = plan(&[]);
    assert!(notes(&p).contains(&format!("reads {newer}")), "{}", notes(&p));
    assert!(fstab_diff(&p).contains("# second edit") && !fstab_diff(&p).contains("# third edit"), "{}", fstab_diff(&p));

    // --layout mbr stages every allocated block in --work-dir: a work dir on a small filesystem
    // (a tmpfs in a mount namespace of its own, gone with the process) is refused first.
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let before = m.tool_json(&["state"]);
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c", r#"mount -t tmpfs -o size=128m tmpfs "$0" && exec "$@""#])
        .arg(&small)
        .arg(env!("CARGO_BIN_EXE_pv2hvm"))
        .args(["migrate", ami_snap, "--layout", "mbr", "--yes", "-q", "--work-dir"])
        .arg(&small);
    let out = m.env(&mut cmd).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--layout mbr needs ") && err.contains(&format!(" MiB free in {} (found ", small.display())),
        "{err}"
    );
    assert_eq!(m.tool_json(&["state"]), before, "nothing was created");

    // --keep-temp across a kill: a run killed (-9) while it registers its AMI, run again, finds
    // the AMI and does not convert again, and still keeps the snapshot the AMI was read from.
    let args = ["migrate", inst, "--keep-temp", "--yes", "-q", "--format", "json", "--work-dir", work];
    let registers = m.calls("register");
    let mut child = m.pv2hvm().args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t = std::time::Instant::now();
    while m.calls("register") == registers {
        assert!(t.elapsed() < std::time::Duration::from_secs(300), "no RegisterImage");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it registered");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let temporary: Vec<String> = m.tool_json(&["state"])["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| tag(x, "pv2hvm:role") == Some("temporary") && tag(x, "pv2hvm:source") == Some(inst))
        .map(|x| s(x, "SnapshotId").to_string())
        .collect();
    assert_eq!(temporary.len(), 1, "the killed run's snapshot of the volume: {temporary:?}");
    let out = run_ok(m.pv2hvm().args(args));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "resumed", "{r}");
    let state = m.tool_json(&["state"]);
    let kept = state["snapshots"].as_array().unwrap().iter().find(|x| x["SnapshotId"] == temporary[0].as_str());
    assert_eq!(kept.and_then(|k| tag(k, "pv2hvm:role")), Some("kept"), "{r}");
}
