//! The README's IAM policy is exactly what pv2hvm's flows need: against the local server with
//! IAM enforced (moto checks every request's signature and the caller's policy once
//! `tool.py auth on`; tests/aws/iam.py), a user holding only that policy migrates an instance
//! (stopped, copied to another region, replaced, with encryption by default on), cleans the run
//! up and discovers the fleet; every ec2/ebs action the policy lists was used; and a policy
//! without one of them fails with exit 7 and a line naming the action.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::moto::Moto;
use common::*;

/// The README's policy (between its markers), as JSON.
fn readme_policy() -> serde_json::Value {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("<!-- iam-policy -->").unwrap();
    let end = readme.find("<!-- /iam-policy -->").unwrap();
    let block = &readme[start..end];
    let json = &block[block.find('{').unwrap()..=block.rfind('}').unwrap()];
    serde_json::from_str(json).unwrap()
}

fn actions(policy: &serde_json::Value) -> BTreeSet<String> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()))
        .collect()
}

/// An IAM user holding only `policy`; its (access key id, secret).
fn user(m: &Moto, dir: &Path, name: &str, policy: &serde_json::Value) -> (String, String) {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, policy.to_string()).unwrap();
    let key = m.tool_json(&["iam-user", name, file.to_str().unwrap()]);
    (key["id"].as_str().unwrap().to_string(), key["secret"].as_str().unwrap().to_string())
}

/// pv2hvm as `key`'s user, with IAM enforced for the call.
fn as_user(m: &Moto, key: &(String, String), args: &[&str], dir: &Path) -> std::process::Output {
    m.tool(&["auth", "on"]);
    let out = m
        .pv2hvm()
        .env("AWS_ACCESS_KEY_ID", &key.0)
        .env("AWS_SECRET_ACCESS_KEY", &key.1)
        .args(args)
        .args(["--work-dir"])
        .arg(dir)
        .output()
        .unwrap();
    m.tool(&["auth", "off"]);
    out
}

#[test]
fn the_readme_policy_is_exactly_what_the_flows_use_and_each_action_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("iam.log");
    let m = Moto::start_with(&[("PV2HVM_MOTO_IAM_LOG", log.to_str().unwrap())]);
    let seeded = m.tool_json(&["seed", fixture_cloud().to_str().unwrap()]);
    let inst = seeded["instance"].as_str().unwrap();
    m.tool(&["encryption-by-default", "on"]);
    let policy = readme_policy();
    let key = user(&m, dir.path(), "readme", &policy);

    // Everything the README promises, as the policy's user.
    let migrate = ["migrate", inst, "--stop", "--launch", "--copy-to-regions", "us-west-2", "--run-id", "iam", "--yes"];
    let out = as_user(&m, &key, &migrate, dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let cleanup = ["cleanup", "--run-id", "iam", "--regions", "us-west-2", "--yes"];
    let out = as_user(&m, &key, &cleanup, dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("removed AMI"), "{}", stdout(&out));
    let out = as_user(&m, &key, &["fleet", "discover", "--regions", "all", "--format", "json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));

    // Every ec2 and ebs action the policy lists was asked for, and nothing else was. (The kms
    // actions are EBS's own on an encrypted volume and iam:PassRole is --launch's with an
    // instance profile; pv2hvm calls neither service.)
    let used: BTreeSet<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_string).collect();
    let listed: BTreeSet<String> =
        actions(&policy).into_iter().filter(|a| a.starts_with("ec2:") || a.starts_with("ebs:")).collect();
    assert_eq!(
        used,
        listed,
        "used but not listed: {:?}; listed but not used: {:?}",
        used.difference(&listed).collect::<Vec<_>>(),
        listed.difference(&used).collect::<Vec<_>>()
    );

    // Without one of them, the migration fails with exit 7, the line naming the action.
    for (n, drop) in ["ebs:PutSnapshotBlock", "ec2:CopySnapshot", "ec2:CreateTags"].into_iter().enumerate() {
        let mut less = policy.clone();
        for s in less["Statement"].as_array_mut().unwrap() {
            s["Action"].as_array_mut().unwrap().retain(|a| a != drop);
        }
        let key = user(&m, dir.path(), &format!("without-{n}"), &less);
        let run = format!("without-{n}");
        let out = as_user(&m, &key, &["migrate", inst, "--run-id", &run, "--yes", "-q"], dir.path());
        assert_eq!(out.status.code(), Some(7), "{drop}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("not authorized to perform: {drop}")), "{drop}: {err}");
        run_ok(m.pv2hvm().args(["cleanup", "--run-id", &run, "--yes"]));
    }
}
